// cgroup v1: one hierarchy per controller (cpu, cpuacct, cpuset, memory, pids), each cell a
// directory in every one of them. These build machines run v1, so this backend is tested for real.
import { join } from "node:path";
import type { CgroupFs } from "./cgroup-fs.js";
import { keyValues, pidsOf, type CgroupBackend, type CellStatsValue } from "./backend.js";
import { weightToShares, type LimitsValue } from "./limits.js";

export const V1_CONTROLLERS = ["cpu", "cpuacct", "cpuset", "memory", "pids"] as const;
export type V1Controller = (typeof V1_CONTROLLERS)[number];

/** USER_HZ: cpuacct.stat counts in these ticks per second. */
const TICKS_PER_SECOND = 100;

export class CgroupV1Backend implements CgroupBackend {
  readonly version = "v1" as const;

  /** @param roots the directory of aetherd's cells in each controller's hierarchy */
  constructor(
    private readonly roots: Record<V1Controller, string>,
    private readonly fs: CgroupFs,
  ) {}

  paths(segments: string[]): Record<string, string> {
    return Object.fromEntries(V1_CONTROLLERS.map((c) => [c, join(this.roots[c], ...segments)]));
  }

  /** Directories to create or remove: controllers mounted together share one. */
  private dirs(segments: string[]): string[] {
    return [...new Set(Object.values(this.paths(segments)))];
  }

  private dir(c: V1Controller, segments: string[]): string {
    return join(this.roots[c], ...segments);
  }

  exists(segments: string[]): boolean {
    return this.dirs(segments).every((d) => this.fs.exists(d));
  }

  async create(segments: string[], limits: LimitsValue): Promise<void> {
    const created: string[] = [];
    try {
      // The backend's root and the tenant's directory are made on first use.
      for (let depth = 0; depth <= segments.length; depth++) {
        const prefix = segments.slice(0, depth);
        for (const c of V1_CONTROLLERS) {
          const dir = this.dir(c, prefix);
          if (this.fs.exists(dir)) continue;
          await this.fs.mkdir(dir);
          created.push(dir);
          // A new cpuset cgroup starts with no CPUs; it must inherit before it can hold a task.
          if (c === "cpuset" && depth < segments.length) await this.inheritCpuset(prefix);
        }
      }
      await this.apply(segments, limits);
    } catch (err) {
      for (const dir of created.reverse()) await this.fs.rmdir(dir).catch(() => undefined);
      throw err;
    }
  }

  private async inheritCpuset(segments: string[]): Promise<void> {
    const dir = this.dir("cpuset", segments);
    await this.fs.write(join(dir, "cpuset.cpus"), await this.parentCpus(segments));
    await this.fs.write(join(dir, "cpuset.mems"), await this.parentMems(segments));
  }

  async apply(segments: string[], limits: LimitsValue): Promise<void> {
    const cpu = this.dir("cpu", segments);
    await this.fs.write(join(cpu, "cpu.shares"), String(weightToShares(limits.cpuWeight)));
    await this.fs.write(join(cpu, "cpu.cfs_period_us"), String(limits.cpuPeriodUsec));
    await this.fs.write(join(cpu, "cpu.cfs_quota_us"), limits.cpuQuotaUsec === 0 ? "-1" : String(limits.cpuQuotaUsec));

    const cpuset = this.dir("cpuset", segments);
    await this.fs.write(join(cpuset, "cpuset.cpus"), limits.cpusetCpus || (await this.parentCpus(segments)));
    await this.fs.write(join(cpuset, "cpuset.mems"), limits.cpusetMems || (await this.parentMems(segments)));

    const memory = this.dir("memory", segments);
    const limit = limits.memoryMaxBytes === 0 ? "-1" : String(limits.memoryMaxBytes);
    // memory+swap must never be below memory alone: raise it first, lower it last. Without it,
    // a cell on a host with swap could escape its limit by swapping.
    const memsw = join(memory, "memory.memsw.limit_in_bytes");
    const hasMemsw = this.fs.exists(memsw);
    const current = Number((await this.fs.read(join(memory, "memory.limit_in_bytes"))).trim());
    const raising = limits.memoryMaxBytes === 0 || limits.memoryMaxBytes >= current;
    if (hasMemsw && raising) await this.fs.write(memsw, limit);
    await this.fs.write(join(memory, "memory.limit_in_bytes"), limit);
    if (hasMemsw && !raising) await this.fs.write(memsw, limit);

    await this.fs.write(join(this.dir("pids", segments), "pids.max"), limits.pidsMax === 0 ? "max" : String(limits.pidsMax));
  }

