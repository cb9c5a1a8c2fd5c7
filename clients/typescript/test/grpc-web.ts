/**
 * The client's browser entry (src/web.ts), as a browser app uses it: gRPC-Web over fetch to Envoy's grpc_web
 * filter in front of a live server with bearer tokens (GRPC_WEB_URL, LEARNING_ENGINE_TOKEN). Not part of
 * `npm test`: tests/clients/test_grpc_web.py starts the server and Envoy (deploy/envoy/envoy.yaml) and runs it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError, JobState, createLearningEngineClient, errorInfo } from "../src/web.js";

const baseUrl = process.env.GRPC_WEB_URL;
const token = process.env.LEARNING_ENGINE_TOKEN;
if (!baseUrl || !token) throw new Error("set GRPC_WEB_URL (Envoy's gRPC-Web listener) and LEARNING_ENGINE_TOKEN");

function webClient(withToken?: string) {
  return createLearningEngineClient({ baseUrl: baseUrl!, token: withToken }); // the browser entry: gRPC-Web
}

const client = webClient(token);

async function failure(call: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await call();
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

test("a unary call answers through gRPC-Web", async () => {
  const { adapters } = await client.adapters.listAdapters({});
  assert.deepEqual(adapters, []);
});

test("errors keep their code and google.rpc details (grpc-status-details-bin)", async () => {
  const error = await failure(() => client.training.getTrainingJob({ name: `trainingJobs/${"0".repeat(32)}` }));
  assert.equal(error.code, Code.NotFound);
  assert.equal(errorInfo(error)?.reason, "JOB_NOT_FOUND");
});

test("without the bearer token the server refuses", async () => {
  const error = await failure(() => webClient().adapters.listAdapters({}));
  assert.equal(error.code, Code.Unauthenticated);
  assert.equal(errorInfo(error)?.reason, "UNAUTHENTICATED");
});

test("a server stream (watching a job to its end) arrives message by message", async () => {
  const { trainingJob } = await client.training.createTrainingJob({
    spec: {
      dataset: { case: "jsonl", value: { path: "capitals.jsonl" } },
      hyperparameters: { epochs: 1, batchSize: 8, learningRate: 5e-3, maxSeqLength: 64, seed: 3n },
    },
  });
  assert.ok(trainingJob);
  const states: JobState[] = [];
  let steps = 0;
  for await (const message of client.training.watchTrainingJob({ name: trainingJob.name })) {
    if (message.update.case !== "event") continue;
    const kind = message.update.value.kind;
    if (kind.case === "stateChange") states.push(kind.value.state);
    if (kind.case === "stepMetrics") steps += 1;
  }
  assert.deepEqual(states, [JobState.QUEUED, JobState.PREPARING, JobState.RUNNING, JobState.SUCCEEDED]);
  assert.equal(steps, 3); // 24 examples, batch 8, 1 epoch
});
