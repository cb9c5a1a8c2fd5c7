/**
 * The Node entry's `tls` option against a live TLS server, with a throwaway CA, server and client certificates
 * (tests/fixtures/certs.py): CERTS holds ca.pem, client.pem and client.key, OTHER_CERTS the same from another CA.
 * Not part of `npm test`: tests/clients/test_typescript_tls.py starts the server and runs it, once per TLS_MODE:
 *   tls    TLS_PORT: a TLS server (tls_cert_file, tls_key_file)
 *   mtls   TLS_PORT: a server that also requires a client certificate its CA signed (tls_client_ca_file)
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { Code, ConnectError, createLearningEngineClient, type TlsOptions } from "../src/index.js";

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

if (mode === "tls") {
  const url = `https://localhost:${port}`;

  test("trusting the server's CA (PEM text or bytes), the TLS server answers", async () => {
    assert.equal(await adapters(url, { rootCertificates: ca }), 0);
    assert.equal(await adapters(url, { rootCertificates: bytes(certs, "ca.pem") }), 0);
    assert.equal(await adapters(url, { rootCertificates: new Uint8Array(bytes(certs, "ca.pem")) }), 0);
  });

  test("without the CA, or with another one, the server's certificate is refused", async () => {
    for (const tls of [undefined, { rootCertificates: text(other, "ca.pem") }]) {
      const error = await refused(url, tls);
      assert.match(story(error), /certificate/i, story(error));
    }
  });

  test("plaintext (http://) against the TLS port fails", async () => {
    const error = await refused(`http://localhost:${port}`);
    assert.equal(error.code, Code.Unavailable, story(error));
  });

  test("serverNameOverride: the name the certificate is checked against", async () => {
    // The certificate names localhost and 127.0.0.1: by IP with the DNS name works, and another name is refused.
    assert.equal(await adapters(`https://127.0.0.1:${port}`,
                                { rootCertificates: ca, serverNameOverride: "localhost" }), 0);
    const error = await refused(url, { rootCertificates: ca, serverNameOverride: "elsewhere.example" });
    assert.match(story(error), /elsewhere\.example/, story(error));
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

  test("mTLS: without a client certificate, or with one another CA signed, the server refuses", async () => {
    const others = { rootCertificates: ca, clientCertificate: text(other, "client.pem"),
                     clientKey: text(other, "client.key") };
    for (const tls of [{ rootCertificates: ca }, others]) {
      const error = await refused(url, tls);
      // As grpc-core reports it to the Python SDK (Unavailable), or a TLS alert (Internal).
      assert.ok(error.code === Code.Unavailable || error.code === Code.Internal, story(error));
    }
  });
}
