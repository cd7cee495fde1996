// The storage of this host: pools (from the configuration) and the records of their volumes,
// snapshots and images. It decides what may happen (names, tenants, who depends on whom) under one
// lock, lets the pool's driver do the slow host work outside it, and records the result atomically.
// Every decision that two concurrent calls could race on (a clone reserving its parent, a delete
// checking for clones) is taken under the lock against the in-memory records, which include
// objects still being created: a delete therefore sees a clone that is only half made.
// Why it is this long (~1,140 lines): the write-ahead records and the recovery that settles them at
// start decide under the same lock against the same in-memory records; splitting volumes, images and
// recovery into rooms of their own is the next refactor this file needs (not done yet).
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Mutex } from "async-mutex";
import type { Logger } from "pino";
import { formatSize, describeSize } from "@aether/sdk/size";
import { clip, describeError, DomainError, resolveInTenant, rpcCode, writeJsonAtomic } from "@aether/server";
import { HostCommandError } from "../host/command.js";
import { crashPoint } from "../store/crash-point.js";
import { confineLocalSource, fetchSource, ImportError, inspectStaged, type ImportSource } from "./image-import.js";
import { precheckUrl, UrlRefusedError } from "./url-guard.js";
import { PoolUnavailableError, type DiskFormat, type PoolStatus, type StoragePool, type StoredDisk } from "./pool.js";
import {
  ImageRecordSchema,
  SnapshotRecordSchema,
  VolumeRecordSchema,
  type ImageRecord,
  type SnapshotRecord,
  type VolumeRecord,
} from "./records.js";

/** A VM that has a volume attached, as the VM manager reports it. */
export interface VolumeUser {
  vmId: string;
  vmName: string;
  running: boolean;
}

/** The VMs a sentence names, by name and short id (which every lookup takes): "VM web (a91c1803)". */
export function vmsText(users: VolumeUser[]): string {
  return `VM${users.length > 1 ? "s" : ""} ${users.map((u) => `${u.vmName} (${u.vmId.slice(0, 8)})`).join(", ")}`;
}

export type VolumeSource =
  | { kind: "empty"; sizeBytes: number }
  | { kind: "image"; image: string; sizeBytes: number }
  | { kind: "snapshot"; volume: string; snapshot: string; sizeBytes: number }
  /**
   * A volume the caller's driver work makes from something the registry does not track (a replica
   * received from another node, see replication/): `make` is given the new volume's id.
   */
  | { kind: "adopt"; format: DiskFormat; sizeBytes: number; make: (pool: StoragePool, volumeId: string) => Promise<StoredDisk> };

export interface CreateVolumeInput {
  name: string;
  tenant: string;
  labels: Record<string, string>;
  pool: string;
  format: DiskFormat | undefined;
  source: VolumeSource;
  requestId: string;
  ownerVm?: string;
  /** The id to give the volume (a clone whose snapshot was taken for it names it first). */
  id?: string;
}

export interface ImportImageInput {
  name: string;
  tenant: string;
  labels: Record<string, string>;
  pool: string;
  source: ImportSource;
  sha256: string;
  sourceFormat: "qcow2" | "raw" | undefined;
  requestId: string;
  /**
   * Whether a checksum mismatch may name the SHA-256 of what was downloaded. Not for tenants: the
   * digest of a body they may not read is a key to it (a second import with that digest stores it).
   */
  revealDigest: boolean;
}

export interface PoolView {
  pool: StoragePool;
  isDefault: boolean;
  labels: Record<string, string>;
  status: PoolStatus;
  allocatedBytes: number;
}

const MIN_VOLUME_BYTES = 1024 * 1024;
const MAX_SAFE_BYTES = Number.MAX_SAFE_INTEGER;

export class StorageRegistry {
  private readonly volumes = new Map<string, VolumeRecord>();
  private readonly snapshots = new Map<string, SnapshotRecord>();
  private readonly images = new Map<string, ImageRecord>();
  /** Imports in progress, so DeleteImage can cancel them. */
  private readonly imports = new Map<string, AbortController>();
  /** Request ids of deletes that succeeded, so a retried delete succeeds too. */
  private readonly deletedRequests = new Set<string>();
  /** Decisions and record changes; never held across slow host work. */
  private readonly lock = new Mutex();
  /** One host operation at a time on a volume's chain of files (snapshot, rollback, resize...). */
  private readonly volumeLocks = new Map<string, Mutex>();
  private readonly dir: string;
  /** Emits "image" with an image id whenever an import progresses or ends. */
  readonly changes = new EventEmitter();
  /** Which VMs use a volume; set by aetherd's wiring (the VM manager knows). */
  usersOf: (volumeId: string) => VolumeUser[] = () => [];

  constructor(
    stateDir: string,
    private readonly pools: Map<string, { pool: StoragePool; labels: Record<string, string> }>,
    private readonly defaultPoolName: string,
    private readonly importRoots: string[],
    private readonly log: Logger,
  ) {
    this.dir = join(stateDir, "storage");
    this.changes.setMaxListeners(0);
  }

  // ---- loading and reconciling -------------------------------------------------------------

  async load(): Promise<void> {
    for (const [kind, schema, map] of [
      ["volumes", VolumeRecordSchema, this.volumes],
      ["snapshots", SnapshotRecordSchema, this.snapshots],
      ["images", ImageRecordSchema, this.images],
    ] as const) {
      await mkdir(join(this.dir, kind), { recursive: true, mode: 0o700 });
      for (const file of await readdir(join(this.dir, kind))) {
        if (!file.endsWith(".json")) continue;
        try {
          const record = schema.parse(JSON.parse(await readFile(join(this.dir, kind, file), "utf8")));
          (map as Map<string, typeof record>).set(record.id, record);
        } catch (err) {
          this.log.error({ file, err: (err as Error).message }, "ignoring an unreadable storage record");
        }
      }
    }
    // A pool folder is created only while nothing is recorded in it: if it vanishes later, making
    // an empty one would hide that its volumes are gone.
    for (const { pool } of this.pools.values()) {
      const holdsAnything = [...this.volumes.values(), ...this.images.values()].some((r) => r.pool === pool.name);
      if (!holdsAnything && "initialize" in pool && typeof pool.initialize === "function")
        await (pool.initialize as () => Promise<void>).call(pool);
    }
    await this.reconcile();
  }

