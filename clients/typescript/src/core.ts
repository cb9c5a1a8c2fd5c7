/**
 * What both entries of the Learning Engine TypeScript client share, with no transport of its own: the
 * generated learning.v1 services and messages, the client over any Connect transport, the bearer token and the
 * actor (x-actor), and errors read from their google.rpc details and typed by the catalogue of reasons
 * (learning.v1.ErrorReason), a call's (ConnectError) as a finished job's (its google.rpc.Status), and the google.rpc
 * messages with a `registry` for toJson, and the watches that resume by themselves after a dropped connection
 * (watch.ts). `index.ts` (Node: gRPC over HTTP/2, with TLS options) and `web.ts` (browsers: gRPC-Web) add the
 * transport.
 *
 * Generated code lives in src/gen (never edit; `npm run generate`).
 */
import { type DescMessage, type DescService, type MessageShape, createRegistry, isMessage } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema, file_google_rpc_error_details } from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema, file_google_rpc_status } from "./gen/google/rpc/status_pb.js";
import { AdapterService } from "./gen/learning/v1/adapter_pb.js";
import { DatasetService } from "./gen/learning/v1/dataset_pb.js";
import { DriftService } from "./gen/learning/v1/drift_pb.js";
import { ErrorReason, ErrorReasonSchema } from "./gen/learning/v1/error_reason_pb.js";
import { EvaluationService } from "./gen/learning/v1/evaluation_pb.js";
import { FeedbackService } from "./gen/learning/v1/feedback_pb.js";
import { FisherService } from "./gen/learning/v1/fisher_pb.js";
import { LoraControlService } from "./gen/learning/v1/lora_control_pb.js";
import { OnlineLearningService } from "./gen/learning/v1/online_pb.js";
import { PipelineService } from "./gen/learning/v1/pipeline_pb.js";
import { DataPreparationService } from "./gen/learning/v1/preparation_pb.js";
import { TrainingService } from "./gen/learning/v1/training_pb.js";
import { tlsFailure } from "./tls-failure.js";

export * from "./gen/learning/v1/adapter_pb.js";
export * from "./gen/learning/v1/common_pb.js";
export * from "./gen/learning/v1/dataset_pb.js";
export * from "./gen/learning/v1/drift_pb.js";
export * from "./gen/learning/v1/error_reason_pb.js";
export * from "./gen/learning/v1/evaluation_pb.js";
export * from "./gen/learning/v1/feedback_pb.js";
export * from "./gen/learning/v1/fisher_pb.js";
export * from "./gen/learning/v1/lora_control_pb.js";
export * from "./gen/learning/v1/online_pb.js";
export * from "./gen/learning/v1/pipeline_pb.js";
export * from "./gen/learning/v1/preparation_pb.js";
export * from "./gen/learning/v1/training_pb.js";
// google.rpc: Status (a job's `error`, JobError.status) and the error details (ErrorInfo, BadRequest, ...). The
// message type ErrorInfo is the one name not re-exported: `ErrorInfo` here is errorInfo()'s result (below).
export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export { Code, ConnectError };
export * from "./watch.js";
export { isTlsFailure } from "./tls-failure.js";

/**
 * The google.rpc types a message's `google.protobuf.Any` fields hold (the details of a job's `error`), for JSON:
 * `toJsonString(TrainingJobSchema, job, { registry })`; without it, a job with an error does not convert.
 */
export const registry = createRegistry(file_google_rpc_status, file_google_rpc_error_details);

export interface ClientOptions {
  /**
   * Node: the gRPC port, e.g. "http://127.0.0.1:50051" (plaintext h2c) or "https://learning.example.com" (TLS).
   * Browsers (`@learning-engine/client/web`): the gRPC-Web proxy in front of it, e.g. Envoy's
   * "http://127.0.0.1:8080" (docs/browsers.md).
   */
  baseUrl: string;
  /**
   * Bearer token for servers with auth_tokens configured. Surrounding whitespace is dropped (a token read from a
   * file ends with a newline), and nothing left means no token; one holding another character than printable
   * ASCII is refused with a TypeError when the client is created (bearerToken).
   */
  token?: string;
  /**
   * Who asks, sent as the `x-actor` header with every call: a server without auth records it as who asked for a
   * serving operation (activate, rollback, canaries, splits); with auth on, the token's principal is recorded
   * instead. Checked as `token` is: surrounding whitespace is dropped, nothing left means no header, and one holding
   * another character than printable ASCII is refused with a TypeError when the client is created.
   */
  actor?: string;
  /**
   * Another transport than the entry's own; `baseUrl`, `token` and `actor` are not used then: the transport has its
   * own.
   */
  transport?: Transport;
}

