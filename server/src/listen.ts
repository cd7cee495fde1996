// The listeners: a unix socket (mode 0600) speaking HTTP/2 with prior knowledge, and optionally TCP
// with mutual TLS (HTTP/2, or HTTP/1.1 by ALPN). Both carry gRPC, gRPC-web and Connect through one
// connect-node handler. (HTTP/1.1 is not offered on the socket: node's HTTP/2 server reads the socket
// natively, so a connection cannot be sniffed and handed over; `curl --http2-prior-knowledge` works.)
// On SIGHUP the TLS material (certificate, key, client CA, CRL) is read again and swapped in without
// closing the listener; connections already open keep the material they were made with, except those
// whose client certificate the new CRL revokes: they are closed.
import "reflect-metadata";
import { connect as netConnect } from "node:net";
import { chmod, mkdir, readFile, rm } from "node:fs/promises";
import { createHash, createPrivateKey, X509Certificate as NodeX509Certificate } from "node:crypto";
import { dirname } from "node:path";
import * as http2 from "node:http2";
import { createSecureContext, type TLSSocket } from "node:tls";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as x509 from "@peculiar/x509";
import type { Logger } from "pino";
import type { Config, TcpConfig } from "./config.js";
import { peerContextIn, peerKey, requireVerifiedPeer } from "./api/peer.js";
import { certificateTrustDomain } from "./api/identity.js";

export interface Listeners {
  close(): Promise<void>;
  /**
   * Reads the TCP listener's certificate, key, client CA and CRL again and serves new connections
   * with them; on a bad file keeps what is in use. Logs the outcome; resolves false when it failed.
   */
  reloadTls(): Promise<boolean>;
}

export class ListenError extends Error {}