  unsupportedNote(limits: LimitsValue): string {
    return limits.memoryHighBytes > 0 ? "memory_high_bytes is not applied: cgroup v1 has no memory.high." : "";
  }

  async remove(segments: string[]): Promise<void> {
    for (const dir of this.dirs(segments)) if (this.fs.exists(dir)) await this.fs.rmdir(dir);
    // The tenant's folder goes with its last cell; it is busy if other cells remain, and stays.
    if (segments.length === 2) for (const dir of this.dirs(segments.slice(0, 1))) await this.fs.rmdir(dir).catch(() => undefined);
  }

  procsFiles(segments: string[]): string[] {
    return this.dirs(segments).map((d) => join(d, "cgroup.procs"));
  }

  async processes(segments: string[]): Promise<number[]> {
    return pidsOf(await this.fs.read(join(this.dir("pids", segments), "cgroup.procs")));
  }

  async memoryCurrent(segments: string[]): Promise<number> {
    return Number((await this.fs.read(join(this.dir("memory", segments), "memory.usage_in_bytes"))).trim());
  }

  /** The closest existing ancestor's cpuset directory (a new tenant's folder may not exist yet). */
  private nearestCpuset(segments: string[]): string {
    for (let depth = segments.length - 1; depth >= 0; depth--) {
      const dir = this.dir("cpuset", segments.slice(0, depth));
      if (this.fs.exists(dir)) return dir;
    }
    return join(this.roots.cpuset, "..");
  }

  async parentCpus(segments: string[]): Promise<string> {
    return (await this.fs.read(join(this.nearestCpuset(segments), "cpuset.cpus"))).trim();
  }

  async parentMems(segments: string[]): Promise<string> {
    return (await this.fs.read(join(this.nearestCpuset(segments), "cpuset.mems"))).trim();
  }

  async stats(segments: string[]): Promise<CellStatsValue> {
    const read = (c: V1Controller, file: string) => this.fs.read(join(this.dir(c, segments), file));
    const [usage, acct, cpuStat, memUsage, memPeak, oom, pids] = await Promise.all([
      read("cpuacct", "cpuacct.usage"),
      read("cpuacct", "cpuacct.stat"),
      read("cpu", "cpu.stat"),
      read("memory", "memory.usage_in_bytes"),
      read("memory", "memory.max_usage_in_bytes"),
      read("memory", "memory.oom_control"),
      read("pids", "pids.current"),
    ]);
    const a = keyValues(acct);
    const s = keyValues(cpuStat);
    const tickUsec = 1_000_000 / TICKS_PER_SECOND;
    return {
      cpuUsageUsec: Math.round(Number(usage.trim()) / 1000),
      cpuUserUsec: (a.user ?? 0) * tickUsec,
      cpuSystemUsec: (a.system ?? 0) * tickUsec,
      cpuThrottledUsec: Math.round((s.throttled_time ?? 0) / 1000),
      cpuPeriods: s.nr_periods ?? 0,
      cpuThrottledPeriods: s.nr_throttled ?? 0,
      memoryCurrentBytes: Number(memUsage.trim()),
      memoryPeakBytes: Number(memPeak.trim()),
      oomKillCount: keyValues(oom).oom_kill ?? 0,
      pidsCurrent: Number(pids.trim()),
    };
  }
}
