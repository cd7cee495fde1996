// Disks and NICs added to or removed from a VM after its create. Only a stopped VM is changed (cold):
// the record changes and the next start has the new devices. A running VM is refused with what to
// do: an ephemeral microVM has no PCI bus, so nothing can be hot-plugged into it; hot-plug into a
// persistent (q35) VM would need PCIe root ports reserved at its launch and hot-plugged devices
// kept where migration expects them (drive ids follow the disk order), which is not done yet.
import { DomainError } from "@aether/server";
import type { StorageRegistry } from "../storage/registry.js";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { VmManager } from "./manager.js";
import { stableMac, tapName } from "./network.js";
import type { VmRecord, VmSpec } from "./record.js";

export type DiskSource = { kind: "volume"; ref: string } | { kind: "hostPath"; path: string };

const STOPPED: readonly string[] = ["created", "stopped", "failed"];

export class VmDevices {
  constructor(
    private readonly manager: VmManager,
    private readonly storage: StorageRegistry,
    private readonly hooks: LifecycleHooks,
  ) {}

  /** FAILED_PRECONDITION unless the VM is stopped and no hypervisor process of it runs. */
  private requireStopped(vm: VmRecord, action: string): void {
    if (STOPPED.includes(vm.runtime.state) && !this.hooks.processRuns(vm)) return;
    const why =
      vm.spec.profile === "ephemeral" || vm.spec.hypervisor === "firecracker"
        ? "an ephemeral microVM has no PCI hotplug"
        : "hot-plug into a running VM is not supported yet";
    throw new DomainError(
      "failed_precondition",
      `VM ${vm.spec.name} is ${vm.runtime.state}, and ${why}: stop it (aether vm stop ${vm.spec.name}), ${action}, then start it again.`,
    );
  }

  async attachDisk(vm: VmRecord, source: DiskSource, readOnly: boolean, serial: string): Promise<VmRecord> {
    return this.hooks.exclusive(vm, "attaching a disk", async () => {
      this.requireStopped(vm, "attach the disk");
      let disk: VmSpec["disks"][number];
      if (source.kind === "volume") {
        const volume = this.manager.attachableVolume(source.ref, vm.spec.tenant);
        if (vm.spec.hypervisor === "firecracker" && volume.format === "qcow2")
          throw new DomainError(
            "invalid_argument",
            `volume ${volume.name} is qcow2, and Firecracker opens raw disks only; attach a raw volume.`,
          );
        disk = { path: volume.hostPath, readOnly, format: volume.format === "qcow2" ? "qcow2" : "raw", serial, volumeId: volume.id };
      } else {
        if (vm.spec.disks.some((d) => d.volumeId === "" && d.path === source.path))
          throw new DomainError("already_exists", `${source.path} is already attached to VM ${vm.spec.name}.`);
        disk = { path: source.path, readOnly, format: source.path.endsWith(".qcow2") ? "qcow2" : "raw", serial, volumeId: "" };
      }
      if (serial !== "" && vm.spec.disks.some((d) => d.serial === serial))
        throw new DomainError("already_exists", `VM ${vm.spec.name} already has a disk with serial ${serial}; give another serial.`);
      vm.spec.disks = [...vm.spec.disks, disk];
      await this.hooks.save(vm);
      return vm;
    });
  }

  /** The index in spec.disks of the disk a reference names: a volume (id or name), a host path, or a serial. */
  private diskIndex(vm: VmRecord, ref: string): number {
    const { disks } = vm.spec;
    let at = disks.findIndex((d) => (d.volumeId === "" && d.path === ref) || (d.serial !== "" && d.serial === ref) || d.volumeId === ref);
    if (at < 0) {
      const volume = this.storage.listVolumes().find((v) => v.tenant === vm.spec.tenant && (v.name === ref || v.id.startsWith(ref)));
      if (volume) at = disks.findIndex((d) => d.volumeId === volume.id);
    }
    if (at < 0)
      throw new DomainError(
        "not_found",
        `VM ${vm.spec.name} has no disk ${JSON.stringify(ref)}; name a disk by its volume, host path or serial (aether vm get ${vm.spec.name} lists them).`,
      );
    return at;
  }

  async detachDisk(vm: VmRecord, ref: string): Promise<VmRecord> {
    return this.hooks.exclusive(vm, "detaching a disk", async () => {
      const at = this.diskIndex(vm, ref);
      const disk = vm.spec.disks[at];
      if (vm.spec.boot === "disk" && at === 0)
        throw new DomainError("failed_precondition", `that is VM ${vm.spec.name}'s boot disk; a VM booting from a disk keeps it.`);
      const volume = disk?.volumeId ? this.storage.volumeById(disk.volumeId) : undefined;
      if (volume?.ownerVm === vm.spec.id)
        throw new DomainError(
          "failed_precondition",
          `volume ${volume.name} was made for VM ${vm.spec.name} (it goes with the VM); it cannot be detached from it.`,
        );
      this.requireStopped(vm, "detach the disk");
      vm.spec.disks = vm.spec.disks.filter((_, i) => i !== at);
      await this.hooks.save(vm);
      return vm;
    });
  }

  async attachNic(vm: VmRecord, bridge: string, mac: string): Promise<VmRecord> {
    return this.hooks.exclusive(vm, "attaching a NIC", async () => {
      this.requireStopped(vm, "attach the NIC");
      const { nics } = vm.spec;
      if (mac !== "" && nics.some((n) => n.mac === mac))
        throw new DomainError("already_exists", `VM ${vm.spec.name} already has a NIC with MAC ${mac}.`);
      const taps = new Set(nics.map((n) => n.tap));
      const macs = new Set(nics.map((n) => n.mac));
      let index = nics.length;
      while (taps.has(tapName(vm.spec.id, index)) || (mac === "" && macs.has(stableMac(`${vm.spec.tenant}/${vm.spec.name}`, index))))
        index++;
      const nic = { bridge, mac: mac || stableMac(`${vm.spec.tenant}/${vm.spec.name}`, index), tap: tapName(vm.spec.id, index) };
      vm.spec.nics = [...nics, nic];
      await this.hooks.save(vm);
      return vm;
    });
  }

  async detachNic(vm: VmRecord, ref: string): Promise<VmRecord> {
    return this.hooks.exclusive(vm, "detaching a NIC", async () => {
      const at = vm.spec.nics.findIndex((n) => n.mac === ref.toLowerCase() || n.tap === ref);
      if (at < 0)
        throw new DomainError(
          "not_found",
          `VM ${vm.spec.name} has no NIC ${JSON.stringify(ref)}; name it by its MAC address or TAP device (aether vm get ${vm.spec.name} lists them).`,
        );
      this.requireStopped(vm, "detach the NIC");
      vm.spec.nics = vm.spec.nics.filter((_, i) => i !== at);
      await this.hooks.save(vm);
      return vm;
    });
  }
}
