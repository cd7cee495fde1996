// Starts a real aetherd (the same entry point users run) in a private socket and state directory,
// and stops, kills or restarts it the way a test needs.
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { after, before } from "node:test";
import { connect, type AetherClient } from "@aether/sdk";
import { removeCgroupRoot, uniqueCgroupRoot } from "./cgroups.js";
import { deleteVmTaps, killLeftovers } from "./leftovers.js";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// The same entry users run: the compiled daemon (the test script builds it first).
const MAIN = join(repoRoot, "daemon", "bin", "aetherd.mjs");

export interface TestDaemon {
  readonly socket: string;
  /** The cgroup root folder of this daemon's cells (pass it to a restarted daemon). */
  readonly cgroupRoot: string;
  readonly stateDir: string;
  readonly address: string;
  readonly process: ChildProcess;
  /** Output aetherd wrote to stderr (its structured log). */
  log(): string;
  client(): Promise<AetherClient>;
  /** SIGTERM and wait for a clean exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** kill -9, as a crash would. */
  kill9(): Promise<void>;
  /**
   * Removes the temporary directory (after stop/kill), ending first whatever still runs from it
   * (and saying so on stderr) and deleting its VMs' TAP devices, then its cgroup root.
   */
  cleanup(): void;
}

export interface DaemonOptions {
  dir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** cgroup root folder for cells; default: one of its own, removed by cleanup(). */
  cgroupRoot?: string;
  /** Run aetherd inside this network namespace (its TAP devices and bridges live there). */
  netns?: string;
  /** Client certificate for the socket, when aetherd runs with --unix-mtls. */
  socketTls?: { ca: string; cert: string; key: string };
}

let shimBuilt: Promise<string> | undefined;

/**
 * aetherd builds its process shim with cc in <state dir>/bin the first time it starts on a state
 * dir: about half a second of CPU, for every daemon of every test, as each starts on a fresh one.
 * The binary built once per source (in .aether/shim, by the same ensureShim) is put in place first,
 * as a restarted aetherd finds it (named after its source's digest, so a changed source is still built anew).
 */
async function placeShim(stateDir: string): Promise<void> {
  // Imported here, not at the top: it brings execa, which a test file that starts no daemon need not load.
  shimBuilt ??= import("../../daemon/src/runtime/shim.ts").then(({ ensureShim }) => ensureShim(join(repoRoot, ".aether", "shim")));
  const built = await shimBuilt;
  const target = join(stateDir, "bin", basename(built));
  if (existsSync(target)) return;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(built, target);
}

