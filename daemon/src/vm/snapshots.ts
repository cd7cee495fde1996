// VM snapshots: every volume disk of a VM snapshotted under one name, on top of the storage layer's
// volume snapshots (qcow2 in dir pools, ZFS, LVM thin). A VM snapshot is no record of its own: its
// parts are volume snapshots with the VM snapshot's name and labels saying whose they are, how many
// parts it has and how it was made consistent, so the storage layer's crash recovery covers them.
import { DomainError } from "@aether/server";
import type { SnapshotRecord } from "../storage/records.js";
import type { StorageRegistry } from "../storage/registry.js";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { VmRecord } from "./record.js";

export const SNAPSHOT_OF_LABEL = "aether.io/vm-snapshot-of";
const PARTS_LABEL = "aether.io/vm-snapshot-disks";
const CONSISTENCY_LABEL = "aether.io/vm-snapshot-consistency";
const FREEZE_MS = 30_000;

export interface VmSnapshotView {
  name: string;
  vmId: string;
  createTimeMs: number;
  consistency: string;
  parts: Array<{ volumeId: string; volumeName: string; snapshotId: string }>;
  problem: string;
}

export class VmSnapshots {
  constructor(
    private readonly storage: StorageRegistry,
    private readonly hooks: LifecycleHooks,
  ) {}

  list(vm: VmRecord): VmSnapshotView[] {
    const groups = new Map<string, SnapshotRecord[]>();
    for (const s of this.storage.listSnapshots()) {
      if (s.labels[SNAPSHOT_OF_LABEL] !== vm.spec.id) continue;
      groups.set(s.name, [...(groups.get(s.name) ?? []), s]);
    }
    return [...groups.entries()]
      .map(([name, parts]) => {
        const expected = Number(parts[0]?.labels[PARTS_LABEL] ?? parts.length);
        const notReady = parts.filter((p) => p.state !== "ready");
        return {
          name,
          vmId: vm.spec.id,
          createTimeMs: Math.min(...parts.map((p) => p.createTimeMs)),
          consistency: parts[0]?.labels[CONSISTENCY_LABEL] ?? "",
          parts: parts.map((p) => ({
            volumeId: p.volume,
            volumeName: this.storage.volumeById(p.volume)?.name ?? p.volume,
            snapshotId: p.id,
          })),
          problem:
            parts.length < expected
              ? `${expected - parts.length} of its ${expected} disk snapshots are gone`
              : notReady.length > 0
                ? `the snapshot of ${notReady.map((p) => this.storage.volumeById(p.volume)?.name ?? p.volume).join(", ")} is ${notReady[0]?.state}`
                : "",
        };
      })
      .sort((a, b) => a.createTimeMs - b.createTimeMs);
  }

  get(vm: VmRecord, name: string): VmSnapshotView {
    const found = this.list(vm).find((s) => s.name === name);
    if (!found)
      throw new DomainError("not_found", `VM ${vm.spec.name} has no snapshot named ${JSON.stringify(name)}; ListVmSnapshots shows them.`);
    return found;
  }

