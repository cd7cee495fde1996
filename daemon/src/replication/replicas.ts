// The target side of replication: the replicas this node holds of other nodes' volumes, each in the
// replica store of its stream's kind (driver.ts: `zfs receive` into a ZFS pool, or qcow2 files in a
// dir pool). A point becomes the latest only once it is whole, so a transfer cut short (the source
// gone, this aetherd killed) leaves the previous point. When the aggregator starts a VM here after
// its node was fenced, its replicas become volumes of this node: thin clones of the last point,
// named as on the source (promote()).
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { Mutex } from "async-mutex";
import type { Logger } from "pino";
import { DomainError, describeError, resolveInTenant, writeJsonAtomic } from "@aether/server";
import type { StorageRegistry } from "../storage/registry.js";
import { crashPoint } from "../store/crash-point.js";
import type { ReplicaStore, StreamKind } from "./driver.js";
import { pointTimeMs, ReplicaRecordSchema, type ReplicaRecord } from "./records.js";

export interface IncomingHeader {
  sourceVolumeId: string;
  volumeName: string;
  tenant: string;
  labels: Record<string, string>;
  sizeBytes: number;
  sourceNode: string;
  vmId: string;
  vmName: string;
  workloadId: string;
  basePoint: string;
  point: string;
  pointMs: number;
  retention: number;
  kind: StreamKind;
}

/** A replica with its latest point (read from ZFS). */
export interface ReplicaView extends ReplicaRecord {
  point: string;
  pointMs: number;
  points: string[];
}

export class Replicas {
  private readonly records = new Map<string, ReplicaRecord>();
  /** The latest point of each replica, as ZFS said last (for heartbeats, which must not wait for zfs). */
  private readonly latestMs = new Map<string, number>();
  private readonly locks = new Map<string, Mutex>();
  private readonly dir: string;

