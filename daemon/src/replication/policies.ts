// The source side of replication: the policies of this node's VMs and volumes, their schedule, and
// each run: every target is asked which points it holds, one point is taken per volume by the
// volume's driver (driver.ts: a ZFS snapshot, or a qcow2 backup of a dir pool volume), then, per
// target, the streams from the last point the target holds (so a target that lost a run, or a
// restart of either side, costs nothing but the bytes since that point) to the new one, over
// ReplicaReceiverService with this node's identity (mutual TLS to an https:// target, the socket to
// a unix:// one). Policies and the figures of the last runs are records (records.ts), written
// before a run's result is reported. About 470 lines because the schedule, a run and its stream
// share the policy records under one owner; the drivers make the points, service.ts is the RPC edge.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import type { Logger } from "pino";
import { connect } from "@aether/sdk/client";
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
import { DirPool } from "../storage/dir-pool.js";
import { ZfsPool } from "../storage/zfs-pool.js";
import type { QmpClient } from "../vm/qmp.js";
import type { VmRecord } from "../vm/record.js";
import { crashPoint } from "../store/crash-point.js";
import type { ReplicationSource, StreamStep } from "./driver.js";
import { qcow2Source } from "./qcow2-source.js";
import { PolicyRecordSchema, pointName, pointTimeMs, type PolicyRecord, type TargetStatus } from "./records.js";
import { zfsSource } from "./zfs-driver.js";

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

/** A target asked for the points it holds, on the connection the streams then take. */
interface Session {
  target: string;
  client: Awaited<ReturnType<typeof connect>>;
  receiver: ReturnType<typeof createClient<typeof ReplicaReceiverService>>;
  held: string[];
  askedMs: number;
}

