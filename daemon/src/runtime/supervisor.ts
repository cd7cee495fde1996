// The supervisor owns every executable on this host: it spawns them through the shim, knows when
// they end, stops them, and re-adopts them after aetherd restarts. Handlers call it with validated
// values; it never sees a raw request.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { constants as osConstants } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import type { EventBus } from "../observe/event-bus.js";
import { writeJsonAtomic } from "../store/atomic-file.js";
import {
  ExitSchema,
  ExecutableSpecSchema,
  StartedSchema,
  StopSchema,
  readRecordFile,
  recordFiles,
  type Exit,
  type ExecutableSpec,
  type Started,
} from "./executable-record.js";
import { isSameProcessAlive } from "./procfs.js";

export type ExecutableStatus = "running" | "exited" | "lost";

/** One executable as the supervisor tracks it. */
export interface TrackedExecutable {
  spec: ExecutableSpec;
  dir: string;
  status: ExecutableStatus;
  started?: Started;
  exit?: Exit;
  /** Why it is in its state when that is not self-explanatory. */
  reason: string;
  /** Resolves once the process is known to have ended (exited or lost). */
  ended: Promise<void>;
}

interface Internal extends TrackedExecutable {
  markEnded: () => void;
  watcher?: FSWatcher;
  poll?: NodeJS.Timeout;
}

/** Raised when a program could not be started; carries the shim's sentence. */
export class SpawnError extends Error {}

export interface StartInput extends Omit<ExecutableSpec, "id" | "createTimeMs"> {}

const LIVENESS_POLL_MS = 1000;

export class Supervisor {
  private readonly byId = new Map<string, Internal>();
  private readonly root: string;

  constructor(
    stateDir: string,
    private readonly shimPath: string,
    private readonly log: Logger,
    private readonly events: EventBus,
  ) {
    this.root = join(stateDir, "executables");
  }

  list(): TrackedExecutable[] {
    return [...this.byId.values()];
  }

  get(id: string): TrackedExecutable | undefined {
    return this.byId.get(id);
  }

  logPath(exe: TrackedExecutable, channel: "stdout" | "stderr"): string {
    return join(exe.dir, recordFiles[channel]);
  }

