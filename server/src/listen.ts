// The listeners of aetherd and aether-aggregator: a unix socket (mode 0600) speaking HTTP/2 with prior
// knowledge, and optionally TCP: mutual TLS (HTTP/2, or HTTP/1.1 by ALPN), or, where the program
// allows it (the aggregator: tests, benches, a replica behind a local proxy), plain HTTP/2 (h2c) on a
// loopback address only. All carry gRPC, gRPC-web and Connect through one connect-node handler. (HTTP/1.1 is not offered on the socket: node's HTTP/2 server reads the socket
// natively, so a connection cannot be sniffed and handed over; `curl --http2-prior-knowledge` works.)
// On SIGHUP the TLS material (certificate, key, client CA, CRL) is read again and swapped in without
// closing the listener; connections already open keep the material they were made with, except those
// whose client certificate the new CRL revokes: they are closed.
//
// Just past 400 lines because it is the one listener aetherd and the aggregator share: unix socket
// and TCP with mutual TLS, request deadlines, the peer's identity, and a graceful close, written once.
import { connect as netConnect, type AddressInfo } from "node:net";
import { chmod, mkdir, rm } from "node:fs/promises";
import { dirname } from "node:path";
import * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { peerContextIn, peerKey, requireVerifiedPeer } from "./peer.js";
import { certificateTrustDomain } from "./identity.js";
import { closeRevoked, loadTlsMaterial, type TcpOptions, type TlsMaterial } from "./tls-material.js";
import { isLoopbackHost } from "./validate.js";
import { rpcError } from "./errors.js";
import { rpcDebugLog, rpcMetrics } from "./rpc-metrics.js";

export interface ListenOptions {
  /** The program's name in logs and in the sentences callers and operators get ("aetherd"). */
  program: string;
  socket: string;
  /** The unix socket also requires a client certificate (the TLS material of tcp). */
  unixMtls?: boolean;
  tcp?: TcpOptions;
  /** TCP without TLS material is allowed, as plain HTTP/2 on a loopback address only. */
  allowPlainLoopback?: boolean;
  maxMessageBytes: number;
  /** Per client connection: streams at once; with it come bounds on header pairs and session memory. */
  maxStreamsPerConnection?: number;
  /** A request must arrive whole within this long (see withRequestBodyDeadline). */
  requestBodyTimeoutMs?: number;
  /** The SPIFFE trust domain client certificates must name; default: the one in tcp.cert. */
  trustDomain?: string;
  /** How an operator sets the trust domain, for the sentence when none is found ("[auth] trust_domain"). */
  trustDomainSetting: string;
  /** Counts every RPC, by service, method and code, with latencies, in this Prometheus registry (metrics.ts). */
  metrics?: Registry;
}

export interface Listeners {
  /** The TCP address actually bound (port 0 resolved), when serving TCP. */
  readonly tcpAddress: string | undefined;
  close(): Promise<void>;
  /**
   * Reads the TCP listener's certificate, key, client CA and CRL again and serves new connections
   * with them; on a bad file keeps what is in use. Logs the outcome; resolves false when it failed.
   */
  reloadTls(): Promise<boolean>;
}

export class ListenError extends Error {}

