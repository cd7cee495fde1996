// The supervisor owns every executable on this host: it spawns them through the shim, knows when
// they end, stops them, and re-adopts them after aetherd restarts. Handlers call it with validated
// values; it never sees a raw request.
//
// Just past 400 lines: start, stop, delete, the adoption of running processes at start and the
// explanation of each exit share the tracked records; spawning is spawner.ts.
import { randomUUID } from "node:crypto";
import { mkdirSync, statSync, watch, type FSWatcher } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { constants as osConstants } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import type { EventBus } from "../observe/event-bus.js";
import { writeJsonAtomic, writeJsonAtomicSync } from "@aether/server";
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
import { ShimSpawner } from "./spawner.js";
import type { ProcessTrees, TreeProcess } from "./process-tree.js";

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
  /** What the main process left running when it ended, and aetherd then killed. */
  leftBehind?: TreeProcess[];
}

interface Internal extends TrackedExecutable {
  markEnded: () => void;
  watcher?: FSWatcher;
  poll?: NodeJS.Timeout;
  /**
   * While start() has not yet announced "executable.started": a program that ends at once can be
   * reported ended by its shim before start() hears the spawn succeeded, and its end event waits
   * here so that subscribers always see started before exited.
   */
  announcing?: { heldEnd?: Parameters<EventBus["publish"]>[0] };
}

export { SpawnError } from "./spawner.js";

export interface StartInput extends Omit<ExecutableSpec, "id" | "createTimeMs" | "cellId" | "cellOomKillsAtStart" | "pidNamespace"> {
  pidNamespace?: boolean;
}

/** Where and how a process joins a cell (see cells/registry.ts). */
export interface Placement {
  cellId: string;
  cellName: string;
  procsFiles: string[];
  nsHolderPid: number;
  nsJoin: string[];
  newPidNamespace: boolean;
  oomKillsAtStart: number;
}

/** Explains an ending the exit status alone cannot (an OOM kill in a cell); undefined otherwise. */
export type ExitExplainer = (spec: ExecutableSpec, exit: Exit) => string | undefined;

const LIVENESS_POLL_MS = 1000;

export class Supervisor {
  private readonly byId = new Map<string, Internal>();
  /** Stops under way, by executable id. */
  private readonly stopping = new Map<string, Promise<TrackedExecutable>>();
  private readonly root: string;
  private readonly spawner: ShimSpawner;
  /** Set once the cells room exists; explains OOM kills. */
  explainExit: ExitExplainer = () => undefined;

