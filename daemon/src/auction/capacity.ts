// What this node has promised (commitments), whether KVM really works here, and the default pool's
// free space: the node-side figures a bid needs beyond the kernel telemetry of observe/telemetry.ts.
import { accessSync, constants, existsSync } from "node:fs";
import { statfs } from "node:fs/promises";
import type { CellRecord } from "../cells/registry.js";
import type { TrackedExecutable } from "../runtime/supervisor.js";
import type { StorageRegistry } from "../storage/registry.js";
import { probeKvm, type KvmProbeResult } from "../vm/accel.js";
import type { VmRecord } from "../vm/record.js";
import { VM_OVERHEAD_BYTES, WORKLOAD_LABEL } from "./spec.js";

/** A positive bid's resources, held for the auction until `untilMs`. */
export interface Hold {
  workloadId: string;
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
  untilMs: number;
}

/** What a provisioned workload declared it needs (kept for executables, which have no limits of their own). */
export interface Declared {
  cpuMillis: number;
  memoryBytes: number;
}

export interface Commitments {
  cpuMillis: number;
  memoryBytes: number;
  heldMemoryBytes: number;
  heldDiskBytes: number;
  /** Workloads the node runs (active VMs, cells, running executables) or holds bids for. */
  workloads: number;
}

export interface CommitmentSources {
  vms: VmRecord[];
  cells: CellRecord[];
  executables: TrackedExecutable[];
  holds: Hold[];
  /** Declared requirements of provisioned workloads, by workload id. */
  declared: ReadonlyMap<string, Declared>;
  nowMs: number;
  /** A workload whose own hold is left out (it is being scored or provisioned again). */
  exceptWorkload?: string;
}

const ACTIVE_VM = new Set(["starting", "running", "paused", "stopping"]);
/** The label VmManager puts on the cell it allocates for a VM: that cell is counted as the VM. */
const VM_CELL_LABEL = "aether.io/vm";

/**
 * Sums what the node has promised:
 * - an active VM: its memory + QEMU's overhead and its vCPUs (unless it runs in a user cell that
 *   has a memory limit: then the cell's limit is the promise);
 * - a cell (not a VM's own): its memory max and cpu max, unless an enclosing cell already bounds it;
 * - a running executable provisioned as a workload outside any cell: what its workload declared;
 * - every bid hold not yet expired.
 * Pure: takes the registries' lists.
 */
export function commitments(src: CommitmentSources): Commitments {
  let cpuMillis = 0;
  let memoryBytes = 0;
  let workloads = 0;
  const cells = src.cells.filter((c) => c.labels[VM_CELL_LABEL] === undefined);
  const byKey = new Map(cells.map((c) => [`${c.tenant}/${c.name}`, c]));
  const ancestors = (c: CellRecord): CellRecord[] => {
    const parts = c.name.split("/");
    const out: CellRecord[] = [];
    for (let i = parts.length - 1; i > 0; i--) {
      const parent = byKey.get(`${c.tenant}/${parts.slice(0, i).join("/")}`);
      if (parent) out.push(parent);
    }
    return out;
  };
  for (const c of cells) {
    workloads++;
    const up = ancestors(c);
    if (c.limits.memoryMaxBytes > 0 && !up.some((a) => a.limits.memoryMaxBytes > 0)) memoryBytes += c.limits.memoryMaxBytes;
    if (c.limits.cpuQuotaUsec > 0 && !up.some((a) => a.limits.cpuQuotaUsec > 0))
      cpuMillis += Math.ceil((c.limits.cpuQuotaUsec / c.limits.cpuPeriodUsec) * 1000);
  }
  const cellOf = (ref: string, tenant: string) => cells.find((c) => c.id === ref) ?? byKey.get(`${tenant}/${ref}`);
  for (const vm of src.vms) {
    if (!ACTIVE_VM.has(vm.runtime.state)) continue;
    workloads++;
    const cell = vm.spec.cell === "" ? undefined : cellOf(vm.spec.cell, vm.spec.tenant);
    const bounded = cell !== undefined && (cell.limits.memoryMaxBytes > 0 || ancestors(cell).some((a) => a.limits.memoryMaxBytes > 0));
    if (!bounded) {
      memoryBytes += vm.spec.memoryBytes + VM_OVERHEAD_BYTES;
      cpuMillis += vm.spec.vcpus * 1000;
    }
  }
  for (const exe of src.executables) {
    if (exe.status !== "running") continue;
    workloads++;
    const workload = exe.spec.labels[WORKLOAD_LABEL];
    const declared = workload === undefined ? undefined : src.declared.get(workload);
    if (declared && exe.spec.cell === "") {
      memoryBytes += declared.memoryBytes;
      cpuMillis += declared.cpuMillis;
    }
  }
  let heldMemoryBytes = 0;
  let heldDiskBytes = 0;
  for (const h of src.holds) {
    if (h.untilMs <= src.nowMs || h.workloadId === src.exceptWorkload) continue;
    workloads++;
    cpuMillis += h.cpuMillis;
    memoryBytes += h.memoryBytes;
    heldMemoryBytes += h.memoryBytes;
    heldDiskBytes += h.diskBytes;
  }
  return { cpuMillis, memoryBytes, heldMemoryBytes, heldDiskBytes, workloads };
}

