/**
 * TLS failures as the caller should read them: a connection that failed its TLS handshake because of a certificate
 * (the server's did not verify, or the server refused the client's) fails a call with Code.Unavailable and a
 * message that says so and what to check, the transport's error as its `cause`. Such a failure does not go away by
 * itself: isTlsFailure tells it from a lost connection, and the resuming watches (watch.ts) do not re-open after it.
 * Shared by both entries; nothing here imports Node's modules (in a browser, connect-web never reports these codes).
 */
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The codes of a server certificate that did not verify: OpenSSL's X509 verification errors as Node names them
 * (`error.code`, the "X509 certificate error codes" of Node's tls documentation) and Node's own for a certificate
 * that does not name the host (checkServerIdentity).
 */
const SERVER_CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_GET_CRL", "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE", "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY", "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE", "CERT_NOT_YET_VALID", "CERT_HAS_EXPIRED", "CRL_NOT_YET_VALID", "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD", "ERROR_IN_CERT_NOT_AFTER_FIELD", "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD", "DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "CERT_CHAIN_TOO_LONG", "CERT_REVOKED",
  "INVALID_CA", "PATH_LENGTH_EXCEEDED", "INVALID_PURPOSE", "CERT_UNTRUSTED", "CERT_REJECTED", "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID", "ERR_TLS_CERT_ALTNAME_FORMAT",
]);

/** The subset of them that says the certificate does not name the host the client connected to. */
const NAME_CODES: ReadonlySet<string> = new Set(["HOSTNAME_MISMATCH", "ERR_TLS_CERT_ALTNAME_INVALID",
                                                 "ERR_TLS_CERT_ALTNAME_FORMAT"]);
/** The subset that says the certificate is outside its validity period (or the client's clock is). */
const VALIDITY_CODES: ReadonlySet<string> = new Set(["CERT_NOT_YET_VALID", "CERT_HAS_EXPIRED",
                                                     "ERROR_IN_CERT_NOT_BEFORE_FIELD",
                                                     "ERROR_IN_CERT_NOT_AFTER_FIELD"]);

/**
 * The TLS alerts (as Node names OpenSSL's errors for them) of a server that refused the client's certificate, or
 * its lack of one, during the handshake: TLS 1.2, or a TLS 1.3 server that sends the alert.
 */
const CLIENT_CERTIFICATE_ALERT = new RegExp(
  "^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:BAD_CERTIFICATE|UNSUPPORTED_CERTIFICATE|CERTIFICATE_REVOKED|"
  + "CERTIFICATE_EXPIRED|CERTIFICATE_UNKNOWN|UNKNOWN_CA|ACCESS_DENIED|CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE)$");

/**
 * The `code` of the Node entry's error for a TLS 1.3 server that closed the connection right after the handshake,
 * before a byte of HTTP/2: how a gRPC server that requires a client certificate (the Learning Engine's
 * `tls_client_ca_file`) refuses one it did not get, or did not sign, without an alert.
 */
export const CLIENT_CERTIFICATE_REFUSED = "CLIENT_CERTIFICATE_REFUSED";

type TlsFailureKind = "server certificate" | "client certificate";

/** Which certificate a TLS failure is about, and the error with the code, in `error` or its causes; or undefined. */
function tlsCause(error: unknown): { kind: TlsFailureKind; code: string; cause: Error } | undefined {
  const seen = new Set<unknown>();
  for (let e: unknown = error; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code !== "string") continue;
    if (SERVER_CERTIFICATE_CODES.has(code)) return { kind: "server certificate", code, cause: e };
    if (code === CLIENT_CERTIFICATE_REFUSED || CLIENT_CERTIFICATE_ALERT.test(code)) {
      return { kind: "client certificate", code, cause: e };
    }
  }
  return undefined;
}

/**
 * Whether `error` (a call's, or anything with a `cause` chain) is a TLS handshake that failed on a certificate:
 * the server's did not verify (an unknown CA, a self-signed certificate, another name, expired, ...) or the server
 * refused the client's (mTLS). Such a call fails with Code.Unavailable, as gRPC reports a connection it could not
 * make, but retrying it cannot help until the certificates or the `tls` options change: a loop that retries
 * Unavailable should stop on it, as the package's resuming watches do.
 */
export function isTlsFailure(error: unknown): boolean {
  return tlsCause(error) !== undefined;
}

/**
 * The error a call should fail with for `error`, a transport's error (a ConnectError the server did not send) whose
 * causes hold a TLS certificate failure: Code.Unavailable (the connection could not be made), a message that says
 * which certificate and what to check, `error` as the cause; undefined for any other error.
 */
export function tlsFailure(error: ConnectError): ConnectError | undefined {
  const found = tlsCause(error);
  if (found === undefined) return undefined;
  const { kind, code, cause } = found;
  const reason = cause.message.startsWith(code) ? cause.message : `${code}: ${cause.message}`;
  let advice: string;
  if (kind === "client certificate") {
    advice = "the server requires a client certificate signed by a CA it trusts (mTLS): check tls.clientCertificate "
             + "and tls.clientKey";
  } else if (NAME_CODES.has(code)) {
    advice = "the certificate does not name the host connected to: check the baseUrl's host, or set "
             + "tls.serverNameOverride to a name the certificate holds";
  } else if (VALIDITY_CODES.has(code)) {
    advice = "the certificate is outside its validity period: check its dates and the clock of this machine";
  } else {
    advice = "check that tls.rootCertificates holds the CA that signed the server's certificate (without it, "
             + "Node's bundled root CAs are trusted) and that baseUrl is the server you mean";
  }
  const what = kind === "client certificate" ? "the server refused the client's certificate or its lack of one"
                                             : "the server's certificate did not verify";
  return new ConnectError(`TLS handshake failed: ${what} (${reason}); ${advice}`, Code.Unavailable,
                          error.metadata, undefined, error);
}
