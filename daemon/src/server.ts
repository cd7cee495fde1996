// The listeners: a unix socket (mode 0600) speaking HTTP/2 with prior knowledge, and optionally TCP
// with mutual TLS (HTTP/2, or HTTP/1.1 by ALPN). Both carry gRPC, gRPC-web and Connect through one
// connect-node handler. (HTTP/1.1 is not offered on the socket: node's HTTP/2 server reads the socket
// natively, so a connection cannot be sniffed and handed over; `curl --http2-prior-knowledge` works.)
import { connect as netConnect } from "node:net";
import { chmod, mkdir, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import * as http2 from "node:http2";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import type { Config } from "./config.js";
import { peerContext, requireVerifiedPeer } from "./api/peer.js";

export interface Listeners {
  close(): Promise<void>;
}

export class ListenError extends Error {}

export async function listen(config: Config, routes: (router: ConnectRouter) => void, log: Logger): Promise<Listeners> {
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: config.max_message_bytes,
    writeMaxBytes: config.max_message_bytes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    contextValues: peerContext,
    interceptors: [requireVerifiedPeer],
  });
  const closers: Array<() => Promise<void>> = [];

  const unix = http2.createServer({}, handler);
  const sessions = trackSessions(unix);
  await listenOnSocket(unix, config.socket);
  log.info({ socket: config.socket }, "serving on unix socket");
  closers.push(async () => {
    await closeAll(unix, sessions);
    await rm(config.socket, { force: true });
  });

  if (config.tcp) {
    const tcp = config.tcp;
    const read = (what: string, path: string) => {
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
        ca: read("client CA", tcp.client_ca),
        requestCert: true,
        // Verified per request by requireVerifiedPeer (api/peer.ts), which answers UNAUTHENTICATED.
        rejectUnauthorized: false,
        allowHTTP1: true,
        minVersion: "TLSv1.2",
      },
      handler,
    );
    secure.on("tlsClientError", (err) => log.warn({ err: err.message }, "TLS handshake failed"));
    const secureSessions = trackSessions(secure);
    const { host, port } = splitHostPort(tcp.listen);
    await new Promise<void>((resolve, reject) => {
      secure.once("error", (err) => reject(new ListenError(`cannot listen on ${tcp.listen}: ${err.message}`)));
      secure.listen(port, host, () => resolve());
    });
    log.info({ listen: tcp.listen }, "serving mutual TLS on TCP");
    closers.push(() => closeAll(secure, secureSessions));
  }

  return {
    async close() {
      await Promise.all(closers.map((c) => c()));
    },
  };
}

/** Refuses to take over a socket another live aetherd is serving; removes a stale one. */
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