  /**
   * Settles what a crash interrupted (see records.ts): a create is undone, a delete is finished.
   * Clones before snapshots (a clone undone may leave its implicit snapshot to undo too), snapshots
   * before their volumes' deletes. What cannot be settled now (its pool is gone) is marked FAILED
   * with the reason, never left looking half alive.
   */
  private async reconcile(): Promise<void> {
    for (const volume of [...this.volumes.values()].filter((v) => v.state === "creating")) {
      await this.settle(`undoing the interrupted create of volume ${volume.name}`, volume, volume.pool, async (pool) => {
        await pool.deleteVolume(this.disk(volume), []);
        await this.forget("volumes", this.volumes, volume.id);
      });
    }
    for (const snap of [...this.snapshots.values()].sort((a, b) => b.seq - a.seq)) {
      const volume = this.volumes.get(snap.volume);
      if (!volume || volume.state === "deleting") continue;
      const clone = snap.forClone === "" ? undefined : this.volumes.get(snap.forClone);
      if (clone) {
        // Its clone was made: the snapshot is an ordinary one now.
        snap.forClone = "";
        await this.saveSnapshot(snap);
        continue;
      }
      const orphan = snap.forClone !== "" && this.clonesOf("snapshot", snap.id).length === 0;
      if (snap.state !== "creating" && snap.state !== "deleting" && !orphan) continue;
      await this.settle(
        `${snap.state === "deleting" ? "finishing the delete" : "undoing the interrupted create"} of snapshot ${snap.name}`,
        snap,
        volume.pool,
        async (pool) => {
          const chain = this.snapshotsOf(volume.id);
          const at = chain.findIndex((s) => s.id === snap.id);
          await pool.deleteSnapshot(this.disk(volume), snap.id, chain[at + 1], chain[at - 1]);
          await this.forget("snapshots", this.snapshots, snap.id);
        },
      );
    }
    for (const volume of [...this.volumes.values()].filter((v) => v.state === "deleting")) {
      await this.settle(`finishing the delete of volume ${volume.name}`, volume, volume.pool, async (pool) => {
        const snaps = this.snapshotsOf(volume.id);
        await pool.deleteVolume(this.disk(volume), snaps);
        for (const s of snaps) await this.forget("snapshots", this.snapshots, s.id);
        await this.forget("volumes", this.volumes, volume.id);
      });
    }
    for (const image of [...this.images.values()].filter((i) => i.state === "importing" || i.state === "deleting")) {
      const importing = image.state === "importing";
      await this.settle(
        `${importing ? "undoing the interrupted import" : "finishing the delete"} of image ${image.name}`,
        image,
        image.pool,
        async (pool) => {
          await pool.deleteImage(image.id);
          if (!importing) return this.forget("images", this.images, image.id);
          // The image stays, FAILED, so whoever imported it learns why it is not there.
          Object.assign(image, {
            state: "failed",
            stateReason: "aetherd restarted during the import; import it again (under the same name: the new import replaces this one).",
            hostPath: "",
            readyTimeMs: Date.now(),
          });
          await this.saveImage(image);
        },
      );
    }
    for (const volume of this.volumes.values()) {
      if (volume.state === "ready" && !existsSync(volume.hostPath)) {
        this.log.warn({ volume: volume.id, path: volume.hostPath }, "a volume's data is missing on disk");
      }
    }
    // The other way round: files in a pool that no record names (left by a version of aetherd that
    // did not write ahead). They are reported and left in place; nothing is deleted on a guess.
    const recorded = new Set([...this.volumes.values(), ...this.images.values()].map((r) => r.hostPath));
    for (const { pool } of this.pools.values()) {
      const stored = (await pool.storedPaths?.().catch(() => [])) ?? [];
      const unrecorded = stored.filter((p) => !recorded.has(p));
      if (unrecorded.length > 0)
        this.log.warn(
          { pool: pool.name, paths: unrecorded },
          "files in the pool that no volume or image record names; left in place (delete them by hand if unneeded)",
        );
    }
  }

  /** Runs one recovery step; a step that fails marks its record FAILED with what to do. */
  private async settle(
    doing: string,
    record: VolumeRecord | ImageRecord | SnapshotRecord,
    poolName: string,
    step: (pool: StoragePool) => Promise<void>,
  ): Promise<void> {
    try {
      const pool = this.pool(poolName);
      const status = await pool.probe();
      if (!status.available) throw new PoolUnavailableError(status.reason);
      await step(pool);
      this.log.info({ id: record.id, name: record.name }, `recovered: ${doing}`);
    } catch (err) {
      const reason = `aetherd restarted in the middle of a change and ${doing} failed: ${describeError(err)}; delete it again once that is fixed.`;
      this.log.error({ id: record.id, err: (err as Error).message }, reason);
      record.state = "failed";
      record.stateReason = reason;
      if ("seq" in record) await this.saveSnapshot(record);
      else if ("backing" in record) await this.saveVolume(record);
      else await this.saveImage(record);
    }
  }

  // ---- pools -------------------------------------------------------------------------------

  async listPools(): Promise<PoolView[]> {
    return Promise.all([...this.pools.keys()].sort().map((name) => this.getPool(name)));
  }

  async getPool(name: string): Promise<PoolView> {
    const entry = this.pools.get(name);
    if (!entry)
      throw new DomainError(
        "not_found",
        `no pool named ${JSON.stringify(clip(name))} on this host; ListPools shows the configured pools (${[...this.pools.keys()].join(", ")}).`,
      );
    const status = await entry.pool.probe();
    const allocated = [...this.volumes.values(), ...this.images.values()]
      .filter((r) => r.pool === name)
      .reduce((sum, r) => sum + r.sizeBytes, 0);
    return { pool: entry.pool, isDefault: name === this.defaultPoolName, labels: entry.labels, status, allocatedBytes: allocated };
  }

