// The aggregator as tests run it: the compiled aether-aggregator on a unix socket in a temporary
// folder, ready once it answers CheckHealth as SERVING (it leads).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type AetherClient } from "@aether/sdk";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { repoRoot } from "./daemon.js";

const MAIN = join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs");

export interface TestAggregator {
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly process: ChildProcess;
  readonly client: AetherClient;
  log(): string;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/**
 * Starts aether-aggregator; resolves once it leads (CheckHealth SERVING), or with `standby` once it
 * answers at all (a standby answers DEGRADED, naming the leader).
 */
export async function startAggregator(
  options: {
    dir?: string;
    args?: string[];
    standby?: boolean;
    /** Node's own flags (e.g. --cpu-prof). */
    nodeArgs?: string[];
    /** Another build's bin/aether-aggregator.mjs (a bench's baseline). */
    main?: string;
  } = {},
): Promise<TestAggregator> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "aether-aggregator-test-"));
  const socket = join(dir, "aggregator.sock");
  const stateDir = join(dir, "state");
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeArgs ?? []),
      options.main ?? MAIN,
      "--socket",
      socket,
      "--state-dir",
      stateDir,
      "--log-level",
      "warn",
      ...(options.args ?? []),
    ],
    {
      cwd: repoRoot,
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  let client: AetherClient | undefined;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`aether-aggregator exited with ${child.exitCode} before it was ready:\n${stderr}`);
    if (existsSync(socket)) {
      client ??= await connect({ address: `unix://${socket}` }).catch(() => undefined);
      const health = await client?.node.checkHealth({}).catch(() => undefined);
      if (health?.status === HealthStatus.SERVING || (options.standby && health !== undefined)) break;
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`aether-aggregator did not lead within 30 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const ready = client as AetherClient;
  return {
    dir,
    socket,
    stateDir,
    process: child,
    client: ready,
    log: () => stderr,
    async stop() {
      ready.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      ready.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
