// The listeners, as aetherd has them: a unix socket (mode 0600) speaking HTTP/2 with prior
// knowledge, and optionally TCP: mutual TLS (HTTP/2, or HTTP/1.1 by ALPN) when given a certificate,
// key and client CA, or plain HTTP/2 (h2c) on a loopback address only (tests, benches, a replica
// behind a local proxy). Both carry gRPC, gRPC-web and Connect through one connect-node handler.
import { connect as netConnect, type AddressInfo } from "node:net";
import { chmod, mkdir, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import * as http2 from "node:http2";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { certificateCaller, certificateTrustDomain, spiffeRefusal, uriSans, type Caller } from "@aether/daemon/authz";
import { isLoopbackHost } from "./validate.js";

export interface ListenOptions {
  socket: string;
  maxMessageBytes: number;
  tcp?: { listen: string; cert?: string; key?: string; clientCa?: string };
  /** The SPIFFE trust domain client certificates must name; default: the one in tcp.cert. */
  trustDomain?: string;
}

export interface Listeners {
  /** The TCP address actually bound (port 0 resolved), when serving TCP. */
  readonly tcpAddress: string | undefined;
  close(): Promise<void>;
}

export class ListenError extends Error {}

interface Peer {
  verified: boolean;
  rejection?: string;
  /** The sentence for a certificate that verified but names no identity of this cluster. */
  refusal?: string;
  /** Who calls, for the authorization policy (see @aether/daemon/authz). */
  caller: Caller;
}

const peerKey = createContextKey<Peer>({ verified: true, caller: { identity: "" } }, { description: "the calling peer" });

/** The peer of each request; a certificate naming another trust domain, or several SPIFFE IDs, is refused. */
const peerContextIn = (trustDomain: string | undefined) => (req: IncomingMessage | http2.Http2ServerRequest) => {
  const socket = req.socket as TLSSocket | undefined;
  const values = createContextValues();
  if (!socket || typeof socket.getPeerCertificate !== "function") {
    // The socket is mode 0600 (aether-aggregator's own user or root); plain TCP is loopback only.
    const local = socket?.remoteAddress === undefined ? `unix:uid=${process.getuid?.() ?? -1}` : "local:loopback-tcp";
    return values.set(peerKey, { verified: true, caller: { identity: local } });
  }
  const cert = socket.getPeerCertificate();
  if (cert === null || Object.keys(cert).length === 0) return values.set(peerKey, { verified: false, rejection: "NO_CERTIFICATE", caller: { identity: "" } });
  if (!socket.authorized) return values.set(peerKey, { verified: false, rejection: String(socket.authorizationError ?? "UNVERIFIED"), caller: { identity: "" } });
  const uris = uriSans(cert.subjectaltname);
  const refusal = trustDomain === undefined ? "aether-aggregator has no trust domain configured, so it accepts no certificate identity." : spiffeRefusal(uris, trustDomain);
  if (refusal !== undefined) return values.set(peerKey, { verified: false, rejection: "FOREIGN_IDENTITY", refusal, caller: { identity: "" } });
  return values.set(peerKey, { verified: true, caller: certificateCaller(uris, String(cert.subject?.CN ?? "")) });
};

/** The caller of a request, as the authorization policy names it. */
export function callerOfRequest(req: { contextValues: { get: (key: typeof peerKey) => Peer } }): Caller {
  return req.contextValues.get(peerKey).caller;
}

const requireVerifiedPeer: Interceptor = (next) => async (req) => {
  const peer = req.contextValues.get(peerKey);
  if (!peer.verified) {
    if (peer.refusal !== undefined) throw new ConnectError(peer.refusal, Code.Unauthenticated);
    throw new ConnectError(
      peer.rejection === "NO_CERTIFICATE"
        ? "aether-aggregator requires a client certificate on TLS: connect with a certificate and key issued by the cluster CA."
        : `the client certificate was refused (${peer.rejection}): it must be issued by this cluster's CA and be within its validity period.`,
      Code.Unauthenticated,
    );
  }
  return next(req);
};

/**
 * The trust domain of the cluster: the configured one, else the one in the server's own node
 * certificate. With TLS and neither, the aggregator does not start rather than trust every domain.
 */
function trustDomainOf(options: ListenOptions): string | undefined {
  if (options.trustDomain !== undefined) return options.trustDomain;
  const cert = options.tcp?.cert;
  if (cert === undefined) return undefined;
  let found: string | undefined;
  try {
    found = certificateTrustDomain(cert);
  } catch (err) {
    throw new ListenError(`cannot read the certificate ${cert}: ${(err as Error).message}`);
  }
  if (found === undefined) {
    throw new ListenError(
      `the certificate ${cert} names no SPIFFE ID, so aether-aggregator cannot tell its cluster's trust domain: set trust_domain (or --trust-domain) to the cluster name given to \`aether pki init --cluster\`, or use a certificate from \`aether pki issue node\`.`,
    );
  }
  return found;
}

export async function listen(options: ListenOptions, routes: (router: ConnectRouter) => void, log: Logger, extraInterceptors: Interceptor[] = []): Promise<Listeners> {
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    contextValues: peerContextIn(trustDomainOf(options)),
    // JSON as protobuf defines it (connect-es relaxes it): an unknown field or enum name is refused
    // with INVALID_ARGUMENT instead of dropped, so a typo cannot silently change a request.
    jsonOptions: { ignoreUnknownFields: false },
    // Identity first, then what the caller adds (the authorization policy).
    interceptors: [requireVerifiedPeer, ...extraInterceptors],
  });
  const closers: Array<() => Promise<void>> = [];
  const closeAllListeners = () => Promise.all(closers.map((c) => c())).then(() => undefined);

  const unix = http2.createServer({}, handler);
  const sessions = trackSessions(unix);
  await listenOnSocket(unix, options.socket);
  log.info({ socket: options.socket }, "serving on unix socket");
  closers.push(async () => {
    await closeAll(unix, sessions);
    await rm(options.socket, { force: true });
  });

  let tcpAddress: string | undefined;
  if (options.tcp) {
    const tcp = options.tcp;
    const { host, port } = splitHostPort(tcp.listen);
    const tls = tcp.cert !== undefined || tcp.key !== undefined || tcp.clientCa !== undefined;
    let server: http2.Http2Server | http2.Http2SecureServer;
    if (tls) {
      const read = (what: string, path: string | undefined) => {
        if (path === undefined) throw new ListenError(`TLS on ${tcp.listen} needs a certificate, a key and a client CA; the ${what} is missing.`);
        try {
          return readFileSync(path);
        } catch (err) {
          throw new ListenError(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`);
        }
      };
      const secure = http2.createSecureServer(
        {
          cert: read("certificate", tcp.cert),
          key: read("key", tcp.key),
          ca: read("client CA", tcp.clientCa),
          requestCert: true,
          rejectUnauthorized: false,
          allowHTTP1: true,
          minVersion: "TLSv1.2",
        },
        handler,
      );
      secure.on("tlsClientError", (err) => log.warn({ err: err.message }, "TLS handshake failed"));
      server = secure;
    } else {
      if (!isLoopbackHost(host)) {
        await closeAllListeners();
        throw new ListenError(`--listen ${tcp.listen} without TLS is allowed on loopback only (127.0.0.1, ::1): give --tls-cert, --tls-key and --tls-client-ca to serve other hosts.`);
      }
      server = http2.createServer({}, handler);
    }
    const tcpSessions = trackSessions(server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", (err) => reject(new ListenError(`cannot listen on ${tcp.listen}: ${err.message}`)));
        server.listen(port, host, () => resolve());
      });
    } catch (err) {
      await closeAllListeners();
      throw err;
    }
    const bound = server.address() as AddressInfo;
    tcpAddress = `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
    log.info({ listen: tcpAddress, tls }, tls ? "serving mutual TLS on TCP" : "serving plain HTTP/2 on loopback TCP");
    closers.push(() => closeAll(server, tcpSessions));
  }

  return { tcpAddress, close: closeAllListeners };
}

/** Refuses to take over a socket another live process is serving; removes a stale one. */
async function listenOnSocket(server: http2.Http2Server, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = netConnect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (alive) throw new ListenError(`another process is already serving on ${path}; stop it or give aether-aggregator another --socket.`);
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new ListenError(`cannot listen on ${path}: ${err.message}`)));
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

export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) };
}
