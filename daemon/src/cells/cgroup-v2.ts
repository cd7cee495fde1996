// cgroup v2: one unified hierarchy. It forbids processes in a cgroup whose controllers are enabled
// for its children ("no internal processes"), so a cell's processes live in a leaf, `_procs`
// (never a cell name: '_' is not allowed in DNS labels), and child cells are its siblings.
import { join } from "node:path";
import type { CgroupFs } from "./cgroup-fs.js";
import { keyValues, pidsOf, type CgroupBackend, type CellStatsValue } from "./backend.js";
import type { LimitsValue } from "./limits.js";

export const V2_CONTROLLERS = ["cpu", "cpuset", "memory", "pids"] as const;
export const PROCS_LEAF = "_procs";

export class CgroupV2Backend implements CgroupBackend {
  readonly version = "v2" as const;

  /** @param root the directory of aetherd's cells in the unified hierarchy */
  constructor(
    private readonly root: string,
    private readonly fs: CgroupFs,
  ) {}

  private dir(segments: string[]): string {
    return join(this.root, ...segments);
  }

  paths(segments: string[]): Record<string, string> {
    return { unified: this.dir(segments) };
  }

  exists(segments: string[]): boolean {
    return this.fs.exists(this.dir(segments));
  }

  /** Enables, for the children of `dir`, the controllers its parent grants it. */
  private async delegate(dir: string): Promise<void> {
    const available = (await this.fs.read(join(dir, "cgroup.controllers"))).trim().split(/\s+/);
    const wanted = V2_CONTROLLERS.filter((c) => available.includes(c));
    try {
      await this.fs.write(join(dir, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EBUSY") {
        throw new Error(
          `cannot enable controllers below ${dir}: it holds processes itself (cgroup v2 allows none there); run aetherd in a delegated cgroup of its own (systemd: Delegate=yes).`,
        );
      }
      throw err;
    }
  }

  /** A new cgroup offers exactly what its parent enabled for it; in a plain tree, record that. */
  private async mkdirCgroup(dir: string, parent: string): Promise<void> {
    await this.fs.mkdir(dir);
    if (!this.fs.exists(join(dir, "cgroup.controllers"))) {
      const granted = this.fs.exists(join(parent, "cgroup.subtree_control"))
        ? await this.fs.read(join(parent, "cgroup.subtree_control"))
        : "";
      await this.fs.write(join(dir, "cgroup.controllers"), granted.replace(/\+/g, "").trim());
    }
  }

  async create(segments: string[], limits: LimitsValue): Promise<void> {
    const created: string[] = [];
    try {
      if (!this.fs.exists(this.root)) {
        // aetherd's own cgroup must hand the controllers down to the root of its cells.
        await this.delegate(join(this.root, ".."));
        await this.mkdirCgroup(this.root, join(this.root, ".."));
        created.push(this.root);
      }
      for (let depth = 0; depth <= segments.length; depth++) {
        const dir = this.dir(segments.slice(0, depth));
        if (!this.fs.exists(dir)) {
          await this.mkdirCgroup(dir, this.dir(segments.slice(0, depth - 1)));
          created.push(dir);
        }
        await this.delegate(dir);
      }
      const leaf = join(this.dir(segments), PROCS_LEAF);
      await this.mkdirCgroup(leaf, this.dir(segments));
      created.push(leaf);
      await this.apply(segments, limits);
    } catch (err) {
      for (const dir of created.reverse()) await this.fs.rmdir(dir).catch(() => undefined);
      throw err;
    }
  }

  async apply(segments: string[], limits: LimitsValue): Promise<void> {
    const dir = this.dir(segments);
    await this.fs.write(join(dir, "cpu.weight"), String(limits.cpuWeight));
    await this.fs.write(join(dir, "cpu.max"), `${limits.cpuQuotaUsec === 0 ? "max" : limits.cpuQuotaUsec} ${limits.cpuPeriodUsec}`);
    // Empty means "the parent's" in v2 as well, so an unset cpuset is written as empty.
    await this.fs.write(join(dir, "cpuset.cpus"), limits.cpusetCpus);
    await this.fs.write(join(dir, "cpuset.mems"), limits.cpusetMems);
    await this.fs.write(join(dir, "memory.max"), limits.memoryMaxBytes === 0 ? "max" : String(limits.memoryMaxBytes));
    await this.fs.write(join(dir, "memory.high"), limits.memoryHighBytes === 0 ? "max" : String(limits.memoryHighBytes));
    await this.fs.write(join(dir, "pids.max"), limits.pidsMax === 0 ? "max" : String(limits.pidsMax));
  }

  unsupportedNote(): string {
    return "";
  }

  async remove(segments: string[]): Promise<void> {
    const leaf = join(this.dir(segments), PROCS_LEAF);
    if (this.fs.exists(leaf)) await this.fs.rmdir(leaf);
    if (this.fs.exists(this.dir(segments))) await this.fs.rmdir(this.dir(segments));
    // The tenant's folder goes with its last cell; it is busy if other cells remain, and stays.
    if (segments.length === 2) await this.fs.rmdir(this.dir(segments.slice(0, 1))).catch(() => undefined);
  }

  procsFiles(segments: string[]): string[] {
    return [join(this.dir(segments), PROCS_LEAF, "cgroup.procs")];
  }

  async processes(segments: string[]): Promise<number[]> {
    const file = join(this.dir(segments), PROCS_LEAF, "cgroup.procs");
    return this.fs.exists(file) ? pidsOf(await this.fs.read(file)) : [];
  }

  async memoryCurrent(segments: string[]): Promise<number> {
    return Number((await this.fs.read(join(this.dir(segments), "memory.current"))).trim());
  }

  private async effective(segments: string[], file: string): Promise<string> {
    // The closest existing ancestor: a new tenant's folder may not exist yet.
    let parent = join(this.root, "..");
    for (let depth = segments.length - 1; depth >= 0; depth--) {
      const dir = this.dir(segments.slice(0, depth));
      if (this.fs.exists(dir)) {
        parent = dir;
        break;
      }
    }
    const effective = join(parent, `${file}.effective`);
    return (await this.fs.read(this.fs.exists(effective) ? effective : join(parent, file))).trim();
  }

  parentCpus(segments: string[]): Promise<string> {
    return this.effective(segments, "cpuset.cpus");
  }

  parentMems(segments: string[]): Promise<string> {
    return this.effective(segments, "cpuset.mems");
  }

  async stats(segments: string[]): Promise<CellStatsValue> {
    const dir = this.dir(segments);
    const read = async (file: string) => (this.fs.exists(join(dir, file)) ? this.fs.read(join(dir, file)) : "");
    const [cpuStat, current, peak, events, pids] = await Promise.all([
      read("cpu.stat"),
      read("memory.current"),
      read("memory.peak"),
      read("memory.events"),
      read("pids.current"),
    ]);
    const s = keyValues(cpuStat);
    return {
      cpuUsageUsec: s.usage_usec ?? 0,
      cpuUserUsec: s.user_usec ?? 0,
      cpuSystemUsec: s.system_usec ?? 0,
      cpuThrottledUsec: s.throttled_usec ?? 0,
      cpuPeriods: s.nr_periods ?? 0,
      cpuThrottledPeriods: s.nr_throttled ?? 0,
      memoryCurrentBytes: Number(current.trim() || 0),
      memoryPeakBytes: Number(peak.trim() || 0),
      oomKillCount: keyValues(events).oom_kill ?? 0,
      pidsCurrent: Number(pids.trim() || 0),
    };
  }
}
