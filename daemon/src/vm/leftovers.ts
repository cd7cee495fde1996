// What a VM's start leaves on the host (hypervisor processes and their supervisor records, TAP
// devices, the cloud-init seed, the VM's own cell), found by what names them after the VM rather than
// by what the record says: a crash may have come between a side effect and the record of it.
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CellRegistry } from "../cells/registry.js";
import type { Supervisor, TrackedExecutable } from "../runtime/supervisor.js";
import { deleteTap, isTap } from "./network.js";
import type { VmRecord } from "./record.js";
import { removeSeedDirIfEmpty } from "./seed.js";

/** The label aetherd puts on a VM's hypervisor process and its own cell. */
export const VM_LABEL = "aether.io/vm";

/** The name of the cell aetherd allocates for a VM: from its id, so two VMs never share one. */
export function ownCellName(vmId: string): string {
  return `vm-${vmId}`;
}

/** The hypervisor processes (running or ended) the supervisor keeps for a VM. */
export function vmProcesses(processes: Supervisor, vmId: string): TrackedExecutable[] {
  return processes.list().filter((e) => e.spec.labels[VM_LABEL] === vmId);
}

/**
 * Ends every hypervisor process of a VM by SIGKILL (the supervisor signals only the pid it started,
 * checked against its recorded start time) and forgets their records, except `keep`.
 */
export async function removeVmProcesses(processes: Supervisor, vmId: string, keep = ""): Promise<void> {
  for (const exe of vmProcesses(processes, vmId)) {
    if (exe.spec.id === keep) continue;
    if (exe.status === "running") await processes.stop(exe, "SIGKILL", 0);
    await processes.delete(exe);
  }
}

/** Removes the seed ISO and any staging folder of a half-built one, in this aetherd's seeds folder (seed.ts). */
export async function removeSeeds(vmId: string, seedDir: string): Promise<void> {
  const names = await readdir(seedDir).catch(() => [] as string[]);
  for (const n of names.filter((f) => f === `${vmId}.iso` || f.startsWith(`${vmId}-`))) {
    await rm(join(seedDir, n), { recursive: true, force: true });
  }
  await removeSeedDirIfEmpty(seedDir);
}

/** Frees the VM's own cell: the one recorded, and one a crash left unrecorded (found by name and label). */
export async function freeOwnCell(cells: CellRegistry, vm: VmRecord, log: Logger): Promise<void> {
  const own = cells
    .list()
    .filter(
      (c) =>
        c.id === vm.runtime.ownCellId ||
        (c.tenant === vm.spec.tenant && c.name === ownCellName(vm.spec.id) && c.labels[VM_LABEL] === vm.spec.id),
    );
  for (const cell of own) {
    try {
      await cells.free(cell, true);
    } catch (err) {
      log.warn({ vm: vm.spec.id, cell: cell.id, err }, "could not free a VM's cell");
    }
  }
}

/** Everything a start of this VM may have set up, whether or not the record says so. */
export async function removeStartLeftovers(
  processes: Supervisor,
  cells: CellRegistry,
  vm: VmRecord,
  log: Logger,
  options: { keepProcess?: string; tapsOfOthers?: Set<string>; seedDir: string },
): Promise<void> {
  await removeVmProcesses(processes, vm.spec.id, options.keepProcess);
  // A TAP of this VM's: never another kind of device, nor another VM's TAP, that carries the name.
  for (const nic of vm.spec.nics) if (isTap(nic.tap) && !options.tapsOfOthers?.has(nic.tap)) await deleteTap(nic.tap);
  await removeSeeds(vm.spec.id, options.seedDir);
  await freeOwnCell(cells, vm, log);
}