  private poolFor(name: string): StoragePool {
    const entry = this.pools.get(name === "" ? this.defaultPoolName : name);
    if (!entry)
      throw new DomainError(
        "invalid_argument",
        `pool ${JSON.stringify(clip(name))} is not configured on this host; ListPools shows the pools (${[...this.pools.keys()].join(", ")}).`,
      );
    return entry.pool;
  }

  private pool(name: string): StoragePool {
    const entry = this.pools.get(name);
    if (!entry)
      throw new DomainError(
        "failed_precondition",
        `pool ${name} is no longer in aetherd's configuration; add it back to reach its volumes.`,
      );
    return entry.pool;
  }

  /** Checks a size against the pool: not zero, not beyond what the whole pool could ever hold. */
  private async checkSize(pool: StoragePool, field: string, sizeBytes: number): Promise<number> {
    if (sizeBytes < MIN_VOLUME_BYTES)
      throw new DomainError(
        "invalid_argument",
        `${field} ${sizeBytes} is too small: a volume is at least ${formatSize(MIN_VOLUME_BYTES)}.`,
      );
    if (sizeBytes > MAX_SAFE_BYTES)
      throw new DomainError("invalid_argument", `${field} ${sizeBytes} is beyond what aetherd handles (${formatSize(MAX_SAFE_BYTES)}).`);
    const rounded = Math.ceil(sizeBytes / pool.granularityBytes) * pool.granularityBytes;
    const status = await pool.capacity();
    if (!status.available) throw new DomainError("failed_precondition", `pool ${pool.name} is unavailable: ${status.reason}`);
    if (rounded > status.capacityBytes) {
      throw new DomainError(
        "invalid_argument",
        `${field} ${sizeBytes} is larger than pool ${pool.name} can ever hold (${formatSize(status.capacityBytes)}); use a smaller size or a bigger pool.`,
      );
    }
    return rounded;
  }

  // ---- lookups -----------------------------------------------------------------------------

  resolveVolume(ref: string, tenant: string): VolumeRecord {
    return resolveInTenant(this.volumes, ref, tenant, (v) => v, { noun: "volume", hint: "list them with ListVolumes." });
  }

  resolveImage(ref: string, tenant: string): ImageRecord {
    return resolveInTenant(this.images, ref, tenant, (i) => i, { noun: "image", hint: "list them with ListImages." });
  }

  /**
   * A snapshot by id (or a unique prefix of it) in the tenant, or, when its volume is given, also by
   * name within that volume.
   */
  resolveSnapshot(volumeRef: string, ref: string, tenant: string): SnapshotRecord {
    if (volumeRef === "")
      return resolveInTenant(this.snapshots, ref, tenant, (s) => s, {
        noun: "snapshot",
        hint: "to use a snapshot's name, also give its volume.",
        byName: false,
      });
    const volume = this.resolveVolume(volumeRef, tenant);
    const ofVolume = {
      get: (id: string) => (this.snapshots.get(id)?.volume === volume.id ? this.snapshots.get(id) : undefined),
      values: () => this.snapshotsOf(volume.id),
    };
    return resolveInTenant(ofVolume, ref, tenant, (s) => s, {
      noun: "snapshot",
      hint: "list them with ListSnapshots.",
      where: `of volume ${volume.name}`,
    });
  }

  /** Snapshots of a volume, oldest first. */
  snapshotsOf(volumeId: string): SnapshotRecord[] {
    return [...this.snapshots.values()].filter((s) => s.volume === volumeId).sort((a, b) => a.seq - b.seq);
  }

  /** Volumes cloned from an image or a snapshot (in any state, including half-made). */
  clonesOf(kind: "image" | "snapshot", id: string): VolumeRecord[] {
    return [...this.volumes.values()].filter((v) => v.backing.kind === kind && v.backing.id === id);
  }

  /** Volumes cloned from any snapshot of this volume. */
  dependentsOf(volumeId: string): VolumeRecord[] {
    return this.snapshotsOf(volumeId).flatMap((s) => this.clonesOf("snapshot", s.id));
  }

  listVolumes(): VolumeRecord[] {
    return [...this.volumes.values()].sort((a, b) => b.createTimeMs - a.createTimeMs || a.id.localeCompare(b.id));
  }

  listSnapshots(): SnapshotRecord[] {
    return [...this.snapshots.values()].sort((a, b) => b.createTimeMs - a.createTimeMs || b.seq - a.seq);
  }

  listImages(): ImageRecord[] {
    return [...this.images.values()].sort((a, b) => b.createTimeMs - a.createTimeMs || a.id.localeCompare(b.id));
  }

  /**
   * The state a volume is reported in: a READY volume whose data has vanished (deleted behind
   * aetherd's back, or its pool's folder gone) is FAILED with the reason, not hidden.
   */
  health(volume: VolumeRecord | ImageRecord): { state: string; reason: string } {
    if (volume.state === "ready" && !existsSync(volume.hostPath)) {
      return {
        state: "failed",
        reason: `its data ${volume.hostPath} is missing on disk (deleted or unmounted outside aetherd); restore it, or delete this record.`,
      };
    }
    return { state: volume.state, reason: volume.stateReason };
  }

  async allocatedBytes(record: VolumeRecord | ImageRecord): Promise<number> {
    const entry = this.pools.get(record.pool);
    if (!entry || record.hostPath === "") return 0;
    return entry.pool.allocatedBytes({ hostPath: record.hostPath, format: record.format, sizeBytes: record.sizeBytes });
  }

  // ---- volumes -----------------------------------------------------------------------------

  private volumeLock(id: string): Mutex {
    let m = this.volumeLocks.get(id);
    if (!m) this.volumeLocks.set(id, (m = new Mutex()));
    return m;
  }

  private nameTaken(tenant: string, name: string): void {
    if ([...this.volumes.values()].some((v) => v.tenant === tenant && v.name === name)) {
      throw new DomainError(
        "already_exists",
        `a volume named ${name} already exists in tenant ${tenant}; pick another name or delete it first.`,
      );
    }
  }

