/**
 * Watches that resume by themselves after a dropped connection, as the Python SDK's `watch_*` methods do
 * (learning_engine/calls.py, `Calls._resumable`): one generic loop, resumableWatch, and a helper per Watch RPC.
 * Shared by both entries (re-exported by core.ts); nothing here depends on the transport.
 */
import { Code, ConnectError, type CallOptions } from "@connectrpc/connect";

import type { LearningEngineClient } from "./core.js";
import type { WatchEvaluationJobResponse } from "./gen/learning/v1/evaluation_pb.js";
import type { WatchFisherJobResponse } from "./gen/learning/v1/fisher_pb.js";
import type { WatchLoraStatusResponse } from "./gen/learning/v1/lora_control_pb.js";
import type { WatchOnlineSessionResponse } from "./gen/learning/v1/online_pb.js";
import type { WatchPipelineRunResponse } from "./gen/learning/v1/pipeline_pb.js";
import type { WatchPreparationJobResponse } from "./gen/learning/v1/preparation_pb.js";
import type { WatchTrainingJobResponse } from "./gen/learning/v1/training_pb.js";
import { isTlsFailure } from "./tls-failure.js";

/**
 * The codes a watch re-opens after (the Python SDK's RECONNECT_CODES): only Unavailable, which a dropped connection
 * (a network cut, the server restarting) surfaces as. Every other error, the caller's own abort (Canceled)
 * included, ends the watch at once; so does an Unavailable that is a TLS certificate failure (isTlsFailure), which
 * no re-open can mend.
 */
export const RECONNECT_CODES: ReadonlySet<Code> = new Set([Code.Unavailable]);

/** The Python SDK's defaults: `reconnect_attempts=30`, `reconnect_delay=0.5` (seconds). */
export const DEFAULT_RECONNECT_ATTEMPTS = 30;
export const DEFAULT_RECONNECT_DELAY_MS = 500;
/** The longest pause between two re-opens, and the longest wait for a re-opened stream (5 s, as in Python). */
const MAX_WAIT_MS = 5000;
/** The shortest wait for a re-opened stream to answer (a connection to make): 1 s, as in Python. */
const MIN_READY_MS = 1000;

/** What a resume reports to `onResume`, before its pause (the Python SDK logs the same at INFO). */
export interface WatchResume {
  /** The sequence the stream is re-opened after: the last one delivered (or `afterSequence`). */
  afterSequence: bigint;
  /** 1 for the first re-open after a failure, 2 after that one failed too, ... */
  attempt: number;
  /** The failure that ended the stream (Code.Unavailable). */
  error: ConnectError;
}

export interface WatchOptions {
  /**
   * Deliver only the events after this sequence (the request's `after_sequence`); default 0n: every event. To pick
   * up a watch where an earlier one stopped, pass the last sequence it delivered.
   */
  afterSequence?: bigint;
  /** Ends the watch (also during a pause between re-opens) with Code.Canceled, as it ends a call. */
  signal?: AbortSignal;
  /**
   * How many failed re-opens in a row the watch makes before it throws the last failure; default 30. A message
   * received starts the count again. 0 never re-opens.
   */
  reconnectAttempts?: number;
  /** The pause before the n-th re-open in a row is n × this, at most 5 s; default 500 ms. */
  reconnectDelayMs?: number;
  /** Called before each re-open (the Python SDK logs "watch interrupted; resuming"). */
  onResume?: (resume: WatchResume) => void;
}

