// aether ui's HTTP server, the way `kubectl proxy` works: it serves the built web console and
// forwards the page's Connect calls to aetherd (/api/node/...) and aether-aggregator
// (/api/cluster/...) with the operator's own credentials, which never reach the browser. With an
// aggregator, /api/nodes/<node id>/... reaches any node of the cluster at the address the
// aggregator registered for it (and nowhere else: the page cannot name an address).
//
// Guards, because any local user and any web page can reach a loopback port:
// - the Host header must be the listen address (a DNS-rebinding page arrives with its own name);
// - an Origin header, when sent, must be this server's own (no cross-origin calls);
// - every request carries the random token printed at start: once in the URL, exchanged for an
//   HttpOnly SameSite=Strict cookie, so other users' processes and other sites get nothing.
//
// Browsers cannot stream a request body over HTTP/1.1, so the bidirectional AttachConsole is
// bridged here: POST /console/attach opens it (the response streams the guest's output) and POST
// /console/input sends keystrokes into the same stream.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { extname, join, normalize } from "node:path";
import type { AetherClient } from "@aether/sdk";
import type { Upstream } from "./upstream.js";

export interface UiServerOptions {
  /** Where the built app is (ui/dist). */
  staticDir: string;
  node: Upstream;
  cluster?: Upstream;
  /** Connects the SDK to aetherd (the configured one, or at this address), for the console bridge. */
  connectTo: (address?: string) => Promise<AetherClient>;
  /** The upstream for another node's address. */
  open: (address: string) => Upstream;
  /** The address the aggregator registered for a node id (with an aggregator). */
  nodeAddress?: (id: string) => Promise<string | undefined>;
  /** The random token; generated when not given. */
  token?: string;
}

export interface UiServer {
  readonly server: Server;
  readonly token: string;
  /** The URL to open, with the token. */
  url(): string;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};
// Request headers worth passing on to the peer: the Connect protocol's and the body's.
const FORWARDED = /^(content-type|content-encoding|accept-encoding|connect-.*|grpc-timeout)$/;