  private byRequest<T extends { tenant: string; requestId: string }>(
    records: Iterable<T>,
    tenant: string,
    requestId: string,
  ): T | undefined {
    if (requestId === "") return undefined;
    for (const r of records) if (r.tenant === tenant && r.requestId === requestId) return r;
    return undefined;
  }

  async createVolume(input: CreateVolumeInput): Promise<VolumeRecord> {
    const again = this.byRequest(this.volumes.values(), input.tenant, input.requestId);
    if (again) return again;
    const { source } = input;
    // Decide and reserve under the lock: the new record (CREATING) names its parent from then on.
    const plan = await this.lock.runExclusive(async () => {
      this.nameTaken(input.tenant, input.name);
      let pool: StoragePool;
      let parent: StoredDisk & { id: string };
      let backing: VolumeRecord["backing"] = { kind: "none", id: "" };
      let sizeBytes: number;
      let format: DiskFormat;
      let parentVolume: VolumeRecord | undefined;
      if (source.kind === "adopt") {
        pool = this.poolFor(input.pool);
        format = source.format;
        sizeBytes = source.sizeBytes;
        parent = { id: "", hostPath: "", format, sizeBytes };
      } else if (source.kind === "empty") {
        pool = this.poolFor(input.pool);
        format = input.format ?? pool.formats()[0] ?? "raw";
        if (!pool.formats().includes(format))
          throw new DomainError(
            "invalid_argument",
            `pool ${pool.name} cannot hold ${format} volumes; it holds ${pool.formats().join(", ")}.`,
          );
        sizeBytes = await this.checkSize(pool, "size_bytes", source.sizeBytes);
        parent = { id: "", hostPath: "", format, sizeBytes };
      } else if (source.kind === "image") {
        const image = this.resolveImage(source.image, input.tenant);
        if (image.state !== "ready")
          throw new DomainError(
            "failed_precondition",
            `image ${image.name} is ${image.state}, not ready; ${image.state === "importing" ? "wait for its import (WatchImage)" : "import it again"}.`,
          );
        if (!existsSync(image.hostPath))
          throw new DomainError(
            "failed_precondition",
            `image ${image.name}'s data ${image.hostPath} is missing on disk; delete the image and import it again.`,
          );
        pool = this.clonePool(input.pool, image.pool);
        backing = { kind: "image", id: image.id };
        parent = { id: image.id, hostPath: image.hostPath, format: image.format, sizeBytes: image.sizeBytes };
        sizeBytes = await this.cloneSize(pool, source.sizeBytes, image.sizeBytes, `image ${image.name}`);
        format = image.format;
      } else {
        const snap = this.resolveSnapshot(source.volume, source.snapshot, input.tenant);
        if (snap.state !== "ready")
          throw new DomainError("failed_precondition", `snapshot ${snap.name} is ${snap.state}; clone a ready snapshot.`);
        parentVolume = this.volumes.get(snap.volume);
        if (!parentVolume) throw new DomainError("internal", `snapshot ${snap.id} has no volume record.`);
        // A volume being deleted takes its snapshots' files with it; decided under the lock, where
        // a delete either sees this clone (and refuses) or has marked the volume first.
        if (parentVolume.state !== "ready") {
          throw new DomainError(
            "failed_precondition",
            `volume ${parentVolume.name} is ${parentVolume.state}; its snapshot ${snap.name} cannot be cloned now.`,
          );
        }
        pool = this.clonePool(input.pool, parentVolume.pool);
        backing = { kind: "snapshot", id: snap.id };
        parent = { id: parentVolume.id, hostPath: parentVolume.hostPath, format: parentVolume.format, sizeBytes: snap.sizeBytes };
        sizeBytes = await this.cloneSize(pool, source.sizeBytes, snap.sizeBytes, `snapshot ${parentVolume.name}@${snap.name}`);
        format = parentVolume.format;
      }
      const record: VolumeRecord = {
        id: input.id ?? randomUUID(),
        name: input.name,
        tenant: input.tenant,
        labels: input.labels,
        createTimeMs: Date.now(),
        state: "creating",
        stateReason: "",
        pool: pool.name,
        format,
        sizeBytes,
        hostPath: "",
        backing,
        requestId: input.requestId,
        ownerVm: input.ownerVm ?? "",
      };
      this.volumes.set(record.id, record);
      // Written ahead: a crash from here on leaves a CREATING record, and load() undoes the create.
      try {
        await this.saveVolume(record);
      } catch (err) {
        this.volumes.delete(record.id);
        throw new DomainError("internal", `could not record volume ${record.name}: ${(err as Error).message}`);
      }
      return { record, pool, parent, sizeBytes, format };
    });
    const { record, pool, parent, sizeBytes, format } = plan;
    let disk: StoredDisk;
    try {
      if (source.kind === "adopt") disk = await source.make(pool, record.id);
      else if (source.kind === "empty") disk = await pool.createVolume(record.id, sizeBytes, format);
      else if (source.kind === "image") disk = await pool.cloneImage(parent, record.id, sizeBytes);
      else disk = await pool.cloneSnapshot(parent, record.backing.id, record.id, sizeBytes);
    } catch (err) {
      await this.discardHalfMade(pool, record);
      await this.lock.runExclusive(() => this.forget("volumes", this.volumes, record.id));
      throw this.hostError(err, `creating volume ${record.name}`);
    }
    crashPoint("storage.volume.made");
    return this.lock.runExclusive(async () => {
      Object.assign(record, { state: "ready", hostPath: disk.hostPath, format: disk.format, sizeBytes: disk.sizeBytes });
      await this.saveVolume(record);
      return record;
    });
  }

  private async discardHalfMade(pool: StoragePool, record: VolumeRecord): Promise<void> {
    try {
      await pool.deleteVolume(
        { id: record.id, hostPath: record.hostPath || join("/nonexistent", record.id), format: record.format, sizeBytes: 0 },
        [],
      );
    } catch (err) {
      this.log.warn({ volume: record.id, err: (err as Error).message }, "could not clean up a volume that failed to be created");
    }
  }

