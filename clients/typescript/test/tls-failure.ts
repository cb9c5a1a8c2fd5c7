/**
 * A TLS handshake that fails on a certificate, as a call reports it (core.ts's transportFailure, tls-failure.ts):
 * connect-node's error for it (Code.Internal, the Node error with its code as the cause) becomes Code.Unavailable
 * with a message that says which certificate and what to check, the original kept as its cause, and isTlsFailure;
 * a resuming watch ends at once on it. Over a transport that fails each call with a given error, for the codes a
 * live server cannot easily produce (an expired or self-signed certificate, a TLS alert). No server needed, but not
 * part of `npm test` (whose count of tests tests/clients/test_typescript_client.py checks): run by
 * tests/clients/test_typescript_tls.py, next to test/tls.ts and its live cases (an unknown CA, another name, an
 * mTLS server's refusal).
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import type { Transport } from "@connectrpc/connect";

import * as web from "../src/web.js";
import {
  Code,
  ConnectError,
  type WatchResume,
  createLearningEngineClient,
  isTlsFailure,
  watchTrainingJob,
} from "../src/index.js";

/** A Node error as Node's TLS raises it: its `code`, e.g. CERT_HAS_EXPIRED. */
function nodeError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** connect-node's error for a failed connection: Code.Internal, unless it knows better, and the Node error. */
function transportError(cause: Error, code = Code.Internal): ConnectError {
  return new ConnectError(cause.message, code, undefined, undefined, cause);
}

/** A transport whose every call (unary or stream) fails with `error`. */
function failing(error: unknown): Transport {
  return {
    async unary() { throw error; },
    async stream() { throw error; },
  };
}

async function callError(error: unknown, entry: "node" | "web" = "node"): Promise<ConnectError> {
  const create = entry === "node" ? createLearningEngineClient : web.createLearningEngineClient;
  const client = create({ baseUrl: "https://localhost:50051", transport: failing(error) });
  try {
    await client.adapters.listAdapters({});
  } catch (e) {
    assert.ok(e instanceof ConnectError, `not a ConnectError: ${e}`);
    return e;
  }
  throw new Error("the call succeeded");
}

const SERVER_CERTIFICATE: [string, string, RegExp][] = [
  ["CERT_HAS_EXPIRED", "certificate has expired", /outside its validity period: check its dates and the clock/],
  ["CERT_NOT_YET_VALID", "certificate is not yet valid", /outside its validity period/],
  ["DEPTH_ZERO_SELF_SIGNED_CERT", "self-signed certificate", /check that tls\.rootCertificates holds the CA/],
  ["SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain", /tls\.rootCertificates/],
  ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "unable to get local issuer certificate", /tls\.rootCertificates/],
  ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate", /tls\.rootCertificates/],
  ["ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames",
   /does not name the host .*tls\.serverNameOverride/],
];

test("a server certificate that does not verify: Unavailable, the reason, what to check, the cause kept", async () => {
  for (const [code, message, advice] of SERVER_CERTIFICATE) {
    const cause = transportError(nodeError(code, message));
    const error = await callError(cause);
    assert.equal(error.code, Code.Unavailable, code);
    assert.equal(error.rawMessage.startsWith(`TLS handshake failed: the server's certificate did not verify `
                                             + `(${code}: ${message}); `), true, error.rawMessage);
    assert.match(error.rawMessage, advice);
    assert.equal(error.cause, cause, "the transport's error is the cause");
    assert.ok(isTlsFailure(error) && isTlsFailure(cause), code);
  }
});

test("a TLS alert of a server that refuses the client's certificate: Unavailable, check the client certificate",
     async () => {
  for (const code of ["ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
                      "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE"]) {
    const error = await callError(transportError(nodeError(code, "ssl3_read_bytes:alert")));
    assert.equal(error.code, Code.Unavailable, code);
    assert.match(error.rawMessage, /^TLS handshake failed: the server refused the client's certificate/);
    assert.match(error.rawMessage, /check tls\.clientCertificate and tls\.clientKey$/);
    assert.ok(isTlsFailure(error), code);
  }
});

test("other failures are no TLS failure and stay as they were", async () => {
  // A lost connection (ECONNRESET: Aborted), which a watch re-opens after: Unavailable, not TLS.
  const reset = await callError(transportError(nodeError("ECONNRESET", "read ECONNRESET"), Code.Aborted));
  assert.equal(reset.code, Code.Unavailable);
  assert.match(reset.rawMessage, /^the connection was lost/);
  assert.ok(!isTlsFailure(reset));
  // Another TLS error than a certificate's (a plaintext server on the port): as connect-node reports it.
  const plain = transportError(nodeError("ERR_SSL_WRONG_VERSION_NUMBER", "wrong version number"));
  assert.equal(await callError(plain), plain);
  // A status the server sent is the server's, whatever its causes hold.
  const sent = new ConnectError("no", Code.Unavailable, new Headers({ "grpc-status": "14" }), undefined,
                                nodeError("CERT_HAS_EXPIRED", "certificate has expired"));
  assert.equal(await callError(sent), sent);
  assert.ok(!isTlsFailure(new Error("certificate")) && !isTlsFailure(undefined) && !isTlsFailure("CERT_REVOKED"));
});

test("the web entry maps them the same way (a transport of one's own that reports Node's codes)", async () => {
  const error = await callError(transportError(nodeError("CERT_HAS_EXPIRED", "certificate has expired")), "web");
  assert.equal(error.code, Code.Unavailable);
  assert.ok(isTlsFailure(error));
});

test("a resuming watch ends at once on a TLS failure, and re-opens after a lost connection", async () => {
  const name = `trainingJobs/${"0".repeat(32)}`;
  const run = async (error: Error) => {
    const client = createLearningEngineClient({ baseUrl: "https://localhost:50051", transport: failing(error) });
    const resumes: WatchResume[] = [];
    try {
      for await (const _ of watchTrainingJob(client, name, { reconnectAttempts: 2, reconnectDelayMs: 1,
                                                             onResume: (r) => resumes.push(r) })) { /* none */ }
    } catch (e) {
      assert.ok(e instanceof ConnectError && e.code === Code.Unavailable, `${e}`);
      return { error: e, resumes: resumes.length };
    }
    throw new Error("the watch ended without an error");
  };
  const tls = await run(transportError(nodeError("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in chain")));
  assert.equal(tls.resumes, 0, "not re-opened");
  assert.ok(isTlsFailure(tls.error));
  const refused = await run(transportError(nodeError("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "alert 116")));
  assert.equal(refused.resumes, 0, "not re-opened");
  const lost = await run(transportError(nodeError("ECONNRESET", "read ECONNRESET"), Code.Aborted));
  assert.equal(lost.resumes, 2, "re-opened reconnectAttempts times");
  assert.ok(!isTlsFailure(lost.error));
});
