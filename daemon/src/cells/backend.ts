// What a cgroup implementation does for cells. A cell is addressed by its path segments below the
// backend's root: [tenant, ...name components].
import type { LimitsValue } from "./limits.js";

export interface CellStatsValue {
  cpuUsageUsec: number;
  cpuUserUsec: number;
  cpuSystemUsec: number;
  cpuThrottledUsec: number;
  cpuPeriods: number;
  cpuThrottledPeriods: number;
  memoryCurrentBytes: number;
  memoryPeakBytes: number;
  oomKillCount: number;
  pidsCurrent: number;
}

export interface CgroupBackend {
  readonly version: "v1" | "v2";
  /** Absolute cgroup directories of a cell ("unified" on v2, per controller on v1). */
  paths(segments: string[]): Record<string, string>;
  /** Creates the directories of the cell (and of its tenant, if new) and applies the limits. */
  create(segments: string[], limits: LimitsValue): Promise<void>;
  /** Applies new limits to an existing cell. */
  apply(segments: string[], limits: LimitsValue): Promise<void>;
  /** Removes the cell's directories; fails while processes or child cgroups remain. */
  remove(segments: string[]): Promise<void>;
  /** Files a process's pid is written to, before it execs, to place it in the cell. */
  procsFiles(segments: string[]): string[];
  /** Pids of the processes directly in the cell. */
  processes(segments: string[]): Promise<number[]>;
  stats(segments: string[]): Promise<CellStatsValue>;
  /** Memory the cell uses now, in bytes. */
  memoryCurrent(segments: string[]): Promise<number>;
  /** CPUs (list format) the cell's parent may use: a cell's cpuset must be a subset. */
  parentCpus(segments: string[]): Promise<string>;
  /** Memory nodes (list format) the cell's parent may use. */
  parentMems(segments: string[]): Promise<string>;
  /** True when the cell's directories exist. */
  exists(segments: string[]): boolean;
  /** A note about limits this backend cannot apply (e.g. memory_high on v1), or "". */
  unsupportedNote(limits: LimitsValue): string;
}

/** Parses "key value" lines (cpu.stat, memory.events, memory.oom_control, cpuacct.stat). */
export function keyValues(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^-?\d+$/.test(v)) out[k] = Number(v);
  }
  return out;
}

export function pidsOf(text: string): number[] {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map(Number);
}