  /** A clone lives in its parent's pool; naming another one is a mistake worth an error. */
  private clonePool(requested: string, parentPool: string): StoragePool {
    if (requested !== "" && requested !== parentPool) {
      throw new DomainError(
        "invalid_argument",
        `a clone lives in its parent's pool (${parentPool}); leave pool empty or name ${parentPool}, not ${requested}.`,
      );
    }
    return this.pool(parentPool);
  }

  private async cloneSize(pool: StoragePool, requested: number, parentSize: number, what: string): Promise<number> {
    if (requested === 0) return parentSize;
    if (requested < parentSize)
      throw new DomainError(
        "invalid_argument",
        `size_bytes ${requested} is smaller than ${what} (${describeSize(parentSize)}); a clone can only keep or grow the size.`,
      );
    return this.checkSize(pool, "size_bytes", requested);
  }

  /** A clone of a volume: from one of its snapshots, or from a snapshot taken now. */
  async cloneVolume(input: {
    volume: string;
    tenant: string;
    snapshot: string;
    name: string;
    labels: Record<string, string>;
    sizeBytes: number;
    requestId: string;
  }): Promise<{ volume: VolumeRecord; snapshot: SnapshotRecord }> {
    const again = this.byRequest(this.volumes.values(), input.tenant, input.requestId);
    if (again && again.backing.kind === "snapshot") {
      const snap = this.snapshots.get(again.backing.id);
      if (snap) return { volume: again, snapshot: snap };
    }
    const source = this.resolveVolume(input.volume, input.tenant);
    this.nameTaken(input.tenant, input.name);
    const taken = input.snapshot === "";
    // A snapshot taken for the clone names the clone, so a crash before the clone exists deletes it.
    const volumeId = randomUUID();
    const snapshot = taken
      ? await this.snapshotVolume({
          volume: source.id,
          tenant: input.tenant,
          name: `clone-${input.name}`.slice(0, 63).replace(/-+$/, ""),
          labels: {},
          requestId: "",
          forClone: volumeId,
        })
      : this.resolveSnapshot(source.id, input.snapshot, input.tenant);
    if (taken) crashPoint("storage.clone.snapshot-taken");
    try {
      const volume = await this.createVolume({
        id: volumeId,
        name: input.name,
        tenant: input.tenant,
        labels: input.labels,
        pool: "",
        format: undefined,
        source: { kind: "snapshot", volume: source.id, snapshot: snapshot.id, sizeBytes: input.sizeBytes },
        requestId: input.requestId,
      });
      if (taken) {
        await this.lock.runExclusive(async () => {
          snapshot.forClone = "";
          await this.saveSnapshot(snapshot);
        });
      }
      return { volume, snapshot };
    } catch (err) {
      // A clone that could not be made leaves no snapshot of its own behind (the next try takes it again).
      if (taken) await this.deleteSnapshot(source.id, snapshot.id, input.tenant, "").catch(() => undefined);
      throw err;
    }
  }

  private usable(volume: VolumeRecord, action: string): void {
    if (volume.state !== "ready")
      throw new DomainError(
        "failed_precondition",
        `volume ${volume.name} is ${volume.state}${volume.stateReason ? ` (${volume.stateReason})` : ""}; it cannot be ${action} now.`,
      );
    const health = this.health(volume);
    if (health.state !== "ready")
      throw new DomainError("failed_precondition", `volume ${volume.name} cannot be ${action}: ${health.reason}`);
  }

  private disk(volume: VolumeRecord): StoredDisk & { id: string } {
    return { id: volume.id, hostPath: volume.hostPath, format: volume.format, sizeBytes: volume.sizeBytes };
  }

  async resizeVolume(ref: string, tenant: string, sizeBytes: number): Promise<VolumeRecord> {
    const volume = this.resolveVolume(ref, tenant);
    return this.volumeLock(volume.id).runExclusive(async () => {
      this.usable(volume, "resized");
      if (sizeBytes < volume.sizeBytes)
        throw new DomainError(
          "invalid_argument",
          `size_bytes ${sizeBytes} is smaller than volume ${volume.name} (${describeSize(volume.sizeBytes)}); volumes only grow, since shrinking would cut off the guest's data.`,
        );
      if (sizeBytes === volume.sizeBytes) return volume;
      if (this.usersOf(volume.id).some((u) => u.running))
        throw new DomainError(
          "failed_precondition",
          `volume ${volume.name} is attached to a running VM; stop the VM, resize, then start it.`,
        );
      const pool = this.pool(volume.pool);
      const rounded = await this.checkSize(pool, "size_bytes", sizeBytes);
      try {
        await pool.resize(this.disk(volume), rounded);
      } catch (err) {
        throw this.hostError(err, `resizing volume ${volume.name}`);
      }
      volume.sizeBytes = rounded;
      await this.saveVolume(volume);
      return volume;
    });
  }