  /**
   * @param trees each executable's own cgroup (process-tree.ts); undefined where the host has no
   *   usable hierarchy, and then only the process group is reached
   */
  constructor(
    stateDir: string,
    shimPath: string,
    private readonly log: Logger,
    private readonly events: EventBus,
    private readonly trees?: ProcessTrees,
  ) {
    this.root = join(stateDir, "executables");
    this.spawner = new ShimSpawner(
      shimPath,
      (id) => {
        const exe = this.byId.get(id);
        if (exe) this.checkEnd(exe);
      },
      log,
    );
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
        const spec = readRecordFile(dir, recordFiles.spec, ExecutableSpecSchema);
        if (spec === undefined) {
          this.log.warn({ dir }, "executable folder without record.json; leaving it untouched");
          continue;
        }
        const exe = this.track(spec, dir);
        this.refresh(exe);
        if (exe.status === "running") this.watchForEnd(exe);
      } catch (err) {
        this.log.error({ dir, err }, "could not read an executable's records; leaving its folder untouched");
      }
    }
    // Tree cgroups whose executable was deleted while aetherd was away (or never recorded).
    for (const id of this.trees?.ids() ?? []) {
      if (this.byId.has(id)) continue;
      this.trees?.killAll(id);
      this.trees?.remove(id);
    }
    const running = this.list().filter((e) => e.status === "running").length;
    this.log.info({ tracked: this.byId.size, running }, "executables loaded");
  }

  async start(input: StartInput, placement?: Placement): Promise<TrackedExecutable> {
    const spec: ExecutableSpec = {
      ...input,
      pidNamespace: input.pidNamespace ?? false,
      cell: placement?.cellName ?? "",
      cellId: placement?.cellId ?? "",
      cellOomKillsAtStart: placement?.oomKillsAtStart ?? 0,
      id: randomUUID(),
      createTimeMs: Date.now(),
    };
    const dir = join(this.root, spec.id);
    mkdirSync(dir, { mode: 0o700 });
    // The spec is written before the process exists, so no process can run that a restart forgets.
    // Not fsynced: the process does not outlive the host either (see @aether/server, server/src/atomic-file.ts).
    writeJsonAtomicSync(join(dir, recordFiles.spec), spec);
    const exe = this.track(spec, dir);
    exe.announcing = {};
    try {
      const tree = this.trees?.create(spec.id, placement !== undefined);
      const hostUid = spec.hostUid ?? spec.uid;
      const hostGid = spec.hostGid ?? spec.gid;
      const spawned = await this.spawner.spawn({
        id: spec.id,
        dir,
        capBytes: spec.logLimitBytes,
        cwd: spec.cwd,
        uid: hostUid === process.getuid?.() ? -1 : hostUid,
        gid: hostGid === process.getgid?.() ? -1 : hostGid,
        cgroupProcsFiles: [...(tree ? [tree] : []), ...(placement?.procsFiles ?? [])],
        nsHolderPid: placement?.nsHolderPid ?? 0,
        nsJoin: placement?.nsJoin ?? [],
        pidNamespace: spec.pidNamespace ? "under-init" : placement?.newPidNamespace ? "program-as-pid1" : "none",
        argv: spec.argv,
        env: spec.env,
      });
      exe.started = { ...spawned, shimPid: 0, shimStartTime: "", timeMs: Date.now() };
      this.watchForEnd(exe);
    } catch (err) {
      this.byId.delete(spec.id);
      this.trees?.killAll(spec.id);
      this.trees?.remove(spec.id);
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
    const { heldEnd } = exe.announcing;
    exe.announcing = undefined;
    if (heldEnd) this.events.publish(heldEnd);
    return exe;
  }

  /**
   * Signals the process group, waits up to graceMs, then SIGKILLs it. Resolves once it has ended.
   * The caller has checked that it is running. A stop while another is under way sends its own
   * signal at once (a SIGKILL does not wait out an earlier SIGTERM's grace) and ends with the first
   * (whose reason is recorded): two stops never write the stop record at the same time.
   */
  async stop(exe: TrackedExecutable, signal: NodeJS.Signals, graceMs: number): Promise<TrackedExecutable> {
    const internal = exe as Internal;
    const earlier = this.stopping.get(exe.spec.id);
    if (earlier) {
      this.signalGroup(internal, graceMs === 0 ? "SIGKILL" : signal);
      if (graceMs > 0 && !(await settlesWithin(exe.ended, graceMs))) this.signalGroup(internal, "SIGKILL");
      return earlier;
    }
    const run = this.stopOnce(internal, signal, graceMs);
    this.stopping.set(exe.spec.id, run);
    try {
      return await run;
    } finally {
      if (this.stopping.get(exe.spec.id) === run) this.stopping.delete(exe.spec.id);
    }
  }

  private async stopOnce(internal: Internal, signal: NodeJS.Signals, graceMs: number): Promise<TrackedExecutable> {
    const exe: TrackedExecutable = internal;
    let reason = `stopped on request with ${signal}`;
    this.signalGroup(internal, graceMs === 0 ? "SIGKILL" : signal);
    if (graceMs === 0) reason = "killed on request with SIGKILL";
    else if (!(await settlesWithin(exe.ended, graceMs))) {
      reason = `stopped on request: ${signal} did not end it within ${graceMs} ms, so it was killed with SIGKILL`;
      this.signalGroup(internal, "SIGKILL");
    }
    await writeJsonAtomic(join(exe.dir, recordFiles.stop), { reason }, { durable: false });
    await exe.ended;
    internal.reason = reason;
    return exe;
  }

  /**
   * Forgets an ended executable and deletes its folder (logs included), after a stop still writing
   * its record there (the process has ended, the stop has not answered yet): else that write would
   * make the folder again.
   */
  async delete(exe: TrackedExecutable): Promise<void> {
    await this.stopping.get(exe.spec.id)?.catch(() => undefined);
    this.byId.delete(exe.spec.id);
    this.trees?.killAll(exe.spec.id);
    await this.removeTree(exe.spec.id);
    await rm(exe.dir, { recursive: true, force: true });
    this.events.publish({
      kind: "executable.deleted",
      tenant: exe.spec.tenant,
      resourceId: exe.spec.id,
      resourceName: exe.spec.name,
      message: `executable ${exe.spec.name} deleted`,
      attributes: {},
    });
  }

  /** How long the oldest start the process spawner has not reported yet has waited (ms); 0: none waits. */
  spawnerWaitingMs(): number {
    return this.spawner.oldestPendingMs();
  }

  /** Releases watchers, timers and the spawner; the processes themselves keep running. */
  close(): void {
    for (const exe of this.byId.values()) this.unwatch(exe);
    this.spawner.close();
  }

  private track(spec: ExecutableSpec, dir: string): Internal {
    let markEnded: () => void = () => {};
    const ended = new Promise<void>((resolve) => (markEnded = resolve));
    const exe: Internal = { spec, dir, status: "running", reason: "", ended, markEnded };
    this.byId.set(spec.id, exe);
    return exe;
  }

  /** The shim reported the end, or a watcher or the poll noticed something: re-read the folder. */
  private checkEnd(exe: Internal): void {
    try {
      this.refresh(exe);
    } catch (err) {
      this.log.error({ id: exe.spec.id, err }, "could not read an executable's records");
    }
  }

  /** Re-reads the folder and derives the state; resolves `ended` once it has ended. */
  private refresh(exe: Internal): void {
    const started = readRecordFile(exe.dir, recordFiles.started, StartedSchema);
    const exit = readRecordFile(exe.dir, recordFiles.exit, ExitSchema);
    const stop = readRecordFile(exe.dir, recordFiles.stop, StopSchema);
    if (started) exe.started = started;
    if (exit) {
      this.finish(exe, "exited", stop?.reason ?? this.explainExit(exe.spec, exit) ?? describeExit(exit), exit);
    } else if (!started) {
      this.finish(exe, "lost", "aetherd stopped while starting this executable; the program never ran");
    } else if (!isSameProcessAlive(started.pid, started.startTime)) {
      // Gone without an exit record. Give a live shim a moment to write it; otherwise it is lost.
      if (isSameProcessAlive(started.shimPid, started.shimStartTime)) return;
      // The shim may have written exit.json and ended between the first read and now.
      const late = readRecordFile(exe.dir, recordFiles.exit, ExitSchema);
      if (late) return this.finish(exe, "exited", stop?.reason ?? this.explainExit(exe.spec, late) ?? describeExit(late), late);
      this.finish(exe, "lost", "the process ended while its shim was not running, so its exit status is unknown");
    } else {
      exe.status = "running";
    }
  }

  private finish(exe: Internal, status: ExecutableStatus, reason: string, exit?: Exit): void {
    if (exe.status !== "running" && exe.exit) return;
    const wasRunning = exe.status === "running";
    // The main process has ended: nothing of its tree may outlive it untracked.
    const left = this.trees?.killAll(exe.spec.id) ?? [];
    if (left.length > 0) {
      exe.leftBehind = left;
      const names = [...new Set(left.map((p) => p.name))].slice(0, 5).join(", ");
      reason = `${reason}; ${left.length} process${left.length === 1 ? "" : "es"} it left running (${names}) ${left.length === 1 ? "was" : "were"} killed`;
    }
    void this.removeTree(exe.spec.id);
    exe.status = status;
    exe.reason = reason;
    if (exit) exe.exit = exit;
    this.unwatch(exe);
    exe.markEnded();
    if (wasRunning) {
      const event: Parameters<EventBus["publish"]>[0] = {
        kind: status === "exited" ? "executable.exited" : "executable.lost",
        tenant: exe.spec.tenant,
        resourceId: exe.spec.id,
        resourceName: exe.spec.name,
        message: `executable ${exe.spec.name} ${reason}`,
        attributes: exit ? { exit_code: exit.exitCode === null ? "" : String(exit.exitCode), signal: signalName(exit.signal) } : {},
      };
      if (exe.announcing) exe.announcing.heldEnd = event;
      else this.events.publish(event);
    }
  }

  /**
   * The shim's "exited" line is the fast path, but it can be lost (an adopted process reports to a
   * previous aetherd; a full pipe drops the line), so also watch the folder for exit.json and poll
   * liveness: an end is always noticed, at worst a second late.
   */
  private watchForEnd(exe: Internal): void {
    if (exe.watcher || exe.poll) return;
    const check = () => this.checkEnd(exe);
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

  /** Processes of the executable's tree besides its main process, while it runs. */
  otherProcesses(exe: TrackedExecutable): number {
    if (exe.status !== "running") return 0;
    const main = exe.started?.pid;
    return (this.trees?.processes(exe.spec.id) ?? []).filter((p) => p.pid !== main).length;
  }

  /** Removes a tree cgroup once the killed processes have left it (they leave within moments). */
  private async removeTree(id: string): Promise<void> {
    for (let attempt = 0; attempt < 50 && this.trees && !this.trees.remove(id); attempt++) {
      await new Promise((r) => setTimeout(r, 20).unref());
    }
  }

  private signalGroup(exe: Internal, signal: NodeJS.Signals): void {
    const started = exe.started;
    if (!started || exe.status !== "running") return;
    // The whole tree, also what left the process group (setsid, double forks).
    this.trees?.signal(exe.spec.id, signal);
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

/** Size of a file, 0 when it does not exist (synchronous: a stat of a local file is cheaper than a thread-pool hop). */
export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
