// The source side of a live migration (MigrateVm): prepare the target (VmMigrationService over the
// node's own identity), mirror the disks into its NBD exports until in sync, send the memory, end the
// mirrors at the switchover, have the target resume the guest, wait (the copy here paused) for the
// target to say the guest is healthy there, then remove the VM here. Every step is
// written ahead into the VM's record (intent migrate-out, see record.ts) so that recovery after a
// crash ends with exactly one running copy (recovery.ts). Before the switchover, any failure cancels:
// the guest keeps running here, the target removes what it made, and the VM's reason says why. After
// it, a guest that does not show it is healthy on the target in time is removed there and resumed here.
// Its three ways out (cancel, in doubt, removal after the commit) are in exits.ts, shared with
// recovery.ts.
//
// Just past 400 lines because the source's side is one sequence (prepare, storage, memory,
// switchover, cleanup) whose every step has its own undo if a later one fails; the QMP commands
// are in qemu-steps.ts, the target's side in incoming.ts.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import type { Logger } from "pino";
import { connect } from "@aether/sdk/client";
import { IncomingState, VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { DomainError, duration, outgoingConnectOptions, type OutgoingTls } from "@aether/server";
import type { EventBus } from "../observe/event-bus.js";
import type { StorageRegistry } from "../storage/registry.js";
import { crashPoint } from "../store/crash-point.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import type { VmRecord } from "../vm/record.js";
import {
  endMirrors,
  JOB_EVENTS,
  MIGRATION_EVENTS,
  memoryProgress,
  nextEvent,
  mirrorProgress,
  startMemory,
  startMirrors,
  type MemoryProgress,
  type StreamTls,
} from "./qemu-steps.js";
import { addTlsCreds } from "./tls.js";
import { cancelOutgoing, describe, removeMigrated, resumeHere, settleInDoubt, type Target } from "./exits.js";

export type Phase = "prepare" | "storage" | "memory" | "switchover" | "cleanup";

export interface MigrationOptionsValue {
  maxBandwidthBytesPerSecond: number;
  maxDowntimeMs: number;
  autoConverge: boolean;
  /** Auto-converge's first throttle and its steps, in percent of the vCPUs' time (1..99). */
  throttleInitialPercent: number;
  throttleIncrementPercent: number;
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
/**
 * How long a resumed guest has to show it is healthy on the target (its agent answers, or QEMU says it
 * runs) before the migration commits; else the target's copy goes and the guest resumes here. An
 * agent that answered here answers within a second or two of its resume there, also under TCG on a
 * loaded host; 20 s leaves room for a host much busier than that.
 */
export const GUEST_CONFIRM_MS = 20_000;

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
      /** Where the private folders of QEMU's TLS credentials are written for a moment (see tls.ts). */
      tlsDir: string;
      /** Where "vm.migrating", "vm.migrated" and "vm.migration_failed" are published. */
      events: EventBus;
      /** This node as the target's records name it. */
      nodeName: string;
      /** This node's id (NodeInfo.id), for the target's report to the aggregator. */
      nodeId: string;
      /**
       * Copy a TCG guest's memory while it runs, as under KVM. Off by default: QEMU 7.2's TCG misses
       * pages the guest writes during the copy (by hand, two QEMUs without aetherd, a guest copying 16 MiB
       * in tmpfs in a loop: 10 of 13 live copies left a target kernel logging "Bad page state", "list_add
       * corruption" or a panic within seconds, 2 more stopped answering; 0 of 8 with the guest paused
       * for the copy; a paused copy of 128 MiB takes 1-2 s here), so a TCG guest is paused while its
       * memory is sent.
       * Only a run that never resumes the target (the auto-converge test) may turn it on.
       */
      tcgLiveCopy?: boolean;
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
      // The intent is durable before the target is asked for anything (connecting is no asking).
      [, target] = await Promise.all([hooks.save(vm), this.connectTarget(m.target)]);
      const prepared = await target.migration.prepareIncoming(
        {
          migrationId: m.id,
          sourceNode: this.o.nodeName,
          sourceNodeId: this.o.nodeId,
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
      // To another host (https://) the disks and the memory go over TLS with this node's certificate,
      // and the target's QEMU must show a certificate of the cluster's CA for the address it listens
      // on. To a unix:// target (the same machine) they stay plain TCP on loopback.
      const tls: StreamTls | undefined = m.target.startsWith("https://")
        ? { creds: await addTlsCreds(qmp, this.o.identity, join(this.o.tlsDir, m.id), "client"), hostname: prepared.nbdHost }
        : undefined;
      mirrors = vm.spec.disks.length;
      await startMirrors(
        qmp,
        prepared.exports.map((e) => ({
          host: prepared.nbdHost,
          port: prepared.nbdPort,
          exportName: e.name,
          sync: e.thinClone ? "top" : "full",
          ...(tls && { tls }),
        })),
        m.options.maxBandwidthBytesPerSecond,
      );
      // Each wait ends at QEMU's next job event (a mirror ready, failed) or after POLL_MS for the figures.
      for (;;) {
        const woken = nextEvent(qmp, JOB_EVENTS, POLL_MS);
        try {
          const p = await mirrorProgress(qmp, mirrors);
          this.update(m, { diskTransferredBytes: p.transferredBytes, diskRemainingBytes: p.remainingBytes });
          if (p.ready) break;
          checkTime();
          await checkTarget();
          await woken.wait;
        } finally {
          woken.cancel();
        }
      }

      // Under TCG the guest is paused for the copy (see tcgLiveCopy); a failure before the switchover
      // resumes it (cancelOutgoing, recovery), as it does a guest QEMU paused for the switchover.
      const pauseForCopy = (vm.runtime.effectiveAcceleration || vm.spec.acceleration) === "tcg" && !this.o.tcgLiveCopy;
      this.update(m, {
        phase: "memory",
        reason: pauseForCopy
          ? "copying the guest's memory, paused (under TCG QEMU misses pages a running guest writes during the copy)"
          : "copying the guest's memory while it runs",
      });
      await checkTarget(true);
      memoryStarted = true;
      const pausedAt = Date.now();
      await startMemory(qmp, prepared.migrationUri, {
        ...m.options,
        pauseFirst: pauseForCopy,
        ...(tls && { tls: { ...tls, hostname: uriHostOf(prepared.migrationUri) } }),
      });
      let last: MemoryProgress;
      for (;;) {
        // Woken by QEMU's MIGRATION events (status changes: device, completed, failed) and job events.
        const woken = nextEvent(qmp, [...MIGRATION_EVENTS, ...JOB_EVENTS], POLL_MS);
        try {
          last = await memoryProgress(qmp);
          const { status, error: _error, ...figures } = last;
          const disks = await mirrorProgress(qmp, mirrors);
          const switching = status === "device" || status === "pre-switchover";
          this.update(m, {
            memory: { ...figures },
            diskTransferredBytes: disks.transferredBytes,
            diskRemainingBytes: disks.remainingBytes,
            ...(switching &&
              m.phase !== "switchover" && { phase: "switchover" as const, reason: "the guest is paused for the switchover" }),
          });
          if (status === "completed") break;
          if (status === "failed" || status === "cancelled")
            throw new Error(`QEMU's migration ${status}${last.error ? `: ${last.error}` : ""}`);
          checkTime();
          if (status === "active") await checkTarget();
          await woken.wait;
        } finally {
          woken.cancel();
        }
      }

      // The source's guest is paused for good now: the disks' last writes go to the target...
      this.update(m, { phase: "switchover", reason: "sending the disks' last writes" });
      await endMirrors(qmp, mirrors, true);
      mirrors = 0;
      // QEMU says "completed" a moment before it has worked out the downtime: read it again now.
      if (m.memory.downtimeMs === 0) {
        const { status: _status, error: _error, ...figures } = await memoryProgress(qmp);
        this.update(m, { memory: figures });
      }
      // A guest paused for the whole copy was paused for all of it and the mirrors' end, not only
      // QEMU's last stop (the target's resume, a few ms more, is not counted).
      if (pauseForCopy) this.update(m, { memory: { ...m.memory, downtimeMs: Math.max(m.memory.downtimeMs, Date.now() - pausedAt) } });
      await this.step(vm, "switching");
      crashPoint("migration.switching");
      // ...and the target resumes it, but the guest is not the target's until it shows it is healthy
      // there: this node keeps its copy, paused, until the target commits or has removed its own.
      await target.migration.finishIncoming(
        {
          migrationId: m.id,
          elapsed: duration(Date.now() - m.startMs),
          downtime: duration(m.memory.downtimeMs),
          confirmWithin: duration(GUEST_CONFIRM_MS),
        },
        { timeoutMs: 60_000 },
      );
      await this.step(vm, "confirming");
      crashPoint("migration.confirming");
      this.update(m, { reason: `waiting for the guest to answer on ${m.target} (at most ${GUEST_CONFIRM_MS / 1000} s)` });
      const confirmation = await target.migration.confirmIncoming({ migrationId: m.id }, { timeoutMs: GUEST_CONFIRM_MS + 60_000 });
      if (!confirmation.confirmed) {
        // The target's copy is gone (it says so only then): the guest resumes here, as it was.
        const reason = `the live migration to ${m.target} failed: ${confirmation.reason}; the target removed its copy and the guest kept running here`;
        await resumeHere(hooks, vm, m.id, reason, log);
        this.finish(m, "failed", reason);
        return;
      }
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
      if (step === "switching" || step === "confirming") {
        // The target may or may not have resumed the guest, or confirmed it: it says which copy lives.
        await settleInDoubt(this.o.hooks, this.o.storage, vm, target, m.id, m.target, log).then(
          (outcome) =>
            outcome === "moved"
              ? this.finish(m, "succeeded", `VM ${m.vmName} runs on ${m.target}`)
              : this.finish(
                  m,
                  "failed",
                  `the live migration to ${m.target} failed at the switchover (${why}; then ${outcome.reason}); the guest kept running here`,
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

  private async step(vm: VmRecord, step: "switching" | "confirming" | "committed"): Promise<void> {
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

/** The host of a tcp:host:port URI (an IPv6 address without its brackets). */
function uriHostOf(uri: string): string {
  return uri
    .replace(/^tcp:/, "")
    .replace(/:\d+$/, "")
    .replace(/^\[(.*)\]$/, "$1");
}
