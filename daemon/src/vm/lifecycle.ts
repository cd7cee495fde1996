// Reboot, reset and settings of a VM, as virsh and qm offer them. A reboot is a graceful shutdown
// and a new start (so settings changed meanwhile apply, as qm reboot does): QEMU runs with
// -no-reboot, so a guest rebooting itself ends its QEMU anyway. A reset is QEMU's reset button in
// the same process. Memory and vCPUs apply at the next start: QEMU could hot-add vCPUs and memory
// only with slots reserved at launch (-smp maxcpus, -m slots/maxmem) and a guest that onlines them,
// which neither the microVM nor this project's guests do.
import { availableParallelism, totalmem } from "node:os";
import { DomainError } from "@aether/server";
import { formatSize } from "@aether/sdk/size";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { VmManager } from "./manager.js";
import type { QmpEvent } from "./qmp.js";
import type { VmRecord } from "./record.js";

export const MIN_MEMORY_BYTES = 64 * 1024 * 1024;
const MiB = 1024 * 1024;
/** Longest wait for QEMU's RESET event after system_reset. */
const RESET_EVENT_MS = 10_000;

export interface VmSettings {
  memoryBytes?: number;
  vcpus?: number;
  autostart?: boolean;
  /** Replaces the VM's labels. */
  labels?: Record<string, string>;
}

export class VmLifecycle {
  constructor(
    private readonly manager: VmManager,
    private readonly hooks: LifecycleHooks,
  ) {}

  /** Graceful shutdown (guest agent, else ACPI), then a new start; returns with the VM STARTING. */
  async reboot(vm: VmRecord, timeoutMs: number): Promise<VmRecord> {
    if (vm.runtime.state !== "running")
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} is ${vm.runtime.state}; only a running VM can be rebooted${vm.runtime.state === "paused" ? " (resume it, or reset it)" : " (start it instead)"}.`,
      );
    await this.manager.stop(vm, timeoutMs, false);
    const forced = vm.runtime.reason.includes("by force");
    await this.manager.start(vm);
    if (forced)
      await this.hooks.setState(
        vm,
        vm.runtime.state,
        "rebooted on request (the guest did not shut down in time, so it was stopped by force)",
      );
    return vm;
  }

  /** QEMU's reset button: the same process, the guest boots again at once (STARTING until ready). */
  async reset(vm: VmRecord): Promise<VmRecord> {
    if (vm.spec.hypervisor !== "qemu")
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} runs on Firecracker, which has no reset; stop and start it.`);
    if (vm.runtime.state !== "running" && vm.runtime.state !== "paused" && vm.runtime.state !== "starting")
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} is ${vm.runtime.state}; only a running VM can be reset (start it instead).`,
      );
    return this.hooks.exclusive(vm, "being reset", async () => {
      const qmp = this.hooks.qmp(vm);
      if (!qmp)
        throw new DomainError(
          "failed_precondition",
          `aetherd cannot reach VM ${vm.spec.name}'s QMP socket now; try again, or stop it with force.`,
        );
      const resetSeen = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          qmp.events.off("event", onEvent);
          reject(new DomainError("unavailable", `QEMU did not report the reset of VM ${vm.spec.name} within ${RESET_EVENT_MS / 1000} s.`));
        }, RESET_EVENT_MS);
        const onEvent = (e: QmpEvent) => {
          if (e.event !== "RESET") return;
          clearTimeout(timer);
          qmp.events.off("event", onEvent);
          resolve();
        };
        qmp.events.on("event", onEvent);
      });
      // QEMU runs with -no-reboot (a guest's own reboot ends it), which turns system_reset into a
      // shutdown too: for this one reset the reboot action is "reset", and it is set back at once
      // (QEMU decides when the request is made, so the guest's later reboots still end QEMU).
      await qmp.execute("set-action", { reboot: "reset" });
      try {
        await qmp.execute("system_reset");
      } finally {
        await qmp.execute("set-action", { reboot: "shutdown" });
      }
      if (vm.runtime.state === "paused") await qmp.execute("cont");
      await resetSeen;
      await this.hooks.rebooting(vm, "reset on request; the guest is booting again");
      return vm;
    });
  }

  /** Records new settings; memory and vCPUs apply at the next start (pending_changes says so while it runs). */
  async update(vm: VmRecord, settings: VmSettings): Promise<VmRecord> {
    // Not while a start, stop or migration is under way: they read the settings being changed.
    return this.hooks.exclusive(vm, "being updated", () => this.apply(vm, settings));
  }

  private async apply(vm: VmRecord, settings: VmSettings): Promise<VmRecord> {
    const changes: string[] = [];
    const { spec } = vm;
    // Everything is checked before anything is changed: a refused request changes nothing.
    let memory = spec.memoryBytes;
    if (settings.memoryBytes !== undefined) {
      memory = Math.floor(settings.memoryBytes / MiB) * MiB;
      if (memory < MIN_MEMORY_BYTES)
        throw new DomainError("invalid_argument", `memory ${formatSize(settings.memoryBytes)} is below the guest minimum of 64 MiB.`);
      if (memory > totalmem())
        throw new DomainError(
          "failed_precondition",
          `memory ${formatSize(memory)} is more than this host has (${formatSize(totalmem())}).`,
        );
    }
    const vcpus = settings.vcpus ?? spec.vcpus;
    if (vcpus === 0) throw new DomainError("invalid_argument", "vcpus is 0: a VM needs at least one virtual CPU.");
    if (vcpus > availableParallelism() * 4)
      throw new DomainError("invalid_argument", `vcpus ${vcpus} is more than 4 per host CPU (${availableParallelism()} here).`);
    if (vcpus !== spec.vcpus && spec.hypervisor === "firecracker" && vcpus > 32)
      throw new DomainError("invalid_argument", `vcpus ${vcpus} is more than Firecracker's 32.`);
    if (memory !== spec.memoryBytes) changes.push(`memory ${formatSize(spec.memoryBytes)} -> ${formatSize(memory)}`);
    if (vcpus !== spec.vcpus) changes.push(`vcpus ${spec.vcpus} -> ${vcpus}`);
    spec.memoryBytes = memory;
    spec.vcpus = vcpus;
    if (settings.autostart !== undefined) spec.autostart = settings.autostart;
    if (settings.labels !== undefined) spec.labels = settings.labels;
    if (changes.length > 0 && this.hooks.processRuns(vm)) {
      // Pending for this run only: the next start (which sets a new start time) has them.
      const r = vm.runtime;
      const earlier = r.pendingForStartMs === r.startTimeMs ? r.pendingChanges : [];
      r.pendingChanges = [...earlier, ...changes];
      r.pendingForStartMs = r.startTimeMs;
    }
    await this.hooks.save(vm);
    return vm;
  }
}

/** Settings changed during the current run that wait for the next start. */
export function pendingChanges(vm: VmRecord): string[] {
  const r = vm.runtime;
  const runs = ["starting", "running", "paused", "stopping"].includes(r.state);
  return runs && r.pendingForStartMs === r.startTimeMs && r.startTimeMs !== 0 ? r.pendingChanges : [];
}
