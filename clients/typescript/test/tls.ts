/**
 * The Node entry's `tls` option against a live TLS server, with a throwaway CA, server and client certificates
 * (tests/fixtures/certs.py): CERTS holds ca.pem, client.pem and client.key, OTHER_CERTS the same from another CA.
 * A certificate that does not verify, or that the server refuses, fails a call (and ends a resuming watch at once)
 * with Code.Unavailable, a message that names the certificate and the option to check, and isTlsFailure; a broken
 * TLS connection (cut through a TCP proxy in this process) is still a lost one, which a watch resumes after.
 * Not part of `npm test`: tests/clients/test_typescript_tls.py starts the server and runs it, once per TLS_MODE:
 *   tls    TLS_PORT: a TLS server (tls_cert_file, tls_key_file)
 *   mtls   TLS_PORT: a server that also requires a client certificate its CA signed (tls_client_ca_file)
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";

import {
  Code,
  ConnectError,
  createLearningEngineClient,
  isTlsFailure,
  type TlsOptions,
  type WatchResume,
  watchLoraStatus,
} from "../src/index.js";
import { Proxy } from "./proxy.js";

const mode = process.env.TLS_MODE;
const port = process.env.TLS_PORT;
const certs = process.env.CERTS;
const other = process.env.OTHER_CERTS;
if (!(mode === "tls" || mode === "mtls") || !port || !certs || !other) {
  throw new Error("usage: TLS_MODE=tls|mtls TLS_PORT=port CERTS=dir OTHER_CERTS=dir node --import tsx --test "
                  + "test/tls.ts");
}
const text = (dir: string, file: string) => readFileSync(join(dir, file), "utf8");
const bytes = (dir: string, file: string) => readFileSync(join(dir, file));   // a Buffer
const ca = text(certs, "ca.pem");

async function adapters(baseUrl: string, tls?: TlsOptions): Promise<number> {
  const client = createLearningEngineClient({ baseUrl, tls });
  return (await client.adapters.listAdapters({})).adapters.length;
}

async function refused(baseUrl: string, tls?: TlsOptions): Promise<ConnectError> {
  try {
    await adapters(baseUrl, tls);
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${error}`);
    return error;
  }
  throw new Error("the call succeeded");
}

/** The messages of `error` and its causes, to find the TLS alert or the verification failure in. */
function story(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error; e instanceof Error && parts.length < 5; e = e.cause) parts.push(e.message);
  return parts.join(" <- ");
}

/** The Node error codes in `error`'s causes (the transport's error kept under the client's). */
function codes(error: unknown): unknown[] {
  const found: unknown[] = [];
  for (let e: unknown = error; e instanceof Error && found.length < 5; e = e.cause) {
    if ("code" in e && typeof e.code === "string") found.push(e.code);
  }
  return found;
}

/** A TLS certificate failure as the client reports it: Unavailable, isTlsFailure, the message, the cause kept. */
function assertTlsFailure(error: ConnectError, message: RegExp, cause: string) {
  assert.equal(error.code, Code.Unavailable, story(error));
  assert.ok(isTlsFailure(error), story(error));
  assert.match(error.rawMessage, /^TLS handshake failed: /, story(error));
  assert.match(error.rawMessage, message, story(error));
  assert.ok(codes(error).includes(cause), `${cause} not in the causes: ${story(error)}`);
}

/**
 * A resuming watch whose every open fails with a TLS certificate failure: it must end at once with that failure.
 * A re-open aborts the watch (Canceled), so a watch that would retry fails here at once, not ~2 min later.
 */