export async function startUiServer(options: UiServerOptions, host: string, port: number): Promise<UiServer> {
  const token = options.token ?? randomBytes(24).toString("base64url");
  let hostHeader = "";
  // Cookies are not kept apart by port: two consoles on one host each need a name of their own.
  let cookieName = "aether_ui";
  const consoles = new Map<string, (bytes: Uint8Array) => void>();
  const others = new Map<string, Upstream>();

  /** The address of a cluster node the page names by id; a sentence when there is none. */
  async function addressOf(id: string): Promise<string> {
    if (options.nodeAddress === undefined)
      throw new Refusal(404, "no aether-aggregator is configured, so only the configured aetherd is reachable.");
    const address = await options.nodeAddress(id);
    if (address === undefined) throw new Refusal(404, `the aggregator has no node ${id}.`);
    return address;
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      const status = err instanceof Refusal ? err.status : 502;
      if (req.url?.startsWith("/api/")) connectFailure(req, res, status, (err as Error).message);
      else refuse(res, status, (err as Error).message);
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.headers.host !== hostHeader)
      return refuse(res, 421, `this console answers only to Host ${hostHeader}, not ${req.headers.host ?? "(none)"}.`);
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${hostHeader}`)
      return refuse(res, 403, `cross-origin requests are refused (Origin ${origin}).`);
    const url = new URL(req.url ?? "/", `http://${hostHeader}`);
    const given = url.searchParams.get("token");
    if (given !== null && url.pathname === "/" && sameToken(given, token)) {
      // The token leaves the address bar: a cookie scripts cannot read, sent only by this origin.
      res.writeHead(303, { location: "/", "set-cookie": `${cookieName}=${token}; HttpOnly; SameSite=Strict; Path=/` });
      return void res.end();
    }
    if (!sameToken(cookieOf(req, cookieName) ?? "", token))
      return refuse(res, 401, "open the URL `aether ui` printed (it carries the token that guards this port).");
    res.setHeader("cache-control", "no-store");
    if (url.pathname === "/config.json") return json(res, { node: options.node.address, cluster: options.cluster?.address ?? null });
    if (url.pathname.startsWith("/api/node/")) return forward(options.node, url.pathname.slice("/api/node".length), req, res);
    if (url.pathname.startsWith("/api/cluster/")) {
      if (options.cluster === undefined)
        return refuse(res, 404, "no aether-aggregator is configured: start aether ui with --aggregator or AETHER_AGGREGATOR.");
      return forward(options.cluster, url.pathname.slice("/api/cluster".length), req, res);
    }
    const other = /^\/api\/nodes\/([^/]+)(\/.+)$/.exec(url.pathname);
    if (other !== null) {
      const address = await addressOf(decodeURIComponent(other[1] as string));
      let upstream = others.get(address);
      if (upstream === undefined) others.set(address, (upstream = options.open(address)));
      return forward(upstream, other[2] as string, req, res);
    }
    if (url.pathname === "/console/attach" && req.method === "POST") return attachConsole(url, res);
    if (url.pathname === "/console/input" && req.method === "POST") {
      const send = consoles.get(url.searchParams.get("session") ?? "");
      if (send === undefined) return refuse(res, 404, "that console session has ended.");
      send(await body(req));
      return void res.writeHead(204).end();
    }
    if (req.method !== "GET") return refuse(res, 405, "only GET here.");
    return serveFile(url.pathname, res);
  }

  function serveFile(pathname: string, res: ServerResponse): void {
    const relative = normalize(pathname).replace(/^(\.\.[/\\])+/, "");
    let file = join(options.staticDir, relative);
    // A single-page app: every path that is not a file is the app, which routes on its own.
    if (!file.startsWith(options.staticDir) || !isFile(file)) file = join(options.staticDir, "index.html");
    if (!isFile(file)) return refuse(res, 500, `the web console is not built (${file} is missing): run npm run build.`);
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
      "x-frame-options": "DENY",
    });
    res.end(readFileSync(file));
  }

  async function forward(peer: Upstream, path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "POST") return refuse(res, 405, "Connect calls are POSTs.");
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) if (FORWARDED.test(name) && typeof value === "string") headers[name] = value;
    const stream = await peer.session.request("POST", path, headers, {});
    req.pipe(stream);
    stream.on("response", (answer) => {
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(answer))
        if (!name.startsWith(":") && value !== undefined && name !== "connection") out[name] = value as string | string[];
      res.writeHead(Number(answer[":status"] ?? 502), out);
      stream.pipe(res);
    });
    stream.on("error", (err) => {
      if (!res.headersSent) connectFailure(req, res, 502, `${peer.address} could not be reached: ${err.message}`);
      else res.destroy(err);
    });
    res.on("close", () => stream.close());
  }

  async function attachConsole(url: URL, res: ServerResponse): Promise<void> {
    const vm = url.searchParams.get("vm") ?? "";
    if (vm === "") return refuse(res, 400, "name the VM: /console/attach?vm=NAME.");
    const node = url.searchParams.get("node");
    const aether = await options.connectTo(node === null ? undefined : await addressOf(node));
    const session = randomBytes(16).toString("hex");
    const queue: Uint8Array[] = [];
    let wake: (() => void) | undefined;
    let open = true;
    consoles.set(session, (bytes) => {
      queue.push(bytes);
      wake?.();
    });
    async function* input() {
      yield { vm, tenant: url.searchParams.get("tenant") ?? "", tailBytes: BigInt(url.searchParams.get("tail") ?? "4096") };
      while (open) {
        const next = queue.shift();
        if (next !== undefined) yield { input: next };
        else await new Promise<void>((r) => (wake = r));
      }
    }
    const abort = new AbortController();
    res.on("close", () => {
      open = false;
      wake?.();
      abort.abort();
      consoles.delete(session);
    });
    const output = aether.vm.attachConsole(input(), { signal: abort.signal });
    try {
      let started = false;
      for await (const chunk of output) {
        if (!started) {
          res.writeHead(200, { "content-type": "application/octet-stream", "x-console-session": session });
          started = true;
        }
        res.write(chunk.output);
      }
      if (!started) res.writeHead(200, { "x-console-session": session });
      res.end();
    } catch (err) {
      if (!res.headersSent) refuse(res, 400, (err as { rawMessage?: string }).rawMessage ?? (err as Error).message);
      else res.end();
    } finally {
      consoles.delete(session);
      aether.close();
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === "object" && address !== null ? address.port : port;
  hostHeader = `${host.includes(":") ? `[${host}]` : host}:${bound}`;
  cookieName = `aether_ui_${bound}`;
  return {
    server,
    token,
    url: () => `http://${hostHeader}/?token=${token}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        options.node.session.abort();
        options.cluster?.session.abort();
        for (const upstream of others.values()) upstream.session.abort();
      }),
  };
}

/** A request refused with an HTTP status and a sentence. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function cookieOf(req: IncomingMessage, wanted: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === wanted) return value.join("=");
  }
  return undefined;
}

function refuse(res: ServerResponse, status: number, sentence: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
  res.end(`aether ui: ${sentence}\n`);
}

/**
 * A failure of the proxy itself (an unknown node, a peer it cannot reach), in the Connect
 * protocol so that the page shows its sentence like any server error: a JSON error for a unary
 * call, an end-of-stream message for a stream.
 */
function connectFailure(req: IncomingMessage, res: ServerResponse, status: number, sentence: string): void {
  const code = status === 404 ? "not_found" : "unavailable";
  const type = req.headers["content-type"] ?? "";
  if (!type.startsWith("application/connect+")) {
    res.writeHead(status === 404 ? 404 : 503, { "content-type": "application/json" });
    return void res.end(JSON.stringify({ code, message: sentence }));
  }
  const body = Buffer.from(JSON.stringify({ error: { code, message: sentence } }));
  const head = Buffer.alloc(5);
  head[0] = 0b10; // the end-of-stream flag
  head.writeUInt32BE(body.length, 1);
  res.writeHead(200, { "content-type": type });
  res.end(Buffer.concat([head, body]));
}

function json(res: ServerResponse, value: unknown): void {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

async function body(req: IncomingMessage): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}
