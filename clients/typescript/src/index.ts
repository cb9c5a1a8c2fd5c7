/**
 * Learning Engine TypeScript client for Node: the learning.v1 services over gRPC (HTTP/2) with
 * connect-node's transport, TLS and mTLS included (`tls`). Browsers import `@learning-engine/client/web` instead
 * (gRPC-Web; the browser owns TLS there).
 */
import { X509Certificate } from "node:crypto";
import type { ClientHttp2Stream, Http2Session, SecureClientSessionOptions } from "node:http2";
import { type TLSSocket, createSecureContext } from "node:tls";

import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import {
  type ClientOptions as SharedClientOptions,
  type LearningEngineClient,
  clientsOver,
  interceptorsFor,
} from "./core.js";
import { CLIENT_CERTIFICATE_REFUSED } from "./tls-failure.js";

export * from "./core.js";

/** PEM text, or its bytes as read from a file (a Buffer is a Uint8Array). */
export type Pem = string | Uint8Array;

/**
 * TLS material for an `https://` baseUrl, as the Python SDK's TlsConfig (root_certificates, client_certificate,
 * client_key, server_name_override). Without `tls`, an `https://` baseUrl trusts Node's bundled root CAs.
 */
export interface TlsOptions {
  /**
   * PEM certificate(s) of the CA(s) that signed the server's certificate: a private CA, a self-signed server. They
   * replace the default roots (Node's bundled Mozilla CAs, or the system's with `--use-system-ca`), as gRPC's
   * root_certificates replace the system's; unset keeps the defaults.
   */
  rootCertificates?: Pem;
  /** PEM certificate (chain) the client presents, for a server that requires one (mTLS); needs `clientKey`. */
  clientCertificate?: Pem;
  /** PEM private key of `clientCertificate` (unencrypted); needs `clientCertificate`. */
  clientKey?: Pem;
  /**
   * The name the server's certificate is checked against (and sent as SNI) instead of the baseUrl's host, as gRPC's
   * ssl_target_name_override: e.g. a baseUrl with an IP address and a certificate for a DNS name.
   */
  serverNameOverride?: string;
}

export interface ClientOptions extends SharedClientOptions {
  /**
   * TLS for an `https://` baseUrl: a CA to trust, a client certificate and key (mTLS). Checked when the client is
   * created, with a TypeError: a certificate without its key (or the reverse), an empty or unreadable PEM, a
   * certificate and key that do not match, an unknown field, `tls` with an `http://` baseUrl (it would be
   * plaintext, silently) or with a `transport` of your own (which has its own TLS). A handshake that then fails on
   * a certificate (the server's does not verify, or the server refuses the client's) fails the call with
   * Code.Unavailable, a message that says which and what to check, and isTlsFailure (tls-failure.ts).
   */
  tls?: TlsOptions;
}

const TLS_FIELDS: readonly (keyof TlsOptions)[] = ["rootCertificates", "clientCertificate", "clientKey",
                                                   "serverNameOverride"];

/** `pem` as Node's TLS options take it (a string or a Buffer); a TypeError for anything else, or nothing. */
function checkedPem(field: string, pem: unknown): string | Buffer | undefined {
  if (pem === undefined) return undefined;
  if (typeof pem === "string") {
    if (pem.trim() === "") throw new TypeError(`tls.${field} is empty`);
    return pem;
  }
  if (pem instanceof Uint8Array) {
    if (pem.byteLength === 0) throw new TypeError(`tls.${field} is empty`);
    return Buffer.from(pem.buffer, pem.byteOffset, pem.byteLength);
  }
  throw new TypeError(`tls.${field} must be PEM text (a string) or its bytes (a Uint8Array), not ${typeof pem}`);
}

const PEM_CERTIFICATE = /-----BEGIN (TRUSTED )?CERTIFICATE-----[\s\S]*?-----END \1?CERTIFICATE-----/g;

/**
 * A TypeError unless `ca` holds PEM certificates, each of which parses: Node skips what does not parse, so a wrong
 * file (DER, a key, a truncated copy) would trust no CA at all and fail every connection with a verification error.
 */
