// The cells of this host: their records (one file each, written atomically), their cgroups through a
// backend, and their namespace holders. Handlers call it with validated values.
//
// It is past 400 lines for the reason storage/registry.ts is: allocate, update, free and the
// recovery at start decide against the same records, cgroups and namespace holders, in one place.
import { randomUUID } from "node:crypto";
import { readdir, readFile, rm } from "node:fs/promises";
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { Mutex } from "async-mutex";
import { z } from "zod";
import { isDnsLabel } from "@aether/sdk/names";
import { formatSize } from "@aether/sdk/size";
import { clip, describeError, DomainError, resolveInTenant, writeJsonAtomic, writeJsonAtomicSync } from "@aether/server";
import { crashPoint } from "../store/crash-point.js";
import type { Supervisor } from "../runtime/supervisor.js";
import type { EventBus } from "../observe/event-bus.js";
import type { CgroupBackend, CellStatsValue } from "./backend.js";
import { isSubset, type LimitsValue } from "./limits.js";
import { holderAlive, startHolder, stopHolder, stopTaggedHolders, type Holder, type SharedNamespace } from "./namespaces.js";

const HolderSchema = z.object({ pid: z.number(), startTime: z.string(), namespaces: z.array(z.enum(["net", "uts", "ipc", "mnt"])) });
const IsolationSchema = z.object({ pid: z.boolean(), mount: z.boolean(), network: z.boolean(), uts: z.boolean(), ipc: z.boolean() });
const CellRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  limits: z.object({
    cpuWeight: z.number(),
    cpuQuotaUsec: z.number(),
    cpuPeriodUsec: z.number(),
    cpusetCpus: z.string(),
    cpusetMems: z.string(),
    memoryMaxBytes: z.number(),
    memoryHighBytes: z.number(),
    pidsMax: z.number(),
  }),
  /** Effective isolation: requested here or inherited from the parent. */
  isolation: IsolationSchema,
  /** This cell's own namespace holder; undefined when it shares its parent's (or has none). */
  holder: HolderSchema.optional(),
  requestId: z.string(),
  createTimeMs: z.number(),
  stateReason: z.string(),
  /**
   * Where the host work is: "creating" before the cgroup is made, "freeing" before a free stops
   * anything. load() undoes a create and finishes a free that a crash interrupted. Written ahead as
   * files beside the record (<id>.creating holding the record, <id>.freeing empty), never by
   * rewriting <id>.json: replacing a file by rename makes ext4 flush it at once (auto_da_alloc),
   * about 1.4 ms on this project's hosts against 0.1 ms for a new file (issue 18). Records of
   * aetherd before that carry the phase inside <id>.json, which load() still reads.
   */
  phase: z.enum(["creating", "ready", "freeing"]).default("ready"),
});

export type CellRecord = z.infer<typeof CellRecordSchema>;
export type Isolation = z.infer<typeof IsolationSchema>;

export interface CellView {
  record: CellRecord;
  state: "active" | "freeing";
  parent: string;
  children: string[];
  cgroupPaths: Record<string, string>;
  holder: Holder | undefined;
  processCount: number;
  backend: "v1" | "v2";
}

/** What the supervisor needs to start a process inside a cell. */
export interface CellPlacement {
  cellId: string;
  cellName: string;
  procsFiles: string[];
  nsHolderPid: number;
  nsJoin: SharedNamespace[];
  newPidNamespace: boolean;
  oomKillsAtStart: number;
}

export interface AllocateInput {
  name: string;
  tenant: string;
  labels: Record<string, string>;
  limits: LimitsValue;
  isolation: Isolation;
  requestId: string;
}

const MAX_DEPTH = 8;
const DEFAULT_FREE_GRACE_MS = 10_000;

/** A cell name path: DNS labels separated by '/'. */
export function cellName(value: string): string[] {
  if (value === "" || value === "/")
    throw new DomainError("invalid_argument", "a cell name is required; the root of the cell tree cannot be allocated or freed.");
  const parts = value.split("/");
  if (parts.length > MAX_DEPTH)
    throw new DomainError("invalid_argument", `cell name ${JSON.stringify(clip(value))} has ${parts.length} levels; at most ${MAX_DEPTH}.`);
  for (const part of parts) {
    if (!isDnsLabel(part)) {
      throw new DomainError(
        "invalid_argument",
        `cell name ${JSON.stringify(clip(value))} is invalid: each '/'-separated part must be 1 to 63 lowercase letters, digits and '-' (no '.', '..', empty parts or leading '/').`,
      );
    }
  }
  return parts;
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone already
  }
}

