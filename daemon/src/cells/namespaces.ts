// A cell's shared namespaces (net, uts, ipc, mnt) are held by a small process of their own
// (`aether-shim --hold`), in its own session so that it outlives aetherd like the cell does.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { isSameProcessAlive, processStartTime } from "../runtime/procfs.js";

export type SharedNamespace = "net" | "uts" | "ipc" | "mnt";

export interface Holder {
  pid: number;
  startTime: string;
  /** The namespaces it holds (its own and those it joined from the parent cell's holder). */
  namespaces: SharedNamespace[];
}

/** Marks a holder with its cell's id in its environment, so one a crash left unrecorded can be found. */
const TAG = "AETHER_HOLDER_OF";

export function startHolder(
  shimPath: string,
  own: SharedNamespace[],
  joinPid: number,
  hostname: string,
  cellId: string,
): Promise<{ pid: number; startTime: string }> {
  const args = ["--hold", own.join(",") || "none", "--hostname", hostname];
  if (joinPid > 0) args.push("--join", String(joinPid));
  const child = spawn(shimPath, args, { detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, [TAG]: cellId } });
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
    };
    createInterface({ input: child.stdout }).once("line", (line) => {
      if (line === "held") {
        const pid = child.pid ?? 0;
        const startTime = processStartTime(pid) ?? "";
        child.unref();
        child.stdout.destroy();
        child.stderr.destroy();
        done(() => resolve({ pid, startTime }));
      } else {
        done(() => reject(new Error(line.replace(/^error \d+ /, ""))));
      }
    });
    child.once("error", (err) => done(() => reject(err)));
    child.once("exit", (code) => done(() => reject(new Error(`the namespace holder exited with code ${code}`))));
  });
}

export function holderAlive(holder: Holder): boolean {
  return isSameProcessAlive(holder.pid, holder.startTime);
}

export function stopHolder(holder: Holder): void {
  if (!holderAlive(holder)) return;
  try {
    process.kill(holder.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Kills the holders started for a cell (found by their tag), recorded or not. */
export function stopTaggedHolders(cellId: string): number {
  const wanted = `${TAG}=${cellId}`;
  let stopped = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let environ: string;
    try {
      environ = readFileSync(`/proc/${entry}/environ`, "latin1");
    } catch {
      continue;
    }
    if (!environ.split("\0").includes(wanted)) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
      stopped++;
    } catch {
      // gone already
    }
  }
  return stopped;
}