  async create(vm: VmRecord, name: string): Promise<VmSnapshotView> {
    return this.hooks.exclusive(vm, "being snapshotted", async () => {
      const hostPaths = vm.spec.disks.filter((d) => d.volumeId === "");
      if (hostPaths.length > 0)
        throw new DomainError(
          "failed_precondition",
          `VM ${vm.spec.name} has host-path disks (${hostPaths.map((d) => d.path).join(", ")}), which aetherd cannot snapshot; only volumes are snapshotted.`,
        );
      const volumes = vm.spec.disks.map((d) => {
        const volume = this.storage.volumeById(d.volumeId);
        if (!volume) throw new DomainError("failed_precondition", `VM ${vm.spec.name}'s volume ${d.volumeId} no longer exists.`);
        return volume;
      });
      if (volumes.length === 0)
        throw new DomainError(
          "failed_precondition",
          `VM ${vm.spec.name} has no disks (it boots a kernel with its root in memory); there is nothing to snapshot.`,
        );
      if (this.list(vm).some((s) => s.name === name))
        throw new DomainError("already_exists", `VM ${vm.spec.name} already has a snapshot named ${name}; pick another name or delete it.`);
      const running = this.hooks.processRuns(vm);
      if (running) {
        const dirPooled = [];
        for (const v of volumes) if ((await this.storage.getPool(v.pool)).pool.driver === "dir") dirPooled.push(v.name);
        if (dirPooled.length > 0)
          throw new DomainError(
            "failed_precondition",
            `VM ${vm.spec.name} is ${vm.runtime.state}, and ${dirPooled.join(", ")} ${dirPooled.length === 1 ? "lives" : "live"} in a dir pool, whose snapshots swap the file under QEMU: stop the VM, snapshot it, start it (ZFS and LVM thin pools snapshot running VMs).`,
          );
      }
      const taken: SnapshotRecord[] = [];
      const { consistency, thaw } = await this.quiesce(vm, running);
      try {
        for (const volume of volumes) {
          taken.push(
            await this.storage.snapshotVolume({
              volume: volume.id,
              tenant: volume.tenant,
              name,
              labels: { [SNAPSHOT_OF_LABEL]: vm.spec.id, [PARTS_LABEL]: String(volumes.length), [CONSISTENCY_LABEL]: consistency },
              requestId: "",
            }),
          );
        }
      } catch (err) {
        // All disks or none: the parts taken so far go again.
        for (const s of taken) await this.storage.deleteSnapshot(s.volume, s.id, s.tenant, "").catch(() => undefined);
        throw err;
      } finally {
        await thaw();
      }
      return this.get(vm, name);
    });
  }

  /**
   * Makes a running VM's disks consistent: the guest's file systems frozen through its agent, else
   * (no agent, or one that cannot freeze) its vCPUs paused. Returns how, and the undo.
   */
  private async quiesce(vm: VmRecord, running: boolean): Promise<{ consistency: string; thaw: () => Promise<void> }> {
    if (!running) return { consistency: "stopped", thaw: async () => {} };
    const agent = this.hooks.agent(vm);
    if (agent) {
      const frozen = await agent.command("guest-fsfreeze-freeze", undefined, FREEZE_MS).then(
        () => true,
        async () => {
          // A freeze that failed half-way may have frozen some file systems: thaw whatever it did.
          await agent.command("guest-fsfreeze-thaw", undefined, FREEZE_MS).catch(() => undefined);
          return false;
        },
      );
      if (frozen)
        return {
          consistency: "frozen",
          thaw: async () => {
            await agent.command("guest-fsfreeze-thaw", undefined, FREEZE_MS);
          },
        };
    }
    if (vm.runtime.state !== "running") return { consistency: "paused", thaw: async () => {} };
    const qmp = this.hooks.qmp(vm);
    if (!qmp) throw new DomainError("failed_precondition", `aetherd cannot reach VM ${vm.spec.name}'s QMP socket now; try again.`);
    await qmp.execute("stop");
    return {
      consistency: "paused",
      thaw: async () => {
        await qmp.execute("cont");
      },
    };
  }

  async delete(vm: VmRecord, name: string): Promise<void> {
    const snap = this.get(vm, name);
    for (const part of snap.parts) await this.storage.deleteSnapshot(part.volumeId, part.snapshotId, vm.spec.tenant, "");
  }

  async rollback(vm: VmRecord, name: string, destroyNewer: boolean): Promise<VmRecord> {
    return this.hooks.exclusive(vm, "being rolled back", async () => {
      if (!["created", "stopped", "failed"].includes(vm.runtime.state) || this.hooks.processRuns(vm))
        throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${vm.runtime.state}; stop it before rolling its disks back.`);
      const snap = this.get(vm, name);
      if (snap.problem !== "")
        throw new DomainError("failed_precondition", `snapshot ${name} of VM ${vm.spec.name} is incomplete: ${snap.problem}.`);
      const attached = new Set(vm.spec.disks.map((d) => d.volumeId));
      const elsewhere = snap.parts.filter((p) => !attached.has(p.volumeId));
      if (elsewhere.length > 0)
        throw new DomainError(
          "failed_precondition",
          `volume ${elsewhere.map((p) => p.volumeName).join(", ")} of snapshot ${name} is no longer attached to VM ${vm.spec.name}; attach it again (or roll the volume back by itself, RollbackVolume).`,
        );
      for (const part of snap.parts) {
        await this.storage.rollbackVolume(part.volumeId, vm.spec.tenant, part.snapshotId, destroyNewer, { asVm: vm.spec.id });
      }
      return vm;
    });
  }
}
