// Disks and NICs added to or removed from a VM after its create. A stopped VM's record changes and the
// next start has the new devices (cold). A running persistent VM (q35) gets them at once over QMP
// (hot): a device goes into one of the PCIe root ports qemu-args.ts keeps for hot-plug, and the record
// says which, so later starts (and a migration's target) put it there again. Only the last disk or NIC
// comes out of a running VM, and only one that was hot-plugged: QEMU names drives and netdevs by their
// index (disk1, net1, which migration relies on), so taking one from the middle would renumber the
// record under the running QEMU, and devices on the root bus cannot be unplugged. An ephemeral
// microVM has no PCI bus at all: a running one is refused with what to do.
import { DomainError } from "@aether/server";
import type { StorageRegistry } from "../storage/registry.js";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { VmManager } from "./manager.js";
import { createTap, deleteTap, isBridge, linkExists, stableMac, tapName } from "./network.js";
import { HOTPLUG_PORTS, portDeviceId } from "./qemu-args.js";
import type { QmpClient, QmpEvent } from "./qmp.js";
import type { VmRecord, VmSpec } from "./record.js";

export type DiskSource = { kind: "volume"; ref: string } | { kind: "hostPath"; path: string };

const STOPPED: readonly string[] = ["created", "stopped", "failed"];
/** Longest wait for the guest to release a device after device_del. */
const UNPLUG_MS = 30_000;

type Change = { vm: VmRecord; live: boolean };

export class VmDevices {
  constructor(
    private readonly manager: VmManager,
    private readonly storage: StorageRegistry,
    private readonly hooks: LifecycleHooks,
  ) {}

