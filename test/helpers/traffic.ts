// What the traffic tests and bench share: a tiny HTTP service that answers its version (python3's
// http.server, a few lines, on loopback), and a load generator that sends requests continuously over
// kept-alive connections and records every answer.
import { spawn, type ChildProcess } from "node:child_process";
import { Agent, request } from "node:http";
import { freePort } from "./net.js";

// GET /healthz answers "ok"; anything else answers the version. HTTP/1.1 so HAProxy keeps connections.
const SERVICE = `
import http.server, sys
port, version = int(sys.argv[1]), sys.argv[2].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: else each answer waits out the peer's delayed ACK (40 ms).
    wbufsize = -1
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else version
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # a peer that resets (a killed proxy) is not news
Server(("127.0.0.1", port), H).serve_forever()
`;

export interface VersionService {
  readonly version: string;
  readonly port: number;
  readonly address: string;
  readonly process: ChildProcess;
  /** kill -9 and wait until it is gone. */
  kill(): Promise<void>;
}

/** Starts the service on a free loopback port and resolves once it answers. */
export async function startVersionService(version: string, port?: number): Promise<VersionService> {
  const p = port ?? (await freePort());
  const child = spawn("python3", ["-c", SERVICE, String(p), version], { stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const address = `127.0.0.1:${p}`;
  const deadline = Date.now() + 10_000;
  while ((await get(`http://${address}/`).catch(() => undefined)) !== version) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the ${version} service did not answer on ${address}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    version,
    port: p,
    address,
    process: child,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

/** One GET; resolves with the body of a 200, rejects on anything else. */
export function get(url: string, headers: Record<string, string> = {}, via: Agent = agent): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: via, headers, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 100)}`))));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

export interface Answer {
  /** When the answer arrived (performance.now()). */
  at: number;
  /** When the request was sent. */
  sentAt: number;
  body: string;
  error?: string;
}

export interface Load {
  readonly answers: Answer[];
  /** Stops sending and resolves once the requests in flight are answered. */
  stop(): Promise<Answer[]>;
}

/** Sends requests to url continuously from `concurrency` loops until stopped. */
export function startLoad(url: string, options: { concurrency?: number; headers?: () => Record<string, string> } = {}): Load {
  const answers: Answer[] = [];
  let running = true;
  const loop = async () => {
    while (running) {
      const sentAt = performance.now();
      try {
        const body = await get(url, options.headers?.() ?? {});
        answers.push({ at: performance.now(), sentAt, body });
      } catch (err) {
        answers.push({ at: performance.now(), sentAt, body: "", error: String(err) });
      }
    }
  };
  const loops = Array.from({ length: options.concurrency ?? 4 }, loop);
  return {
    answers,
    async stop() {
      running = false;
      await Promise.all(loops);
      return answers;
    },
  };
}

/** Answers by body, and the failed ones. */
export function tally(answers: Answer[]): { counts: Record<string, number>; failures: Answer[]; total: number } {
  const counts: Record<string, number> = {};
  const failures: Answer[] = [];
  for (const a of answers) {
    if (a.error !== undefined) failures.push(a);
    else counts[a.body] = (counts[a.body] ?? 0) + 1;
  }
  return { counts, failures, total: answers.length };
}