export async function listen(config: Config, routes: (router: ConnectRouter) => void, log: Logger, extraInterceptors: Interceptor[] = []): Promise<Listeners> {
  const trustDomain = resolveTrustDomain(config);
  const connectHandler = connectNodeAdapter({
    routes,
    readMaxBytes: config.max_message_bytes,
    writeMaxBytes: config.max_message_bytes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    contextValues: peerContextIn(trustDomain),
    // JSON as protobuf defines it (connect-es relaxes it): an unknown field or enum name is refused
    // with INVALID_ARGUMENT instead of dropped, so a typo ("tenantt") cannot silently change a request.
    jsonOptions: { ignoreUnknownFields: false },
    // Identity first (nothing unverified reaches a handler), then what the caller adds (the audit log).
    interceptors: [explainCrlRefusal, requireVerifiedPeer, logUnexpected(log), ...extraInterceptors],
  });
  const handler = withRequestBodyDeadline(connectHandler, config.request_body_timeout_ms, log);
  const closers: Array<() => Promise<void>> = [];
  const tcp = config.tcp;
  if (config.unix.mtls && !tcp) throw new ListenError("unix.mtls needs the TLS material of [tcp] (cert, key, client_ca and optionally crl); configure [tcp] too.");
  let material: TlsMaterial | undefined;
  if (tcp) {
    try {
      material = await loadTlsMaterial(tcp, log);
    } catch (err) {
      throw new ListenError((err as Error).message);
    }
  }

  // Bounds per client connection: streams at once (a flooding client gets REFUSED_STREAM, others are
  // unaffected), header size, and memory for the session's buffers.
  const bounds = { settings: { maxConcurrentStreams: config.max_streams_per_connection }, maxHeaderListPairs: 256, maxSessionMemory: 64 } as const;
  // Every mutual-TLS listener, so a reload swaps the material of all of them.
  const secureServers: http2.Http2SecureServer[] = [];
  const sockets = new Set<TLSSocket>();
  const secureServer = (options: TlsMaterial["options"]) => {
    const server = http2.createSecureServer(
      {
        ...bounds,
        ...options,
        requestCert: true,
        // Verified per request by requireVerifiedPeer (api/peer.ts), which answers UNAUTHENTICATED.
        rejectUnauthorized: false,
        allowHTTP1: true,
        // A client that connects and never finishes the handshake is dropped.
        handshakeTimeout: 10_000,
      },
      handler,
    );
    server.on("tlsClientError", (err) => log.warn({ err: err.message }, "TLS handshake failed"));
    server.on("secureConnection", (socket: TLSSocket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
    secureServers.push(server);
    return server;
  };

  // The socket: file permissions (0600) decide who reaches it; with unix.mtls the caller must also
  // present a certificate from the cluster CA, and is then known by it (its SPIFFE identity).
  const unix = config.unix.mtls && material ? secureServer(material.options) : http2.createServer({ ...bounds }, handler);
  const sessions = trackSessions(unix);
  await listenOnSocket(unix, config.socket);
  log.info({ socket: config.socket, mtls: config.unix.mtls }, "serving on unix socket");
  closers.push(async () => {
    await closeAll(unix, sessions);
    await rm(config.socket, { force: true });
  });

  let reloadTls = async (): Promise<boolean> => {
    log.info("no TCP listener is configured: there is no TLS material to reload");
    return true;
  };

  if (tcp && material) {
    let current: TlsMaterial = material;
    const secure = secureServer(current.options);
    const secureSessions = trackSessions(secure);
    const { host, port } = splitHostPort(tcp.listen);
    await new Promise<void>((resolve, reject) => {
      secure.once("error", (err) => reject(new ListenError(`cannot listen on ${tcp.listen}: ${err.message}`)));
      secure.listen(port, host, () => resolve());
    });
    log.info({ listen: tcp.listen, ...current.summary }, "serving mutual TLS on TCP");
    closers.push(() => closeAll(secure, secureSessions));

    // One reload at a time, in the order the signals came.
    let queue = Promise.resolve(true);
    reloadTls = () => {
      queue = queue.then(async () => {
        try {
          const next = await loadTlsMaterial(tcp, log);
          // A new secure context: new connections use it, with fresh session-ticket keys and cache,
          // so no session made under the old CRL can be resumed to skip the new check.
          for (const server of secureServers) server.setSecureContext(next.options);
          const changed = (Object.keys(next.digests) as Array<keyof TlsMaterial["digests"]>).filter((k) => next.digests[k] !== current.digests[k]);
          current = next;
          const closed = closeRevoked(sockets, next.revoked, log);
          log.info({ ...next.summary, changed, closedRevokedConnections: closed }, `reloaded TLS material (${changed.length > 0 ? `changed: ${changed.join(", ")}` : "no file changed"})`);
          return true;
        } catch (err) {
          log.error({ err: (err as Error).message }, "TLS reload failed; still serving with the certificate, key, client CA and CRL loaded before");
          return false;
        }
      });
      return queue;
    };
  }

  return {
    async close() {
      await Promise.all(closers.map((c) => c()));
    },
    reloadTls: () => reloadTls(),
  };
}

/**
 * A client that opens a call and then sends its request slowly, or never, holds a stream and its
 * buffers: the request must arrive whole within timeoutMs, or the stream is cancelled. Answers may
 * then take as long as they take (a followed log, a long wait), and the one call whose request is
 * open-ended by design, the interactive console, is left alone.
 */
function withRequestBodyDeadline(
  handler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  timeoutMs: number,
  log: Logger,
): (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void {
  return (req, res) => {
    if (!req.url.endsWith("/AttachConsole")) {
      const timer = setTimeout(() => {
        log.warn({ path: req.url.slice(0, 200), timeoutMs }, "a request did not arrive in time; its stream is cancelled");
        if (req.stream) req.stream.close(http2.constants.NGHTTP2_CANCEL);
        else res.destroy();
      }, timeoutMs);
      const done = () => clearTimeout(timer);
      req.once("end", done);
      req.once("close", done);
      req.once("error", done);
    }
    handler(req, res);
  };
}

/** What the TCP listener serves with, read from the [tcp] files and checked before use. */
interface TlsMaterial {
  options: { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer[]; minVersion: "TLSv1.2" };
  /** For the log: which certificate, how many client CAs, how many revoked serials. */
  summary: Record<string, string | number>;
  /** Hashes of the files, to tell which ones a reload changed. */
  digests: { certificate: string; key: string; client_ca: string; crl: string };
  /** Revoked serials (upper-case hex) per issuer name. */
  revoked: Map<string, Set<string>>;
}

const digest = (data: Buffer | undefined) => (data ? createHash("sha256").update(data).digest("hex") : "");
const serialHex = (hex: string) => hex.toUpperCase().replace(/^0+(?=.)/, "");

async function loadTlsMaterial(tcp: TcpConfig, log: Logger): Promise<TlsMaterial> {
  const read = async (what: string, path: string) => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const cert = await read("certificate", tcp.cert);
  const key = await read("key", tcp.key);
  const ca = await read("client CA", tcp.client_ca);
  const crlFile = tcp.crl === undefined ? undefined : await read("CRL", tcp.crl);
  const crlBlocks = crlFile === undefined ? undefined : pemBlocks(crlFile, "X509 CRL");
  if (tcp.crl !== undefined && crlBlocks?.length === 0) {
    throw new Error(`the CRL ${tcp.crl} holds no PEM "X509 CRL" block (a DER file converts with: openssl crl -inform DER -in FILE -out crl.pem)`);
  }
  // Each file on its own first, so an error names the file to fix.
  const check = <T>(what: string, path: string, parse: () => T): T => {
    try {
      return parse();
    } catch (err) {
      throw new Error(`the TLS ${what} ${path} cannot be used: ${(err as Error).message}`);
    }
  };
  const leaf = check("certificate", tcp.cert, () => new NodeX509Certificate(cert));
  const privateKey = check("key", tcp.key, () => createPrivateKey(key));
  if (!leaf.checkPrivateKey(privateKey)) throw new Error(`the TLS key ${tcp.key} does not belong to the certificate ${tcp.cert}; replace both files together`);
  const cas = check("client CA", tcp.client_ca, () => {
    const blocks = pemBlocks(ca, "CERTIFICATE");
    if (blocks.length === 0) throw new Error('it holds no PEM "CERTIFICATE" block');
    return blocks.map((b) => new x509.X509Certificate(b.toString()));
  });
  const crlPath = tcp.crl;
  const crls = crlPath === undefined || crlBlocks === undefined ? [] : crlBlocks.map((b) => check("CRL", crlPath, () => new x509.X509Crl(b.toString())));
  const options = { cert, key, ca, ...(crlBlocks !== undefined && { crl: crlBlocks }), minVersion: "TLSv1.2" as const };
  try {
    // Then together, as the listener will use them.
    createSecureContext(options);
  } catch (err) {
    throw new Error(`the TLS certificate ${tcp.cert}, key ${tcp.key}, client CA ${tcp.client_ca}${tcp.crl ? ` and CRL ${tcp.crl}` : ""} cannot be used together: ${(err as Error).message}`);
  }
  const summary: Record<string, string | number> = { cert: tcp.cert, serial: leaf.serialNumber, subject: leaf.subject.replace(/\n/g, ", "), notAfter: leaf.validTo, clientCas: cas.length };
  if (new Date(leaf.validTo) < new Date()) log.warn({ cert: tcp.cert, notAfter: leaf.validTo }, "the server certificate has expired: clients will refuse aetherd until it is replaced (then send SIGHUP)");

  const revoked = new Map<string, Set<string>>();
  if (crlPath !== undefined) {
    for (const crl of crls) {
      const issuer = cas.find((c) => c.subject === crl.issuer);
      if (!issuer) throw new Error(`the CRL ${crlPath} is issued by ${crl.issuer}, which is not a CA in ${tcp.client_ca}`);
      if (!(await crl.verify({ publicKey: issuer }))) throw new Error(`the CRL ${crlPath} from ${crl.issuer} does not carry that CA's signature`);
      if (crl.nextUpdate !== undefined && crl.nextUpdate < new Date()) {
        log.warn({ crl: crlPath, nextUpdate: crl.nextUpdate.toISOString() }, "the CRL is past its next update: every client of its CA is refused (CRL_HAS_EXPIRED) until a fresh one is loaded");
      }
      const serials = revoked.get(crl.issuer) ?? new Set<string>();
      for (const entry of crl.entries) serials.add(serialHex(entry.serialNumber));
      revoked.set(crl.issuer, serials);
    }
    // With a CRL, OpenSSL checks every certificate of a chain and refuses one whose issuer has no list.
    const missing = cas.filter((c) => !revoked.has(c.subject));
    if (missing.length > 0) {
      throw new Error(`the CRL ${crlPath} has no list from ${missing.map((c) => c.subject).join("; ")} (in ${tcp.client_ca}): every client of that CA would be refused; add that CA's CRL to the file`);
    }
    summary.crl = crlPath;
    summary.revoked = [...revoked.values()].reduce((n, s) => n + s.size, 0);
  }
  return {
    options,
    summary,
    digests: { certificate: digest(cert), key: digest(key), client_ca: digest(ca), crl: digest(crlFile) },
    revoked,
  };
}

/** The PEM blocks with this label in a file, each as its own buffer (how Node's `crl` wants them). */
function pemBlocks(data: Buffer, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----`, "g");
  return [...data.toString("utf8").matchAll(re)].map((m) => Buffer.from(`${m[0]}\n`));
}

/** Closes the open connections whose verified client certificate is now revoked; returns how many. */
function closeRevoked(sockets: Set<TLSSocket>, revoked: Map<string, Set<string>>, log: Logger): number {
  if (revoked.size === 0) return 0;
  let closed = 0;
  for (const socket of sockets) {
    if (!socket.authorized) continue; // already refused on every request
    try {
      const raw = socket.getPeerCertificate().raw;
      if (!raw) continue;
      const peer = new x509.X509Certificate(raw);
      if (revoked.get(peer.issuer)?.has(serialHex(peer.serialNumber))) {
        log.info({ serial: serialHex(peer.serialNumber), subject: peer.subject, remote: socket.remoteAddress }, "closing a connection whose client certificate is now revoked");
        socket.destroy();
        closed++;
      }
    } catch (err) {
      log.warn({ err: (err as Error).message, remote: socket.remoteAddress }, "could not check an open connection's client certificate against the new CRL; closing it");
      socket.destroy();
      closed++;
    }
  }
  return closed;
}

/**
 * An error that is not a ConnectError is a defect: the caller gets INTERNAL "internal error", and the
 * operator needs the real error and its stack in aetherd's log to find it.
 */
const logUnexpected =
  (log: Logger): Interceptor =>
  (next) =>
  async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (!(err instanceof ConnectError)) log.error({ err, method: `${req.service.typeName}/${req.method.name}` }, "an RPC failed with an unexpected error");
      throw err;
    }
  };

/**
 * The SPIFFE trust domain callers' certificates must name: [auth] trust_domain, else the one in
 * aetherd's own node certificate ([tcp] cert from `aether pki issue node`). Without TLS there are no
 * certificates to check; with TLS and neither, aetherd does not start rather than trust every domain.
 */
function resolveTrustDomain(config: Config): string | undefined {
  if (config.auth.trust_domain !== undefined) return config.auth.trust_domain;
  if (!config.tcp) return undefined;
  let fromCert: string | undefined;
  try {
    fromCert = certificateTrustDomain(config.tcp.cert);
  } catch (err) {
    throw new ListenError(`cannot read the certificate ${config.tcp.cert}: ${(err as Error).message}`);
  }
  if (fromCert === undefined) {
    throw new ListenError(
      `the certificate ${config.tcp.cert} names no SPIFFE ID, so aetherd cannot tell its cluster's trust domain: set [auth] trust_domain (or --trust-domain) to the cluster name given to \`aether pki init --cluster\`, or use a node certificate from \`aether pki issue node\`.`,
    );
  }
  return fromCert;
}

/**
 * A certificate the CRL refused gets a sentence about revocation rather than requireVerifiedPeer's
 * general one; a CRL aetherd cannot use is said to be the node's problem, not the client's.
 */
const explainCrlRefusal: Interceptor = (next) => async (req) => {
  const peer = req.contextValues.get(peerKey);
  if (!peer.verified && peer.rejection === "CERT_REVOKED") {
    throw new ConnectError(
      "the client certificate was refused (CERT_REVOKED): it has been revoked by the cluster's CA; ask the cluster's operator for a new one.",
      Code.Unauthenticated,
    );
  }
  if (!peer.verified && peer.rejection !== undefined && /^(CRL_|UNABLE_TO_GET_CRL)/.test(peer.rejection)) {
    throw new ConnectError(
      `the client certificate could not be checked against aetherd's revocation list (${peer.rejection}): the node's [tcp] crl needs a current CRL from the cluster's CA (then SIGHUP aetherd).`,
      Code.Unauthenticated,
    );
  }
  return next(req);
};

/** Refuses to take over a socket another live aetherd is serving; removes a stale one. */
async function listenOnSocket(server: http2.Http2Server | http2.Http2SecureServer, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = netConnect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (alive) throw new ListenError(`another process is already serving on ${path}; stop it or give aetherd another --socket.`);
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new ListenError(`cannot listen on ${path}: ${err.message}`)));
    // Created with a umask that leaves no window where another user could connect before chmod.
    const oldMask = process.umask(0o177);
    server.listen(path, () => {
      process.umask(oldMask);
      resolve();
    });
  });
  await chmod(path, 0o600);
}

function trackSessions(server: http2.Http2Server | http2.Http2SecureServer): Set<http2.ServerHttp2Session> {
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  return sessions;
}

/** Stops accepting, lets HTTP/2 clients finish (GOAWAY), then closes what is left. */
async function closeAll(server: http2.Http2Server | http2.Http2SecureServer, sessions: Set<http2.ServerHttp2Session>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const s of sessions) s.close();
  const timer = setTimeout(() => sessions.forEach((s) => s.destroy()), 3000);
  timer.unref();
  await closed;
  clearTimeout(timer);
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) };
}
