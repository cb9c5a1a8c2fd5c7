/**
 * The self-resuming watches (src/watch.ts: resumableWatch and watchTrainingJob, ...) against a live server
 * (UPSTREAM_PORT, plaintext), through a TCP proxy in this process whose connections a test cuts under an open
 * stream (closed, or reset), and which it can stop (connections refused) or turn into a black hole (accepted, never
 * answered). Not part of `npm test`: tests/clients/test_typescript_resume.py starts the server and runs it.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { equals } from "@bufbuild/protobuf";

import {
  Code,
  ConnectError,
  JobState,
  TrainingJobEventSchema,
  type LearningEngineClient,
  type TrainingJobEvent,
  type WatchResume,
  createLearningEngineClient,
  watchEvaluationJob,
  watchFisherJob,
  watchLoraStatus,
  watchOnlineSession,
  watchPipelineRun,
  watchPreparationJob,
  watchTrainingJob,
} from "../src/index.js";
import { Proxy } from "./proxy.js";

const upstream = Number(process.env.UPSTREAM_PORT);
if (!upstream) throw new Error("set UPSTREAM_PORT to a running server's port");
const direct = createLearningEngineClient({ baseUrl: `http://127.0.0.1:${upstream}` });

const proxies: Proxy[] = [];
async function proxied(): Promise<{ proxy: Proxy; client: LearningEngineClient }> {
  const proxy = await new Proxy(upstream).start();
  proxies.push(proxy);
  return { proxy, client: createLearningEngineClient({ baseUrl: `http://127.0.0.1:${proxy.port}` }) };
}
after(async () => {
  for (const proxy of proxies) await proxy.stop().catch(() => {});
});

async function startJob(): Promise<string> {
  const { trainingJob } = await direct.training.createTrainingJob({
    spec: {
      dataset: { case: "jsonl", value: { path: "capitals.jsonl" } },
      hyperparameters: { epochs: 1, batchSize: 4, learningRate: 5e-3, maxSeqLength: 64, seed: 7n },
    },
  });
  assert.ok(trainingJob);
  return trainingJob.name;
}

/** Every event of a job that ended, from a plain watch of it (no proxy, no resume) to compare with. */
async function allEvents(name: string): Promise<TrainingJobEvent[]> {
  const events: TrainingJobEvent[] = [];
  for await (const m of direct.training.watchTrainingJob({ name })) {
    if (m.update.case === "event") events.push(m.update.value);
  }
  const { trainingJob } = await direct.training.getTrainingJob({ name });
  assert.equal(trainingJob?.state, JobState.SUCCEEDED);
  return events;
}

function assertSameEvents(seen: TrainingJobEvent[], all: TrainingJobEvent[]) {
  assert.deepEqual(seen.map((e) => e.sequence), all.map((e) => e.sequence), "each event once, in order");
  seen.forEach((event, i) => assert.ok(equals(TrainingJobEventSchema, event, all[i]), `event ${event.sequence}`));
}