export class CellRegistry {
  private readonly byId = new Map<string, CellRecord>();
  private readonly freeing = new Set<string>();
  private readonly allocation = new Mutex();
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly backend: CgroupBackend | undefined,
    private readonly unavailableReason: string,
    private readonly shimPath: string,
    private readonly supervisor: Supervisor,
    private readonly log: Logger,
    /** Where cell.allocated, cell.updated and cell.freed go (StreamEvents; aether cell list -w redraws on them). */
    private readonly events?: EventBus,
  ) {
    this.dir = join(stateDir, "cells");
  }

  /** The backend, or FAILED_PRECONDITION with the reason cells cannot work on this host. */
  private need(): CgroupBackend {
    if (!this.backend) throw new DomainError("failed_precondition", `cells are unavailable on this host: ${this.unavailableReason}`);
    return this.backend;
  }

  get backendVersion(): "v1" | "v2" | undefined {
    return this.backend?.version;
  }

  /** Where the cells' cgroup root folders are and whether they exist (undefined without cells), for CheckHealth. */
  root(): { paths: string[]; present: boolean; cells: number } | undefined {
    if (!this.backend) return undefined;
    return { paths: Object.values(this.backend.paths([])), present: this.backend.exists([]), cells: this.byId.size };
  }

  private segments(r: CellRecord): string[] {
    return [r.tenant, ...r.name.split("/")];
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /** The write-ahead marker of a create (holding the record) or of a free (empty); see phase. */
  private marker(id: string, phase: "creating" | "freeing"): string {
    return join(this.dir, `${id}.${phase}`);
  }

  private unlinkQuietly(path: string): void {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  private findByName(tenant: string, name: string): CellRecord | undefined {
    return [...this.byId.values()].find((r) => r.tenant === tenant && r.name === name);
  }

  resolve(ref: string, tenant: string): CellRecord {
    return resolveInTenant(this.byId, ref, tenant, (r) => r, { noun: "cell", hint: "list them with ListCells." });
  }

  private parentOf(r: CellRecord): CellRecord | undefined {
    const parts = r.name.split("/");
    return parts.length > 1 ? this.findByName(r.tenant, parts.slice(0, -1).join("/")) : undefined;
  }

  private childrenOf(r: CellRecord): CellRecord[] {
    return [...this.byId.values()].filter(
      (c) => c.tenant === r.tenant && c.name.startsWith(`${r.name}/`) && c.name.split("/").length === r.name.split("/").length + 1,
    );
  }

  /** The holder whose namespaces the cell's processes join: its own, else its nearest ancestor's. */
  effectiveHolder(r: CellRecord): Holder | undefined {
    for (let c: CellRecord | undefined = r; c; c = this.parentOf(c)) if (c.holder) return c.holder;
    return undefined;
  }

  async view(r: CellRecord): Promise<CellView> {
    const backend = this.need();
    const segments = this.segments(r);
    const processCount = backend.exists(segments) ? (await backend.processes(segments).catch(() => [])).length : 0;
    return {
      record: r,
      state: this.freeing.has(r.id) ? "freeing" : "active",
      parent: this.parentOf(r)?.name ?? "",
      children: this.childrenOf(r)
        .map((c) => c.name)
        .sort(),
      cgroupPaths: backend.paths(segments),
      holder: this.effectiveHolder(r),
      processCount,
      backend: backend.version,
    };
  }

  /** Every cell, parents before children, siblings by name. */
  list(): CellRecord[] {
    const key = (r: CellRecord) => [r.tenant, ...r.name.split("/")];
    return [...this.byId.values()].sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
        const d = (ka[i] as string).localeCompare(kb[i] as string);
        if (d !== 0) return d;
      }
      return ka.length - kb.length;
    });
  }

  /**
   * Allocates a cell. One allocation at a time (each takes milliseconds): the name and request_id
   * checks come before the cgroup is made and the cell recorded, so two at once would both pass.
   */
  async allocate(input: AllocateInput): Promise<CellRecord> {
    return this.allocation.runExclusive(() => this.allocateNow(input));
  }

  private async allocateNow(input: AllocateInput): Promise<CellRecord> {
    const backend = this.need();
    if (input.requestId !== "") {
      const earlier = [...this.byId.values()].find((r) => r.requestId === input.requestId && r.tenant === input.tenant);
      if (earlier) return earlier;
    }
    const parts = cellName(input.name);
    if (this.findByName(input.tenant, input.name))
      throw new DomainError("already_exists", `a cell named ${input.name} already exists in tenant ${input.tenant}.`);
    const parentName = parts.slice(0, -1).join("/");
    const parent = parentName === "" ? undefined : this.findByName(input.tenant, parentName);
    if (parentName !== "" && !parent) {
      throw new DomainError("not_found", `the parent cell ${parentName} does not exist in tenant ${input.tenant}; allocate it first.`);
    }
    if (parent && this.freeing.has(parent.id))
      throw new DomainError("failed_precondition", `the parent cell ${parentName} is being freed.`);
    const segments = [input.tenant, ...parts];
    await this.checkCpuset(backend, segments, input.limits);

    const isolation: Isolation = {
      pid: input.isolation.pid || (parent?.isolation.pid ?? false),
      mount: input.isolation.mount || (parent?.isolation.mount ?? false),
      network: input.isolation.network || (parent?.isolation.network ?? false),
      uts: input.isolation.uts || (parent?.isolation.uts ?? false),
      ipc: input.isolation.ipc || (parent?.isolation.ipc ?? false),
    };
    const own: SharedNamespace[] = [
      ...(input.isolation.network ? (["net"] as const) : []),
      ...(input.isolation.uts ? (["uts"] as const) : []),
      ...(input.isolation.ipc ? (["ipc"] as const) : []),
      ...(input.isolation.mount ? (["mnt"] as const) : []),
    ];
    const record: CellRecord = {
      id: randomUUID(),
      name: input.name,
      tenant: input.tenant,
      labels: input.labels,
      limits: input.limits,
      isolation,
      requestId: input.requestId,
      createTimeMs: Date.now(),
      stateReason: backend.unsupportedNote(input.limits),
      phase: "creating",
    };
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      // The write-ahead CREATING record is for a crash of aetherd (kill -9): load() then undoes the
      // cgroup made next. It needs no fsync: a power loss takes the cgroup with it (cgroupfs lives in
      // memory), so there is nothing to undo that only a durable record would name. Two fsyncs (file
      // and folder) were half of an AllocateCell+FreeCell pair (issue 18). The READY record below,
      // the one that makes the cell outlive a reboot, stays durable.
      writeJsonAtomicSync(this.marker(record.id, "creating"), record);
    } catch (err) {
      throw new DomainError("internal", `could not record cell ${input.name}: ${(err as Error).message}`);
    }
    try {
      await backend.create(segments, input.limits);
    } catch (err) {
      this.unlinkQuietly(this.marker(record.id, "creating"));
      throw this.kernelRefused("create the cgroup of", input.name, err);
    }
    crashPoint("cells.cgroup-made");
    try {
      if (own.length > 0) record.holder = await this.startOwnHolder(record, own, parent);
      record.phase = "ready";
      await writeJsonAtomic(this.file(record.id), record);
    } catch (err) {
      if (record.holder) stopHolder(record.holder);
      await backend.remove(segments).catch(() => undefined);
      await rm(this.file(record.id), { force: true });
      this.unlinkQuietly(this.marker(record.id, "creating"));
      throw new DomainError("internal", `could not set up cell ${input.name}: ${(err as Error).message}`);
    }
    // The READY record is durable: the marker has done its work (load() drops one left beside it).
    this.unlinkQuietly(this.marker(record.id, "creating"));
    this.byId.set(record.id, record);
    this.publish("cell.allocated", record, `cell ${record.name} allocated`);
    return record;
  }

  private publish(kind: string, r: CellRecord, message: string): void {
    this.events?.publish({ kind, tenant: r.tenant, resourceId: r.id, resourceName: r.name, message, attributes: {} });
  }

  private async startOwnHolder(record: CellRecord, own: SharedNamespace[], parent: CellRecord | undefined): Promise<Holder> {
    const inherited = parent ? this.effectiveHolder(parent) : undefined;
    const hostname = record.name.split("/").pop() ?? record.name;
    const { pid, startTime } = await startHolder(this.shimPath, own, inherited?.pid ?? 0, hostname, record.id);
    const namespaces = [...new Set([...(inherited?.namespaces ?? []), ...own])];
    return { pid, startTime, namespaces };
  }

  private async checkCpuset(backend: CgroupBackend, segments: string[], limits: LimitsValue): Promise<void> {
    if (limits.cpusetCpus !== "") {
      const allowed = await backend.parentCpus(segments);
      if (!isSubset(limits.cpusetCpus, allowed)) {
        throw new DomainError(
          "invalid_argument",
          `cpuset_cpus ${limits.cpusetCpus} is not within the CPUs the parent may use (${allowed}).`,
        );
      }
    }
    if (limits.cpusetMems !== "") {
      const allowed = await backend.parentMems(segments);
      if (!isSubset(limits.cpusetMems, allowed)) {
        throw new DomainError(
          "invalid_argument",
          `cpuset_mems ${limits.cpusetMems} is not within the memory nodes the parent may use (${allowed}).`,
        );
      }
    }
  }

  private kernelRefused(what: string, name: string, err: unknown) {
    const e = err as NodeJS.ErrnoException;
    return new DomainError(
      "failed_precondition",
      `the kernel refused to ${what} cell ${name}: ${e.message}${e.code ? ` (${e.code})` : ""}.`,
    );
  }

  async update(r: CellRecord, limits: LimitsValue): Promise<CellRecord> {
    const backend = this.need();
    const segments = this.segments(r);
    const gone = () => !this.byId.has(r.id) || this.freeing.has(r.id);
    if (gone()) throw new DomainError("failed_precondition", `cell ${r.name} is being freed; its limits can no longer change.`);
    if (limits.memoryMaxBytes !== 0) {
      const current = await backend.memoryCurrent(segments);
      if (limits.memoryMaxBytes < current) {
        throw new DomainError(
          "failed_precondition",
          `memory_max_bytes ${limits.memoryMaxBytes} is below what cell ${r.name} uses now (${formatSize(current)}); free memory in the cell first or choose a higher limit.`,
        );
      }
    }
    await this.checkCpuset(backend, segments, limits);
    try {
      await backend.apply(segments, limits);
    } catch (err) {
      // Put the old limits back so the cell is never left half-updated.
      await backend.apply(segments, r.limits).catch(() => undefined);
      throw this.kernelRefused("apply the new limits to", r.name, err);
    }
    // A free that began meanwhile wins: never write a freed cell's record back.
    if (gone()) throw new DomainError("failed_precondition", `cell ${r.name} was freed while its limits were changed.`);
    const updated: CellRecord = { ...r, limits, stateReason: backend.unsupportedNote(limits) };
    await writeJsonAtomic(this.file(r.id), updated);
    this.byId.set(r.id, updated);
    this.publish("cell.updated", updated, `cell ${r.name}'s limits changed`);
    return updated;
  }

  /** Frees a cell; with stopExecutables, stops what runs in it first. Returns the stopped names. */
  async free(r: CellRecord, stopExecutables: boolean): Promise<string[]> {
    const backend = this.need();
    const children = this.childrenOf(r);
    if (children.length > 0) {
      throw new DomainError(
        "failed_precondition",
        `cell ${r.name} has child cells (${children
          .map((c) => c.name)
          .sort()
          .join(", ")}); free them first.`,
      );
    }
    const running = this.supervisor.list().filter((e) => e.spec.cellId === r.id && e.status === "running");
    if (running.length > 0 && !stopExecutables) {
      throw new DomainError(
        "failed_precondition",
        `cell ${r.name} has ${running.length} running executable(s) (${running.map((e) => e.spec.name).join(", ")}); stop them, or free with stop_executables.`,
      );
    }
    const segments = this.segments(r);
    if (running.length === 0 && !stopExecutables) {
      const leftovers = await backend.processes(segments).catch(() => []);
      if (leftovers.length > 0) {
        throw new DomainError(
          "failed_precondition",
          `cell ${r.name} still holds ${leftovers.length} process(es) that outlived the executables that started them (pids ${leftovers.slice(0, 10).join(", ")}); free with stop_executables to kill them.`,
        );
      }
    }
    this.freeing.add(r.id);
    try {
      // Written ahead: a crash from here on leaves FREEING, and load() finishes the free. Not fsynced
      // (issue 18): after a power loss the durable READY record brings the cell back, which is what a
      // free that was never confirmed to its caller may do (the record's removal below is not
      // fsynced either, as before).
      if (r.phase !== "freeing") writeFileSync(this.marker(r.id, "freeing"), "", { mode: 0o600 });
      await Promise.all(running.map((e) => this.supervisor.stop(e, "SIGTERM", DEFAULT_FREE_GRACE_MS)));
      // What the executables left behind (children that outlived their parent) belongs to the
      // cell too: freeing with stop_executables kills it.
      let emptied = false;
      for (let attempt = 0; attempt < 40; attempt++) {
        const left = await backend.processes(segments).catch(() => []);
        if (left.length === 0) {
          emptied = true;
          break;
        }
        if (stopExecutables) for (const pid of left) killQuietly(pid);
        await new Promise((res) => setTimeout(res, 50));
      }
      // Nothing new can start in a cell being freed, so an empty read above stays true; the kernel's
      // rmdir refuses a cgroup that still holds a process anyway.
      const strays = emptied ? [] : await backend.processes(segments).catch(() => []);
      if (strays.length > 0) {
        await this.undoFreeing(r);
        throw new DomainError(
          "failed_precondition",
          `cell ${r.name} still holds processes that would not die (pids ${strays.slice(0, 10).join(", ")}).`,
        );
      }
      crashPoint("cells.free-stopped");
      try {
        if (backend.exists(segments)) await backend.remove(segments);
      } catch (err) {
        await this.undoFreeing(r);
        throw this.kernelRefused("remove the cgroup of", r.name, err);
      }
      if (r.holder) stopHolder(r.holder);
      await rm(this.file(r.id), { force: true });
      this.unlinkQuietly(this.marker(r.id, "freeing"));
      this.byId.delete(r.id);
      this.publish("cell.freed", r, `cell ${r.name} freed`);
      return running.map((e) => e.spec.name);
    } finally {
      this.freeing.delete(r.id);
    }
  }

  /** A free that could not finish leaves the cell as it was: READY on disk. */
  private async undoFreeing(r: CellRecord): Promise<void> {
    // A record of an older aetherd carries FREEING inside it; it is written back READY.
    const inRecord = r.phase === "freeing";
    r.phase = "ready";
    try {
      if (inRecord) await writeJsonAtomic(this.file(r.id), r);
      this.unlinkQuietly(this.marker(r.id, "freeing"));
    } catch (err) {
      this.log.error({ cell: r.name, err: (err as Error).message }, "could not record that a free was given up");
    }
  }

  stats(r: CellRecord): Promise<CellStatsValue> {
    return this.need().stats(this.segments(r));
  }

  /** Where a process must go to run in the cell. */
  placement(ref: string, tenant: string): CellPlacement {
    const backend = this.need();
    const r = this.resolve(ref, tenant);
    if (this.freeing.has(r.id)) throw new DomainError("failed_precondition", `cell ${r.name} is being freed; nothing new may start in it.`);
    const holder = this.effectiveHolder(r);
    if (holder && !holderAlive(holder))
      throw new DomainError(
        "failed_precondition",
        `the namespaces of cell ${r.name} are gone (their holder died); free and allocate the cell again.`,
      );
    return {
      cellId: r.id,
      cellName: r.name,
      procsFiles: backend.procsFiles(this.segments(r)),
      nsHolderPid: holder?.pid ?? 0,
      nsJoin: holder?.namespaces ?? [],
      newPidNamespace: r.isolation.pid,
      oomKillsAtStart: this.oomKills(r.id),
    };
  }

  /** The cell's OOM-kill counter, read synchronously (used when an executable ends). */
  oomKills(cellId: string): number {
    const r = this.byId.get(cellId);
    if (!r || !this.backend) return 0;
    const paths = this.backend.paths(this.segments(r));
    try {
      const file =
        this.backend.version === "v1" ? join(paths.memory ?? "", "memory.oom_control") : join(paths.unified ?? "", "memory.events");
      return Number(/^oom_kill (\d+)/m.exec(readFileSync(file, "utf8"))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** Reads the records back; recreates cgroups and namespaces a host reboot took away. */
  /**
   * The write-ahead markers beside the records (see phase): a create's marker without its READY
   * record is a create to undo; one beside it is dropped. A free's marker makes its record FREEING.
   */
  private async loadMarkers(): Promise<void> {
    const names = await readdir(this.dir);
    for (const f of names.filter((n) => n.endsWith(".creating"))) {
      const id = f.slice(0, -".creating".length);
      if (this.byId.has(id)) {
        this.unlinkQuietly(join(this.dir, f));
        continue;
      }
      try {
        const record = CellRecordSchema.parse(JSON.parse(await readFile(join(this.dir, f), "utf8")));
        this.byId.set(record.id, { ...record, phase: "creating" });
      } catch (err) {
        this.log.error({ file: f, err }, "could not read the marker of an interrupted cell create; leaving it untouched");
      }
    }
    for (const f of names.filter((n) => n.endsWith(".freeing"))) {
      const record = this.byId.get(f.slice(0, -".freeing".length));
      if (record) record.phase = "freeing";
      else this.unlinkQuietly(join(this.dir, f));
    }
  }

  async load(): Promise<void> {
    let files: string[] = [];
    try {
      files = (await readdir(this.dir)).filter((f) => f.endsWith(".json"));
    } catch {
      return;
    }
    for (const f of files) {
      try {
        const record = CellRecordSchema.parse(JSON.parse(await readFile(join(this.dir, f), "utf8")));
        this.byId.set(record.id, record);
      } catch (err) {
        this.log.error({ file: f, err }, "could not read a cell record; leaving it untouched");
      }
    }
    await this.loadMarkers();
    if (!this.backend) {
      if (this.byId.size > 0) this.log.error({ reason: this.unavailableReason }, "cells are recorded but unavailable on this host");
      return;
    }
    // A create a crash interrupted is undone: its holder (found by tag), its cgroup, its record.
    for (const r of [...this.byId.values()].filter((c) => c.phase === "creating")) {
      const segments = this.segments(r);
      if (r.holder) stopHolder(r.holder);
      stopTaggedHolders(r.id);
      try {
        if (this.backend.exists(segments)) {
          for (const pid of await this.backend.processes(segments).catch(() => [])) killQuietly(pid);
          await this.backend.remove(segments);
        }
        await rm(this.file(r.id), { force: true });
        this.unlinkQuietly(this.marker(r.id, "creating"));
        this.byId.delete(r.id);
        this.log.info({ cell: r.name, tenant: r.tenant }, "recovered: undid the create of a cell that a restart interrupted");
      } catch (err) {
        r.phase = "ready";
        r.stateReason = `aetherd restarted while allocating this cell and could not undo it: ${(err as Error).message}; free it.`;
        await writeJsonAtomic(this.file(r.id), r);
        this.unlinkQuietly(this.marker(r.id, "creating"));
        this.log.error({ cell: r.name, err: (err as Error).message }, r.stateReason);
      }
    }
    for (const r of this.list()) {
      // A cell being freed is not brought back: the free is finished below.
      if (r.phase === "freeing") continue;
      const notes: string[] = [];
      if (!this.backend.exists(this.segments(r))) {
        await this.backend.create(this.segments(r), r.limits);
        notes.push("its cgroup had vanished (host reboot?) and was recreated");
      }
      if (r.holder && !holderAlive(r.holder)) {
        const own = r.holder.namespaces.filter(
          (n) => !(this.parentOf(r) && this.effectiveHolder(this.parentOf(r) as CellRecord)?.namespaces.includes(n)),
        );
        r.holder = await this.startOwnHolder(r, own.length > 0 ? own : r.holder.namespaces, this.parentOf(r));
        notes.push("its namespaces had gone and were created anew");
      }
      if (notes.length > 0) {
        r.stateReason = `${notes.join("; ")}.`;
        await writeJsonAtomic(this.file(r.id), r);
        this.log.warn({ cell: r.name, tenant: r.tenant }, r.stateReason);
      }
    }
    // A free a crash interrupted is finished (children first: they were freed before their parent).
    for (const r of this.list()
      .reverse()
      .filter((c) => c.phase === "freeing")) {
      try {
        await this.free(r, true);
        this.log.info({ cell: r.name, tenant: r.tenant }, "recovered: finished freeing a cell that a restart interrupted");
      } catch (err) {
        r.stateReason = `aetherd restarted while freeing this cell and could not finish: ${describeError(err)}; free it again.`;
        await writeJsonAtomic(this.file(r.id), r);
        this.log.error({ cell: r.name, err: (err as Error).message }, r.stateReason);
      }
    }
    this.log.info({ cells: this.byId.size, backend: this.backend.version }, "cells loaded");
  }
}
