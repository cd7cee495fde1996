// The source side of a live migration (MigrateVm): prepare the target (VmMigrationService over the
// node's own identity), mirror the disks into its NBD exports until in sync, send the memory, end the
// mirrors at the switchover, have the target resume the guest, then remove the VM here. Every step is
// written ahead into the VM's record (intent migrate-out, see record.ts) so that recovery after a
// crash ends with exactly one running copy (recovery.ts). Before the switchover, any failure cancels:
// the guest keeps running here, the target removes what it made, and the VM's reason says why.
// Why it is past 400 lines: the run and its three ways out (cancel before the switchover, the
// in-doubt question to the target, the removal after the commit) share the recorded steps, and
// recovery.ts reuses those same exits after a crash.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { createClient, type Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import { connect, type AetherClient } from "@aether/sdk";
import { IncomingState, VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { DomainError, outgoingConnectOptions, type OutgoingTls } from "@aether/server";
import type { EventBus } from "../observe/event-bus.js";
import type { StorageRegistry } from "../storage/registry.js";
import { crashPoint } from "../store/crash-point.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import type { VmRecord } from "../vm/record.js";
import {
  cancelMemory,
  endMirrors,
  memoryProgress,
  mirrorProgress,
  resumeIfPaused,
  startMemory,
  startMirrors,
  type MemoryProgress,
} from "./qemu-steps.js";

export type Phase = "prepare" | "storage" | "memory" | "switchover" | "cleanup";

export interface MigrationOptionsValue {
  maxBandwidthBytesPerSecond: number;
  maxDowntimeMs: number;
  autoConverge: boolean;
  timeoutMs: number;
}

/** One migration as this node tracks it (kept an hour after its end for WatchMigration). */
export interface Migration {
  id: string;
  vmId: string;
  vmName: string;
  tenant: string;
  target: string;
  requestId: string;
  options: MigrationOptionsValue;
  phase: Phase;
  state: "running" | "succeeded" | "failed";
  reason: string;
  startMs: number;
  endMs: number;
  diskTransferredBytes: number;
  diskRemainingBytes: number;
  memory: Omit<MemoryProgress, "status" | "error">;
}

const POLL_MS = 100;
/** How often the target aetherd is asked whether it still holds the incoming VM, before the switchover. */
const TARGET_CHECK_MS = 1000;
const KEEP_ENDED_MS = 3600_000;
/** The target waits this much longer than the migration's own timeout before it removes its copy on its own. */
const TARGET_GRACE_MS = 60_000;

export interface Target {
  client: AetherClient;
  migration: Client<typeof VmMigrationService>;
}

export class OutgoingMigrations {
  private readonly all = new Map<string, Migration>();
  /** Emits "change" with the migration id on every update. */
  readonly changes = new EventEmitter();
  /** Called with a VM whose migration is in doubt (the target did not answer at the switchover): asked again later. */
  inDoubt: (vm: VmRecord) => void = () => undefined;

  constructor(
    private readonly o: {
      hooks: MigrationHooks;
      storage: StorageRegistry;
      identity: OutgoingTls;
      /** Where "vm.migrating", "vm.migrated" and "vm.migration_failed" are published. */
      events: EventBus;
      /** This node as the target's records name it. */
      nodeName: string;
      log: Logger;
    },
  ) {
    this.changes.setMaxListeners(0);
  }

  /** Connects to another aetherd's VmMigrationService with this node's identity. */
  async connectTarget(address: string): Promise<Target> {
    const client = await connect(outgoingConnectOptions(address, this.o.identity, "the target aetherd"));
    return { client, migration: createClient(VmMigrationService, client.transport) };
  }

  get(id: string, tenant: string): Migration {
    const m = this.all.get(id);
    if (!m || m.tenant !== tenant)
      throw new DomainError("not_found", `no migration ${id} in tenant ${tenant} on this node; MigrateVm returns its id.`);
    return m;
  }

  /** Checks that the VM can move, claims it, and runs the migration in the background. */
  start(vm: VmRecord, target: string, options: MigrationOptionsValue, requestId: string): Migration {
    if (requestId !== "") {
      const earlier = [...this.all.values()].find((m) => m.requestId === requestId && m.tenant === vm.spec.tenant);
      if (earlier) return earlier;
    }
    const { spec } = vm;
    if (spec.hypervisor !== "qemu")
      throw new DomainError("failed_precondition", `VM ${spec.name} runs on Firecracker; only QEMU VMs can be live-migrated.`);
    if (vm.runtime.state !== "running")
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} is ${vm.runtime.state}; only a running VM is live-migrated (start it, or move a stopped VM's volumes).`,
      );
    const hostPath = spec.disks.find((d) => d.volumeId === "");
    if (hostPath)
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} has the host path ${hostPath.path} as a disk; only volumes move with a VM (attach a volume instead).`,
      );
    const qmp = this.o.hooks.qmp(vm);
    if (!qmp)
      throw new DomainError("failed_precondition", `aetherd cannot reach VM ${spec.name}'s QMP socket now; try again in a few seconds.`);
    this.o.hooks.claim(vm, `being migrated to ${target}`);
    const m: Migration = {
      id: randomUUID(),
      vmId: spec.id,
      vmName: spec.name,
      tenant: spec.tenant,
      target,
      requestId,
      options,
      phase: "prepare",
      state: "running",
      reason: `preparing the target ${target}`,
      startMs: Date.now(),
      endMs: 0,
      diskTransferredBytes: 0,
      diskRemainingBytes: 0,
      memory: {
        transferredBytes: 0,
        remainingBytes: 0,
        dirtyBytesPerSecond: 0,
        throttlePercent: 0,
        expectedDowntimeMs: 0,
        downtimeMs: 0,
        totalTimeMs: 0,
      },
    };
    this.all.set(m.id, m);
    this.publish(m, "vm.migrating", `VM ${m.vmName} is being live-migrated to ${m.target}`);
    void this.run(m, vm);
    return m;
  }

  private update(m: Migration, change: Partial<Migration>): void {
    Object.assign(m, change);
    this.changes.emit("change", m.id);
  }

  private async run(m: Migration, vm: VmRecord): Promise<void> {
    const { hooks, log } = this.o;
    const deadline = m.startMs + m.options.timeoutMs;
    const checkTime = () => {
      if (Date.now() > deadline) throw new Error(`it did not finish within the timeout of ${m.options.timeoutMs} ms`);
    };
    let target: Target | undefined;
    let mirrors = 0;
    let memoryStarted = false;
    // Before the switchover the target aetherd must still hold the incoming VM: a target that died or
    // forgot it (a restart removes it) cancels the migration while the guest is still running here.
    let checkedAt = Date.now();
    const checkTarget = async (force = false) => {
      if (!target || (!force && Date.now() - checkedAt < TARGET_CHECK_MS)) return;
      checkedAt = Date.now();
      const { state } = await target.migration.queryIncoming({ migrationId: m.id }, { timeoutMs: 10_000 }).catch((err: unknown) => {
        throw new Error(`the target aetherd stopped answering (${describe(err)})`);
      });
      if (state !== IncomingState.PREPARED) throw new Error("the target aetherd no longer holds the incoming VM");
    };
    try {
      // Write-ahead: from here a crash is settled by recovery.ts (cancel: the guest stays here).
      vm.runtime.intent = {
        op: "migrate-out",
        taps: [],
        seedPath: "",
        cellName: "",
        start: false,
        migration: { id: m.id, peer: m.target, step: "copying", deadlineMs: deadline },
      };
      await hooks.save(vm);
      target = await this.connectTarget(m.target);
      const prepared = await target.migration.prepareIncoming(
        {
          migrationId: m.id,
          sourceNode: this.o.nodeName,
          // The target's QEMU must run the same CPU model: the acceleration this run really uses.
          vmSpecJson: JSON.stringify({ ...vm.spec, acceleration: vm.runtime.effectiveAcceleration || vm.spec.acceleration }),
          disks: vm.spec.disks.map((d) => this.incomingDisk(d.volumeId)),
          timeout: { seconds: BigInt(Math.ceil((m.options.timeoutMs + TARGET_GRACE_MS) / 1000)), nanos: 0 },
        },
        { timeoutMs: 120_000 },
      );
      checkTime();
      const qmp = hooks.qmp(vm);
      if (!qmp) throw new Error("the VM's QEMU stopped answering on its QMP socket");

      this.update(m, { phase: "storage", reason: "mirroring the disks to the target" });
      mirrors = vm.spec.disks.length;
      await startMirrors(
        qmp,
        prepared.exports.map((e) => ({
          host: prepared.nbdHost,
          port: prepared.nbdPort,
          exportName: e.name,
          sync: e.thinClone ? "top" : "full",
        })),
        m.options.maxBandwidthBytesPerSecond,
      );
      for (;;) {
        const p = await mirrorProgress(qmp, mirrors);
        this.update(m, { diskTransferredBytes: p.transferredBytes, diskRemainingBytes: p.remainingBytes });
        if (p.ready) break;
        checkTime();
        await checkTarget();
        await sleep(POLL_MS);
      }

      this.update(m, { phase: "memory", reason: "copying the guest's memory while it runs" });
      await checkTarget(true);
      memoryStarted = true;
      await startMemory(qmp, prepared.migrationUri, m.options);
      let last: MemoryProgress;
      for (;;) {
        last = await memoryProgress(qmp);
        const { status, error: _error, ...figures } = last;
        const disks = await mirrorProgress(qmp, mirrors);
        const switching = status === "device" || status === "pre-switchover";
        this.update(m, {
          memory: { ...figures },
          diskTransferredBytes: disks.transferredBytes,
          diskRemainingBytes: disks.remainingBytes,
          ...(switching && m.phase !== "switchover" && { phase: "switchover" as const, reason: "the guest is paused for the switchover" }),
        });
        if (status === "completed") break;
        if (status === "failed" || status === "cancelled")
          throw new Error(`QEMU's migration ${status}${last.error ? `: ${last.error}` : ""}`);
        checkTime();
        if (status === "active") await checkTarget();
        await sleep(status === "active" ? POLL_MS : 10);
      }

      // The source's guest is paused for good now: the disks' last writes go to the target...
      this.update(m, { phase: "switchover", reason: "sending the disks' last writes" });
      await endMirrors(qmp, mirrors, true);
      mirrors = 0;
      await this.step(vm, "switching");
      crashPoint("migration.switching");
      // ...and the target resumes it. Past this call the guest is the target's.
      await target.migration.finishIncoming({ migrationId: m.id }, { timeoutMs: 60_000 });
      await this.step(vm, "committed");
      crashPoint("migration.committed");
      this.update(m, { phase: "cleanup", reason: "removing the VM from this node" });
      await removeMigrated(hooks, this.o.storage, vm, m.target, log);
      this.finish(m, "succeeded", `VM ${m.vmName} runs on ${m.target}`);
      log.info(
        { vm: m.vmName, migration: m.id, target: m.target, totalMs: Date.now() - m.startMs, downtimeMs: m.memory.downtimeMs },
        "live migration done",
      );
    } catch (err) {
      const why = describe(err);
      log.warn({ vm: m.vmName, migration: m.id, phase: m.phase, err: why }, "live migration failed");
      const step = vm.runtime.intent?.migration?.step;
      if (step === "switching") {
        // The target may or may not have resumed the guest: it says which copy lives.
        await settleInDoubt(this.o.hooks, this.o.storage, vm, target, m.id, m.target, log).then(
          (outcome) =>
            outcome === "moved"
              ? this.finish(m, "succeeded", `VM ${m.vmName} runs on ${m.target}`)
              : this.finish(
                  m,
                  "failed",
                  `the live migration to ${m.target} failed at the switchover (${why}); the guest kept running here`,
                ),
          async (e: Error) => {
            const reason = `the live migration to ${m.target} is in doubt (${why}; ${describe(e)}); the guest stays paused here until ${m.target} answers`;
            await hooks.setState(vm, vm.runtime.state, reason).catch(() => undefined);
            this.finish(m, "failed", reason);
            hooks.release(vm);
            this.inDoubt(vm);
          },
        );
      } else if (step === "committed") {
        await removeMigrated(hooks, this.o.storage, vm, m.target, log).catch((e: Error) =>
          log.error(
            { vm: m.vmName, err: e.message },
            "the VM runs on the target, but its remains here could not be removed; aetherd retries at its next start",
          ),
        );
        this.finish(m, "succeeded", `VM ${m.vmName} runs on ${m.target}`);
      } else {
        const reason = `the live migration to ${m.target} failed during ${m.phase} (${why}); it was cancelled and the guest kept running here`;
        await cancelOutgoing(hooks, vm, target, m.id, { memoryStarted, mirrors }, why, log);
        await hooks.setState(vm, vm.runtime.state === "running" ? "running" : vm.runtime.state, reason).catch(() => undefined);
        this.finish(m, "failed", reason);
      }
    } finally {
      target?.client.close();
    }
  }

  private incomingDisk(volumeId: string) {
    const volume = this.o.storage.volumeById(volumeId);
    if (!volume) throw new Error(`volume ${volumeId} no longer exists`);
    const image = volume.backing.kind === "image" ? this.o.storage.imageById(volume.backing.id) : undefined;
    return {
      sizeBytes: BigInt(volume.sizeBytes),
      volumeName: volume.name,
      baseImageSha256: image?.sha256 ?? "",
      ownedByVm: volume.ownerVm !== "",
      labels: volume.labels,
    };
  }

  private async step(vm: VmRecord, step: "switching" | "committed"): Promise<void> {
    const migration = vm.runtime.intent?.migration;
    if (migration) migration.step = step;
    await this.o.hooks.save(vm);
  }

  private publish(m: Migration, kind: string, message: string): void {
    const attributes: Record<string, string> = { migration: m.id, target: m.target, phase: m.phase };
    if (m.endMs > 0) attributes.total_ms = String(m.endMs - m.startMs);
    if (kind === "vm.migrated") attributes.downtime_ms = String(m.memory.downtimeMs);
    this.o.events.publish({ kind, tenant: m.tenant, resourceId: m.vmId, resourceName: m.vmName, message, attributes });
  }

  private finish(m: Migration, state: "succeeded" | "failed", reason: string): void {
    this.update(m, { state, reason, endMs: Date.now() });
    if (state === "succeeded")
      this.publish(
        m,
        "vm.migrated",
        `VM ${m.vmName} migrated to ${m.target} in ${m.endMs - m.startMs} ms (guest paused ${m.memory.downtimeMs} ms)`,
      );
    else this.publish(m, "vm.migration_failed", reason);
    setTimeout(() => this.all.delete(m.id), KEEP_ENDED_MS).unref();
  }
}

