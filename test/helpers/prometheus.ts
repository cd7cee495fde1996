// A real Prometheus (Debian's `prometheus` package, installed by scripts/setup-host.sh) for the
// metrics tests: started on a free loopback port with a generated configuration that scrapes the
// given targets every second, its storage in a throw-away folder below the temporary directory (so a
// Prometheus a failed test left running names a test folder and scripts/leftovers.mjs reports it;
// it also carries the run's marker). stop() ends it and removes the folder; a test file's end stops
// one that was not stopped.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { freePort } from "./net.js";

export interface ScrapeJob {
  job: string;
  targets: string[];
  /** https with a client certificate (the endpoint's mutual TLS). */
  tls?: { ca: string; cert: string; key: string };
}

export interface TestPrometheus {
  readonly url: string;
  readonly dir: string;
  readonly process: ChildProcess;
  log(): string;
  /** An instant query; the result vector as label sets and numbers. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: number }>>;
  /** SIGTERM, wait for the exit (SIGKILL after 10 s), remove the folder. */
  stop(): Promise<void>;
}

const running = new Set<TestPrometheus>();
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  after(async () => {
    for (const p of running) await p.stop();
  });
}

export async function startPrometheus(jobs: ScrapeJob[]): Promise<TestPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), "aether-prometheus-"));
  const config = join(dir, "prometheus.yml");
  const lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "  evaluation_interval: 1s", "scrape_configs:"];
  for (const j of jobs) {
    lines.push(`  - job_name: ${JSON.stringify(j.job)}`);
    if (j.tls) {
      lines.push("    scheme: https", "    tls_config:");
      lines.push(
        `      ca_file: ${JSON.stringify(j.tls.ca)}`,
        `      cert_file: ${JSON.stringify(j.tls.cert)}`,
        `      key_file: ${JSON.stringify(j.tls.key)}`,
      );
    }
    lines.push("    static_configs:", `      - targets: ${JSON.stringify(j.targets)}`);
  }
  writeFileSync(config, `${lines.join("\n")}\n`);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    "prometheus",
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"],
    { cwd: dir, stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", (err) => (stderr += `\ncannot run prometheus: ${err.message} (bash scripts/setup-host.sh installs it)`));
  let stopped: Promise<void> | undefined;
  const self: TestPrometheus = {
    url,
    dir,
    process: child,
    log: () => stderr,
    async query(expr) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as {
        status: string;
        error?: string;
        data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== "success") throw new Error(`prometheus query ${expr} failed: ${body.error}`);
      return (body.data?.result ?? []).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dir, { recursive: true, force: true });
        running.delete(self);
      })();
      return stopped;
    },
  };
  running.add(self);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await self.stop();
      throw new Error(`prometheus exited before it was ready:\n${stderr}`);
    }
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await self.stop();
      throw new Error(`prometheus was not ready within 30 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return self;
}
