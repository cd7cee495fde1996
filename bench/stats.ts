// Small statistics helpers for benchmarks: percentiles over sorted samples, formatted figures, and
// a process's memory as /proc reports it.
import { readFileSync } from "node:fs";

export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

export const ms = (v: number) => `${v.toFixed(2)} ms`;
export const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** A size field of /proc/<pid>/status (VmRSS, RssAnon, RssFile...), in bytes; 0 when it is not there. */
export function statusBytes(pid: number, field: string): number {
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) * 1024;
}

/** A process's resident memory, in bytes. */
export const rssBytes = (pid: number) => statusBytes(pid, "VmRSS");
