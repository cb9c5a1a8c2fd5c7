/**
 * A finished job's own error (TrainingJob.error, and JobError.status in its watch events: a google.rpc.Status with
 * the ErrorInfo in its details), read through the package as a call's error is, and converted to JSON with the
 * package's `registry`, against a live server (LEARNING_ENGINE_URL). Run by
 * tests/clients/test_typescript_client.py. The job fails for certain, whatever else the server runs: every
 * completion of its dataset starts beyond max_seq_length, which only tokenising finds (DATASET_NO_TARGET_TOKENS).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { toJsonString } from "@bufbuild/protobuf";

import {
  Code,
  ErrorReason,
  JobState,
  TrainingJobSchema,
  createLearningEngineClient,
  errorInfo,
  registry,
  type Status,
  type TrainingJob,
} from "../src/index.js";

const baseUrl = process.env.LEARNING_ENGINE_URL;
if (!baseUrl) throw new Error("set LEARNING_ENGINE_URL to a running server, e.g. http://127.0.0.1:50051");
const client = createLearningEngineClient({ baseUrl, token: process.env.LEARNING_ENGINE_TOKEN });

const DATASET = "datasets/ts-job-errors";
const LONG_PROMPT = Array(200).fill("word").join(" ");
const DATA = new TextEncoder().encode(
  [0, 1, 2, 3].map((i) => `${JSON.stringify({ prompt: `${LONG_PROMPT} ${i}`, completion: " ok" })}\n`).join(""));

/** A training job that fails while it prepares, watched to its end: the job and its watch stream's errors (once). */
let failed: Promise<{ job: TrainingJob; eventErrors: (Status | undefined)[] }> | undefined;
const failedJob = () => failed ??= (async () => {
  async function* upload() {
    yield { part: { case: "metadata" as const, value: {
      name: DATASET, sha256: createHash("sha256").update(DATA).digest("hex"), sizeBytes: BigInt(DATA.length) } } };
    yield { part: { case: "chunk" as const, value: DATA } };
  }
  await client.datasets.uploadDataset(upload());
  const { trainingJob } = await client.training.createTrainingJob({
    spec: {
      dataset: { case: "datasetName", value: DATASET },
      hyperparameters: { epochs: 1, batchSize: 4, learningRate: 5e-3, maxSeqLength: 16, seed: 7n },
    },
  });
  const eventErrors: (Status | undefined)[] = [];
  for await (const m of client.training.watchTrainingJob({ name: trainingJob!.name })) {
    if (m.update.case === "event" && m.update.value.kind.case === "error") {
      eventErrors.push(m.update.value.kind.value.status);
    }
  }
  const { trainingJob: done } = await client.training.getTrainingJob({ name: trainingJob!.name });
  assert.equal(done?.state, JobState.FAILED);
  assert.equal(done?.error?.code, Code.InvalidArgument);
  assert.deepEqual(done?.error?.details.map((d) => d.typeUrl), ["type.googleapis.com/google.rpc.ErrorInfo"]);
  return { job: done!, eventErrors };
})();

test("errorInfo reads a failed job's error (its google.rpc.Status), as it reads a call's", async () => {
  const { job, eventErrors } = await failedJob();
  const info = errorInfo(job.error);
  assert.equal(info?.reason, "DATASET_NO_TARGET_TOKENS");
  assert.equal(info?.errorReason, ErrorReason.DATASET_NO_TARGET_TOKENS);
  assert.equal(info?.domain, "learning-engine");
  // The watch stream's JobError carries the same status.
  assert.equal(eventErrors.length, 1);
  assert.deepEqual(errorInfo(eventErrors[0]), info);
});

test("a job with an error converts to JSON with the package's registry (google.rpc types registered)", async () => {
  const { job } = await failedJob();
  assert.throws(() => toJsonString(TrainingJobSchema, job), /google\.rpc\.ErrorInfo/);   // why it is needed
  const json = JSON.parse(toJsonString(TrainingJobSchema, job, { registry }));
  assert.equal(json.state, "JOB_STATE_FAILED");
  assert.equal(json.error.code, Code.InvalidArgument);
  assert.equal(json.error.details.length, 1);
  assert.equal(json.error.details[0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
  assert.equal(json.error.details[0].reason, "DATASET_NO_TARGET_TOKENS");
  assert.equal(json.error.details[0].domain, "learning-engine");
});
