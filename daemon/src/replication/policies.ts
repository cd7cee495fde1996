// The source side of replication: the policies of this node's VMs and volumes, their schedule, and
// each run: one point (a ZFS snapshot) per volume, then, per target, the stream from the last point
// the target holds (it is asked, so a target that lost a run, or a restart of either side, costs
// nothing but the bytes since that point) to the new one, over ReplicaReceiverService with this
// node's identity (mutual TLS to an https:// target, the socket to a unix:// one). Policies and the
// figures of the last runs are records (records.ts), written before a run's result is reported.
// About 400 lines because the schedule, a run and its stream share the policy records under one
// owner; the ZFS commands are zfs-streams.ts, the RPC edge service.ts.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import type { Logger } from "pino";
import { connect } from "@aether/sdk";
import { ReplicaReceiverService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import {
  DomainError,
  describeError,
  outgoingConnectOptions,
  resolveInTenant,
  timestamp,
  writeJsonAtomic,
  type OutgoingTls,
} from "@aether/server";
import type { EventBus } from "../observe/event-bus.js";
import type { StorageRegistry } from "../storage/registry.js";
import type { StoragePool } from "../storage/pool.js";
import { ZfsPool } from "../storage/zfs-pool.js";
import type { VmRecord } from "../vm/record.js";
import { crashPoint } from "../store/crash-point.js";
import { PolicyRecordSchema, pointName, pointTimeMs, type PolicyRecord, type TargetStatus } from "./records.js";
import { destroyPoint, listPoints, send, takePoint } from "./zfs-streams.js";

export const DEFAULT_INTERVAL_MS = 5 * 60_000;
export const DEFAULT_RETENTION = 3;
/** The bytes of one stream message (well under aetherd's 4 MiB message limit). */
const CHUNK_BYTES = 1024 * 1024;
/** Label the aggregator's provisioning gives a workload's VM. */
const WORKLOAD_LABEL = "aether.io/workload";

export interface PolicyInput {
  kind: "vm" | "volume";
  ref: string;
  tenant: string;
  targets: string[];
  intervalMs: number;
  retention: number;
  rpoMs: number;
}

/** A volume of a policy as a run sees it. */
interface RunVolume {
  id: string;
  name: string;
  tenant: string;
  labels: Record<string, string>;
  sizeBytes: number;
  dataset: string;
}

export class ReplicationPolicies {
  private readonly policies = new Map<string, PolicyRecord>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** The run in progress of each policy (a second RunReplication waits for it). */
  private readonly running = new Map<string, Promise<PolicyRecord>>();
  /** Volume id and target of each stream being sent now. */
  private readonly sending = new Set<string>();
  private readonly dir: string;
  private closed = false;

  constructor(
    private readonly o: {
      stateDir: string;
      storage: StorageRegistry;
      pools: Map<string, { pool: StoragePool }>;
      vms: { resolve(ref: string, tenant: string): VmRecord; list(): VmRecord[] };
      identity: OutgoingTls;
      /** This node as replicas name their source. */
      nodeName: string;
      events: EventBus;
      log: Logger;
    },
  ) {
    this.dir = join(o.stateDir, "replication", "policies");
  }

  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(".json")) continue;
      try {
        const record = PolicyRecordSchema.parse(JSON.parse(await readFile(join(this.dir, name), "utf8")));
        this.policies.set(record.id, record);
      } catch (err) {
        this.o.log.warn({ file: name, err: describeError(err) }, "skipping an unreadable replication policy");
      }
    }
    for (const p of this.policies.values()) this.schedule(p);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** Creates or replaces a policy; its first run starts at once. */
  async set(input: PolicyInput): Promise<PolicyRecord> {
    const subject =
      input.kind === "vm" ? this.o.vms.resolve(input.ref, input.tenant).spec : this.o.storage.resolveVolume(input.ref, input.tenant);
    const id = subject.id;
    // Checked now so a policy that can never run is refused with the reason.
    this.volumesOf({ id, kind: input.kind, tenant: subject.tenant });
    const known = this.policies.get(id);
    const record: PolicyRecord = {
      id,
      tenant: subject.tenant,
      kind: input.kind,
      targets: input.targets,
      intervalMs: input.intervalMs,
      retention: input.retention,
      rpoMs: input.rpoMs,
      createTimeMs: known?.createTimeMs ?? Date.now(),
      nextRunMs: Date.now(),
      status: known?.status ?? {},
    };
    // A run in progress holds the record it started with: the new settings go into that object.
    const policy = known ? Object.assign(known, record) : record;
    await this.save(policy);
    this.schedule(policy);
    return policy;
  }

  resolve(ref: string, tenant: string): PolicyRecord {
    return resolveInTenant(this.policies, ref, tenant, (p) => ({ id: p.id, name: this.subjectName(p), tenant: p.tenant }), {
      noun: "replication policy",
      hint: "list them with ListReplications (a policy is named by its VM or volume).",
    });
  }

  list(tenant: string | undefined): PolicyRecord[] {
    return [...this.policies.values()]
      .filter((p) => tenant === undefined || p.tenant === tenant)
      .sort((a, b) => a.createTimeMs - b.createTimeMs);
  }

  async delete(ref: string, tenant: string): Promise<void> {
    const policy = this.resolve(ref, tenant);
    clearTimeout(this.timers.get(policy.id));
    this.timers.delete(policy.id);
    this.policies.delete(policy.id);
    await rm(join(this.dir, `${policy.id}.json`), { force: true });
    await this.running.get(policy.id)?.catch(() => undefined);
    for (const volumeId of Object.keys(policy.status)) {
      const dataset = this.datasetOf(volumeId);
      if (dataset === undefined) continue;
      for (const point of await listPoints(dataset).catch(() => [])) await destroyPoint(dataset, point).catch(() => undefined);
    }
  }

  /** Runs a policy now; a run in progress is waited for instead. */
  run(ref: string, tenant: string): Promise<PolicyRecord> {
    return this.runPolicy(this.resolve(ref, tenant).id);
  }

  /** The name of the VM or volume a policy protects ("" when it is gone). */
  subjectName(p: PolicyRecord): string {
    if (p.kind === "vm") return this.o.vms.list().find((v) => v.spec.id === p.id)?.spec.name ?? "";
    return this.o.storage.volumeById(p.id)?.name ?? "";
  }

  /** The volumes a policy covers now, with the volume names. */
  volumesOf(p: Pick<PolicyRecord, "id" | "kind" | "tenant">): RunVolume[] {
    const ids =
      p.kind === "volume"
        ? [p.id]
        : (this.o.vms.list().find((v) => v.spec.id === p.id)?.spec.disks ?? []).map((d) => d.volumeId).filter((id) => id !== "");
    if (p.kind === "vm" && ids.length === 0) {
      const vm = this.o.vms.list().find((v) => v.spec.id === p.id);
      if (!vm) throw new DomainError("not_found", `VM ${p.id} of the policy is no longer on this node (deleted, or moved away).`);
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} has no volumes to replicate (its disks are host files or none).`);
    }
    return ids.map((id) => {
      const volume = this.o.storage.volumeById(id);
      if (!volume) throw new DomainError("not_found", `volume ${id} of the policy is gone.`);
      const pool = this.o.pools.get(volume.pool)?.pool;
      if (!(pool instanceof ZfsPool))
        throw new DomainError(
          "failed_precondition",
          `volume ${volume.name} is in ${pool?.driver ?? "an unknown"} pool ${volume.pool}; replication is done by ZFS send/receive, so only volumes of a zfs pool can be replicated for now.`,
        );
      return {
        id,
        name: volume.name,
        tenant: volume.tenant,
        labels: volume.labels,
        sizeBytes: volume.sizeBytes,
        dataset: pool.volumeDataset(id),
      };
    });
  }

  private datasetOf(volumeId: string): string | undefined {
    const volume = this.o.storage.volumeById(volumeId);
    const pool = volume && this.o.pools.get(volume.pool)?.pool;
    return pool instanceof ZfsPool ? pool.volumeDataset(volumeId) : undefined;
  }

  /** The worst copy: its lag as a share of its policy's RPO (1 = at the RPO), and which it is. */
  worstLag(now = Date.now()): { ratio: number; what: string } | undefined {
    let worst: { ratio: number; what: string } | undefined;
    for (const p of this.policies.values()) {
      for (const target of p.targets) {
        const volumes = Object.keys(p.status).length > 0 ? Object.entries(p.status) : [["", {}] as const];
        for (const [volumeId, byTarget] of volumes) {
          const since = (byTarget as Record<string, TargetStatus>)[target]?.lastPointMs || p.createTimeMs;
          const ratio = (now - since) / p.rpoMs;
          if (!worst || ratio > worst.ratio)
            worst = { ratio, what: `${this.o.storage.volumeById(volumeId)?.name ?? this.subjectName(p)} to ${target}` };
        }
      }
    }
    return worst;
  }

  private schedule(p: PolicyRecord): void {
    clearTimeout(this.timers.get(p.id));
    if (this.closed) return;
    const timer = setTimeout(
      () => {
        this.timers.delete(p.id);
        void this.runPolicy(p.id).catch((err: unknown) =>
          this.o.log.warn({ policy: p.id, err: describeError(err) }, "a replication run failed"),
        );
      },
      Math.max(0, p.nextRunMs - Date.now()),
    );
    timer.unref();
    this.timers.set(p.id, timer);
  }

  private runPolicy(id: string): Promise<PolicyRecord> {
    const inFlight = this.running.get(id);
    if (inFlight) return inFlight;
    const run = this.runOnce(id).finally(() => {
      this.running.delete(id);
      const p = this.policies.get(id);
      if (p) this.schedule(p);
    });
    this.running.set(id, run);
    return run;
  }

  private async runOnce(id: string): Promise<PolicyRecord> {
    const p = this.policies.get(id);
    if (!p) throw new DomainError("not_found", `replication policy ${id} was deleted.`);
    const startMs = Date.now();
    p.nextRunMs = startMs + p.intervalMs;
    let volumes: RunVolume[];
    try {
      volumes = this.volumesOf(p);
    } catch (err) {
      for (const target of p.targets) this.statusOf(p, "", target).lastError = describeError(err);
      if (this.policies.has(p.id)) await this.save(p);
      return p;
    }
    const vm = p.kind === "vm" ? this.o.vms.list().find((v) => v.spec.id === p.id)?.spec : undefined;
    for (const volume of volumes) {
      // One point per volume and run, shared by every target.
      const point = pointName(Math.max(Date.now(), (pointTimeMs((await listPoints(volume.dataset)).at(-1) ?? "") ?? 0) + 1));
      try {
        await takePoint(volume.dataset, point);
      } catch (err) {
        for (const target of p.targets) this.statusOf(p, volume.id, target).lastError = `could not take the point: ${describeError(err)}`;
        continue;
      }
      await Promise.all(
        p.targets.map(async (target) => {
          const status = this.statusOf(p, volume.id, target);
          const t0 = performance.now();
          const key = `${volume.id} ${target}`;
          this.sending.add(key);
          try {
            const sent = await this.sendOne(p, volume, vm, target, point);
            Object.assign(status, {
              lastPoint: point,
              lastPointMs: pointTimeMs(point),
              lastSentBytes: sent,
              totalSentBytes: status.totalSentBytes + sent,
              lastRunMs: Math.round(performance.now() - t0),
              lastError: "",
            });
          } catch (err) {
            status.lastError = describeError(err);
            this.o.log.warn({ volume: volume.id, target, err: status.lastError }, "a replication stream failed");
          } finally {
            this.sending.delete(key);
          }
        }),
      );
      if (!this.policies.has(p.id)) return p;
      await this.save(p);
      await this.prune(p, volume);
    }
    if (p.kind === "vm" && this.policies.has(p.id)) {
      this.o.events.publish({
        kind: "replication.run",
        tenant: p.tenant,
        resourceId: p.id,
        resourceName: this.subjectName(p),
        message: `replication of ${this.subjectName(p)} to ${p.targets.join(", ")} ran.`,
        attributes: { volumes: String(volumes.length) },
      });
    }
    return p;
  }

  /** Sends one volume's point to one target; returns the bytes sent. */
  private async sendOne(
    p: PolicyRecord,
    volume: RunVolume,
    vm: VmRecord["spec"] | undefined,
    target: string,
    point: string,
  ): Promise<number> {
    const t0 = performance.now();
    const client = await connect(outgoingConnectOptions(target, this.o.identity, "the replication target aetherd"));
    const tConnected = performance.now();
    try {
      const receiver = createClient(ReplicaReceiverService, client.transport);
      const held = await receiver.getReplicaPoint({ sourceVolumeId: volume.id }, { timeoutMs: 60_000 });
      const local = new Set(await listPoints(volume.dataset));
      // The newest point both sides hold is the base; none: the whole volume.
      const base = [...held.points].reverse().find((name) => local.has(name) && name !== point) ?? "";
      if (base === "" && held.point !== "")
        throw new DomainError(
          "failed_precondition",
          `${target} holds points of volume ${volume.name} that this node no longer has (${held.point}); delete the replica there (DeleteReplica) to send the whole volume again.`,
        );
      const abort = new AbortController();
      const zfs = send(volume.dataset, point, base, abort.signal);
      let sent = 0;
      let tStream = performance.now();
      const header = {
        sourceVolumeId: volume.id,
        volumeName: volume.name,
        tenant: volume.tenant,
        labels: volume.labels,
        sizeBytes: BigInt(volume.sizeBytes),
        sourceNode: this.o.nodeName,
        vmId: vm?.id ?? "",
        vmName: vm?.name ?? "",
        workloadId: vm?.labels[WORKLOAD_LABEL] ?? "",
        basePoint: base,
        point,
        pointTime: timestamp(pointTimeMs(point) as number),
        retention: p.retention,
      };
      async function* messages() {
        yield { part: { case: "header" as const, value: header } };
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        for await (const data of zfs.stream as AsyncIterable<Buffer>) {
          pending.push(data);
          pendingBytes += data.length;
          if (pendingBytes >= CHUNK_BYTES) {
            sent += pendingBytes;
            yield { part: { case: "chunk" as const, value: Buffer.concat(pending) } };
            pending = [];
            pendingBytes = 0;
            crashPoint("replication.sending");
          }
        }
        await zfs.done;
        if (pendingBytes > 0) {
          sent += pendingBytes;
          yield { part: { case: "chunk" as const, value: Buffer.concat(pending) } };
        }
      }
      try {
        tStream = performance.now();
        await receiver.receiveReplica(messages());
      } catch (err) {
        abort.abort();
        await zfs.done.catch(() => undefined);
        throw err;
      }
      this.o.log.info(
        {
          volume: volume.id,
          target,
          base,
          point,
          bytes: sent,
          connectMs: Math.round(tConnected - t0),
          prepareMs: Math.round(tStream - tConnected),
          streamMs: Math.round(performance.now() - tStream),
        },
        "replication stream sent",
      );
      return sent;
    } finally {
      client.close?.();
    }
  }

  /** Keeps the newest `retention` points, and every point a target holds as its latest (the next base). */
  private async prune(p: PolicyRecord, volume: RunVolume): Promise<void> {
    const keep = new Set(Object.values(p.status[volume.id] ?? {}).map((s) => s.lastPoint));
    const points = await listPoints(volume.dataset).catch(() => []);
    for (const old of points.slice(0, Math.max(0, points.length - p.retention))) {
      if (keep.has(old)) continue;
      await destroyPoint(volume.dataset, old).catch((err: unknown) =>
        this.o.log.warn({ volume: volume.id, point: old, err: describeError(err) }, "could not prune an old replication point"),
      );
    }
  }

  isSending(volumeId: string, target: string): boolean {
    return this.sending.has(`${volumeId} ${target}`);
  }

  statusOf(p: PolicyRecord, volumeId: string, target: string): TargetStatus {
    const byTarget = (p.status[volumeId] ??= {});
    return (byTarget[target] ??= { lastPoint: "", lastPointMs: 0, lastSentBytes: 0, totalSentBytes: 0, lastRunMs: 0, lastError: "" });
  }

  private async save(p: PolicyRecord): Promise<void> {
    await writeJsonAtomic(join(this.dir, `${p.id}.json`), p);
    this.policies.set(p.id, p);
  }
}
