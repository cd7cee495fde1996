// Every executable's whole process tree, not only its main process: each one starts in a cgroup of
// its own (a lightweight cell with no limits), so a child that double-forks or leaves its process
// group (`sh -c 'sleep 3336 & exit 0'`) is still found. A stop signals the whole tree; when the main
// process has ended, whatever it left behind is killed and the executable's state says so.
//
// Which hierarchy: on cgroup v1 the freezer hierarchy, which cells do not use (they use cpu,
// cpuacct, cpuset, memory and pids), so an executable can be in its cell and in its tree at once,
// and the tree can be frozen while it is killed (a forking process cannot outrun the kill). On
// cgroup v2 a process is in one cgroup only: an executable outside any cell gets a leaf of its own
// below the cells' root; one inside a cell is tracked by its process group, because moving it out
// of its cell would lift the cell's limits. Tree cgroups hold no processes of aetherd itself.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TreeProcess {
  pid: number;
  /** The process's command name (/proc/PID/comm), for the state reason. */
  name: string;
}

export class ProcessTrees {
  /**
   * @param root the folder of this supervisor's tree cgroups
   * @param version the hierarchy's: v1 (freezer) or v2 (unified)
   * @param sharesCells v2: the trees live in the cells' hierarchy, so executables in a cell get none
   */
  constructor(
    readonly root: string,
    private readonly version: "v1" | "v2",
    private readonly sharesCells: boolean,
  ) {}

  private dir(id: string): string {
    return join(this.root, id);
  }

  /** Makes the executable's tree cgroup; returns the file its pid is written to, or undefined. */
  create(id: string, inCell: boolean): string | undefined {
    if (inCell && this.sharesCells) return undefined;
    const dir = this.dir(id);
    mkdirSync(dir, { recursive: true });
    return join(dir, "cgroup.procs");
  }

  /** The processes in the tree now (none when it has no tree cgroup). */
  processes(id: string): TreeProcess[] {
    let text: string;
    try {
      text = readFileSync(join(this.dir(id), "cgroup.procs"), "utf8");
    } catch {
      return [];
    }
    return text
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => ({ pid: Number(l), name: commOf(Number(l)) }));
  }

  /** Sends a signal to every process of the tree (those that vanished meanwhile are skipped). */
  signal(id: string, signal: NodeJS.Signals): void {
    for (const p of this.processes(id)) killQuietly(p.pid, signal);
  }

  /**
   * Kills every process still in the tree, frozen first so none can fork a new one between the
   * read and the kill, and returns what was there. Synchronous: cgroupfs answers at once, and the
   * caller reports the result in the same step that marks the executable ended.
   */
  killAll(id: string): TreeProcess[] {
    const found = this.processes(id);
    if (found.length === 0) return [];
    const dir = this.dir(id);
    if (this.version === "v2" && existsSync(join(dir, "cgroup.kill"))) {
      writeFileSync(join(dir, "cgroup.kill"), "1");
      return found;
    }
    const [freezeFile, frozen, thawed] = this.version === "v1" ? ["freezer.state", "FROZEN", "THAWED"] : ["cgroup.freeze", "1", "0"];
    const freezable = existsSync(join(dir, freezeFile));
    if (freezable) {
      writeFileSync(join(dir, freezeFile), frozen);
      waitFrozen(dir, this.version);
    }
    // Without a freezer, kill until nothing is left (a bounded number of rounds).
    for (let round = 0; round < (freezable ? 1 : 20); round++) {
      const left = this.processes(id);
      if (left.length === 0) break;
      for (const p of left) killQuietly(p.pid, "SIGKILL");
    }
    // Killed processes die only once thawed.
    if (freezable) writeFileSync(join(dir, freezeFile), thawed);
    return found;
  }

  /** Removes the tree's cgroup once it is empty; false while processes are still leaving it. */
  remove(id: string): boolean {
    const dir = this.dir(id);
    if (!existsSync(dir)) return true;
    try {
      rmdirSync(dir);
      return true;
    } catch {
      return false;
    }
  }

  /** Ids of every tree cgroup there is (to clean up those whose executable is gone). */
  ids(): string[] {
    if (!existsSync(this.root)) return [];
    return readdirSync(this.root, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  }
}

/** A freezer takes a moment to stop every task; cgroupfs reports when it has. Bounded to ~1 s. */
function waitFrozen(dir: string, version: "v1" | "v2"): void {
  const deadline = Date.now() + 1000;
  const done = () =>
    version === "v1"
      ? readFileSync(join(dir, "freezer.state"), "utf8").trim() === "FROZEN"
      : /^frozen 1$/m.test(readFileSync(join(dir, "cgroup.events"), "utf8"));
  while (!done() && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/** Where aetherd's own cgroup is in each hierarchy, from /proc/self/cgroup ("" key: the unified one). */
function ownCgroupPaths(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
    if (line === "") continue;
    const [, controllers = "", path = ""] = line.split(":");
    if (controllers === "") out.set("", path);
    for (const c of controllers.split(",")) out.set(c, path);
  }
  return out;
}

export type TreesChoice = { trees: ProcessTrees; reason: "" } | { trees: undefined; reason: string };

/**
 * The process trees of one supervisor: <hierarchy>/<aetherd's cgroup>/<cgroupRoot>/<name>.
 * cellsVersion: which hierarchy cells use (v2: trees share it).
 */
export function detectProcessTrees(cgroupRoot: string, name: string, cellsVersion: "v1" | "v2" | undefined): TreesChoice {
  const mounts = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === "cgroup" || f[2] === "cgroup2");
  const own = ownCgroupPaths();
  if (cellsVersion !== "v2") {
    const freezer = mounts.find((f) => f[2] === "cgroup" && (f[3] ?? "").split(",").includes("freezer"));
    if (freezer?.[1])
      return { trees: new ProcessTrees(join(freezer[1], own.get("freezer") ?? "/", cgroupRoot, name), "v1", false), reason: "" };
  }
  const unified = mounts.find((f) => f[2] === "cgroup2");
  if (cellsVersion === "v2" && unified?.[1]) {
    return { trees: new ProcessTrees(join(unified[1], own.get("") ?? "/", cgroupRoot, `.${name}`), "v2", true), reason: "" };
  }
  return { trees: undefined, reason: "neither the cgroup v1 freezer hierarchy nor cgroup v2 is mounted" };
}

/** The tree roots a test must remove with its cgroup root (every supervisor's). */
export function processTreeRoots(cgroupRoot: string): string[] {
  const choice = detectProcessTrees(cgroupRoot, "", undefined);
  return choice.trees ? [choice.trees.root] : [];
}