  constructor(
    private readonly o: {
      stateDir: string;
      storage: StorageRegistry;
      /** Where replicas of each kind are kept; a kind without a store is refused. */
      stores: Partial<Record<StreamKind, ReplicaStore>>;
      log: Logger;
    },
  ) {
    this.dir = join(o.stateDir, "replication", "replicas");
  }

  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(".json")) continue;
      try {
        const record = ReplicaRecordSchema.parse(JSON.parse(await readFile(join(this.dir, name), "utf8")));
        this.records.set(record.sourceVolumeId, record);
      } catch (err) {
        this.o.log.warn({ file: name, err: describeError(err) }, "skipping an unreadable replica record");
      }
    }
    for (const r of this.records.values()) {
      try {
        const points = await this.storeOf(r.kind).points(r.sourceVolumeId);
        this.latestMs.set(r.sourceVolumeId, pointTimeMs(points.at(-1) ?? "") ?? 0);
      } catch (err) {
        this.o.log.warn({ replica: r.sourceVolumeId, err: describeError(err) }, "could not read a replica's points");
      }
    }
  }

  private storeOf(kind: StreamKind): ReplicaStore {
    const store = this.o.stores[kind];
    if (!store)
      throw new DomainError(
        "failed_precondition",
        kind === "zfs"
          ? 'this node has no ZFS pool to keep replicas of ZFS volumes in; add a [[pools]] entry with driver = "zfs" to its configuration.'
          : 'this node has no dir pool to keep replicas of qcow2 volumes in; add a [[pools]] entry with driver = "dir" to its configuration.',
      );
    return store;
  }

  private lock(id: string): Mutex {
    let m = this.locks.get(id);
    if (!m) this.locks.set(id, (m = new Mutex()));
    return m;
  }

  /** The latest point held of a volume, and every point held. */
  async point(sourceVolumeId: string): Promise<{ point: string; pointMs: number; points: string[] }> {
    const record = this.records.get(sourceVolumeId);
    if (!record || !this.o.stores[record.kind]) return { point: "", pointMs: 0, points: [] };
    const points = await this.storeOf(record.kind).points(sourceVolumeId);
    const point = points.at(-1) ?? "";
    return { point, pointMs: pointTimeMs(point) ?? 0, points };
  }

  /** Applies one stream; the point is the latest only once `zfs receive` succeeded. */
  async receive(
    header: IncomingHeader,
    chunks: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): Promise<{ point: string; receivedBytes: number }> {
    const store = this.storeOf(header.kind);
    const known = this.records.get(header.sourceVolumeId);
    if (known && known.promotedVolume !== "")
      throw new DomainError(
        "failed_precondition",
        `the replica of volume ${header.volumeName} was made into volume ${known.promotedVolume} on this node (its VM runs here now); it takes no more points.`,
      );
    if (known && known.tenant !== header.tenant)
      throw new DomainError("permission_denied", `the replica of volume ${header.sourceVolumeId} belongs to another tenant.`);
    if (known && known.kind !== header.kind)
      throw new DomainError(
        "failed_precondition",
        `this node holds a ${known.kind} replica of volume ${header.volumeName}, and the stream is ${header.kind}; DeleteReplica first.`,
      );
    const result = await this.lock(header.sourceVolumeId).runExclusive(async () => {
      const id = header.sourceVolumeId;
      const phases: Record<string, number> = {};
      let tPhase = performance.now();
      const phase = (name: string) => {
        const now = performance.now();
        phases[name] = Math.round(now - tPhase);
        tPhase = now;
      };
      // An increment to a replica known here needs no look first: the store refuses it if its base is gone.
      const exists = header.basePoint === "" || !known ? await store.exists(id) : true;
      phase("existsMs");
      if (header.basePoint === "" && exists && !store.wholeReplaces) {
        throw new DomainError(
          "failed_precondition",
          `this node holds a replica of volume ${header.volumeName} already, and a whole stream would replace it; send an incremental stream from one of its points, or DeleteReplica first.`,
        );
      }
      if (header.basePoint !== "" && !exists)
        throw new DomainError(
          "failed_precondition",
          `this node holds no replica of volume ${header.volumeName} to apply an incremental stream to.`,
        );
      // The record first (what the replica is of), then the data: a crash in between leaves a record
      // whose store has no point yet, which reports no point and takes a whole stream.
      const record: ReplicaRecord = {
        sourceVolumeId: id,
        volumeName: header.volumeName,
        tenant: header.tenant,
        labels: header.labels,
        sizeBytes: header.sizeBytes,
        sourceNode: header.sourceNode,
        vmId: header.vmId,
        vmName: header.vmName,
        workloadId: header.workloadId,
        pool: store.poolName,
        kind: header.kind,
        receivedBytes: known?.receivedBytes ?? 0,
        promotedVolume: "",
      };
      // Written only when it says something new (a first stream, or the volume renamed or relabelled).
      if (!known || JSON.stringify({ ...known, receivedBytes: 0 }) !== JSON.stringify({ ...record, receivedBytes: 0 }))
        await this.save(record);
      phase("recordMs");
      const incoming = await store.apply(id, { base: header.basePoint, point: header.point }, signal);
      phase("startMs");
      // The writer (`zfs receive`, a qcow2 file) can end before the stream does: it refused the
      // bytes, or it was stopped because the sender went away (the RPC's signal). Its end is watched
      // from here on, never left unobserved: a rejection nobody awaits ends the whole aetherd (Node's
      // default), and a receiver must outlive its senders. Once the writer ended, the loop stops
      // with its error instead of waiting for a chunk or a drain that no longer matters.
      const writerEnded = incoming.done.then((): never => {
        throw new Error("the writer ended before the stream did");
      });
      writerEnded.catch(() => undefined);
      const iterator = chunks[Symbol.asyncIterator]();
      let received = 0;
      try {
        for (;;) {
          const next = await Promise.race([iterator.next(), writerEnded]);
          if (next.done) break;
          const chunk = next.value;
          received += chunk.byteLength;
          if (received > 4 * 1024 * 1024) crashPoint("replication.receiving");
          if (!incoming.sink.write(chunk)) await Promise.race([drained(incoming.sink), writerEnded]);
        }
        incoming.sink.end();
        phase("streamMs");
        await incoming.done;
        phase("drainMs");
        await incoming.commit();
        phase("commitMs");
      } catch (err) {
        // What was taken of this stream is discarded: the replica stays at its previous point.
        await incoming.abort();
        throw err instanceof DomainError
          ? err
          : new DomainError(
              "unavailable",
              `the stream of volume ${header.volumeName} stopped after ${received} bytes (${describeError(err)}); the replica stays at its previous point.`,
            );
      }
      record.receivedBytes += received;
      await this.save(record);
      this.latestMs.set(record.sourceVolumeId, header.pointMs);
      this.o.log.info({ replica: id, kind: header.kind, bytes: received, ...phases }, "replication receive phases");
      return { point: header.point, receivedBytes: received };
    });
    // Old points go after the answer (still under the replica's lock): the source's run does not wait for it.
    void this.lock(header.sourceVolumeId)
      .runExclusive(() => store.prune(header.sourceVolumeId, header.retention))
      .catch((err: unknown) =>
        this.o.log.warn({ replica: header.sourceVolumeId, err: describeError(err) }, "could not prune old replication points"),
      );
    return result;
  }

  async list(tenant: string | undefined): Promise<ReplicaView[]> {
    const out: ReplicaView[] = [];
    for (const r of this.records.values()) {
      if (tenant !== undefined && r.tenant !== tenant) continue;
      const { point, pointMs, points } = await this.point(r.sourceVolumeId);
      out.push({ ...r, point, pointMs, points });
    }
    return out.sort((a, b) => a.volumeName.localeCompare(b.volumeName));
  }

  /** What the heartbeat tells the aggregator: the workloads whose volumes this node can start from. */
  held(): Array<{ workloadId: string; vmId: string; sourceNode: string; lastPointMs: number; volumes: number }> {
    const byWorkload = new Map<string, { workloadId: string; vmId: string; sourceNode: string; lastPointMs: number; volumes: number }>();
    for (const r of this.records.values()) {
      const pointMs = this.latestMs.get(r.sourceVolumeId) ?? 0;
      if (r.workloadId === "" || r.promotedVolume !== "" || pointMs === 0) continue;
      const held = byWorkload.get(r.workloadId);
      // A VM's data is as old as its oldest volume's point.
      if (held) Object.assign(held, { lastPointMs: Math.min(held.lastPointMs, pointMs), volumes: held.volumes + 1 });
      else
        byWorkload.set(r.workloadId, {
          workloadId: r.workloadId,
          vmId: r.vmId,
          sourceNode: r.sourceNode,
          lastPointMs: pointMs,
          volumes: 1,
        });
    }
    return [...byWorkload.values()];
  }

  /** The replicas of a workload's VM held here and not yet made into volumes. */
  ofWorkload(workloadId: string, tenant: string): ReplicaRecord[] {
    return [...this.records.values()].filter((r) => r.workloadId === workloadId && r.tenant === tenant && r.promotedVolume === "");
  }

  /**
   * Makes a replica a volume of this node, named as on the source: a thin clone of its latest point.
   * Returns the volume's id and the point's time.
   */
  async promote(record: ReplicaRecord, ownerVm: string): Promise<{ volumeId: string; pointMs: number }> {
    const store = this.storeOf(record.kind);
    return this.lock(record.sourceVolumeId).runExclusive(async () => {
      const point = (await store.points(record.sourceVolumeId)).at(-1);
      if (point === undefined)
        throw new DomainError("failed_precondition", `the replica of volume ${record.volumeName} has no consistent point yet.`);
      const { format, make } = await store.volumeFrom(record.sourceVolumeId, point, record.sizeBytes);
      const volume = await this.o.storage.createVolume({
        name: record.volumeName,
        tenant: record.tenant,
        labels: record.labels,
        pool: store.poolName,
        format,
        source: { kind: "adopt", format, sizeBytes: record.sizeBytes, make: (_pool, volumeId) => make(volumeId) },
        requestId: "",
        ownerVm,
      });
      record.promotedVolume = volume.id;
      await this.save(record);
      return { volumeId: volume.id, pointMs: pointTimeMs(point) ?? 0 };
    });
  }

  async delete(ref: string, tenant: string): Promise<void> {
    const record = resolveInTenant(this.records, ref, tenant, (r) => ({ id: r.sourceVolumeId, name: r.volumeName, tenant: r.tenant }), {
      noun: "replica",
      hint: "list them with ListReplicas.",
    });
    const id = record.sourceVolumeId;
    await this.lock(id).runExclusive(async () => {
      if (record.promotedVolume !== "" && this.o.storage.volumeById(record.promotedVolume))
        throw new DomainError(
          "failed_precondition",
          `volume ${record.volumeName} on this node was made from this replica and depends on it; delete the volume first.`,
        );
      await this.o.stores[record.kind]?.destroy(id);
      this.records.delete(id);
      this.latestMs.delete(id);
      await rm(join(this.dir, `${id}.json`), { force: true });
    });
  }

  private async save(record: ReplicaRecord): Promise<void> {
    await writeJsonAtomic(join(this.dir, `${record.sourceVolumeId}.json`), record);
    this.records.set(record.sourceVolumeId, record);
  }
}

/** Resolves when the sink takes more again; rejects with its error. */
function drained(sink: Writable): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onDrain = () => {
      sink.off("error", onError);
      resolve();
    };
    const onError = (e: Error) => {
      sink.off("drain", onDrain);
      reject(e);
    };
    sink.once("drain", onDrain);
    sink.once("error", onError);
  });
}