/** A volume of a policy as a run sees it. */
interface RunVolume {
  id: string;
  name: string;
  tenant: string;
  labels: Record<string, string>;
  sizeBytes: number;
  source: ReplicationSource;
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
      /** The QMP client of the running QEMU that has a volume open (a dir pool's points are taken by it). */
      qmpOf: (volumeId: string) => QmpClient | undefined;
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
    for (const volumeId of Object.keys(policy.status))
      await this.sourceOf(volumeId)
        ?.forget()
        .catch(() => undefined);
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
      const source = this.sourceOf(id);
      if (!source) {
        const pool = this.o.pools.get(volume.pool)?.pool;
        throw new DomainError(
          "failed_precondition",
          pool instanceof DirPool
            ? `volume ${volume.name} is a ${volume.format} file in dir pool ${volume.pool}; only qcow2 volumes of a dir pool can be replicated (QEMU's incremental backup needs qcow2).`
            : `volume ${volume.name} is in ${pool?.driver ?? "an unknown"} pool ${volume.pool}; only volumes of a zfs pool or qcow2 volumes of a dir pool can be replicated.`,
        );
      }
      return { id, name: volume.name, tenant: volume.tenant, labels: volume.labels, sizeBytes: volume.sizeBytes, source };
    });
  }

  /** The replication driver of a volume's pool; undefined for a pool or format that cannot replicate. */
  private sourceOf(volumeId: string): ReplicationSource | undefined {
    const volume = this.o.storage.volumeById(volumeId);
    const pool = volume && this.o.pools.get(volume.pool)?.pool;
    if (!volume) return undefined;
    if (pool instanceof ZfsPool) return zfsSource(pool.volumeDataset(volumeId), volume.name);
    if (pool instanceof DirPool && volume.format === "qcow2")
      return qcow2Source(
        { id: volumeId, name: volume.name, hostPath: volume.hostPath, sizeBytes: volume.sizeBytes },
        { poolLocation: pool.location, qmp: () => this.o.qmpOf(volumeId), log: this.o.log },
      );
    return undefined;
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
      // Every target is asked what it holds first: a qcow2 point is whole when one cannot follow an increment.
      // Where a run's time goes, logged per volume (bench/replication.ts prints it with BENCH_REPLICATION_PROFILE=1).
      const phases: Record<string, number> = {};
      let tPhase = performance.now();
      const phase = (name: string) => {
        const now = performance.now();
        phases[name] = Math.round(now - tPhase);
        tPhase = now;
      };
      const sessions = await Promise.all(p.targets.map((target) => this.session(target, volume.id)));
      phase("askMs");
      try {
        // One point per volume and run, shared by every target.
        const point = pointName(Math.max(Date.now(), (pointTimeMs((await volume.source.points()).at(-1) ?? "") ?? 0) + 1));
        phase("listMs");
        try {
          await volume.source.take(
            point,
            sessions.flatMap((s) => ("held" in s ? [s.held] : [])),
          );
        } catch (err) {
          for (const target of p.targets) this.statusOf(p, volume.id, target).lastError = `could not take the point: ${describeError(err)}`;
          continue;
        }
        phase("takeMs");
        await Promise.all(
          sessions.map(async (session) => {
            const target = session.target;
            const status = this.statusOf(p, volume.id, target);
            const t0 = performance.now();
            const key = `${volume.id} ${target}`;
            this.sending.add(key);
            try {
              if ("error" in session) throw session.error;
              const sent = await this.sendOne(p, volume, vm, session, point);
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
        phase("sendMs");
      } finally {
        for (const s of sessions) if ("client" in s) s.client.close?.();
      }
      if (!this.policies.has(p.id)) return p;
      await this.save(p);
      phase("saveMs");
      await this.prune(p, volume);
      phase("pruneMs");
      this.o.log.info({ volume: volume.id, kind: volume.source.kind, ...phases }, "replication run phases");
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

  /** A connection to a target, and the points it holds of a volume (or why it could not be asked). */
  private async session(target: string, volumeId: string): Promise<Session | { target: string; error: unknown }> {
    const t0 = performance.now();
    let client: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      client = await connect(outgoingConnectOptions(target, this.o.identity, "the replication target aetherd"));
      const receiver = createClient(ReplicaReceiverService, client.transport);
      const held = await receiver.getReplicaPoint({ sourceVolumeId: volumeId }, { timeoutMs: 60_000 });
      return { target, client, receiver, held: held.points, askedMs: Math.round(performance.now() - t0) };
    } catch (err) {
      client?.close?.();
      return { target, error: err };
    }
  }

  /** Sends one volume's point to one target, in as many streams as its driver plans; returns the bytes sent. */
  private async sendOne(
    p: PolicyRecord,
    volume: RunVolume,
    vm: VmRecord["spec"] | undefined,
    session: Session,
    point: string,
  ): Promise<number> {
    const steps = await volume.source.plan(session.held, point);
    let sent = 0;
    for (const step of steps) sent += await this.sendStep(p, volume, vm, session, step);
    return sent;
  }

  private async sendStep(
    p: PolicyRecord,
    volume: RunVolume,
    vm: VmRecord["spec"] | undefined,
    session: Session,
    step: StreamStep,
  ): Promise<number> {
    const abort = new AbortController();
    const producer = volume.source.open(step, abort.signal);
    // Awaited only once the stream ends, but it may fail sooner (a read error): never left unobserved,
    // which would end aetherd.
    Promise.resolve(producer.done).catch(() => undefined);
    let sent = 0;
    const tStream = performance.now();
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
      basePoint: step.base,
      point: step.point,
      pointTime: timestamp(pointTimeMs(step.point) as number),
      retention: p.retention,
      kind: volume.source.kind,
    };
    async function* messages() {
      yield { part: { case: "header" as const, value: header } };
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const data of producer.stream as AsyncIterable<Buffer>) {
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
      await producer.done;
      if (pendingBytes > 0) {
        sent += pendingBytes;
        yield { part: { case: "chunk" as const, value: Buffer.concat(pending) } };
      }
    }
    try {
      await session.receiver.receiveReplica(messages());
    } catch (err) {
      abort.abort();
      await Promise.resolve(producer.done).catch(() => undefined);
      throw err;
    }
    this.o.log.info(
      {
        volume: volume.id,
        target: session.target,
        kind: volume.source.kind,
        base: step.base,
        point: step.point,
        bytes: sent,
        askMs: session.askedMs,
        streamMs: Math.round(performance.now() - tStream),
      },
      "replication stream sent",
    );
    return sent;
  }

  /** Keeps the newest `retention` points, and what each target needs from its latest point on (the next base). */
  private async prune(p: PolicyRecord, volume: RunVolume): Promise<void> {
    const keep = new Set(p.targets.map((t) => this.statusOf(p, volume.id, t).lastPoint));
    await volume.source
      .prune(keep, p.retention)
      .catch((err: unknown) => this.o.log.warn({ volume: volume.id, err: describeError(err) }, "could not prune old replication points"));
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