/**
 * `value` as a header carries it: without surrounding whitespace (a token read from a file ends with a newline),
 * undefined when nothing is left. One holding a character a header value cannot carry (a control character,
 * anything but printable ASCII) throws a TypeError that names the character and its position, never the value, as
 * the Python SDK's header_value() does: else every call would fail with an error whose message quotes the header.
 * `the` names the value ("the token"), `what` says what it is ("a bearer token").
 */
function checkedHeaderValue(value: string, the: string, what: string): string | undefined {
  if (typeof value !== "string") throw new TypeError(`${the} is a ${typeof value}, not a string`);
  const trimmed = value.trim();
  let position = 0;
  for (const char of trimmed) {   // by code point, as Python counts
    const point = char.codePointAt(0)!;
    if (point < 0x20 || point > 0x7e) {
      const name = point.toString(16).toUpperCase().padStart(4, "0");
      throw new TypeError(`${the} holds U+${name} at position ${position}: ${what} is printable ASCII `
                          + "(a header value cannot carry it)");
    }
    position++;
  }
  return trimmed || undefined;
}

/** `token` as the authorization header carries it (checkedHeaderValue), as the Python SDK's bearer_token(). */
function checkedToken(token: string): string | undefined {
  return checkedHeaderValue(token, "the token", "a bearer token");
}

/** `actor` as the x-actor header carries it (checkedHeaderValue), as the Python SDK's actor_name(). */
function checkedActor(actor: string): string | undefined {
  return checkedHeaderValue(actor, "the actor", "an actor name");
}

/**
 * Sends `authorization: Bearer <token>` with every call. The token is checked here, once: trimmed, and a TypeError
 * (which does not repeat it) for an empty one or one with another character than printable ASCII.
 */
export function bearerToken(token: string): Interceptor {
  const checked = checkedToken(token);
  if (checked === undefined) throw new TypeError("the token is empty");
  const header = `Bearer ${checked}`;
  return (next) => async (request) => {
    request.header.set("authorization", header);
    return next(request);
  };
}

/** Sends `x-actor: <actor>` with every call; `actor` is one checkedActor() returned. */
function actorHeader(actor: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("x-actor", actor);
    return next(request);
  };
}

export interface LearningEngineClient {
  training: Client<typeof TrainingService>;
  fisher: Client<typeof FisherService>;
  adapters: Client<typeof AdapterService>;
  lora: Client<typeof LoraControlService>;
  feedback: Client<typeof FeedbackService>;
  datasets: Client<typeof DatasetService>;
  drift: Client<typeof DriftService>;
  evaluations: Client<typeof EvaluationService>;
  pipelines: Client<typeof PipelineService>;
  online: Client<typeof OnlineLearningService>;
  preparation: Client<typeof DataPreparationService>;
}

/**
 * The interceptors a transport needs for `options`: the bearer token and the actor, each if any is left once
 * trimmed (a TypeError for one a header cannot carry, as bearerToken says).
 */
export function interceptorsFor(options: ClientOptions): Interceptor[] {
  const token = options.token === undefined ? undefined : checkedToken(options.token);
  const actor = options.actor === undefined ? undefined : checkedActor(options.actor);
  return [...(token === undefined ? [] : [bearerToken(token)]), ...(actor === undefined ? [] : [actorHeader(actor)])];
}

/**
 * Every service's client over one transport; leaving a `for await` loop over a stream cancels its call, and a lost
 * connection fails a call with Code.Unavailable (transportFailure).
 */