  /** Reads every executable folder back and re-adopts the processes that still run. */
  async load(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const id of await readdir(this.root)) {
      const dir = join(this.root, id);
      try {
        const spec = await readRecordFile(dir, recordFiles.spec, ExecutableSpecSchema);
        if (spec === undefined) {
          this.log.warn({ dir }, "executable folder without record.json; leaving it untouched");
          continue;
        }
        const exe = this.track(spec, dir);
        await this.refresh(exe);
        if (exe.status === "running") this.watchAdopted(exe);
      } catch (err) {
        this.log.error({ dir, err }, "could not read an executable's records; leaving its folder untouched");
      }
    }
    const running = this.list().filter((e) => e.status === "running").length;
    this.log.info({ tracked: this.byId.size, running }, "executables loaded");
  }

  async start(input: StartInput): Promise<TrackedExecutable> {
    const spec: ExecutableSpec = { ...input, id: randomUUID(), createTimeMs: Date.now() };
    const dir = join(this.root, spec.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // The spec is on disk before the process exists, so no process can run that a restart forgets.
    await writeJsonAtomic(join(dir, recordFiles.spec), spec);
    const exe = this.track(spec, dir);
    try {
      await this.spawnShim(exe);
    } catch (err) {
      this.byId.delete(spec.id);
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    this.events.publish({
      kind: "executable.started",
      tenant: spec.tenant,
      resourceId: spec.id,
      resourceName: spec.name,
      message: `executable ${spec.name} started as pid ${exe.started?.pid}`,
      attributes: { pid: String(exe.started?.pid ?? 0) },
    });
    return exe;
  }

  /**
   * Signals the process group, waits up to graceMs, then SIGKILLs it. Resolves once it has ended.
   * The caller has checked that it is running.
   */
  async stop(exe: TrackedExecutable, signal: NodeJS.Signals, graceMs: number): Promise<TrackedExecutable> {
    const internal = exe as Internal;
    let reason = `stopped on request with ${signal}`;
    this.signalGroup(internal, graceMs === 0 ? "SIGKILL" : signal);
    if (graceMs === 0) reason = "killed on request with SIGKILL";
    else if (!(await settlesWithin(exe.ended, graceMs))) {
      reason = `stopped on request: ${signal} did not end it within ${graceMs} ms, so it was killed with SIGKILL`;
      this.signalGroup(internal, "SIGKILL");
    }
    await writeJsonAtomic(join(exe.dir, recordFiles.stop), { reason });
    await exe.ended;
    internal.reason = reason;
    return exe;
  }

  /** Forgets an ended executable and deletes its folder (logs included). */
  async delete(exe: TrackedExecutable): Promise<void> {
    this.byId.delete(exe.spec.id);
    await rm(exe.dir, { recursive: true, force: true });
  }

  /** Releases watchers and timers; the processes themselves keep running. */
  close(): void {
    for (const exe of this.byId.values()) this.unwatch(exe);
  }

  private track(spec: ExecutableSpec, dir: string): Internal {
    let markEnded: () => void = () => {};
    const ended = new Promise<void>((resolve) => (markEnded = resolve));
    const exe: Internal = { spec, dir, status: "running", reason: "", ended, markEnded };
    this.byId.set(spec.id, exe);
    return exe;
  }

  private spawnShim(exe: Internal): Promise<void> {
    const { spec } = exe;
    const args = ["--dir", exe.dir, "--cap", String(spec.logLimitBytes), "--cwd", spec.cwd];
    if (spec.uid !== process.getuid?.()) args.push("--uid", String(spec.uid));
    if (spec.gid !== process.getgid?.()) args.push("--gid", String(spec.gid));
    args.push("--", ...spec.argv);
    // Not a host command (see host/command.ts): the shim is long-lived, detached into its own
    // session so that it outlives aetherd, and speaks a line protocol on its stdout.
    const shim = spawn(this.shimPath, args, { env: spec.env, detached: true, stdio: ["ignore", "pipe", "ignore"] });
    shim.unref();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const lines = createInterface({ input: shim.stdout });
      lines.on("line", (line) => {
        const [word, ...rest] = line.split(" ");
        if (word === "started" && !settled) {
          settled = true;
          exe.started = {
            pid: Number(rest[0]),
            startTime: rest[1] ?? "",
            shimPid: shim.pid ?? 0,
            shimStartTime: "",
            timeMs: Date.now(),
          };
          // The socket must not keep aetherd alive at shutdown; the process outlives us by design.
          (shim.stdout as unknown as { unref?: () => void }).unref?.();
          resolve();
        } else if (word === "error" && !settled) {
          settled = true;
          reject(new SpawnError(rest.slice(1).join(" ")));
        }
      });
      shim.stdout.on("close", () => {
        if (!settled) {
          settled = true;
          reject(new SpawnError("the process shim ended before reporting the start"));
          return;
        }
        void this.onShimGone(exe);
      });
      shim.on("error", (err) => {
        if (!settled) {
          settled = true;
          reject(new SpawnError(`the process shim could not be started: ${err.message}`));
        }
      });
    });
  }

  /** The shim's pipe closed: it wrote exit.json, or it was itself killed. */
  private async onShimGone(exe: Internal): Promise<void> {
    try {
      await this.refresh(exe);
    } catch (err) {
      this.log.error({ id: exe.spec.id, err }, "could not read an executable's exit record");
    }
    if (exe.status === "running") this.watchAdopted(exe); // the shim died but the program lives on
  }

  /** Re-reads the folder and derives the state; resolves `ended` once it has ended. */
  private async refresh(exe: Internal): Promise<void> {
    const started = await readRecordFile(exe.dir, recordFiles.started, StartedSchema);
    const exit = await readRecordFile(exe.dir, recordFiles.exit, ExitSchema);
    const stop = await readRecordFile(exe.dir, recordFiles.stop, StopSchema);
    if (started) exe.started = started;
    if (exit) {
      this.finish(exe, "exited", stop?.reason ?? describeExit(exit), exit);
    } else if (!started) {
      this.finish(exe, "lost", "aetherd stopped while starting this executable; the program never ran");
    } else if (!isSameProcessAlive(started.pid, started.startTime)) {
      // Gone without an exit record. Give a live shim a moment to write it; otherwise it is lost.
      if (isSameProcessAlive(started.shimPid, started.shimStartTime)) return;
      this.finish(exe, "lost", "the process ended while its shim was not running, so its exit status is unknown");
    } else {
      exe.status = "running";
    }
  }

  private finish(exe: Internal, status: ExecutableStatus, reason: string, exit?: Exit): void {
    if (exe.status !== "running" && exe.exit) return;
    const wasRunning = exe.status === "running";
    exe.status = status;
    exe.reason = reason;
    if (exit) exe.exit = exit;
    this.unwatch(exe);
    exe.markEnded();
    if (wasRunning) {
      this.events.publish({
        kind: status === "exited" ? "executable.exited" : "executable.lost",
        tenant: exe.spec.tenant,
        resourceId: exe.spec.id,
        resourceName: exe.spec.name,
        message: `executable ${exe.spec.name} ${reason}`,
        attributes: exit
          ? { exit_code: exit.exitCode === null ? "" : String(exit.exitCode), signal: signalName(exit.signal) }
          : {},
      });
    }
  }

  /** An adopted process has no pipe to us: watch its folder for exit.json, and poll liveness. */
  private watchAdopted(exe: Internal): void {
    if (exe.watcher || exe.poll) return;
    const check = () => void this.refresh(exe).catch((err) => this.log.error({ id: exe.spec.id, err }, "refresh failed"));
    try {
      exe.watcher = watch(exe.dir, (_event, file) => {
        if (file === recordFiles.exit) check();
      });
      exe.watcher.on("error", () => this.unwatchFs(exe));
    } catch {
      // inotify may be exhausted; the poll below still finds the end
    }
    exe.poll = setInterval(check, LIVENESS_POLL_MS);
    exe.poll.unref();
  }

  private unwatchFs(exe: Internal): void {
    exe.watcher?.close();
    exe.watcher = undefined;
  }

  private unwatch(exe: Internal): void {
    this.unwatchFs(exe);
    if (exe.poll) clearInterval(exe.poll);
    exe.poll = undefined;
  }

  private signalGroup(exe: Internal, signal: NodeJS.Signals): void {
    const started = exe.started;
    if (!started || exe.status !== "running") return;
    // Never signal a pid the kernel has handed to someone else since.
    if (!isSameProcessAlive(started.pid, started.startTime)) return;
    try {
      process.kill(-started.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }
}

export function signalName(signal: number): string {
  if (signal === 0) return "";
  const entry = Object.entries(osConstants.signals).find(([, n]) => n === signal);
  return entry ? entry[0] : `signal ${signal}`;
}

function describeExit(exit: Exit): string {
  return exit.exitCode === null ? `was killed by ${signalName(exit.signal)}` : `exited with code ${exit.exitCode}`;
}

function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Size of a file, 0 when it does not exist. */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}