  /**
   * How a device change is made now: "cold" on a stopped VM, "hot" on a running persistent VM (its QMP
   * connection), else FAILED_PRECONDITION saying what to do.
   */
  private mode(vm: VmRecord, action: string): { kind: "cold" } | { kind: "hot"; qmp: QmpClient } {
    if (STOPPED.includes(vm.runtime.state) && !this.hooks.processRuns(vm)) return { kind: "cold" };
    const stopFirst = `stop it, ${action}, then start it again`;
    if (vm.spec.hypervisor === "firecracker" || (vm.spec.profile === "ephemeral" && vm.spec.boot !== "disk"))
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} is ${vm.runtime.state}, and an ephemeral microVM has no PCI hotplug: ${stopFirst}.`,
      );
    if (vm.runtime.state !== "running")
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} is ${vm.runtime.state}; devices are hot-plugged into a running guest only: wait until it runs, or ${stopFirst}.`,
      );
    const qmp = this.hooks.qmp(vm);
    if (!qmp) throw new DomainError("failed_precondition", `aetherd cannot reach VM ${vm.spec.name}'s QMP socket now; try again.`);
    return { kind: "hot", qmp };
  }

  /** A hot-plug root port no disk or NIC of the VM holds. */
  private freePort(vm: VmRecord, action: string): string {
    const used = new Set([...vm.spec.disks.map((d) => d.port), ...vm.spec.nics.map((n) => n.port)]);
    const port = HOTPLUG_PORTS.find((p) => !used.has(p));
    if (!port)
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} has devices on all ${HOTPLUG_PORTS.length} of its hot-plug ports; stop it, ${action}, then start it.`,
      );
    return port;
  }

  /** A running VM started before hot-plug ports existed has none: QEMU's refusal said in aether's words. */
  private hotplugError(vm: VmRecord, err: unknown, action: string): DomainError {
    const message = (err as Error).message;
    if (/Bus 'hp\d' not found/.test(message))
      return new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} was started without hot-plug ports (by an older aetherd); stop it, ${action}, then start it.`,
      );
    return new DomainError("failed_precondition", `${action} in running VM ${vm.spec.name} failed: ${message}`);
  }

  async attachDisk(vm: VmRecord, source: DiskSource, readOnly: boolean, serial: string): Promise<Change> {
    return this.hooks.exclusive(vm, "attaching a disk", async () => {
      const mode = this.mode(vm, "attach the disk");
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
      if (mode.kind === "cold") {
        vm.spec.disks = [...vm.spec.disks, disk];
        await this.hooks.save(vm);
        return { vm, live: false };
      }
      const index = vm.spec.disks.length;
      const port = this.freePort(vm, "attach the disk");
      const path = this.manager.diskPath(disk);
      // Recorded first: the volume is this VM's from now on (no other VM may take it meanwhile).
      const before = vm.spec.disks;
      vm.spec.disks = [...before, { ...disk, port }];
      await this.hooks.save(vm);
      try {
        // drive_add (not blockdev-add) names the drive disk<index>, as the command line does.
        const options = [`file=${path}`, "if=none", `id=disk${index}`, `format=${disk.format}`, "cache=writeback"];
        if (readOnly) options.push("readonly=on");
        const out = await mode.qmp.execute<string>("human-monitor-command", { "command-line": `drive_add 0 ${options.join(",")}` });
        if (out.trim() !== "OK") throw new Error(out.trim());
        try {
          await mode.qmp.execute("device_add", {
            driver: "virtio-blk-pci",
            drive: `disk${index}`,
            bus: port,
            id: portDeviceId(port),
            ...(serial ? { serial } : {}),
          });
        } catch (err) {
          await mode.qmp.execute("human-monitor-command", { "command-line": `drive_del disk${index}` }).catch(() => undefined);
          throw err;
        }
      } catch (err) {
        vm.spec.disks = before;
        await this.hooks.save(vm);
        throw this.hotplugError(vm, err, "attaching the disk");
      }
      return { vm, live: true };
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
        `VM ${vm.spec.name} has no disk ${JSON.stringify(ref)}; name a disk by its volume, host path or serial (GetVm lists them).`,
      );
    return at;
  }

  async detachDisk(vm: VmRecord, ref: string): Promise<Change> {
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
      const mode = this.mode(vm, "detach the disk");
      if (mode.kind === "hot") {
        if (!disk?.port || at !== vm.spec.disks.length - 1)
          throw new DomainError(
            "failed_precondition",
            `VM ${vm.spec.name} is running, and only its last disk, when it was hot-plugged, comes out of a running VM; stop it, detach the disk, then start it.`,
          );
        await this.unplug(vm, mode.qmp, disk.port, "disk");
      }
      vm.spec.disks = vm.spec.disks.filter((_, i) => i !== at);
      await this.hooks.save(vm);
      return { vm, live: mode.kind === "hot" };
    });
  }

  /** device_del, then the guest's release (DEVICE_DELETED); QEMU removes the drive with the device. */
  private async unplug(vm: VmRecord, qmp: QmpClient, port: string, what: string): Promise<void> {
    const id = portDeviceId(port);
    const released = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        qmp.events.off("event", onEvent);
        reject(
          new DomainError(
            "failed_precondition",
            `the guest of VM ${vm.spec.name} did not release the ${what} within ${UNPLUG_MS / 1000} s (QEMU asked it to); it stays recorded: try again, or stop the VM and detach it.`,
          ),
        );
      }, UNPLUG_MS);
      const onEvent = (e: QmpEvent) => {
        if (e.event !== "DEVICE_DELETED" || e.data.device !== id) return;
        clearTimeout(timer);
        qmp.events.off("event", onEvent);
        resolve();
      };
      qmp.events.on("event", onEvent);
    });
    try {
      await qmp.execute("device_del", { id });
    } catch (err) {
      void released.catch(() => undefined);
      throw this.hotplugError(vm, err, `detaching the ${what}`);
    }
    await released;
  }

  async attachNic(vm: VmRecord, bridge: string, mac: string): Promise<Change> {
    return this.hooks.exclusive(vm, "attaching a NIC", async () => {
      const mode = this.mode(vm, "attach the NIC");
      const { nics } = vm.spec;
      if (mac !== "" && nics.some((n) => n.mac === mac))
        throw new DomainError("already_exists", `VM ${vm.spec.name} already has a NIC with MAC ${mac}.`);
      const taps = new Set(nics.map((n) => n.tap));
      const macs = new Set(nics.map((n) => n.mac));
      let k = nics.length;
      while (taps.has(tapName(vm.spec.id, k)) || (mac === "" && macs.has(stableMac(`${vm.spec.tenant}/${vm.spec.name}`, k)))) k++;
      const nic = { bridge, mac: mac || stableMac(`${vm.spec.tenant}/${vm.spec.name}`, k), tap: tapName(vm.spec.id, k) };
      if (mode.kind === "cold") {
        vm.spec.nics = [...nics, nic];
        await this.hooks.save(vm);
        return { vm, live: false };
      }
      if (!isBridge(bridge))
        throw new DomainError(
          "failed_precondition",
          `bridge ${bridge} does not exist on this host (or is not a bridge); create it first (ip link add ${bridge} type bridge).`,
        );
      if (linkExists(nic.tap))
        throw new DomainError("failed_precondition", `a network device named ${nic.tap} already exists; remove it, then attach the NIC.`);
      const index = nics.length;
      const port = this.freePort(vm, "attach the NIC");
      // Recorded first: the TAP made next goes with the VM's run like the others (the teardown reads the record).
      vm.spec.nics = [...nics, { ...nic, port }];
      await this.hooks.save(vm);
      try {
        await createTap(nic.tap, bridge);
        await mode.qmp.execute("netdev_add", { type: "tap", id: `net${index}`, ifname: nic.tap, script: "no", downscript: "no" });
        try {
          await mode.qmp.execute("device_add", {
            driver: "virtio-net-pci",
            netdev: `net${index}`,
            mac: nic.mac,
            bus: port,
            id: portDeviceId(port),
          });
        } catch (err) {
          await mode.qmp.execute("netdev_del", { id: `net${index}` }).catch(() => undefined);
          throw err;
        }
      } catch (err) {
        await deleteTap(nic.tap).catch(() => undefined);
        vm.spec.nics = nics;
        await this.hooks.save(vm);
        throw this.hotplugError(vm, err, "attaching the NIC");
      }
      return { vm, live: true };
    });
  }

  async detachNic(vm: VmRecord, ref: string): Promise<Change> {
    return this.hooks.exclusive(vm, "detaching a NIC", async () => {
      const at = vm.spec.nics.findIndex((n) => n.mac === ref.toLowerCase() || n.tap === ref);
      if (at < 0)
        throw new DomainError(
          "not_found",
          `VM ${vm.spec.name} has no NIC ${JSON.stringify(ref)}; name it by its MAC address or TAP device (GetVm lists them).`,
        );
      const nic = vm.spec.nics[at];
      const mode = this.mode(vm, "detach the NIC");
      if (mode.kind === "hot") {
        if (!nic?.port || at !== vm.spec.nics.length - 1)
          throw new DomainError(
            "failed_precondition",
            `VM ${vm.spec.name} is running, and only its last NIC, when it was hot-plugged, comes out of a running VM; stop it, detach the NIC, then start it.`,
          );
        await this.unplug(vm, mode.qmp, nic.port, "NIC");
        await mode.qmp.execute("netdev_del", { id: `net${at}` }).catch(() => undefined);
        await deleteTap(nic.tap).catch(() => undefined);
      }
      vm.spec.nics = vm.spec.nics.filter((_, i) => i !== at);
      await this.hooks.save(vm);
      return { vm, live: mode.kind === "hot" };
    });
  }
}