async function watchEndsAtOnce(tls: TlsOptions | undefined): Promise<ConnectError> {
  const client = createLearningEngineClient({ baseUrl: `https://localhost:${port}`, tls });
  const resumes: WatchResume[] = [];
  const stop = new AbortController();
  try {
    for await (const _ of watchLoraStatus(client, { signal: stop.signal, reconnectDelayMs: 10,
                                                    onResume: (r) => { resumes.push(r); stop.abort(); } })) {
      throw new Error("the watch delivered a status");
    }
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${error}`);
    assert.deepEqual(resumes.map((r) => story(r.error)), [], "the watch re-opened after a TLS failure");
    return error;
  }
  throw new Error("the watch ended without an error");
}

const proxies: Proxy[] = [];
after(async () => {
  for (const proxy of proxies) await proxy.stop().catch(() => {});
});

if (mode === "tls") {
  const url = `https://localhost:${port}`;

  test("trusting the server's CA (PEM text or bytes), the TLS server answers", async () => {
    assert.equal(await adapters(url, { rootCertificates: ca }), 0);
    assert.equal(await adapters(url, { rootCertificates: bytes(certs, "ca.pem") }), 0);
    assert.equal(await adapters(url, { rootCertificates: new Uint8Array(bytes(certs, "ca.pem")) }), 0);
  });

  // Node's codes: the server's certificate with no CA to check it against (Node's bundled roots do not hold the
  // test CA), and one another CA's key did not sign.
  const untrusted: [TlsOptions | undefined, string][] = [[undefined, "UNABLE_TO_VERIFY_LEAF_SIGNATURE"],
                                                          [{ rootCertificates: text(other, "ca.pem") },
                                                           "CERT_SIGNATURE_FAILURE"]];

  test("without the CA, or with another one, the server's certificate is refused: Unavailable, TLS", async () => {
    for (const [tls, cause] of untrusted) {
      const error = await refused(url, tls);
      assertTlsFailure(error, /the server's certificate did not verify .*check that tls\.rootCertificates holds/,
                       cause);
    }
  });

  test("a stream, or a resuming watch, whose server certificate does not verify ends at once", async () => {
    for (const [tls, cause] of untrusted) {
      const client = createLearningEngineClient({ baseUrl: url, tls });
      const error = await (async () => {
        try {
          for await (const _ of client.lora.watchLoraStatus({})) break;
        } catch (e) {
          assert.ok(e instanceof ConnectError, `not a ConnectError: ${e}`);
          return e;
        }
        throw new Error("the stream delivered a status");
      })();
      assertTlsFailure(error, /the server's certificate did not verify/, cause);
      assertTlsFailure(await watchEndsAtOnce(tls), /the server's certificate did not verify/, cause);
    }
  });

  test("plaintext (http://) against the TLS port fails: Unavailable, a lost connection, not TLS", async () => {
    const error = await refused(`http://localhost:${port}`);
    assert.equal(error.code, Code.Unavailable, story(error));
    assert.ok(!isTlsFailure(error), story(error));
  });

  test("serverNameOverride: the name the certificate is checked against", async () => {
    // The certificate names localhost and 127.0.0.1: by IP with the DNS name works, and another name is refused.
    assert.equal(await adapters(`https://127.0.0.1:${port}`,
                                { rootCertificates: ca, serverNameOverride: "localhost" }), 0);
    const error = await refused(url, { rootCertificates: ca, serverNameOverride: "elsewhere.example" });
    assertTlsFailure(error, /elsewhere\.example.*tls\.serverNameOverride/, "ERR_TLS_CERT_ALTNAME_INVALID");
  });

  test("PEMs that do not load, or a key that is not the certificate's: a TypeError when the client is created", () => {
    const cases: [TlsOptions, RegExp][] = [
      [{ rootCertificates: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n" },
       /rootCertificates: certificate 1 of 1 does not load/],
      [{ rootCertificates: text(certs, "client.key") }, /rootCertificates holds no PEM certificate/],
      [{ clientCertificate: text(certs, "client.pem"), clientKey: text(other, "client.key") },
       /the client certificate or its key does not load: .*key values mismatch/],
      [{ clientCertificate: text(certs, "client.key"), clientKey: text(certs, "client.key") },
       /the client certificate or its key does not load/],
    ];
    for (const [tls, message] of cases) {
      assert.throws(() => createLearningEngineClient({ baseUrl: url, tls }),
                    (error: unknown) => error instanceof TypeError && message.test(error.message));
    }
  });
} else {
  const url = `https://localhost:${port}`;
  const mine = { rootCertificates: ca, clientCertificate: text(certs, "client.pem"),
                 clientKey: bytes(certs, "client.key") };

  test("mTLS: with a client certificate its CA signed, the server answers", async () => {
    assert.equal(await adapters(url, mine), 0);
    // A watch (a server stream) as well: the serving status's first message.
    const client = createLearningEngineClient({ baseUrl: url, tls: mine });
    for await (const { status } of client.lora.watchLoraStatus({})) {
      assert.ok(status);
      break;
    }
  });

  // The server (grpc-core, TLS 1.3) closes the connection once it has checked the client's certificate, without
  // an alert: the client sees it closed right after the handshake, before any HTTP/2.
  const others = { rootCertificates: ca, clientCertificate: text(other, "client.pem"),
                   clientKey: text(other, "client.key") };
  const refusals: [TlsOptions, RegExp][] = [[{ rootCertificates: ca }, /no client certificate was given/],
                                            [others, /the client certificate given was probably not accepted/]];

  test("mTLS: without a client certificate, or with one another CA signed, the server refuses: TLS", async () => {
    for (const [tls, given] of refusals) {
      const error = await refused(url, tls);
      assertTlsFailure(error, /the server refused the client's certificate or its lack of one/,
                       "CLIENT_CERTIFICATE_REFUSED");
      assert.match(error.rawMessage, given, story(error));
      assert.match(error.rawMessage, /check tls\.clientCertificate and tls\.clientKey/, story(error));
      assert.match(story(error), /http\/2 stream closed|closed the connection/, story(error));   // the cause kept
    }
  });

  test("mTLS: a resuming watch the server refuses ends at once, not after its budget of re-opens", async () => {
    for (const [tls, given] of refusals) {
      const error = await watchEndsAtOnce(tls);
      assertTlsFailure(error, given, "CLIENT_CERTIFICATE_REFUSED");
    }
  });

  test("mTLS: a broken TLS connection is still a lost one: the watch resumes", async () => {
    const proxy = await new Proxy(Number(port)).start();
    proxies.push(proxy);
    // "localhost" is the name the certificate holds; the proxy listens on 127.0.0.1, which it holds too.
    const client = createLearningEngineClient({ baseUrl: `https://127.0.0.1:${proxy.port}`, tls: mine });
    const resumes: WatchResume[] = [];
    let statuses = 0;
    // The first open's connection is closed before the TLS handshake (a server going away), the second is cut
    // under the open watch after its first status: both re-open, and a status comes after each.
    proxy.mode = "close at once";
    const onResume = (r: WatchResume) => {
      resumes.push(r);
      proxy.mode = "forward";
    };
    for await (const { status } of watchLoraStatus(client, { reconnectDelayMs: 10, onResume })) {
      assert.ok(status);
      statuses += 1;
      if (statuses === 1) proxy.cut();
      if (statuses === 2) break;
    }
    assert.equal(resumes.length, 2, resumes.map((r) => story(r.error)).join("; "));
    for (const { error } of resumes) {
      assert.equal(error.code, Code.Unavailable, story(error));
      assert.ok(!isTlsFailure(error), story(error));
    }
  });
}