// ---- KVM ---------------------------------------------------------------------------------------

export interface KvmStatus {
  usable: boolean;
  reason: string;
}

/**
 * Whether KVM really works on this node. /dev/kvm opening is not enough (nested KVM can hang every
 * guest), so KVM counts as usable only once a guest has booted under it: a VM of this node runs with
 * KVM, or a probe guest booted. Until then a workload that needs KVM is declined, with the reason.
 */
export class KvmCheck {
  private probed: KvmProbeResult | undefined;
  private probing = false;

  constructor(
    private readonly qemuPath: string | undefined,
    private readonly timeoutMs: number,
    private readonly deviceUsable: () => boolean = kvmDeviceOpens,
  ) {}

  status(vms: VmRecord[]): KvmStatus {
    if (!this.deviceUsable())
      return {
        usable: false,
        reason: "/dev/kvm is missing or cannot be opened (virtualization off, kvm module not loaded, or no permission).",
      };
    if (this.probed)
      return this.probed.usable
        ? { usable: true, reason: "a probe guest booted under KVM" }
        : { usable: false, reason: `${this.probed.reason}.` };
    const underKvm = vms.find((v) => v.runtime.effectiveAcceleration === "kvm" && ["running", "paused"].includes(v.runtime.state));
    if (underKvm) return { usable: true, reason: `VM ${underKvm.spec.name} booted under KVM on this node` };
    const fellBack = vms.find((v) => v.spec.acceleration === "auto" && v.runtime.effectiveAcceleration === "tcg");
    if (fellBack) return { usable: false, reason: `aetherd's KVM probe found KVM unusable (VM ${fellBack.spec.name} runs under TCG).` };
    const kernel = vms.map((v) => v.spec).find((s) => s.hypervisor === "qemu" && s.kernelPath !== "" && existsSync(s.kernelPath));
    if (!this.qemuPath || !kernel) {
      return {
        usable: false,
        reason:
          "/dev/kvm opens, but no guest has booted under KVM on this node yet and there is no guest kernel to probe with (nested KVM can hang guests, so KVM is not assumed).",
      };
    }
    if (!this.probing) {
      this.probing = true;
      void probeKvm(this.qemuPath, kernel.kernelPath, kernel.initrdPath, this.timeoutMs).then((r) => (this.probed = r));
    }
    return { usable: false, reason: "KVM is being checked: a probe guest is booting under it; ask again in a few seconds." };
  }
}

function kvmDeviceOpens(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

// ---- storage -----------------------------------------------------------------------------------

export type PoolSpace = { name: string; freeBytes: number } | { name: string; unavailable: string };

/**
 * Free space of the default pool: capacity minus what the pool's driver says is written, and for a
 * directory pool no more than the file system it lives on has free for it.
 */
export async function poolSpace(storage: StorageRegistry, name: string): Promise<PoolSpace> {
  try {
    const view = await storage.getPool(name);
    if (!view.status.available) return { name, unavailable: view.status.reason };
    let free = Math.max(0, view.status.capacityBytes - view.status.usedBytes);
    if (view.pool.driver === "dir") {
      const fs = await statfs(view.pool.location);
      free = Math.min(free, fs.bavail * fs.bsize);
    }
    return { name, freeBytes: free };
  } catch (err) {
    return { name, unavailable: (err as Error).message };
  }
}