  async deleteVolume(
    ref: string,
    tenant: string,
    deleteSnapshots: boolean,
    requestId: string,
    options: { asOwner?: string } = {},
  ): Promise<void> {
    let volume: VolumeRecord;
    try {
      volume = this.resolveVolume(ref, tenant);
    } catch (err) {
      if (requestId !== "" && this.deletedRequests.has(`${tenant}/${requestId}`)) return;
      throw err;
    }
    await this.volumeLock(volume.id).runExclusive(async () => {
      const snaps = await this.lock.runExclusive(async () => {
        if (volume.state === "creating" || volume.state === "deleting")
          throw new DomainError("failed_precondition", `volume ${volume.name} is ${volume.state}; try again when that is done.`);
        const users = this.usersOf(volume.id).filter((u) => u.vmId !== options.asOwner);
        if (users.length > 0)
          throw new DomainError(
            "failed_precondition",
            `volume ${volume.name} is attached to ${vmsText(users)}; delete the VM or detach the volume first.`,
          );
        const dependents = this.dependentsOf(volume.id);
        if (dependents.length > 0)
          throw new DomainError(
            "failed_precondition",
            `volume ${volume.name} has clones that depend on its snapshots (${dependents.map((d) => d.name).join(", ")}); delete them first.`,
          );
        const snaps = this.snapshotsOf(volume.id);
        if (snaps.length > 0 && !deleteSnapshots)
          throw new DomainError(
            "failed_precondition",
            `volume ${volume.name} has ${snaps.length} snapshot(s); delete them first or set delete_snapshots.`,
          );
        // Written ahead (durably): a crash from here on leaves DELETING, and load() finishes the delete.
        volume.state = "deleting";
        await this.saveVolume(volume);
        return snaps;
      });
      const pool = this.pools.get(volume.pool)?.pool;
      try {
        if (pool) await pool.deleteVolume(this.disk(volume), snaps);
        crashPoint("storage.volume.unmade");
      } catch (err) {
        await this.lock.runExclusive(async () => {
          volume.state = "failed";
          volume.stateReason = `deleting it failed: ${(err as Error).message}`;
          await this.saveVolume(volume);
        });
        throw this.hostError(err, `deleting volume ${volume.name}`);
      }
      await this.lock.runExclusive(async () => {
        for (const s of snaps) await this.forget("snapshots", this.snapshots, s.id);
        await this.forget("volumes", this.volumes, volume.id);
        if (requestId !== "") this.deletedRequests.add(`${tenant}/${requestId}`);
      });
    });
    this.volumeLocks.delete(volume.id);
  }

  // ---- snapshots ---------------------------------------------------------------------------

  async snapshotVolume(input: {
    volume: string;
    tenant: string;
    name: string;
    labels: Record<string, string>;
    requestId: string;
    forClone?: string;
  }): Promise<SnapshotRecord> {
    const again = this.byRequest(this.snapshots.values(), input.tenant, input.requestId);
    if (again) return again;
    const volume = this.resolveVolume(input.volume, input.tenant);
    return this.volumeLock(volume.id).runExclusive(async () => {
      this.usable(volume, "snapshotted");
      const pool = this.pool(volume.pool);
      if (pool.driver === "dir" && this.usersOf(volume.id).some((u) => u.running)) {
        throw new DomainError(
          "failed_precondition",
          `volume ${volume.name} is attached to a running VM and lives in a dir pool, whose snapshots swap the file under the hypervisor; stop the VM first (ZFS pools snapshot running volumes).`,
        );
      }
      if (pool.driver === "dir" && volume.format !== "qcow2") {
        throw new DomainError(
          "failed_precondition",
          `volume ${volume.name} is ${volume.format}: raw volumes in a dir pool have no snapshots (and so no clones); create the volume as qcow2.`,
        );
      }
      const existing = this.snapshotsOf(volume.id);
      const name =
        input.name ||
        `s${new Date()
          .toISOString()
          .replace(/[-:]/g, "")
          .replace(/\.\d+Z$/, "z")
          .toLowerCase()}`;
      if (existing.some((s) => s.name === name))
        throw new DomainError("already_exists", `volume ${volume.name} already has a snapshot named ${name}; pick another name.`);
      const record: SnapshotRecord = {
        id: randomUUID(),
        name,
        tenant: volume.tenant,
        labels: input.labels,
        createTimeMs: Date.now(),
        seq: (existing.at(-1)?.seq ?? 0) + 1,
        state: "creating",
        stateReason: "",
        volume: volume.id,
        sizeBytes: volume.sizeBytes,
        requestId: input.requestId,
        forClone: input.forClone ?? "",
      };
      // Written ahead, kept out of the lists until taken: load() undoes a snapshot a crash interrupted.
      await this.saveSnapshot(record);
      try {
        await pool.snapshot(this.disk(volume), record.id);
      } catch (err) {
        await rm(this.recordPath("snapshots", record.id), { force: true });
        throw this.hostError(err, `snapshotting volume ${volume.name}`);
      }
      crashPoint("storage.snapshot.taken");
      await this.lock.runExclusive(async () => {
        record.state = "ready";
        this.snapshots.set(record.id, record);
        await this.saveSnapshot(record);
      });
      return record;
    });
  }

  async deleteSnapshot(volumeRef: string, ref: string, tenant: string, requestId: string): Promise<void> {
    let snap: SnapshotRecord;
    try {
      snap = this.resolveSnapshot(volumeRef, ref, tenant);
    } catch (err) {
      if (requestId !== "" && this.deletedRequests.has(`${tenant}/${requestId}`)) return;
      throw err;
    }
    const volume = this.volumes.get(snap.volume);
    if (!volume) throw new DomainError("internal", `snapshot ${snap.id} has no volume record.`);
    await this.volumeLock(volume.id).runExclusive(async () => {
      const { newer, older } = await this.lock.runExclusive(async () => {
        const clones = this.clonesOf("snapshot", snap.id);
        if (clones.length > 0)
          throw new DomainError(
            "failed_precondition",
            `snapshot ${snap.name} has clones (${clones.map((c) => c.name).join(", ")}); delete them first.`,
          );
        this.usable(volume, "changed");
        const chain = this.snapshotsOf(volume.id);
        const at = chain.findIndex((s) => s.id === snap.id);
        const newer = chain[at + 1];
        const older = chain[at - 1];
        const pool = this.pool(volume.pool);
        if (pool.driver === "dir") {
          // Deleting a layer rewrites the one above it: the volume itself when no newer snapshot
          // exists, or the newer snapshot, which clones and running VMs may be reading.
          if (!newer && this.usersOf(volume.id).some((u) => u.running))
            throw new DomainError(
              "failed_precondition",
              `volume ${volume.name} is attached to a running VM; stop it before deleting its newest snapshot.`,
            );
          if (newer && this.clonesOf("snapshot", newer.id).some((c) => this.usersOf(c.id).some((u) => u.running))) {
            throw new DomainError(
              "failed_precondition",
              `snapshot ${newer.name} (taken after ${snap.name}) has clones attached to running VMs; stop them first.`,
            );
          }
        }
        snap.state = "deleting";
        return { newer, older };
      });
      try {
        // Written ahead: a crash from here on leaves DELETING, and load() finishes the delete.
        await this.saveSnapshot(snap);
        await this.pool(volume.pool).deleteSnapshot(this.disk(volume), snap.id, newer, older);
        crashPoint("storage.snapshot.unmade");
      } catch (err) {
        snap.state = "failed";
        snap.stateReason = `deleting it failed: ${(err as Error).message}`;
        await this.saveSnapshot(snap);
        throw this.hostError(err, `deleting snapshot ${snap.name}`);
      }
      await this.lock.runExclusive(async () => {
        await this.forget("snapshots", this.snapshots, snap.id);
        if (requestId !== "") this.deletedRequests.add(`${tenant}/${requestId}`);
      });
    });
  }

