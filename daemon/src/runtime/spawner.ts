// The Node side of `aether-shim --spawner` (see daemon/shim/aether-shim.c): one long-lived spawner
// per aetherd, one request per executable, report lines back on its stdout.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "pino";

export interface SpawnRequest {
  id: string;
  dir: string;
  capBytes: number;
  cwd: string;
  /** -1 keeps the spawner's own. */
  uid: number;
  gid: number;
  cgroupProcsFiles: string[];
  /** Pid of the cell's namespace holder whose namespaces the program joins; 0: none. */
  nsHolderPid: number;
  /** Which of the holder's namespaces to join: net, uts, ipc, mnt. */
  nsJoin: string[];
  /**
   * A pid namespace of its own: "none"; "program-as-pid1" (a cell's pid isolation); "under-init"
   * (tenant processes: a minimal init is pid 1, so the program gets signals like any process).
   */
  pidNamespace: "none" | "program-as-pid1" | "under-init";
  argv: string[];
  env: Record<string, string>;
}

export interface Spawned {
  pid: number;
  startTime: string;
}

/** Raised when a program could not be started; carries the shim's sentence. */
export class SpawnError extends Error {}

export class ShimSpawner {
  private child: ChildProcessWithoutNullStreams | undefined;
  private readonly pending = new Map<string, { resolve: (s: Spawned) => void; reject: (e: Error) => void; sinceMs: number }>();

  constructor(
    private readonly shimPath: string,
    private readonly onExited: (id: string) => void,
    private readonly log: Logger,
  ) {}

  spawn(req: SpawnRequest): Promise<Spawned> {
    const child = this.ensureChild();
    const fields = [
      req.id,
      req.dir,
      String(req.capBytes),
      req.cwd,
      String(req.uid),
      String(req.gid),
      String(req.cgroupProcsFiles.length),
      ...req.cgroupProcsFiles,
      String(req.nsHolderPid),
      req.nsJoin.join(","),
      { none: "0", "program-as-pid1": "1", "under-init": "2" }[req.pidNamespace],
      String(req.argv.length),
      ...req.argv,
      String(Object.keys(req.env).length),
      ...Object.entries(req.env).map(([k, v]) => `${k}=${v}`),
    ];
    const payload = Buffer.concat(fields.map((f) => Buffer.from(`${f}\0`)));
    return new Promise<Spawned>((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject, sinceMs: Date.now() });
      child.stdin.write(Buffer.concat([Buffer.from(`${payload.length}\n`), payload]));
    });
  }

  /** How long the oldest start not yet reported has waited (ms); 0 when none waits (for CheckHealth). */
  oldestPendingMs(now = Date.now()): number {
    let oldest = now;
    for (const p of this.pending.values()) oldest = Math.min(oldest, p.sinceMs);
    return now - oldest;
  }

  /** Closes the spawner's stdin: it exits; shims it started keep running. */
  close(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }

  private ensureChild(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    // Not a host command (see host/command.ts): a long-lived helper speaking a line protocol.
    const child = spawn(this.shimPath, ["--spawner"], { stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    createInterface({ input: child.stdout }).on("line", (line) => this.onLine(line));
    createInterface({ input: child.stderr }).on("line", (line) => this.log.warn({ line }, "process spawner said"));
    child.stdin.on("error", () => {}); // a dead spawner is handled on exit below
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.pending.size > 0 || code !== 0)
        this.log.error({ code, signal }, "the process spawner exited; it is restarted on the next start");
      for (const [, p] of this.pending) p.reject(new SpawnError("the process spawner exited before reporting the start"));
      this.pending.clear();
    });
    return child;
  }

  private onLine(line: string): void {
    const [word, id = "", ...rest] = line.split(" ");
    if (word === "exited") {
      this.onExited(id);
      return;
    }
    const waiter = this.pending.get(id);
    if (!waiter) return;
    this.pending.delete(id);
    if (word === "started") waiter.resolve({ pid: Number(rest[0]), startTime: rest[1] ?? "" });
    else waiter.reject(new SpawnError(rest.slice(1).join(" ")));
  }
}
