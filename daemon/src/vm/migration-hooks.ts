// What the VM manager lets live migration (daemon/src/migration) do with its VMs, and nothing more:
// the migration room drives QEMU over the VM's own QMP connection and records its steps in the VM's
// record (the write-ahead intent), while the manager keeps the lifecycle, the teardown and recovery.
import type { QmpClient } from "./qmp.js";
import type { VmRecord, VmRuntime } from "./record.js";

export interface MigrationHooks {
  /** The QMP connection of a VM whose QEMU runs and answers; undefined otherwise. */
  qmp(vm: VmRecord): QmpClient | undefined;
  /** Marks the VM busy with a migration (starts, stops and deletes are refused meanwhile); FAILED_PRECONDITION when it is busy already. */
  claim(vm: VmRecord, what: string): void;
  /** Clears what claim set. */
  release(vm: VmRecord): void;
  /** Writes the VM's record (its intent included). */
  save(vm: VmRecord): Promise<void>;
  setState(vm: VmRecord, state: VmRuntime["state"], reason: string): Promise<void>;
  /**
   * Takes in a VM arriving by live migration: its record (with its migrate-in intent) is written
   * first, then makeDisks makes its volumes (owned by the VM until the migration is finished, so a
   * crash removes them with it) and puts them in its spec, then its QEMU is started (TAPs, seed, cell as for a start) waiting for the incoming state.
   */
  receive(record: VmRecord, from: string, makeDisks: () => Promise<void>): Promise<void>;
  /** The guest was resumed here: the VM is RUNNING (with the reason), once its guest agent answers (for a few seconds at most). */
  resumed(vm: VmRecord, reason: string): Promise<void>;
  /**
   * Whether the guest shows it is healthy within withinMs: its agent answers (a VM without one: QEMU
   * says it runs). Used on a migration's target before the source gives its copy up.
   */
  healthy(vm: VmRecord, withinMs: number): Promise<boolean>;
  /** Host pid of the VM's QEMU while it runs; 0 otherwise (test faults only). */
  pid(vm: VmRecord): number;
  /** Ends the VM's QEMU (state STOPPING with the reason, then STOPPED) and waits for its teardown. */
  end(vm: VmRecord, reason: string): Promise<void>;
  /** Removes the VM from this host: its processes, TAPs, seed, cell, the volumes it owns, its record. */
  remove(vm: VmRecord, message: string): Promise<void>;
  /** A VM by id, in any tenant. */
  byId(id: string): VmRecord | undefined;
  /** Every VM of this host. */
  list(): VmRecord[];
}
