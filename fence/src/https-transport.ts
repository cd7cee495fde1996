// One HTTPS request to a BMC, with a hard timeout covering connect, TLS, the answer and its body,
// and certificate verification as the registration says (a pinned CA, the system store, or
// explicitly none). It makes one attempt; retries are the client's decision.
import { Agent, request } from "node:https";
import type { IncomingHttpHeaders } from "node:http";
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";

/** How the BMC's certificate is verified. */
export interface TlsOptions {
  /** PEM of the CA (or the BMC's own self-signed certificate) to trust, alone. Unset: the system store. */
  caPem?: string;
  /** Do not verify the certificate at all. */
  insecureSkipVerify?: boolean;
  /** Name the certificate must carry; unset: the host of the endpoint. */
  serverName?: string;
}

export interface HttpResponse {
  status: number;
  statusText: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Why a request got no HTTP answer. */
export type TransportFailure = "timeout" | "unreachable" | "tls" | "aborted";

export class TransportError extends Error {
  constructor(
    readonly failure: TransportFailure,
    message: string,
    /** The system error code (ECONNREFUSED, DEPTH_ZERO_SELF_SIGNED_CERT, ...), if any. */
    readonly code: string,
    /** False when the request certainly did not reach the BMC (refused, DNS, TLS): safe to repeat. */
    readonly maybeDelivered: boolean,
  ) {
    super(message);
    this.name = "TransportError";
  }
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;

const TLS_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
]);
const NOT_DELIVERED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);

function classify(err: NodeJS.ErrnoException, where: string): TransportError {
  if (err instanceof TransportError) return err;
  const code = err.code ?? "";
  if (TLS_CODES.has(code) || code.startsWith("ERR_SSL") || code.startsWith("ERR_TLS") || code.startsWith("CERT_")) {
    return new TransportError("tls", `the TLS connection to ${where} failed: ${err.message} (${code})`, code, false);
  }
  return new TransportError(
    "unreachable",
    `${where} could not be reached: ${err.message}${code && !err.message.includes(code) ? ` (${code})` : ""}`,
    code,
    !NOT_DELIVERED.has(code),
  );
}

/** Sends requests to one BMC origin over a keep-alive connection pool with the given TLS checks. */
export class HttpsTransport {
  private readonly agent: Agent;

  constructor(
    readonly origin: string,
    tls: TlsOptions,
  ) {
    const host = new URL(origin).hostname.replace(/^\[|\]$/g, "");
    const serverName = tls.serverName && tls.serverName !== "" ? tls.serverName : undefined;
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 4,
      // Sockets left idle by a BMC are dropped rather than reused after its keep-alive ran out.
      timeout: 30_000,
      rejectUnauthorized: !tls.insecureSkipVerify,
      ...(tls.caPem ? { ca: tls.caPem } : {}),
      // SNI must not be an IP address (RFC 6066); the certificate must carry serverName, else the host.
      ...(serverName ? (isIP(serverName) ? {} : { servername: serverName }) : isIP(host) ? {} : { servername: host }),
      ...(serverName ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(serverName, cert) } : {}),
    });
  }

  /** One request; resolves with any HTTP answer, rejects with a TransportError when none came in time. */
  send(
    method: string,
    url: string,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<HttpResponse> {
    const where = this.origin;
    return new Promise<HttpResponse>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new TransportError("aborted", `the request to ${where} was cancelled`, "", false));
        return;
      }
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        fn();
      };
      const req = request(url, {
        method,
        agent: this.agent,
        headers: { ...headers, ...(body !== undefined ? { "Content-Length": String(Buffer.byteLength(body)) } : {}) },
      });
      const timer = setTimeout(
        () => {
          const err = new TransportError(
            "timeout",
            `${where} did not answer ${method} ${new URL(url).pathname} within ${timeoutMs} ms`,
            "ETIMEDOUT",
            true,
          );
          finish(() => reject(err));
          req.destroy(err);
        },
        Math.max(1, timeoutMs),
      );
      const onAbort = () => {
        const err = new TransportError("aborted", `the request to ${where} was cancelled`, "", true);
        finish(() => reject(err));
        req.destroy(err);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (err: NodeJS.ErrnoException) => finish(() => reject(classify(err, where))));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) {
            const err = new TransportError(
              "unreachable",
              `${where} sent an answer larger than ${MAX_BODY_BYTES} bytes to ${method} ${new URL(url).pathname}`,
              "",
              true,
            );
            finish(() => reject(err));
            req.destroy(err);
          } else chunks.push(c);
        });
        res.on("error", (err: NodeJS.ErrnoException) => finish(() => reject(classify(err, where))));
        res.on("end", () =>
          finish(() =>
            resolve({
              status: res.statusCode ?? 0,
              statusText: res.statusMessage ?? "",
              headers: res.headers,
              body: Buffer.concat(chunks).toString("utf8"),
            }),
          ),
        );
      });
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