export async function listen(
  options: ListenOptions,
  routes: (router: ConnectRouter) => void,
  log: Logger,
  extraInterceptors: Interceptor[] = [],
): Promise<Listeners> {
  const program = options.program;
  const trustDomain = resolveTrustDomain(options);
  const connectHandler = connectNodeAdapter({
    routes,
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    contextValues: peerContextIn({ trustDomain, program }),
    // JSON as protobuf defines it (connect-es relaxes it): an unknown field or enum name is refused
    // with INVALID_ARGUMENT instead of dropped, so a typo ("tenantt") cannot silently change a request.
    jsonOptions: { ignoreUnknownFields: false },
    // The RPC metrics outermost (every call is counted with the code its caller got, refusals too);
    // identity next (nothing unverified reaches a handler), then what the caller adds (the audit log);
    // innermost, next to the handlers, domain errors become their RPC codes, so all the others see codes.
    interceptors: [
      ...(options.metrics ? [rpcMetrics(options.metrics)] : []),
      explainCrlRefusal(program),
      requireVerifiedPeer(program),
      rpcDebugLog(log),
      logUnexpected(log),
      ...extraInterceptors,
      domainErrorsAsCodes,
    ],
  });
  const handler =
    options.requestBodyTimeoutMs === undefined
      ? connectHandler
      : withRequestBodyDeadline(connectHandler, options.requestBodyTimeoutMs, log);
  const closers: Array<() => Promise<void>> = [];
  const closeAllListeners = () => Promise.all(closers.map((c) => c())).then(() => undefined);
  const tcp = options.tcp;
  if (options.unixMtls && !tcp)
    throw new ListenError("unix.mtls needs the TLS material of [tcp] (cert, key, client_ca and optionally crl); configure [tcp] too.");
  let material: TlsMaterial | undefined;
  const tls =
    tcp !== undefined && (tcp.cert !== undefined || tcp.key !== undefined || tcp.client_ca !== undefined || !options.allowPlainLoopback);
  if (tcp && tls) {
    try {
      material = await loadTlsMaterial(tcp, program, log);
    } catch (err) {
      throw new ListenError((err as Error).message);
    }
  }

  // Bounds per client connection: streams at once (a flooding client gets REFUSED_STREAM, others are
  // unaffected), header size, and memory for the session's buffers.
  const bounds =
    options.maxStreamsPerConnection === undefined
      ? {}
      : ({
          settings: { maxConcurrentStreams: options.maxStreamsPerConnection, initialWindowSize: STREAM_WINDOW_BYTES },
          maxHeaderListPairs: 256,
          maxSessionMemory: 64,
        } as const);
  // Every mutual-TLS listener, so a reload swaps the material of all of them.
  const secureServers: http2.Http2SecureServer[] = [];
  const sockets = new Set<TLSSocket>();
  const secureServer = (options: TlsMaterial["options"]) => {
    const server = http2.createSecureServer(
      {
        ...bounds,
        ...options,
        requestCert: true,
        // Verified per request by requireVerifiedPeer (peer.ts), which answers UNAUTHENTICATED.
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
  const unix = options.unixMtls && material ? secureServer(material.options) : http2.createServer({ ...bounds }, handler);
  const sessions = trackSessions(unix);
  await listenOnSocket(unix, options.socket, program);
  log.info({ socket: options.socket, mtls: options.unixMtls ?? false }, "serving on unix socket");
  closers.push(async () => {
    await closeAll(unix, sessions);
    await rm(options.socket, { force: true });
  });

  let reloadTls = async (): Promise<boolean> => {
    log.info("no TCP listener is configured: there is no TLS material to reload");
    return true;
  };

  let tcpAddress: string | undefined;
  const listenTcp = async (server: http2.Http2Server | http2.Http2SecureServer, listen: string) => {
    const tcpSessions = trackSessions(server);
    const { host, port } = splitHostPort(listen);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", (err) => reject(new ListenError(`cannot listen on ${listen}: ${err.message}`)));
        server.listen(port, host, () => resolve());
      });
    } catch (err) {
      await closeAllListeners();
      throw err;
    }
    const bound = server.address() as AddressInfo;
    tcpAddress = `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
    closers.push(() => closeAll(server, tcpSessions));
  };

  if (tcp && !tls) {
    if (!isLoopbackHost(splitHostPort(tcp.listen).host)) {
      await closeAllListeners();
      throw new ListenError(
        `--listen ${tcp.listen} without TLS is allowed on loopback only (127.0.0.1, ::1): give --tls-cert, --tls-key and --tls-client-ca to serve other hosts.`,
      );
    }
    await listenTcp(http2.createServer({ ...bounds }, handler), tcp.listen);
    log.info({ listen: tcpAddress, tls }, "serving plain HTTP/2 on loopback TCP");
  }

  if (tcp && material) {
    const tcpTls = tcp;
    let current: TlsMaterial = material;
    await listenTcp(secureServer(current.options), tcp.listen);
    log.info({ listen: tcpAddress, ...current.summary }, "serving mutual TLS on TCP");

    // One reload at a time, in the order the signals came.
    let queue = Promise.resolve(true);
    reloadTls = () => {
      queue = queue.then(async () => {
        try {
          const next = await loadTlsMaterial(tcpTls, program, log);
          // A new secure context: new connections use it, with fresh session-ticket keys and cache,
          // so no session made under the old CRL can be resumed to skip the new check.
          for (const server of secureServers) server.setSecureContext(next.options);
          const changed = (Object.keys(next.digests) as Array<keyof TlsMaterial["digests"]>).filter(
            (k) => next.digests[k] !== current.digests[k],
          );
          current = next;
          const closed = closeRevoked(sockets, next.revoked, log);
          log.info(
            { ...next.summary, changed, closedRevokedConnections: closed },
            `reloaded TLS material (${changed.length > 0 ? `changed: ${changed.join(", ")}` : "no file changed"})`,
          );
          return true;
        } catch (err) {
          log.error(
            { err: (err as Error).message },
            "TLS reload failed; still serving with the certificate, key, client CA and CRL loaded before",
          );
          return false;
        }
      });
      return queue;
    };
  }

  return {
    tcpAddress,
    close: closeAllListeners,
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

/**
 * An error that is not a ConnectError is a defect: the caller gets INTERNAL "internal error", and the
 * operator needs the real error and its stack in the server's log to find it.
 */
/**
 * The one place where what domain code throws (DomainError: registries, managers) becomes the RPC
 * code callers get (rpcError), for a unary answer and for each message of a stream alike.
 */
const domainErrorsAsCodes: Interceptor = (next) => async (req) => {
  let res: Awaited<ReturnType<typeof next>>;
  try {
    res = await next(req);
  } catch (err) {
    throw rpcError(err);
  }
  if (!res.stream) return res;
  return { ...res, message: mapStreamErrors(res.message) };
};

async function* mapStreamErrors<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw rpcError(err);
  }
}

const logUnexpected =
  (log: Logger): Interceptor =>
  (next) =>
  async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (!(err instanceof ConnectError))
        log.error({ err, method: `${req.service.typeName}/${req.method.name}` }, "an RPC failed with an unexpected error");
      throw err;
    }
  };

/**
 * The SPIFFE trust domain callers' certificates must name: the configured one, else the one in the
 * server's own node certificate (tcp.cert from `aether pki issue node`). Without TLS there are no
 * certificates to check; with TLS and neither, the server does not start rather than trust every domain.
 */
function resolveTrustDomain(options: ListenOptions): string | undefined {
  if (options.trustDomain !== undefined) return options.trustDomain;
  const cert = options.tcp?.cert;
  if (cert === undefined) return undefined;
  let fromCert: string | undefined;
  try {
    fromCert = certificateTrustDomain(cert);
  } catch (err) {
    throw new ListenError(`cannot read the certificate ${cert}: ${(err as Error).message}`);
  }
  if (fromCert === undefined) {
    throw new ListenError(
      `the certificate ${cert} names no SPIFFE ID, so ${options.program} cannot tell its cluster's trust domain: set ${options.trustDomainSetting} (or --trust-domain) to the cluster name given to \`aether pki init --cluster\`, or use a node certificate from \`aether pki issue node\`.`,
    );
  }
  return fromCert;
}

