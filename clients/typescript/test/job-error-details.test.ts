/**
 * errorInfo and fieldViolations on a google.rpc.Status message (a job's `error`, a watch event's JobError.status),
 * as on a call's error, and the package's google.rpc exports and `registry`. No server needed.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";

import * as web from "../src/web.js";
import {
  BadRequestSchema,
  Code,
  ConnectError,
  ErrorInfoSchema,
  ErrorReason,
  StatusSchema,
  TrainingJobEventSchema,
  TrainingJobSchema,
  errorInfo,
  fieldViolations,
  registry,
} from "../src/index.js";

const invalid = create(StatusSchema, {
  code: Code.InvalidArgument,
  message: "bad dataset",
  details: [
    anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "OTHER", domain: "elsewhere" })),
    anyPack(ErrorInfoSchema, create(ErrorInfoSchema, {
      reason: "DATASET_INVALID", domain: "learning-engine", metadata: { line: "3" } })),
    anyPack(BadRequestSchema, create(BadRequestSchema, {
      fieldViolations: [{ field: "line[3].messages", description: "must not be empty" }] })),
  ],
});

test("errorInfo and fieldViolations read a google.rpc.Status message's details", () => {
  assert.deepEqual(errorInfo(invalid), {
    reason: "DATASET_INVALID", errorReason: ErrorReason.DATASET_INVALID, domain: "learning-engine",
    metadata: { line: "3" },
  });
  assert.deepEqual(fieldViolations(invalid), [{ field: "line[3].messages", description: "must not be empty" }]);
  assert.equal(web.errorInfo(invalid)?.errorReason, ErrorReason.DATASET_INVALID);   // the browser entry's too
  const event = create(TrainingJobEventSchema, { kind: { case: "error", value: { status: invalid } } });
  assert.equal(event.kind.case === "error" && errorInfo(event.kind.value.status)?.reason, "DATASET_INVALID");
});

test("a status without details, or no status (a job without an error), has no ErrorInfo", () => {
  assert.equal(errorInfo(create(StatusSchema, { code: Code.Internal, message: "boom" })), undefined);
  assert.deepEqual(fieldViolations(create(StatusSchema)), []);
  const job = create(TrainingJobSchema, { name: "trainingJobs/x" });
  assert.equal(errorInfo(job.error), undefined);
  assert.deepEqual(fieldViolations(job.error), []);
});

test("a call's error reads as before", () => {
  const details = [{ desc: ErrorInfoSchema, value: { reason: "JOB_NOT_FOUND", domain: "learning-engine" } }];
  const error = new ConnectError("no such job", Code.NotFound, undefined, details);
  assert.equal(errorInfo(error)?.errorReason, ErrorReason.JOB_NOT_FOUND);
  assert.deepEqual(fieldViolations(error), []);
  assert.equal(errorInfo(new Error("not a call's")), undefined);
});

test("the registry holds the google.rpc messages a job's error carries, for JSON both ways", () => {
  for (const name of ["google.rpc.Status", "google.rpc.ErrorInfo", "google.rpc.BadRequest"]) {
    assert.ok(registry.getMessage(name), name);
  }
  assert.equal(web.registry, registry);
  const job = create(TrainingJobSchema, { name: "trainingJobs/x", error: invalid });
  const json = toJsonString(TrainingJobSchema, job, { registry });
  assert.deepEqual(JSON.parse(json).error.details.map((d: { "@type": string }) => d["@type"]), [
    "type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.ErrorInfo",
    "type.googleapis.com/google.rpc.BadRequest",
  ]);
  const back = fromJsonString(TrainingJobSchema, json, { registry });
  assert.equal(errorInfo(back.error)?.reason, "DATASET_INVALID");
  assert.deepEqual(errorInfo(back.error), errorInfo(invalid));
  assert.deepEqual(fieldViolations(back.error), fieldViolations(invalid));
});
