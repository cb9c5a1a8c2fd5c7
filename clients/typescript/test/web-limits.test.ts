/**
 * docs/browsers.md, "Limits": the RPCs a browser (gRPC-Web over fetch) cannot call are every RPC with a client
 * stream, bidirectional ones included (OnlineLearningService.StreamExamples), and the unary ones named instead
 * work. No server needed: connect-web refuses such a call before sending anything.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as pkg from "../src/web.js";
import { OnlineLearningService, createLearningEngineClient } from "../src/web.js";

const limits = readFileSync(new URL("../../../docs/browsers.md", import.meta.url), "utf8").split("Limits:")[1] ?? "";
const services = Object.values(pkg).filter(
  (v): v is typeof OnlineLearningService => typeof v === "object" && v !== null && (v as any).kind === "service");
const methods = services.flatMap((s) => s.methods);

test("every RPC a browser cannot call is named in docs/browsers.md's limits, and the unary alternatives", () => {
  assert.equal(services.length, 11);
  const clientStreams = methods
    .filter((m) => m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming").map((m) => m.name);
  assert.deepEqual([...clientStreams].sort(), ["ImportAdapter", "StreamExamples", "StreamFeedback", "UploadDataset"]);
  assert.deepEqual(clientStreams.filter((name) => !limits.includes(`\`${name}\``)), []);
  for (const alternative of ["SubmitFeedback", "AddExamples"]) {
    assert.equal(methods.find((m) => m.name === alternative)?.methodKind, "unary", alternative);
    assert.ok(limits.includes(`\`${alternative}\``), alternative);
  }
});

test("StreamExamples (bidirectional) cannot be called over gRPC-Web", async () => {
  assert.equal(OnlineLearningService.method.streamExamples.methodKind, "bidi_streaming");
  const client = createLearningEngineClient({ baseUrl: "http://127.0.0.1:9" });
  async function* examples() { yield { name: "onlineSessions/notes", examples: [] }; }
  await assert.rejects(async () => { for await (const _ of client.online.streamExamples(examples())) { /* */ } },
                       /streaming request bodies/);
});