  async rollbackVolume(
    ref: string,
    tenant: string,
    snapshotRef: string,
    destroyNewer: boolean,
    options: { asVm?: string } = {},
  ): Promise<{ volume: VolumeRecord; deleted: string[] }> {
    const volume = this.resolveVolume(ref, tenant);
    const snap = this.resolveSnapshot(volume.id, snapshotRef, tenant);
    return this.volumeLock(volume.id).runExclusive(async () => {
      const newer = await this.lock.runExclusive(async () => {
        this.usable(volume, "rolled back");
        // A VM rolling its own disks back (a VM snapshot) may, while it is stopped.
        const users = this.usersOf(volume.id).filter((u) => u.vmId !== options.asVm || u.running);
        if (users.length > 0)
          throw new DomainError(
            "failed_precondition",
            `volume ${volume.name} is attached to ${vmsText(users)}; delete the VM or detach the volume before rolling back.`,
          );
        const chain = this.snapshotsOf(volume.id);
        const newer = chain.slice(chain.findIndex((s) => s.id === snap.id) + 1);
        if (newer.length > 0 && !destroyNewer)
          throw new DomainError(
            "failed_precondition",
            `volume ${volume.name} has ${newer.length} snapshot(s) newer than ${snap.name} (${newer.map((s) => s.name).join(", ")}); set destroy_newer_snapshots to delete them.`,
          );
        const cloned = newer.filter((s) => this.clonesOf("snapshot", s.id).length > 0);
        if (cloned.length > 0)
          throw new DomainError(
            "failed_precondition",
            `snapshot ${cloned.map((s) => s.name).join(", ")} (newer than ${snap.name}) has clones; delete them before rolling back.`,
          );
        return newer;
      });
      try {
        await this.pool(volume.pool).rollback(this.disk(volume), snap.id, newer);
      } catch (err) {
        throw this.hostError(err, `rolling volume ${volume.name} back`);
      }
      return this.lock.runExclusive(async () => {
        for (const s of newer) await this.forget("snapshots", this.snapshots, s.id);
        volume.sizeBytes = snap.sizeBytes;
        await this.saveVolume(volume);
        return { volume, deleted: newer.map((s) => s.id) };
      });
    });
  }

  // ---- images ------------------------------------------------------------------------------

  async importImage(input: ImportImageInput): Promise<ImageRecord> {
    const again = this.byRequest(this.images.values(), input.tenant, input.requestId);
    if (again) return again;
    const pool = this.poolFor(input.pool);
    let source = input.source;
    if (source.kind === "local") {
      try {
        source = { kind: "local", path: await confineLocalSource(source.path, this.importRoots) };
      } catch (err) {
        if (err instanceof ImportError) throw new DomainError("failed_precondition", err.message);
        throw err;
      }
    } else {
      try {
        await precheckUrl(new URL(source.url), source.rules);
      } catch (err) {
        // The caller may not have aetherd fetch this: a question of permission, not of the argument's form.
        if (err instanceof UrlRefusedError) throw new DomainError("permission_denied", err.message);
        if (err instanceof ImportError) throw new DomainError("failed_precondition", err.message);
        throw err;
      }
    }
    const status = await pool.probe();
    if (!status.available) throw new DomainError("failed_precondition", `pool ${pool.name} is unavailable: ${status.reason}`);
    await this.replaceFailedImage(input.name, input.tenant);
    const record = await this.lock.runExclusive(async () => {
      if ([...this.images.values()].some((i) => i.tenant === input.tenant && i.name === input.name)) {
        throw new DomainError(
          "already_exists",
          `an image named ${input.name} already exists in tenant ${input.tenant}; pick another name or delete it first.`,
        );
      }
      const record: ImageRecord = {
        id: randomUUID(),
        name: input.name,
        tenant: input.tenant,
        labels: input.labels,
        createTimeMs: Date.now(),
        state: "importing",
        stateReason: "",
        pool: pool.name,
        format: "raw",
        source: { kind: source.kind, value: source.kind === "local" ? source.path : source.url },
        sha256: input.sha256,
        sourceFormat: input.sourceFormat ?? "",
        sizeBytes: 0,
        importedBytes: 0,
        sourceBytes: 0,
        hostPath: "",
        readyTimeMs: 0,
        requestId: input.requestId,
      };
      this.images.set(record.id, record);
      await this.saveImage(record);
      return record;
    });
    const abort = new AbortController();
    this.imports.set(record.id, abort);
    void this.runImport(record, pool, source, input.sourceFormat, input.revealDigest, abort.signal).finally(() =>
      this.imports.delete(record.id),
    );
    return record;
  }

  /**
   * A failed import does not hold its name: importing the same name again (with the right checksum,
   * say) deletes the FAILED image first, as DeleteImage would, and says so in the log with the
   * reason it had failed. Until then the FAILED image stays listed with its reason, so whoever
   * started the import without waiting learns why. An image that is importing, ready or being
   * deleted keeps its name (ALREADY_EXISTS).
   */
  private async replaceFailedImage(name: string, tenant: string): Promise<void> {
    const failed = [...this.images.values()].find((i) => i.tenant === tenant && i.name === name && i.state === "failed");
    if (!failed) return;
    this.log.info({ image: failed.id, name, tenant, reason: failed.stateReason }, "a new import replaces this failed image");
    try {
      await this.deleteImage(failed.id, tenant, "");
    } catch (err) {
      // Gone or going already (another import of the same name got there first): the name check decides.
      if (err instanceof DomainError && (err.kind === "not_found" || failed.state === "deleting")) return;
      throw err;
    }
  }

