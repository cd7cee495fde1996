// The last line of defence of a test daemon's cleanup(): whatever the test left running when it
// removes the daemon's folder is ended, so nothing outlives the run with its state directory gone
// (scripts/leftovers.mjs fails `npm test` for anything left). Tests still stop their workloads
// themselves (stopWorkloads in ./daemon.ts) before stopping aetherd; this catches a test that failed
// half-way, or an aetherd that was killed with its workloads still running.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { detectCellsBackend } from "../../daemon/src/cells/detect.js";
import { processTreeRoots } from "../../daemon/src/runtime/process-tree.js";

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

/** The processes in the cgroups below this root, in every hierarchy (cells' and process trees'). */
function cgroupPids(rootName: string): number[] {
  const { backend } = detectCellsBackend(rootName);
  const roots = new Set([...Object.values(backend?.paths([]) ?? {}), ...processTreeRoots(rootName)]);
  const pids = new Set<number>();
  const walk = (dir: string) => {
    for (const file of ["cgroup.procs", "tasks"]) {
      for (const line of (read(join(dir, file)) ?? "").split("\n")) if (/^\d+$/.test(line.trim())) pids.add(Number(line));
    }
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
    } catch {
      // gone meanwhile
    }
  };
  for (const root of roots) if (existsSync(root)) walk(root);
  return [...pids];
}

/** Live processes: pid to parent and command line. */
function processTable(): Map<number, { ppid: number; cmd: string }> {
  const table = new Map<number, { ppid: number; cmd: string }>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = read(`/proc/${name}/stat`);
    if (stat === undefined) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") continue;
    table.set(Number(name), { ppid: Number(fields[1]), cmd: (read(`/proc/${name}/cmdline`) ?? "").replace(/\0$/, "").replace(/\0/g, " ") });
  }
  return table;
}

/**
 * SIGKILLs every process in the daemon's cgroups, every process whose command line names its
 * folder (shims, namespace holders, a still-running aetherd) and all their descendants, until none
 * is left; returns what it found, as "pid command" lines.
 */
export function killLeftovers(dir: string, cgroupRoot: string): string[] {
  const found = new Map<number, string>();
  for (let attempt = 0; attempt < 40; attempt++) {
    const table = processTable();
    const targets = new Set<number>(cgroupPids(cgroupRoot).filter((p) => table.has(p) && p !== process.pid));
    for (const [pid, p] of table) if (p.cmd.includes(`${dir}/`) && pid !== process.pid) targets.add(pid);
    for (let grew = true; grew;) {
      grew = false;
      for (const [pid, p] of table) {
        if (!targets.has(pid) && targets.has(p.ppid) && pid !== process.pid) {
          targets.add(pid);
          grew = true;
        }
      }
    }
    if (targets.size === 0) break;
    for (const pid of targets) {
      if (!found.has(pid)) found.set(pid, table.get(pid)?.cmd ?? "");
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone already
      }
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  return [...found].map(([pid, cmd]) => `${pid} ${cmd}`);
}

/** Deletes the TAP devices aetherd names after the VMs in this state folder (ae<8 hex of the id>n<i>). */
export function deleteVmTaps(stateDir: string): string[] {
  const vmsDir = join(stateDir, "vms");
  const prefixes = existsSync(vmsDir)
    ? readdirSync(vmsDir)
        .filter((f) => f !== "executables")
        .map((id) => `ae${id.replace(/-/g, "").slice(0, 8)}n`)
    : [];
  if (prefixes.length === 0) return [];
  let links: string[];
  try {
    links = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
      .split("\n")
      .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? "");
  } catch {
    return [];
  }
  const taps = links.filter((name) => prefixes.some((p) => name.startsWith(p) && /^\d+$/.test(name.slice(p.length))));
  for (const tap of taps) {
    try {
      execFileSync("ip", ["link", "delete", tap], { stdio: "ignore" });
    } catch {
      // gone meanwhile
    }
  }
  return taps;
}