/**
 * Cancels before the switchover: QEMU's migration and mirrors, the guest resumed if the migration
 * left it paused, the target told to remove its copy (it also does on its own at its deadline), the
 * intent cleared. Every step is tried whatever the others did.
 */
export async function cancelOutgoing(
  hooks: MigrationHooks,
  vm: VmRecord,
  target: Target | undefined,
  migrationId: string,
  started: { memoryStarted: boolean; mirrors: number },
  why: string,
  log: Logger,
): Promise<void> {
  const qmp = hooks.qmp(vm);
  const attempt = async (what: string, work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (err) {
      log.warn({ vm: vm.spec.name, what, err: describe(err) }, "a step of cancelling a live migration failed");
    }
  };
  if (qmp) {
    if (started.memoryStarted) await attempt("migrate_cancel", () => cancelMemory(qmp));
    await attempt("block-job-cancel", () => endMirrors(qmp, Math.max(started.mirrors, vm.spec.disks.length), false));
    await attempt("cont", () => resumeIfPaused(qmp));
  }
  if (target) await attempt("AbortIncoming", () => target.migration.abortIncoming({ migrationId, reason: why }, { timeoutMs: 60_000 }));
  vm.runtime.intent = undefined;
  hooks.release(vm);
  await attempt("save", () => hooks.save(vm));
}

