// What the VM manager lets the lifecycle rooms beside it (reboot and reset, settings, devices,
// snapshots, clones, guest files, autostart) do with its VMs, and nothing more: they change a
// stopped VM's record or talk to a running VM's QEMU and guest agent, while the manager keeps the
// lifecycle itself (start, stop, the boot watchdog, the teardown, recovery).
import type { GuestAgent } from "./qga.js";
import type { QmpClient } from "./qmp.js";
import type { VmRecord, VmRuntime, VmSpec } from "./record.js";

export interface LifecycleHooks {
  /** The QMP connection of a VM whose QEMU runs and answers; undefined otherwise. */
  qmp(vm: VmRecord): QmpClient | undefined;
  /** The guest agent of a running VM whose agent answered since its start; undefined otherwise. */
  agent(vm: VmRecord): GuestAgent | undefined;
  /**
   * Runs work with the VM marked busy with `what` (starts, stops, deletes and other lifecycle calls
   * are refused meanwhile); FAILED_PRECONDITION at once when it is busy already.
   */
  exclusive<T>(vm: VmRecord, what: string, work: () => Promise<T>): Promise<T>;
  /** Writes the VM's record. */
  save(vm: VmRecord): Promise<void>;
  setState(vm: VmRecord, state: VmRuntime["state"], reason: string): Promise<void>;
  /** The guest is booting again in the same QEMU (after a reset): STARTING, then RUNNING once its agent answers, under the boot watchdog. */
  rebooting(vm: VmRecord, reason: string): Promise<void>;
  /** Whether the VM's hypervisor process lives (whatever its state says). */
  processRuns(vm: VmRecord): boolean;
  /** Ids of the VMs that were running when aetherd last stopped and whose QEMU was gone at its start. */
  lostWhileAway(): ReadonlySet<string>;
  /** The disks of a VM being created by a clone: called with the new VM's id, after its record is written. */
  createWithDisks(
    spec: Omit<VmSpec, "id" | "createTimeMs">,
    makeDisks: (vmId: string) => Promise<VmSpec["disks"]>,
    start: boolean,
  ): Promise<VmRecord>;
}