/** Starts aetherd and resolves once it answers on its socket. */
export async function startDaemon(options: DaemonOptions = {}): Promise<TestDaemon> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "aetherd-test-"));
  const socket = join(dir, "aetherd.sock");
  const stateDir = join(dir, "state");
  const cgroupRoot = options.cgroupRoot ?? uniqueCgroupRoot();
  await placeShim(stateDir);
  const argv = [process.execPath, MAIN, "--socket", socket, "--state-dir", stateDir, "--cgroup-root", cgroupRoot, ...(options.args ?? [])];
  const [file, ...args] = options.netns ? ["ip", "netns", "exec", options.netns, ...argv] : argv;
  const child = spawn(file as string, args, {
    cwd: repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  // A daemon that dies without being asked (not stop(), kill9() or its own crash point) says why on
  // the test's stderr: its log would otherwise go with it, and the test only sees "nothing is listening".
  let asked = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code, signal) => {
      const crashPoint = options.env?.AETHERD_CRASH_AT !== undefined && signal === "SIGKILL";
      if (!asked && !crashPoint) reportUnaskedExit(dir, code, signal, stderr);
      resolve(code);
    }),
  );
  const address = `unix://${socket}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`aetherd exited with ${child.exitCode} before it was ready:\n${stderr}`);
    if (existsSync(socket)) {
      const probe = await connect({ address: `unix://${socket}`, tls: options.socketTls }).catch(() => undefined);
      if (probe) {
        probe.close();
        break;
      }
    }
    if (Date.now() > deadline) {
      asked = true;
      child.kill("SIGKILL");
      throw new Error(`aetherd was not ready within 30 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const clients: AetherClient[] = [];
  uncleaned.set(dir, () =>
    removeDaemonFiles(dir, stateDir, cgroupRoot, "the test file ended without cleaning this daemon up, so it was ended now"),
  );
  return {
    socket,
    cgroupRoot,
    stateDir,
    address,
    process: child,
    log: () => stderr,
    async client() {
      const c = await connect({ address, tls: options.socketTls });
      clients.push(c);
      return c;
    },
    async stop() {
      asked = true;
      clients.forEach((c) => c.close());
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      asked = true;
      clients.forEach((c) => c.close());
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    cleanup() {
      uncleaned.delete(dir);
      removeDaemonFiles(
        dir,
        stateDir,
        cgroupRoot,
        "the test left this running and it was ended now (stop workloads before stopping aetherd: stopWorkloads)",
      );
    },
  };
}

/** The end of a daemon's log when it exited by itself: a crash's stack is at the end. */
function reportUnaskedExit(dir: string, code: number | null, signal: NodeJS.Signals | null, stderr: string): void {
  const tail = stderr.length > 8192 ? `...${stderr.slice(-8192)}` : stderr;
  process.stderr.write(
    `aetherd in ${dir} exited without being asked (${signal ?? `exit code ${code}`}); the end of its stderr:\n${tail}\n`,
  );
}

/**
 * Ends whatever still runs from a test daemon's folder or in its cgroups (saying so on stderr),
 * deletes its VMs' TAP devices, then removes its cgroup root and the folder.
 */
function removeDaemonFiles(dir: string, stateDir: string, cgroupRoot: string, why: string): void {
  const killed = killLeftovers(dir, cgroupRoot);
  const taps = deleteVmTaps(stateDir);
  if (killed.length > 0 || taps.length > 0) {
    process.stderr.write(
      `test cleanup of ${dir}: ${why}:\n${[...killed.map((k) => `  process ${k}`), ...taps.map((t) => `  TAP ${t}`)].join("\n")}\n`,
    );
  }
  removeCgroupRoot(cgroupRoot);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Daemon folders whose cleanup() was not called yet, by folder (a restarted daemon takes its
 * predecessor's place). After the last test of a file (a root-level hook), whatever it left is
 * ended and removed, so a test that failed before its cleanup() leaves no aetherd, shim or workload
 * running (and the file's process can exit: a running aetherd child would keep it alive).
 */
const uncleaned = new Map<string, () => void>();
// Only in a file node's test runner runs: bench/ imports these helpers too, outside any test.
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  after(() => {
    for (const [, clean] of uncleaned) clean();
    uncleaned.clear();
  });
}

/**
 * A host switched off, as a BMC's ForceOff would: its aetherd and these workload processes (with
 * their process groups) die at once, with no chance to clean up.
 */
export async function powerOffHost(daemon: TestDaemon, workloadPids: number[]): Promise<void> {
  const pid = daemon.process.pid;
  if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGKILL");
  for (const p of workloadPids) {
    for (const target of [-p, p]) {
      try {
        process.kill(target, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
  }
  await daemon.kill9();
}

/** Polls `check` until it returns a value (not undefined) or the timeout passes. */
export async function eventually<T>(
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
  what = "condition",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Collects a log stream into text per channel. */
export async function collect(stream: AsyncIterable<{ channel: number; data: Uint8Array }>): Promise<Record<number, string>> {
  const out: Record<number, string> = {};
  for await (const chunk of stream) out[chunk.channel] = (out[chunk.channel] ?? "") + Buffer.from(chunk.data).toString();
  return out;
}

/** True while the process exists and is not a zombie (a zombie has finished; only its parent's reaping is left). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** A daemon and a connected client for one describe block. */
export interface DaemonFixture {
  readonly daemon: TestDaemon;
  readonly aether: AetherClient;
}

/**
 * Starts aetherd before the enclosing describe block's tests and, after them, stops whatever
 * executables they left running, checks that aetherd exits 0 on SIGTERM, and removes its files.
 */
export function useDaemon(options: DaemonOptions = {}): DaemonFixture {
  const fixture = {} as { daemon: TestDaemon; aether: AetherClient };
  before(async () => {
    fixture.daemon = await startDaemon(options);
    fixture.aether = await fixture.daemon.client();
  });
  after(async () => {
    if (fixture.daemon === undefined) return; // it never started; before() failed with why
    try {
      if (fixture.aether !== undefined) await stopWorkloads(fixture.aether);
      assert.equal(await fixture.daemon.stop(), 0, "aetherd exits 0 on SIGTERM");
    } finally {
      fixture.daemon.cleanup();
    }
  });
  return fixture;
}

/**
 * Stops everything a test left running on this aetherd, in every tenant (ids resolve only within
 * their tenant, so each call names the tenant): VMs, then cells (stopping what runs in them,
 * children before parents), then loose executables. aetherd leaves workloads running when it stops,
 * by design, so a test calls this before stopping it. Failures are ignored: this is cleanup.
 */
export async function stopWorkloads(aether: AetherClient): Promise<void> {
  const { vms } = await aether.vm.listVms({ pageSize: 1000 }).catch(() => ({ vms: [] }));
  for (const v of vms) {
    await aether.vm.stopVm({ vm: v.id, tenant: v.tenant, force: true, timeout: { seconds: 5n } }).catch(() => undefined);
  }
  const { cells } = await aether.cells.listCells({ pageSize: 1000 }).catch(() => ({ cells: [] }));
  for (const c of [...cells].sort((a, b) => b.name.split("/").length - a.name.split("/").length)) {
    await aether.cells.freeCell({ cell: c.id, tenant: c.tenant, stopExecutables: true }).catch(() => undefined);
  }
  const { executables } = await aether.runtime.listExecutables({ pageSize: 1000 }).catch(() => ({ executables: [] }));
  for (const e of executables.filter((x) => x.pid > 0)) {
    await aether.runtime.stopExecutable({ executable: e.id, tenant: e.tenant, gracePeriod: { seconds: 0n } }).catch(() => undefined);
  }
}
