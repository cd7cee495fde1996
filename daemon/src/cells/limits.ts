// Cell limits as checked values: validated at the edge, converted per backend here (one place, so
// that a cpu weight means the same on v1 and v2).
import type { CellLimits } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { invalidArgument } from "@aether/server";

export interface LimitsValue {
  /** 1..10000; 100 is the kernel's default. */
  cpuWeight: number;
  /** CPU time per period in µs; 0: unlimited. */
  cpuQuotaUsec: number;
  /** Period in µs. */
  cpuPeriodUsec: number;
  /** Kernel list format, "" for the parent's. */
  cpusetCpus: string;
  cpusetMems: string;
  /** 0: unlimited. */
  memoryMaxBytes: number;
  memoryHighBytes: number;
  pidsMax: number;
}

export const DEFAULT_CPU_WEIGHT = 100;
const DEFAULT_PERIOD_USEC = 100_000;
const MAX_BYTES = 2 ** 53; // beyond any real machine; keeps numbers exact in JavaScript

export function limitsFromProto(limits: CellLimits | undefined): LimitsValue {
  const l = limits;
  const weight = l?.cpuWeight;
  if (weight !== undefined && (weight < 1 || weight > 10_000)) {
    throw invalidArgument(`cpu_weight ${weight} is outside 1..10000 (leave it unset for the default share of 100).`);
  }
  const quota = Number(l?.cpuMax?.quotaUsec ?? 0n);
  const period = Number(l?.cpuMax?.periodUsec ?? 0n) || DEFAULT_PERIOD_USEC;
  if (period < 1000 || period > 1_000_000) throw invalidArgument(`cpu_max.period_usec ${period} is outside 1000..1000000.`);
  if (quota !== 0 && quota < 1000) throw invalidArgument(`cpu_max.quota_usec ${quota} is below the kernel's minimum of 1000 µs.`);
  if (quota > 1_000_000_000) throw invalidArgument(`cpu_max.quota_usec ${quota} is larger than 1000 s per period.`);
  const bytes = (field: string, v: bigint | undefined) => {
    const n = Number(v ?? 0n);
    if (n > MAX_BYTES) throw invalidArgument(`${field} ${v} is larger than any memory this host could have.`);
    if (n !== 0 && n < 1024 * 1024) throw invalidArgument(`${field} ${n} is below 1 MiB; a process cannot even start in that.`);
    return n;
  };
  const pids = Number(l?.pidsMax ?? 0n);
  if (pids > 4_194_304) throw invalidArgument(`pids_max ${pids} is above the kernel's limit of 4194304.`);
  return {
    cpuWeight: weight ?? DEFAULT_CPU_WEIGHT,
    cpuQuotaUsec: quota,
    cpuPeriodUsec: period,
    cpusetCpus: cpuList("cpuset_cpus", l?.cpusetCpus ?? ""),
    cpusetMems: cpuList("cpuset_mems", l?.cpusetMems ?? ""),
    memoryMaxBytes: bytes("memory_max_bytes", l?.memoryMaxBytes),
    memoryHighBytes: bytes("memory_high_bytes", l?.memoryHighBytes),
    pidsMax: pids,
  };
}

/** Validates the kernel's list format ("0-3,5") and returns it normalized. */
function cpuList(field: string, value: string): string {
  if (value === "") return "";
  const ids = parseList(value);
  if (ids === undefined) throw invalidArgument(`${field} ${JSON.stringify(value.slice(0, 40))} is not a list like "0-3,5".`);
  return formatList(ids);
}

export function parseList(value: string): number[] | undefined {
  const out = new Set<number>();
  for (const part of value.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b - a > 4096) return undefined;
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

export function formatList(ids: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < ids.length;) {
    let j = i;
    while (j + 1 < ids.length && (ids[j + 1] as number) === (ids[j] as number) + 1) j++;
    parts.push(i === j ? `${ids[i]}` : `${ids[i]}-${ids[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/** True when every id of `inner` is in `outer` (both in list format). */
export function isSubset(inner: string, outer: string): boolean {
  const a = parseList(inner) ?? [];
  const b = new Set(parseList(outer) ?? []);
  return a.every((x) => b.has(x));
}

/**
 * cgroup v2 cpu.weight (1..10000, default 100) to v1 cpu.shares (2..262144, default 1024), the
 * same linear mapping systemd uses, so the default maps to the default and ratios are kept.
 */
export function weightToShares(weight: number): number {
  return Math.min(262_144, Math.max(2, Math.round((weight * 1024) / 100)));
}