function checkedCaCertificates(ca: string | Buffer): void {
  const blocks = [...ca.toString("latin1").matchAll(PEM_CERTIFICATE)];
  if (blocks.length === 0) {
    throw new TypeError("tls.rootCertificates holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
  blocks.forEach(([block, trusted], index) => {
    if (trusted) return;   // OpenSSL's TRUSTED CERTIFICATE form, which X509Certificate does not read (Node's TLS does)
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new TypeError(`tls.rootCertificates: certificate ${index + 1} of ${blocks.length} does not load: `
                          + `${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  });
}

/**
 * The http2.connect() options (ca, cert, key, servername) for `options.tls`, undefined without it; a TypeError for
 * TLS options a connection could not use, as ClientOptions.tls says.
 */
function tlsNodeOptions(options: ClientOptions): SecureClientSessionOptions | undefined {
  const tls = options.tls;
  if (tls === undefined) return undefined;
  if (typeof tls !== "object" || tls === null) throw new TypeError(`tls must be an object, not ${tls}`);
  const unknown = Object.keys(tls).filter((key) => !(TLS_FIELDS as readonly string[]).includes(key));
  if (unknown.length > 0) {
    throw new TypeError(`tls has no field ${unknown.join(", ")}: its fields are ${TLS_FIELDS.join(", ")}`);
  }
  if (options.transport !== undefined) {
    throw new TypeError("tls is not used with a transport of your own: configure TLS on that transport");
  }
  const scheme = URL.canParse(options.baseUrl) ? new URL(options.baseUrl).protocol : undefined;
  if (scheme === "http:") {
    throw new TypeError("tls needs an https:// baseUrl: over http:// the connection is plaintext, the TLS options "
                        + "unused");
  }
  if (scheme !== "https:") throw new TypeError("tls needs an https:// baseUrl");
  const ca = checkedPem("rootCertificates", tls.rootCertificates);
  const cert = checkedPem("clientCertificate", tls.clientCertificate);
  const key = checkedPem("clientKey", tls.clientKey);
  // As the Python SDK's TlsConfig: one without the other is refused (gRPC core would abort the process).
  if ((cert === undefined) !== (key === undefined)) {
    const [given, missing] = cert !== undefined ? ["clientCertificate", "clientKey"]
                                                : ["clientKey", "clientCertificate"];
    throw new TypeError(`mTLS needs a client certificate and its key: ${given} without ${missing}`);
  }
  const servername = tls.serverNameOverride;
  if (servername !== undefined && (typeof servername !== "string" || servername === "")) {
    throw new TypeError("tls.serverNameOverride must be a non-empty string");
  }
  if (ca !== undefined) checkedCaCertificates(ca);
  if (cert !== undefined) {
    try {
      createSecureContext({ cert, key });   // both parse, and the key is the certificate's
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new TypeError(`tls: the client certificate or its key does not load: ${reason}`, { cause: error });
    }
  }
  return {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert, key }),
    ...(servername === undefined ? {} : { servername }),
  };
}

/**
 * connect-node's HTTP/2 connection manager (the one createGrpcTransport makes, with the same options), which tells
 * a server's refusal of the client's certificate from a lost connection. Under TLS 1.3 the server checks the
 * client's certificate after the client has finished its handshake, and a gRPC server that refuses it (grpc-core's:
 * the Learning Engine's with tls_client_ca_file) closes the connection without an alert: connect-node then sees
 * what a dropped connection looks like (the stream reset with CANCEL). A connection that the server closes right
 * after the handshake, before a byte of HTTP/2 (a gRPC server sends its SETTINGS at once), is destroyed here with
 * an error whose code is CLIENT_CERTIFICATE_REFUSED, which its calls fail with; core.ts's transportFailure makes
 * it the TLS failure it is (tls-failure.ts). A server that sends the alert (TLS 1.2, or another TLS 1.3 server)
 * fails the call with the alert's code, which needs nothing of this.
 */
class CertificateRefusalSessionManager extends Http2SessionManager {
  private readonly watched = new WeakSet<Http2Session>();

  constructor(url: string, nodeOptions: SecureClientSessionOptions | undefined,
              private readonly presentsCertificate: boolean) {
    super(url, {}, nodeOptions);
  }

  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<ClientHttp2Stream> {
    const stream = await super.request(...args);
    this.watch(stream.session);
    return stream;
  }

  /** Destroy `session` with CLIENT_CERTIFICATE_REFUSED if the server ends its TLS connection before any HTTP/2. */
  private watch(session: Http2Session | undefined) {
    if (session === undefined || this.watched.has(session)) return;
    this.watched.add(session);
    let socket: TLSSocket;
    try {
      socket = session.socket as TLSSocket;   // the session's proxy; `once` and `bytesRead` reach the socket
    } catch {
      return;   // already gone
    }
    if (!socket.encrypted) return;   // plaintext (h2c): no handshake, no certificate
    socket.once("end", () => {
      // The server's FIN (or close_notify); a session this client closed or destroyed is not the server's doing.
      if (session.closed || session.destroyed || socket.bytesRead > 0) return;
      // Under TLS 1.2 a refused client certificate is an alert, which fails the call with its own code: a bare
      // close there is a dropped connection (a TLS proxy whose backend is down), left to be retried.
      if (socket.getProtocol() !== "TLSv1.3") return;
      const given = this.presentsCertificate ? "the client certificate given was probably not accepted"
                                             : "probably because no client certificate was given";
      const refusal = new Error("the server closed the connection right after the TLS handshake, before any "
                                + `HTTP/2: ${given} (or a TLS proxy in front of it has no server to pass it to)`);
      session.destroy(Object.assign(refusal, { code: CLIENT_CERTIFICATE_REFUSED }));
    });
  }
}

export function createLearningEngineClient(options: ClientOptions): LearningEngineClient {
  const nodeOptions = tlsNodeOptions(options);
  if (options.transport !== undefined) return clientsOver(options.transport);
  const sessionManager = new CertificateRefusalSessionManager(options.baseUrl, nodeOptions,
                                                              nodeOptions?.cert !== undefined);
  return clientsOver(createGrpcTransport({ baseUrl: options.baseUrl, interceptors: interceptorsFor(options),
                                           sessionManager }));
}