/** After the commit: the source's QEMU ends, then the VM's volumes go, then its record (last). */
export async function removeMigrated(
  hooks: MigrationHooks,
  storage: StorageRegistry,
  vm: VmRecord,
  target: string,
  log: Logger,
): Promise<void> {
  await hooks.end(vm, `migrated to ${target}`);
  for (const d of vm.spec.disks) {
    if (d.volumeId === "" || !storage.volumeById(d.volumeId)) continue;
    await storage.deleteVolume(d.volumeId, vm.spec.tenant, true, "", { asOwner: vm.spec.id }).catch((err: Error) => {
      log.warn({ vm: vm.spec.name, volume: d.volumeId, err: err.message }, "a migrated VM's volume could not be deleted here");
    });
  }
  hooks.release(vm);
  await hooks.remove(vm, `VM ${vm.spec.name} migrated to ${target}`);
}

/**
 * The source handed its state over but does not know whether the target resumed the guest: asks the
 * target. FINISHED: the VM is removed here ("moved"). PREPARED or ABSENT: the target's copy is
 * removed and the guest resumes here ("stayed"). No answer: throws; the guest stays paused here
 * (never two running copies) and recovery asks again.
 */
export async function settleInDoubt(
  hooks: MigrationHooks,
  storage: StorageRegistry,
  vm: VmRecord,
  target: Target | undefined,
  migrationId: string,
  address: string,
  log: Logger,
  connectTarget?: (address: string) => Promise<Target>,
): Promise<"moved" | "stayed"> {
  const t = target ?? (connectTarget ? await connectTarget(address) : undefined);
  if (!t) throw new Error(`cannot reach ${address}`);
  try {
    const { state } = await t.migration.queryIncoming({ migrationId }, { timeoutMs: 10_000 });
    if (state === IncomingState.FINISHED) {
      await stepTo(hooks, vm, "committed");
      await removeMigrated(hooks, storage, vm, address, log);
      return "moved";
    }
    const here = hooks.qmp(vm);
    if (state === IncomingState.PREPARED && !here) {
      // The source's QEMU is gone (it ended with its aetherd, or was killed): the target's copy, if
      // its incoming state is complete, is the only one left, so it is resumed there.
      const finished = await t.migration.finishIncoming({ migrationId }, { timeoutMs: 60_000 }).then(
        () => true,
        (err: unknown) => {
          log.error({ vm: vm.spec.name, err: describe(err) }, "the source's QEMU is gone and the target could not resume the guest");
          return false;
        },
      );
      if (finished) {
        await stepTo(hooks, vm, "committed");
        await removeMigrated(hooks, storage, vm, address, log);
        return "moved";
      }
    }
    if (state === IncomingState.PREPARED)
      await t.migration.abortIncoming({ migrationId, reason: "the source resumes the guest" }, { timeoutMs: 60_000 });
    await cancelOutgoing(hooks, vm, undefined, migrationId, { memoryStarted: true, mirrors: vm.spec.disks.length }, "in doubt", log);
    // Resumed here (it was paused for the switchover): RUNNING once its agent answers again.
    if (here) await hooks.resumed(vm, `the live migration to ${address} did not finish on the target; the guest resumed here`);
    return "stayed";
  } finally {
    if (!target) t.client.close();
  }
}

async function stepTo(hooks: MigrationHooks, vm: VmRecord, step: "committed"): Promise<void> {
  const migration = vm.runtime.intent?.migration;
  if (migration) migration.step = step;
  await hooks.save(vm);
}

function describe(err: unknown): string {
  const e = err as { rawMessage?: string; message?: string };
  return e.rawMessage ?? e.message ?? String(err);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
