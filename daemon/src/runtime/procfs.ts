// Process identity from /proc: a pid alone can be reused by the kernel, pid plus start time cannot.
import { readFileSync } from "node:fs";

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or undefined if gone. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const state = rest[0];
  if (state === "Z" || state === "X") return undefined; // a zombie has finished running
  return rest[19];
}

/** True when the process with this pid is the one that started at startTime and is still running. */
export function isSameProcessAlive(pid: number, startTime: string): boolean {
  return pid > 0 && processStartTime(pid) === startTime;
}