/**
 * A certificate the CRL refused gets a sentence about revocation rather than requireVerifiedPeer's
 * general one; a CRL the server cannot use is said to be the node's problem, not the client's.
 */
const explainCrlRefusal =
  (program: string): Interceptor =>
  (next) =>
  async (req) => {
    const peer = req.contextValues.get(peerKey);
    if (!peer.verified && peer.rejection === "CERT_REVOKED") {
      throw new ConnectError(
        "the client certificate was refused (CERT_REVOKED): it has been revoked by the cluster's CA; ask the cluster's operator for a new one.",
        Code.Unauthenticated,
      );
    }
    if (!peer.verified && peer.rejection !== undefined && /^(CRL_|UNABLE_TO_GET_CRL)/.test(peer.rejection)) {
      throw new ConnectError(
        `the client certificate could not be checked against ${program}'s revocation list (${peer.rejection}): the node's [tcp] crl needs a current CRL from the cluster's CA (then SIGHUP ${program}).`,
        Code.Unauthenticated,
      );
    }
    return next(req);
  };

/** Refuses to take over a socket another live process is serving; removes a stale one. */
async function listenOnSocket(server: http2.Http2Server | http2.Http2SecureServer, path: string, program: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = netConnect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (alive) throw new ListenError(`another process is already serving on ${path}; stop it or give ${program} another --socket.`);
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

/**
 * HTTP/2 flow-control windows a client may fill before the server reads: a stream's, and the whole
 * connection's. Large enough that a client stream of bulk bytes (a replication stream, 1 MiB per
 * message) is not paced by round trips; maxSessionMemory still bounds what a connection may hold.
 */
const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;

function trackSessions(server: http2.Http2Server | http2.Http2SecureServer): Set<http2.ServerHttp2Session> {
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    // The connection's receive window (65 KiB by default) would pace a large upload (a replication
    // stream) at one window per round trip; the per-stream window is in the settings above.
    session.once("connect", () => session.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
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

export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) };
}
