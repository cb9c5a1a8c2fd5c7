/**
 * What the Node entry refuses when a client is created (the `tls` option) and what a resuming watch refuses when
 * it is called (its options), and a resuming watch of a server that is not there: refused connections, re-opened
 * `reconnectAttempts` times with growing pauses, then Unavailable. No server needed: the TLS server and the broken
 * streams are in tests/clients/test_typescript_tls.py and test_typescript_resume.py.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";

import { createGrpcTransport } from "@connectrpc/connect-node";

import * as web from "../src/web.js";
import {
  Code,
  ConnectError,
  type WatchResume,
  createLearningEngineClient,
  watchLoraStatus,
  watchTrainingJob,
} from "../src/index.js";

const PEM = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";   // refused before it is read

function refused(options: Parameters<typeof createLearningEngineClient>[0], message: RegExp) {
  assert.throws(() => createLearningEngineClient(options),
                (error: unknown) => error instanceof TypeError && message.test(error.message));
}

test("a client certificate without its key, or the reverse, is a TypeError", () => {
  refused({ baseUrl: "https://localhost:50051", tls: { clientCertificate: PEM } },
          /^mTLS needs a client certificate and its key: clientCertificate without clientKey$/);
  refused({ baseUrl: "https://localhost:50051", tls: { rootCertificates: PEM, clientKey: Buffer.from(PEM) } },
          /^mTLS needs a client certificate and its key: clientKey without clientCertificate$/);
});

test("TLS options with an http:// baseUrl (plaintext), no scheme, or a transport of one's own are a TypeError", () => {
  refused({ baseUrl: "http://localhost:50051", tls: { rootCertificates: PEM } }, /https:\/\/.*plaintext/);
  refused({ baseUrl: "http://localhost:50051", tls: {} }, /https:\/\/.*plaintext/);
  refused({ baseUrl: "localhost:50051", tls: {} }, /needs an https:\/\/ baseUrl/);
  const transport = createGrpcTransport({ baseUrl: "https://localhost:50051" });
  refused({ baseUrl: "https://localhost:50051", transport, tls: { serverNameOverride: "localhost" } },
          /transport of your own/);
});

test("empty, mistyped or unknown TLS fields are a TypeError", () => {
  const url = "https://localhost:50051";
  refused({ baseUrl: url, tls: { rootCertificates: "" } }, /tls\.rootCertificates is empty/);
  refused({ baseUrl: url, tls: { rootCertificates: new Uint8Array() } }, /tls\.rootCertificates is empty/);
  refused({ baseUrl: url, tls: { rootCertificates: 42 as unknown as string } }, /PEM text .* not number/);
  refused({ baseUrl: url, tls: { serverNameOverride: "" } }, /serverNameOverride/);
  // Node's names for them (ca, cert, key) are not these: silently unused, they would leave mTLS off.
  refused({ baseUrl: url, tls: { cert: PEM, key: PEM } as object }, /no field cert, key: its fields are rootCertif/);
});

test("without tls, or with tls and https://, the client is created (no connection yet)", () => {
  assert.ok(createLearningEngineClient({ baseUrl: "http://localhost:50051" }).training);
  assert.ok(createLearningEngineClient({ baseUrl: "https://localhost:50051", tls: {} }).training);
  assert.ok(createLearningEngineClient({ baseUrl: "https://localhost:50051",
                                         tls: { serverNameOverride: "learning.example" } }).training);
  // @ts-expect-error: the browser entry has no `tls` (the browser owns TLS there)
  const browser: web.ClientOptions = { baseUrl: "https://localhost:8080", tls: {} };
  assert.ok(browser);
});

test("a resuming watch's options out of range are refused when it is called, before any call", () => {
  const client = createLearningEngineClient({ baseUrl: "http://127.0.0.1:9" });
  const name = `trainingJobs/${"0".repeat(32)}`;
  assert.throws(() => watchTrainingJob(client, name, { reconnectAttempts: -1 }), RangeError);
  assert.throws(() => watchTrainingJob(client, name, { reconnectAttempts: 1.5 }), RangeError);
  assert.throws(() => watchTrainingJob(client, name, { reconnectDelayMs: Number.NaN }), RangeError);
  assert.throws(() => watchTrainingJob(client, name, { afterSequence: 3 as unknown as bigint }), TypeError);
  assert.throws(() => watchTrainingJob(client, name, { afterSequence: -1n }), TypeError);
  assert.throws(() => watchLoraStatus(client, { reconnectAttempts: -1 }), RangeError);
});

/** A loopback port nothing listens on: connections to it are refused (ECONNREFUSED). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test("a server that is not there: reconnectAttempts re-opens with growing pauses, then Unavailable", async () => {
  const client = createLearningEngineClient({ baseUrl: `http://127.0.0.1:${await closedPort()}` });
  const resumes: WatchResume[] = [];
  const started = performance.now();
  const watch = watchTrainingJob(client, `trainingJobs/${"0".repeat(32)}`, {
    afterSequence: 7n, reconnectAttempts: 3, reconnectDelayMs: 50, onResume: (r) => resumes.push(r) });
  await assert.rejects(async () => { for await (const _ of watch) { /* nothing comes */ } },
                       (error: unknown) => error instanceof ConnectError && error.code === Code.Unavailable);
  const elapsed = performance.now() - started;
  assert.deepEqual(resumes.map((r) => [r.attempt, r.afterSequence, r.error.code]),
                   [[1, 7n, Code.Unavailable], [2, 7n, Code.Unavailable], [3, 7n, Code.Unavailable]]);
  assert.ok(elapsed >= 50 + 100 + 150 - 5, `paused 50, 100 and 150 ms: ${elapsed} ms in all`);
});

test("reconnectAttempts 0 never re-opens", async () => {
  const client = createLearningEngineClient({ baseUrl: `http://127.0.0.1:${await closedPort()}` });
  let resumed = 0;
  await assert.rejects(async () => {
    for await (const _ of watchLoraStatus(client, { reconnectAttempts: 0, onResume: () => resumed++ })) { /* */ }
  }, (error: unknown) => error instanceof ConnectError && error.code === Code.Unavailable);
  assert.equal(resumed, 0);
});