async function failure(run: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${error}`);
    return error;
  }
  throw new Error("it did not fail");
}

for (const how of ["close", "reset"] as const) {
  test(`a stream broken under the watch (connection ${how}) resumes: every event once, in order`, async () => {
    const { proxy, client } = await proxied();
    const name = await startJob();
    const resumes: (WatchResume & { delivered: bigint | undefined })[] = [];
    const events: TrainingJobEvent[] = [];
    const snapshots: JobState[] = [];
    const onResume = (r: WatchResume) => resumes.push({ ...r, delivered: events.at(-1)?.sequence });
    for await (const m of watchTrainingJob(client, name, { onResume })) {
      if (m.update.case === "snapshot") snapshots.push(m.update.value.state);
      if (m.update.case !== "event") continue;
      events.push(m.update.value);
      if (events.length === 1) proxy.cut(how);   // under the open stream, at its first event
    }
    const all = await allEvents(name);
    assert.ok(all.length > 2, `the job had ${all.length} events`);
    assertSameEvents(events, all);
    // One break, one re-open after the last event delivered before it (the first, or one more the client had
    // received already); its fresh snapshot was delivered too.
    assert.equal(resumes.length, 1);
    assert.equal(resumes[0].attempt, 1);
    assert.equal(resumes[0].error.code, Code.Unavailable);
    assert.ok(resumes[0].delivered !== undefined && resumes[0].delivered < all.at(-1)!.sequence, "broken midway");
    assert.equal(resumes[0].afterSequence, resumes[0].delivered);
    assert.equal(snapshots.length, 2);
  });
}

test("afterSequence: a watch picks up after the last sequence another delivered", async () => {
  const name = await startJob();
  const all = await allEvents(name);
  const from = all[2].sequence;
  const messages = [];
  for await (const m of watchTrainingJob(direct, name, { afterSequence: from })) messages.push(m);
  assert.equal(messages[0].update.case, "snapshot");
  assert.equal(messages.filter((m) => m.update.case === "snapshot").length, 1);
  const events = messages.flatMap((m) => (m.update.case === "event" ? [m.update.value] : []));
  assertSameEvents(events, all.slice(3));
});

test("each message starts the count again: two breaks survive with reconnectAttempts 1", async () => {
  const { proxy, client } = await proxied();
  const name = await startJob();
  const resumes: [number, bigint, bigint | undefined][] = [];
  const events: TrainingJobEvent[] = [];
  const watch = watchTrainingJob(client, name, { reconnectAttempts: 1, reconnectDelayMs: 50,
    onResume: (r) => resumes.push([r.attempt, r.afterSequence, events.at(-1)?.sequence]) });
  let cuts = 0;
  for await (const m of watch) {
    if (m.update.case !== "event") continue;
    events.push(m.update.value);
    // The first event, then the first one after the re-open: with a message between them.
    if (resumes.length === cuts && cuts < 2) {
      proxy.cut();
      cuts += 1;
    }
  }
  const all = await allEvents(name);
  assertSameEvents(events, all);
  assert.equal(resumes.length, 2, "two breaks, each resumed on the first re-open");
  for (const [attempt, afterSequence, delivered] of resumes) {
    assert.equal(attempt, 1);
    assert.equal(afterSequence, delivered);
  }
  assert.ok(resumes[1][1] < all.at(-1)!.sequence, "the second break came before the job's last event");
});

test("after reconnectAttempts failed re-opens in a row, the last Unavailable is thrown", async () => {
  const { proxy, client } = await proxied();
  const name = await startJob();
  const resumes: WatchResume[] = [];
  const events: bigint[] = [];
  let stoppedAt = 0;
  const error = await failure(async () => {
    for await (const m of watchTrainingJob(client, name, { reconnectAttempts: 3, reconnectDelayMs: 40,
                                                            onResume: (r) => resumes.push(r) })) {
      if (m.update.case !== "event") continue;
      events.push(m.update.value.sequence);
      if (events.length === 1) {
        await proxy.stop();   // the server is gone for good: every re-open is refused
        stoppedAt = performance.now();
      }
    }
  });
  const elapsed = performance.now() - stoppedAt;
  assert.equal(error.code, Code.Unavailable);
  assert.deepEqual(resumes.map((r) => r.attempt), [1, 2, 3]);
  assert.ok(resumes.every((r) => r.afterSequence === events.at(-1) && r.error.code === Code.Unavailable));
  assert.ok(elapsed >= 40 + 80 + 120 - 5, `paused n × 40 ms before each re-open: ${elapsed} ms in all`);
  await direct.training.cancelTrainingJob({ name }).catch(() => {});
});

test("a re-opened stream that does not answer counts as a failed re-open", async () => {
  const { proxy, client } = await proxied();
  const name = await startJob();
  const resumes: WatchResume[] = [];
  let cutAt = 0;
  const error = await failure(async () => {
    for await (const m of watchTrainingJob(client, name, { reconnectAttempts: 1, reconnectDelayMs: 10,
                                                            onResume: (r) => resumes.push(r) })) {
      if (m.update.case === "event") {
        proxy.mode = "black hole";   // the re-open connects, and nothing answers
        proxy.cut();
        cutAt = performance.now();
      }
    }
  });
  const elapsed = performance.now() - cutAt;
  assert.equal(error.code, Code.Unavailable);
  assert.match(error.message, /the re-opened watch did not answer within 1s/);
  assert.equal(resumes.length, 1);
  assert.ok(elapsed >= 1000 && elapsed < 4000, `abandoned after 1 s (the shortest wait): ${elapsed} ms`);
  await direct.training.cancelTrainingJob({ name }).catch(() => {});
});

test("the caller's signal ends the watch during a pause, with Canceled", async () => {
  const { proxy, client } = await proxied();
  const name = await startJob();
  const caller = new AbortController();
  let abortedAt = 0;
  const error = await failure(async () => {
    const onResume = () => setTimeout(() => { abortedAt = performance.now(); caller.abort(); }, 100);
    for await (const m of watchTrainingJob(client, name, { signal: caller.signal, reconnectDelayMs: 60_000,
                                                            onResume })) {
      if (m.update.case === "event") await proxy.stop();
    }
  });
  assert.equal(error.code, Code.Canceled);
  assert.ok(abortedAt > 0 && performance.now() - abortedAt < 1000, "ended at once, not after the 60 s pause");
  await direct.training.cancelTrainingJob({ name }).catch(() => {});
});

test("the caller's signal ends an open watch with Canceled, and it is not re-opened", async () => {
  const name = await startJob();
  const caller = new AbortController();
  let resumed = 0;
  let messages = 0;
  const error = await failure(async () => {
    for await (const _ of watchTrainingJob(direct, name, { signal: caller.signal, onResume: () => resumed++ })) {
      messages += 1;
      caller.abort();
    }
  });
  assert.equal(error.code, Code.Canceled);
  assert.equal(messages, 1);
  assert.equal(resumed, 0);
  await direct.training.cancelTrainingJob({ name }).catch(() => {});
});

test("another error than Unavailable ends the watch at once, for every watch helper", async () => {
  const missing = "0".repeat(32);
  const watches = {
    training: (o: object) => watchTrainingJob(direct, `trainingJobs/${missing}`, o),
    fisher: (o: object) => watchFisherJob(direct, `fisherJobs/${missing}`, o),
    evaluation: (o: object) => watchEvaluationJob(direct, `evaluationJobs/${missing}`, o),
    preparation: (o: object) => watchPreparationJob(direct, `preparationJobs/${missing}`, o),
    pipelineRun: (o: object) => watchPipelineRun(direct, `pipelineRuns/${missing}`, o),
    onlineSession: (o: object) => watchOnlineSession(direct, "onlineSessions/no-such-session", o),
  };
  const codes: Record<string, string> = {};
  for (const [kind, watch] of Object.entries(watches)) {
    let resumed = 0;
    const error = await failure(async () => {
      for await (const _ of watch({ onResume: () => resumed++ })) { /* nothing comes */ }
    });
    assert.equal(resumed, 0, kind);
    codes[kind] = Code[error.code];
  }
  assert.deepEqual(codes, { training: "NotFound", fisher: "NotFound", evaluation: "NotFound",
                            preparation: "NotFound", pipelineRun: "NotFound", onlineSession: "NotFound" });
});

test("watchLoraStatus: re-opened after a break, with the status as it is then", async () => {
  const { proxy, client } = await proxied();
  const resumes: WatchResume[] = [];
  const aliases: (string | undefined)[] = [];
  for await (const { status } of watchLoraStatus(client, { onResume: (r) => resumes.push(r) })) {
    aliases.push(status?.alias);
    if (aliases.length === 1) proxy.cut();
    else break;   // the re-opened stream's first status
  }
  assert.equal(aliases.length, 2);
  assert.equal(aliases[1], aliases[0]);
  assert.deepEqual(resumes.map((r) => [r.attempt, r.afterSequence, Code[r.error.code]]), [[1, 0n, "Unavailable"]]);
});