/**
 * The messages of a watch stream, re-opened after a failure with Code.Unavailable: `open(afterSequence, options)`
 * opens the stream (a Watch* call with that `afterSequence` and the CallOptions given: their `signal`), and
 * `sequenceOf(message)` is the message's sequence, or undefined for one without (a snapshot). The Python SDK's
 * policy (`Calls._resumable`), exactly:
 *
 * - Only Code.Unavailable (RECONNECT_CODES) re-opens, a failure of the first open included; any other error, and
 *   any error that is no ConnectError, is thrown as it is. So is a TLS handshake that failed on a certificate
 *   (isTlsFailure: the server's did not verify, or the server refused the client's), though it is Unavailable:
 *   it fails the same way until the certificates or the `tls` options change, so the watch ends at once instead
 *   of spending its budget of re-opens (about 2 min) on it. The Python SDK ends its watch on a server
 *   certificate that does not verify too, and re-opens one whose client certificate the server refused (grpc-core
 *   reports that as a closed socket).
 * - The stream is re-opened with `afterSequence` the last sequence delivered (`options.afterSequence` until one is).
 *   Each re-opened stream starts with a fresh snapshot, which is delivered too: the job's state as it is then.
 *   An event whose sequence is not above the last one delivered is skipped, so no event is delivered twice; the
 *   server sends every event after `afterSequence`, so none is lost.
 * - The n-th failure in a row pauses n × `reconnectDelayMs` (500 ms), at most 5 s, before re-opening; after
 *   `reconnectAttempts` (30) failed re-opens in a row, the last failure (Unavailable) is thrown. Any message
 *   received (a snapshot, or an event even if skipped) shows the stream works and starts the count again: the
 *   budget is for one outage, not the watch's life.
 * - A re-opened stream (not the first) that has brought no message within min(max(n × `reconnectDelayMs`, 1 s), 5 s)
 *   is abandoned and counts as a failed re-open (Unavailable): the Python SDK waits as long for its channel to be
 *   ready. Every watch sends its snapshot (or the status) first, at once, so a server that is there answers in that
 *   time. A refused connection fails the attempt at once, without that wait.
 * - The caller's `signal` ends the watch with Code.Canceled, also during a pause; leaving the loop (break, return,
 *   throw) cancels the open call, as for any stream of the client.
 *
 * In a browser (gRPC-Web, the web entry), a lost connection is what connect-web reports it as; only Unavailable
 * re-opens. A RangeError or TypeError for an option out of range is thrown here, not at the first message.
 */
export function resumableWatch<M>(
  open: (afterSequence: bigint, options: CallOptions) => AsyncIterable<M>,
  sequenceOf: (message: M) => bigint | undefined,
  options: WatchOptions = {},
): AsyncGenerator<M, void, undefined> {
  const after = options.afterSequence ?? 0n;
  if (typeof after !== "bigint" || after < 0n) {
    throw new TypeError(`afterSequence must be a bigint of 0 or more (a uint64), not ${String(after)}`);
  }
  const attempts = options.reconnectAttempts ?? DEFAULT_RECONNECT_ATTEMPTS;
  if (!Number.isSafeInteger(attempts) || attempts < 0) {
    throw new RangeError(`reconnectAttempts must be a whole number of 0 or more, not ${attempts}`);
  }
  const delayMs = options.reconnectDelayMs ?? DEFAULT_RECONNECT_DELAY_MS;
  if (!Number.isFinite(delayMs) || delayMs < 0) {
    throw new RangeError(`reconnectDelayMs must be a finite number of 0 or more, not ${delayMs}`);
  }
  return resumed(open, sequenceOf, after, attempts, delayMs, options.signal, options.onResume);
}

async function* resumed<M>(
  open: (afterSequence: bigint, options: CallOptions) => AsyncIterable<M>,
  sequenceOf: (message: M) => bigint | undefined,
  after: bigint,
  attempts: number,
  delayMs: number,
  signal: AbortSignal | undefined,
  onResume: ((resume: WatchResume) => void) | undefined,
): AsyncGenerator<M, void, undefined> {
  let last = after;
  let failures = 0;
  for (;;) {
    // One attempt: its own signal, aborted by the caller's and, for a re-open, by the wait for its first message.
    const attempt = new AbortController();
    const forward = () => attempt.abort(signal?.reason);
    if (signal?.aborted) forward();
    else signal?.addEventListener("abort", forward);
    const readyMs = failures > 0 ? Math.min(Math.max(delayMs * failures, MIN_READY_MS), MAX_WAIT_MS) : undefined;
    let unanswered = false;
    let timer = readyMs === undefined ? undefined : setTimeout(() => {
      unanswered = true;
      attempt.abort();
    }, readyMs);
    const stopTimer = () => {
      clearTimeout(timer);
      timer = undefined;
    };
    let failure: ConnectError | undefined;
    let stream: AsyncIterator<M> | undefined;
    try {
      stream = open(last, { signal: attempt.signal })[Symbol.asyncIterator]();
      for (;;) {
        let result: IteratorResult<M>;
        try {
          result = await stream.next();
        } catch (error) {
          if (unanswered && !signal?.aborted) {
            failure = new ConnectError(`the re-opened watch did not answer within ${readyMs! / 1000}s`,
                                       Code.Unavailable, undefined, undefined, error);
          } else if (error instanceof ConnectError && RECONNECT_CODES.has(error.code) && !isTlsFailure(error)
                     && !signal?.aborted) {
            failure = error;
          } else {
            throw error;
          }
          break;
        }
        if (result.done) return;
        stopTimer();
        failures = 0;   // the (re)connection works
        const sequence = sequenceOf(result.value);
        if (sequence !== undefined) {
          if (sequence <= last) continue;   // delivered before the re-open
          last = sequence;
        }
        yield result.value;   // outside the catch: an error thrown in here is never taken for the stream's
      }
    } finally {
      stopTimer();
      signal?.removeEventListener("abort", forward);
      if (failure === undefined) await stream?.return?.();   // left early: cancel the call
    }
    if (failures >= attempts) throw failure!;
    failures += 1;
    onResume?.({ afterSequence: last, attempt: failures, error: failure! });
    await pause(Math.min(delayMs * failures, MAX_WAIT_MS), signal);
  }
}

