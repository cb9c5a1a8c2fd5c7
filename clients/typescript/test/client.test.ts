/**
 * Against a live server (LEARNING_ENGINE_URL, e.g. http://127.0.0.1:50051): create a training job on the
 * sample dataset, watch its stream to the end, list adapters, and read a typed error.
 * Run by tests/clients/test_typescript_client.py, which starts the server.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Code,
  ConnectError,
  ErrorReason,
  JobState,
  createLearningEngineClient,
  errorInfo,
  errorReason,
  fieldViolations,
} from "../src/index.js";

const baseUrl = process.env.LEARNING_ENGINE_URL;
if (!baseUrl) throw new Error("set LEARNING_ENGINE_URL to a running server, e.g. http://127.0.0.1:50051");
const client = createLearningEngineClient({ baseUrl, token: process.env.LEARNING_ENGINE_TOKEN });

test("creates a job, watches it to the end, and lists the adapter it published", async () => {
  const { trainingJob } = await client.training.createTrainingJob({
    spec: {
      dataset: { case: "jsonl", value: { path: "capitals.jsonl" } },
      hyperparameters: { epochs: 1, batchSize: 4, learningRate: 5e-3, maxSeqLength: 128, seed: 7n },
    },
    requestId: `ts-${Date.now()}`,
  });
  assert.ok(trainingJob, "CreateTrainingJob returned the job");
  assert.ok(trainingJob.name.startsWith("trainingJobs/"));

  const sequences: bigint[] = [];
  const states: JobState[] = [];
  let snapshots = 0;
  let steps = 0;
  for await (const message of client.training.watchTrainingJob({ name: trainingJob.name })) {
    const update = message.update;
    if (update.case === "snapshot") {
      snapshots += 1;
    } else if (update.case === "event") {
      sequences.push(update.value.sequence);
      const kind = update.value.kind;
      if (kind.case === "stateChange") states.push(kind.value.state);
      if (kind.case === "stepMetrics") {
        steps += 1;
        assert.ok(kind.value.loss > 0 && kind.value.tokensPerSecond > 0);
      }
    }
  }
  assert.equal(snapshots, 1);
  assert.deepEqual(sequences, sequences.map((_, i) => BigInt(i + 1)), "events arrive in sequence, none missing");
  assert.deepEqual(states, [JobState.QUEUED, JobState.PREPARING, JobState.RUNNING, JobState.SUCCEEDED]);
  assert.equal(steps, 6); // 24 examples, batch 4, 1 epoch

  const done = await client.training.getTrainingJob({ name: trainingJob.name });
  const version = done.trainingJob?.outputAdapterVersion;
  assert.ok(version, "the job published an adapter");

  const { adapters } = await client.adapters.listAdapters({});
  assert.ok(adapters.some((a) => a.version === version), `ListAdapters includes ${version}`);
});

test("errors carry a status code and the ErrorInfo reason", async () => {
  await assert.rejects(
    client.training.getTrainingJob({ name: `trainingJobs/${"0".repeat(32)}` }),
    (error: unknown) => {
      assert.ok(error instanceof ConnectError);
      assert.equal(error.code, Code.NotFound);
      const info = errorInfo(error);
      assert.equal(info?.reason, "JOB_NOT_FOUND");
      assert.equal(info?.errorReason, ErrorReason.JOB_NOT_FOUND);
      assert.equal(info?.domain, "learning-engine");
      assert.deepEqual(fieldViolations(error), []);
      return true;
    },
  );
  await assert.rejects(
    client.training.createTrainingJob({ spec: { dataset: { case: "jsonl", value: { path: "missing.jsonl" } } } }),
    (error: unknown) => {
      assert.equal(ConnectError.from(error).code, Code.InvalidArgument);
      assert.equal(errorInfo(error)?.errorReason, ErrorReason.DATASET_NOT_FOUND);
      assert.deepEqual(fieldViolations(error).map((v) => v.field), ["spec.jsonl.path"]);
      return true;
    },
  );
});

test("reasons map to the catalogue, and unknown ones to UNSPECIFIED", () => {
  assert.equal(errorReason("RATE_LIMITED"), ErrorReason.RATE_LIMITED);
  assert.equal(errorReason("A_REASON_FROM_A_NEWER_SERVER"), ErrorReason.UNSPECIFIED);
  assert.equal(errorReason("UNSPECIFIED"), ErrorReason.UNSPECIFIED);
  assert.equal(errorReason(""), ErrorReason.UNSPECIFIED);
});