  private async runImport(
    record: ImageRecord,
    pool: StoragePool,
    source: ImportSource,
    declared: "qcow2" | "raw" | undefined,
    revealDigest: boolean,
    signal: AbortSignal,
  ): Promise<void> {
    let staged = "";
    try {
      staged = await pool.stagingPath(record.id);
      const digest = await fetchSource(source, staged, signal, (p) => {
        record.importedBytes = p.importedBytes;
        record.sourceBytes = p.sourceBytes;
        this.changes.emit("image", record.id);
      });
      if (digest !== record.sha256) {
        const found = revealDigest
          ? `the source's SHA-256 is ${digest}, not ${record.sha256}`
          : `the source's SHA-256 is not ${record.sha256}`;
        throw new ImportError(`the checksum does not match: ${found}; check the URL or file and the checksum you gave.`);
      }
      const format = await inspectStaged(staged, declared);
      if (signal.aborted) throw new ImportError("the import was cancelled.");
      const disk = await pool.finishImport(record.id, staged, format);
      await this.lock.runExclusive(async () => {
        if (record.state !== "importing") return;
        Object.assign(record, {
          state: "ready",
          hostPath: disk.hostPath,
          format: disk.format,
          sizeBytes: disk.sizeBytes,
          readyTimeMs: Date.now(),
        });
        await this.saveImage(record);
      });
      this.log.info({ image: record.id, name: record.name, bytes: record.importedBytes }, "image imported");
    } catch (err) {
      if (staged !== "") await rm(staged, { force: true });
      await this.lock.runExclusive(async () => {
        if (record.state !== "importing") return;
        record.state = "failed";
        record.stateReason =
          err instanceof ImportError || err instanceof PoolUnavailableError ? err.message : `the import failed: ${(err as Error).message}`;
        record.readyTimeMs = Date.now();
        await this.saveImage(record);
      });
      await pool.deleteImage(record.id).catch(() => undefined);
      this.log.warn({ image: record.id, reason: record.stateReason }, "image import failed");
    }
    this.changes.emit("image", record.id);
  }

  async deleteImage(ref: string, tenant: string, requestId: string): Promise<void> {
    let image: ImageRecord;
    try {
      image = this.resolveImage(ref, tenant);
    } catch (err) {
      if (requestId !== "" && this.deletedRequests.has(`${tenant}/${requestId}`)) return;
      throw err;
    }
    await this.lock.runExclusive(async () => {
      if (image.state === "deleting") throw new DomainError("failed_precondition", `image ${image.name} is already being deleted.`);
      const clones = this.clonesOf("image", image.id);
      if (clones.length > 0)
        throw new DomainError(
          "failed_precondition",
          `image ${image.name} has volumes cloned from it (${clones.map((c) => c.name).join(", ")}); delete them first.`,
        );
      image.state = "deleting";
      await this.saveImage(image, false);
    });
    this.imports.get(image.id)?.abort();
    const pool = this.pools.get(image.pool)?.pool;
    try {
      if (pool) await pool.deleteImage(image.id);
    } catch (err) {
      await this.lock.runExclusive(async () => {
        image.state = "failed";
        image.stateReason = `deleting it failed: ${(err as Error).message}`;
        await this.saveImage(image);
      });
      throw this.hostError(err, `deleting image ${image.name}`);
    }
    await this.lock.runExclusive(async () => {
      await this.forget("images", this.images, image.id);
      if (requestId !== "") this.deletedRequests.add(`${tenant}/${requestId}`);
    });
    this.changes.emit("image", image.id);
  }

  /**
   * Gives a volume to a VM (deleted with it) or back to its tenant (""): the volumes a live
   * migration makes on its target belong to the incoming VM until the migration is finished.
   */
  async setOwnerVm(volumeId: string, ownerVm: string): Promise<void> {
    await this.lock.runExclusive(async () => {
      const volume = this.volumes.get(volumeId);
      if (!volume) throw new DomainError("not_found", `volume ${volumeId} no longer exists.`);
      volume.ownerVm = ownerVm;
      await this.saveVolume(volume);
    });
  }

  imageById(id: string): ImageRecord | undefined {
    return this.images.get(id);
  }

  volumeById(id: string): VolumeRecord | undefined {
    return this.volumes.get(id);
  }

  // ---- records -----------------------------------------------------------------------------

  private async saveVolume(r: VolumeRecord, durable = true): Promise<void> {
    await writeJsonAtomic(join(this.dir, "volumes", `${r.id}.json`), r, { durable });
  }

  private async saveSnapshot(r: SnapshotRecord): Promise<void> {
    await writeJsonAtomic(join(this.dir, "snapshots", `${r.id}.json`), r);
  }

  private async saveImage(r: ImageRecord, durable = true): Promise<void> {
    await writeJsonAtomic(join(this.dir, "images", `${r.id}.json`), r, { durable });
  }

  private recordPath(kind: "volumes" | "snapshots" | "images", id: string): string {
    return join(this.dir, kind, `${id}.json`);
  }

  private async forget<T>(kind: "volumes" | "snapshots" | "images", map: Map<string, T>, id: string): Promise<void> {
    map.delete(id);
    await rm(this.recordPath(kind, id), { force: true });
  }

  /** Host failures become FAILED_PRECONDITION (pool gone) or INTERNAL with the tool's own words. */
  private hostError(err: unknown, doing: string): Error {
    if (rpcCode(err) !== undefined) return err as Error;
    if (err instanceof PoolUnavailableError)
      return new DomainError("failed_precondition", `${doing} failed: the pool is unavailable: ${err.message}`);
    if (err instanceof HostCommandError) return new DomainError("internal", `${doing} failed: ${err.message}`);
    return new DomainError("internal", `${doing} failed: ${(err as Error).message}`);
  }
}