/** Wait `ms`; a ConnectError with Code.Canceled (as an aborted call's) if `signal` aborts first. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const canceled = () => ConnectError.from(signal?.reason ?? new Error("the watch was aborted"), Code.Canceled);
    if (signal?.aborted) {
      reject(canceled());
      return;
    }
    const done = () => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const aborted = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", aborted);
      reject(canceled());
    };
    signal?.addEventListener("abort", aborted);
  });
}

/** The sequence of a Watch* response's event; undefined for its snapshot. */
function eventSequence(message: { update: { case: string | undefined; value?: unknown } }): bigint | undefined {
  return message.update.case === "event" ? (message.update.value as { sequence: bigint }).sequence : undefined;
}

/**
 * WatchTrainingJob: the job's snapshot, then every event after `options.afterSequence` until the job ends,
 * re-opened after a dropped connection as resumableWatch says (each re-open starts with a fresh snapshot).
 */
export function watchTrainingJob(client: LearningEngineClient, name: string,
                                 options?: WatchOptions): AsyncGenerator<WatchTrainingJobResponse, void, undefined> {
  return resumableWatch((afterSequence, call) => client.training.watchTrainingJob({ name, afterSequence }, call),
                        eventSequence, options);
}

/** WatchFisherJob, resumed as watchTrainingJob is. */
export function watchFisherJob(client: LearningEngineClient, name: string,
                               options?: WatchOptions): AsyncGenerator<WatchFisherJobResponse, void, undefined> {
  return resumableWatch((afterSequence, call) => client.fisher.watchFisherJob({ name, afterSequence }, call),
                        eventSequence, options);
}

/** WatchEvaluationJob, resumed as watchTrainingJob is. */
export function watchEvaluationJob(
  client: LearningEngineClient, name: string, options?: WatchOptions,
): AsyncGenerator<WatchEvaluationJobResponse, void, undefined> {
  return resumableWatch(
    (afterSequence, call) => client.evaluations.watchEvaluationJob({ name, afterSequence }, call),
    eventSequence, options);
}

/** WatchPreparationJob (one event per chunk), resumed as watchTrainingJob is. */
export function watchPreparationJob(
  client: LearningEngineClient, name: string, options?: WatchOptions,
): AsyncGenerator<WatchPreparationJobResponse, void, undefined> {
  return resumableWatch(
    (afterSequence, call) => client.preparation.watchPreparationJob({ name, afterSequence }, call),
    eventSequence, options);
}

/** WatchPipelineRun (stages started, progress, ended), resumed as watchTrainingJob is. */
export function watchPipelineRun(
  client: LearningEngineClient, name: string, options?: WatchOptions,
): AsyncGenerator<WatchPipelineRunResponse, void, undefined> {
  return resumableWatch(
    (afterSequence, call) => client.pipelines.watchPipelineRun({ name, afterSequence }, call),
    eventSequence, options);
}

/** WatchOnlineSession (updates, publications, loss spikes, warnings), resumed as watchTrainingJob is. */
export function watchOnlineSession(
  client: LearningEngineClient, name: string, options?: WatchOptions,
): AsyncGenerator<WatchOnlineSessionResponse, void, undefined> {
  return resumableWatch(
    (afterSequence, call) => client.online.watchOnlineSession({ name, afterSequence }, call),
    eventSequence, options);
}

/**
 * WatchLoraStatus: the serving status now, then each change, until the caller stops; re-opened after a dropped
 * connection as resumableWatch says (as the Python SDK's watch_lora_status). Its messages have no sequence: each
 * re-opened stream starts with the status as it is then, and every message is delivered.
 */
export function watchLoraStatus(
  client: LearningEngineClient, options?: Omit<WatchOptions, "afterSequence">,
): AsyncGenerator<WatchLoraStatusResponse, void, undefined> {
  return resumableWatch((_after, call) => client.lora.watchLoraStatus({}, call), () => undefined,
                        { ...options, afterSequence: undefined });
}