export function clientsOver(transport: Transport): LearningEngineClient {
  return {
    training: streamsEndWithTheirLoop(TrainingService, transport),
    fisher: streamsEndWithTheirLoop(FisherService, transport),
    adapters: streamsEndWithTheirLoop(AdapterService, transport),
    lora: streamsEndWithTheirLoop(LoraControlService, transport),
    feedback: streamsEndWithTheirLoop(FeedbackService, transport),
    datasets: streamsEndWithTheirLoop(DatasetService, transport),
    drift: streamsEndWithTheirLoop(DriftService, transport),
    evaluations: streamsEndWithTheirLoop(EvaluationService, transport),
    pipelines: streamsEndWithTheirLoop(PipelineService, transport),
    online: streamsEndWithTheirLoop(OnlineLearningService, transport),
    preparation: streamsEndWithTheirLoop(DataPreparationService, transport),
  };
}

type UnaryCall = (request: unknown, options?: CallOptions) => Promise<unknown>;
type StreamingCall = (request: unknown, options?: CallOptions) => AsyncIterable<unknown>;

/**
 * connect-es's client for `service`, with the calls of its methods that stream responses (server-streaming and
 * bidi) cancelled when their loop is left, as the Python SDK cancels a call whose iteration stops. connect-es's
 * response streams have no return(): `break`, `return` or `throw` in a `for await` loop over one would leave the
 * call open (the server streaming to no one, a Node process unable to exit) until its `signal` aborts. Every
 * method's errors go through transportFailure.
 */
function streamsEndWithTheirLoop<T extends DescService>(service: T, transport: Transport): Client<T> {
  const client: Record<string, unknown> = { ...createClient(service, transport) };
  for (const method of service.methods) {
    if (method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming") {
      client[method.localName] = cancelledWhenLeft(client[method.localName] as StreamingCall);
    } else {
      client[method.localName] = lostConnectionsUnavailable(client[method.localName] as UnaryCall);
    }
  }
  return client as Client<T>;
}

/**
 * `error` as the caller should read it: a ConnectError with Code.Unavailable, the original as its `cause`, for a
 * call that failed because its connection did (the network cut, the server gone): connect-node reports that as
 * Code.Canceled (the HTTP/2 stream reset with CANCEL when its session closes) or Code.Aborted (ECONNRESET), the
 * codes of the caller's own abort and of a server's refusal, which no "retry on Unavailable" loop retries. grpc-core
 * clients (the Python SDK's) report it as UNAVAILABLE. A TLS handshake that failed on a certificate (the server's
 * did not verify, or the server refused the client's), which connect-node reports as Code.Internal, is
 * Code.Unavailable too, as grpc-core reports it, with a message that says which certificate and what to check
 * (tlsFailure; isTlsFailure tells it from a lost connection). Only such failures are changed: one the caller's
 * `signal` (`aborted`) caused stays Canceled, and a status the server sent (grpc-status in the trailers, ABORTED
 * with its ErrorInfo or CANCELLED) stays as it is; so does every other error.
 */
function transportFailure(error: unknown, aborted: boolean): unknown {
  if (aborted || !(error instanceof ConnectError)) return error;
  if (error.metadata.has("grpc-status") || error.details.length > 0) return error;   // the server's status
  const tls = tlsFailure(error);
  if (tls !== undefined) return tls;
  if (error.code !== Code.Canceled && error.code !== Code.Aborted) return error;
  return new ConnectError(`the connection was lost: ${error.rawMessage}`, Code.Unavailable, error.metadata,
                          undefined, error);
}

/** A unary or client-streaming `call` whose lost connection fails it with Code.Unavailable (transportFailure). */
function lostConnectionsUnavailable(call: UnaryCall): UnaryCall {
  return async (request, options) => {
    try {
      return await call(request, options);
    } catch (error) {
      throw transportFailure(error, options?.signal?.aborted === true);
    }
  };
}

/**
 * `call` with a signal of its own for each call, aborted by the caller's `signal` (whose listener goes with the
 * call) and by the response iterator's return() (what a `for await` loop calls when it is left early) or throw().
 * A lost connection fails it with Code.Unavailable (transportFailure), one its signal aborted stays Canceled.
 */
function cancelledWhenLeft(call: StreamingCall): StreamingCall {
  return (request, options) => {
    const controller = new AbortController();
    const signal = options?.signal;
    const forward = () => controller.abort(signal?.reason);
    if (signal?.aborted) forward();
    else signal?.addEventListener("abort", forward);
    let ended = false;
    const end = () => {
      ended = true;
      signal?.removeEventListener("abort", forward);
    };
    const cancel = () => {
      if (!ended) controller.abort();
      end();
    };
    const responses = call(request, { ...options, signal: controller.signal })[Symbol.asyncIterator]();
    const iterator: AsyncIterator<unknown> = {
      async next() {
        if (ended) return { done: true, value: undefined };
        try {
          const result = await responses.next();
          if (result.done) end();
          return result;
        } catch (error) {
          end();
          throw transportFailure(error, controller.signal.aborted || signal?.aborted === true);
        }
      },
      async return(value?: unknown) {
        cancel();
        return { done: true, value };
      },
      // As an async generator's: the error goes back to the caller, and the stream is done.
      async throw(error?: unknown) {
        cancel();
        throw error;
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  };
}

/** The ErrorInfo domain of every Learning Engine error. */
export const ERROR_DOMAIN = "learning-engine";

const REASON_PREFIX = "ERROR_REASON_";
const REASONS: ReadonlyMap<string, ErrorReason> = new Map(
  ErrorReasonSchema.values
    .filter((value) => value.number !== ErrorReason.UNSPECIFIED)
    .map((value) => [value.name.slice(REASON_PREFIX.length), value.number as ErrorReason]),
);

/** The catalogue value of a wire reason ("JOB_NOT_FOUND" -> ErrorReason.JOB_NOT_FOUND); UNSPECIFIED if unknown. */
export function errorReason(reason: string): ErrorReason {
  return REASONS.get(reason) ?? ErrorReason.UNSPECIFIED;
}

export interface ErrorInfo {
  /** The stable, machine-readable reason as sent, e.g. "JOB_NOT_FOUND". */
  reason: string;
  /** The reason in the catalogue (learning.v1.ErrorReason); UNSPECIFIED for one newer than this client. */
  errorReason: ErrorReason;
  domain: string;
  metadata: Record<string, string>;
}

/**
 * The details of one type in `error`: a google.rpc.Status message (a finished job's `error`, a watch event's
 * JobError.status) or else a call's error (a ConnectError, or anything ConnectError.from wraps).
 */
function detailsOf<Desc extends DescMessage>(error: unknown, schema: Desc): MessageShape<Desc>[] {
  if (isMessage(error, StatusSchema)) {
    return error.details.flatMap((any) => {
      const detail = anyUnpack(any, schema);
      return detail === undefined ? [] : [detail];
    });
  }
  return ConnectError.from(error).findDetails(schema);
}

/**
 * The google.rpc.ErrorInfo every server error carries (the Learning Engine one if there are several): of a call's
 * error (a ConnectError), or of a failed or cancelled job's (`job.error`, JobError.status: a google.rpc.Status).
 * undefined for an error without one (e.g. a job with no error: `errorInfo(job.error)`).
 */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  const infos = detailsOf(error, ErrorInfoSchema);
  const info = infos.find((i) => i.domain === ERROR_DOMAIN) ?? infos[0];
  if (info === undefined) return undefined;
  return {
    reason: info.reason,
    errorReason: errorReason(info.reason),
    domain: info.domain,
    metadata: { ...info.metadata },
  };
}

export interface FieldViolation {
  /** Dotted path of the bad field, e.g. "spec.jsonl.path" or "line[3].messages". */
  field: string;
  description: string;
}

/**
 * The google.rpc.BadRequest field violations of a bad-input error (empty for other errors): a call's, or a job's
 * google.rpc.Status as errorInfo reads it.
 */
export function fieldViolations(error: unknown): FieldViolation[] {
  return detailsOf(error, BadRequestSchema)
    .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
}
