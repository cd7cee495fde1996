// A WorkloadSpec checked at the edge, and the resources it needs (WorkloadRequirements, with the
// zero fields derived from the spec as the contract says). Pure: no host access.
import type { WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { AllocateCellRequest } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import type { StartExecutableRequest } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { Acceleration, Hypervisor, VmProfile, type CreateVmRequest } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { clip, dnsLabel, invalidArgument, labels, tenant as parseTenant } from "@aether/server";
import { cellName } from "../cells/registry.js";
import { limitsFromProto } from "../cells/limits.js";

/** The label every provisioned resource carries, with the workload id as its value. */
export const WORKLOAD_LABEL = "aether.io/workload";
/** CPU a workload needs when neither its requirements nor its spec say (thousandths of a CPU). */
export const DEFAULT_CPU_MILLIS = 100;
/** A VM's memory when its spec gives none (VmService's own default). */
export const DEFAULT_VM_MEMORY_BYTES = 256 * 1024 * 1024;
/**
 * What QEMU itself needs beyond the guest's memory: the figure VmManager adds to the memory limit of
 * a VM's own cell, so a VM's requirement and its commitment once running are the same number.
 */
export const VM_OVERHEAD_BYTES = 384 * 1024 * 1024;
const MAX_BYTES = 2 ** 53;

export type WorkloadKind =
  | { case: "executable"; value: StartExecutableRequest }
  | { case: "cell"; value: AllocateCellRequest }
  | { case: "vm"; value: CreateVmRequest };

/** What a node must have to host a workload, every field resolved. */
export interface Requirements {
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
  requireKvm: boolean;
  /** Which hypervisor a VM workload needs: "qemu", "firecracker", or "either" (ephemeral, unspecified). */
  hypervisor: "qemu" | "firecracker" | "either" | "none";
  /** The workload is a cell, or runs in one: cells must work on the node. */
  needsCells: boolean;
  nodeSelector: Record<string, string>;
  excludeNodes: string[];
  /** A sentence per derived value, for the breakdown ("memory 1.4 GiB: the VM's 1 GiB + QEMU"). */
  derivation: string[];
}

export interface CheckedSpec {
  workloadId: string;
  /** The workload's name ("" when neither the workload nor its kind names it: executables only). */
  name: string;
  tenant: string;
  labels: Record<string, string>;
  kind: WorkloadKind;
  requirements: Requirements;
  /** A tenant deployed it: provisioned as that tenant's own call would be (see authorize.ts). */
  confined: boolean;
}

/** Workload ids are UUIDs from the aggregator; anything label-safe is accepted (they become label values). */
const WORKLOAD_ID = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

/**
 * Checks a WorkloadSpec: a workload id, exactly one kind, DNS-label names, valid labels and
 * requirements, and the cheap checks of its kind (the full checks run when it is provisioned,
 * in the kind's own handler). Throws INVALID_ARGUMENT with a sentence.
 */
export function checkSpec(spec: WorkloadSpec | undefined): CheckedSpec {
  if (!spec) throw invalidArgument("spec is required: give the workload to score (workload_id, name and one of executable, cell or vm).");
  if (!WORKLOAD_ID.test(spec.workloadId)) {
    throw invalidArgument(
      spec.workloadId === ""
        ? "spec.workload_id is empty: the aggregator assigns every workload an id before asking nodes."
        : `spec.workload_id ${JSON.stringify(clip(spec.workloadId))} is not an id: use 1 to 63 letters, digits, '.', '_' and '-' (a UUID).`,
    );
  }
  const kind = spec.kind;
  if (kind.case === undefined) throw invalidArgument("spec has no kind: give exactly one of executable, cell or vm.");
  if (spec.name !== "") dnsLabel("spec.name", spec.name);
  const tenant = parseTenant(spec.tenant);
  const workloadLabels = labels(spec.labels);
  if (WORKLOAD_LABEL in workloadLabels)
    throw invalidArgument(`label ${WORKLOAD_LABEL} is set by the node to the workload id; leave it out.`);
  let name = spec.name;
  switch (kind.case) {
    case "executable": {
      const e = kind.value;
      if (e.name !== "") dnsLabel("spec.executable.name", e.name);
      if (e.tenant !== "") parseTenant(e.tenant);
      labels(e.labels);
      if (e.argv.length === 0)
        throw invalidArgument("spec.executable.argv is empty: give the program's absolute path as argv[0], then its arguments.");
      if (!(e.argv[0] ?? "").startsWith("/")) {
        throw invalidArgument(
          `spec.executable.argv[0] ${JSON.stringify(clip(e.argv[0] ?? ""))} is not an absolute path: aetherd does not search PATH.`,
        );
      }
      name ||= e.name;
      break;
    }
    case "cell": {
      const c = kind.value;
      if (c.name !== "") cellName(c.name);
      if (c.tenant !== "") parseTenant(c.tenant);
      labels(c.labels);
      limitsFromProto(c.limits);
      name ||= c.name;
      if (name === "") throw invalidArgument("a cell workload needs a name: set spec.name (or spec.cell.name).");
      break;
    }
    case "vm": {
      const v = kind.value;
      if (v.name !== "") dnsLabel("spec.vm.name", v.name);
      if (v.tenant !== "") parseTenant(v.tenant);
      labels(v.labels);
      if (v.vcpus === 0) throw invalidArgument("spec.vm.vcpus is 0: a VM needs at least one virtual CPU.");
      if (v.boot?.source.case === undefined) throw invalidArgument("spec.vm.boot is required: give boot.kernel or boot.disk.");
      if (v.memoryBytes > BigInt(MAX_BYTES)) throw invalidArgument("spec.vm.memory_bytes is larger than any host's memory.");
      name ||= v.name;
      if (name === "") throw invalidArgument("a VM workload needs a name: set spec.name (or spec.vm.name).");
      break;
    }
  }
  return {
    workloadId: spec.workloadId,
    name,
    tenant,
    labels: workloadLabels,
    kind: kind as WorkloadKind,
    requirements: requirementsOf(spec, kind as WorkloadKind),
    confined: spec.confined,
  };
}

/** The requirements with every zero field derived from the spec (see WorkloadRequirements). */
export function requirementsOf(spec: WorkloadSpec, kind: WorkloadKind): Requirements {
  const r = spec.requirements;
  const derivation: string[] = [];
  const bytes = (field: string, v: bigint | undefined) => {
    if ((v ?? 0n) > BigInt(MAX_BYTES)) throw invalidArgument(`spec.requirements.${field} is larger than any host could have.`);
    return Number(v ?? 0n);
  };
  let cpuMillis = r?.cpuMillis ?? 0;
  let memoryBytes = bytes("memory_bytes", r?.memoryBytes);
  let diskBytes = bytes("disk_bytes", r?.diskBytes);
  let requireKvm = r?.requireKvm ?? false;
  let hypervisor: Requirements["hypervisor"] = "none";
  let needsCells = false;
  switch (kind.case) {
    case "executable":
      needsCells = kind.value.cell !== "";
      break;
    case "cell": {
      needsCells = true;
      const limits = limitsFromProto(kind.value.limits);
      if (cpuMillis === 0 && limits.cpuQuotaUsec > 0) {
        cpuMillis = Math.ceil((limits.cpuQuotaUsec / limits.cpuPeriodUsec) * 1000);
        derivation.push(`cpu ${cpuMillis} millis from the cell's cpu max`);
      }
      if (memoryBytes === 0 && limits.memoryMaxBytes > 0) {
        memoryBytes = limits.memoryMaxBytes;
        derivation.push("memory from the cell's memory max");
      }
      break;
    }
    case "vm": {
      const v = kind.value;
      if (cpuMillis === 0) {
        cpuMillis = v.vcpus * 1000;
        derivation.push(`cpu from the VM's ${v.vcpus} vCPU(s)`);
      }
      if (memoryBytes === 0) {
        memoryBytes = (v.memoryBytes === 0n ? DEFAULT_VM_MEMORY_BYTES : Number(v.memoryBytes)) + VM_OVERHEAD_BYTES;
        derivation.push("memory from the VM's memory plus QEMU's 384 MiB");
      }
      const boot = v.boot?.source;
      if (diskBytes === 0 && boot?.case === "disk" && boot.value.image !== "" && boot.value.sizeBytes > 0n) {
        diskBytes = bytes("vm.boot.disk.size_bytes", boot.value.sizeBytes);
        derivation.push("disk from the size of the VM's boot clone");
      }
      // Firecracker runs on KVM only, and so does a VM that asks for KVM acceleration.
      if (v.hypervisor === Hypervisor.FIRECRACKER || v.acceleration === Acceleration.KVM) {
        if (!requireKvm)
          derivation.push(
            v.hypervisor === Hypervisor.FIRECRACKER ? "KVM because Firecracker needs it" : "KVM because the VM asks for KVM acceleration",
          );
        requireKvm = true;
      }
      hypervisor =
        v.hypervisor === Hypervisor.FIRECRACKER
          ? "firecracker"
          : v.hypervisor === Hypervisor.QEMU || v.profile === VmProfile.PERSISTENT || boot?.case === "disk"
            ? "qemu"
            : "either";
      needsCells = v.cell !== "";
      break;
    }
  }
  if (cpuMillis === 0) {
    cpuMillis = DEFAULT_CPU_MILLIS;
    derivation.push(`cpu ${DEFAULT_CPU_MILLIS} millis by default`);
  }
  const nodeSelector = r?.nodeSelector ?? {};
  for (const [k, v] of Object.entries(nodeSelector)) {
    if (k === "" || k.length > 253 || v.length > 63 || /[\u0000-\u001f\u007f]/.test(k + v)) {
      throw invalidArgument(
        `spec.requirements.node_selector entry ${JSON.stringify(clip(k))} is not a label: keys up to 253 and values up to 63 printable characters.`,
      );
    }
  }
  const excludeNodes = r?.excludeNodes ?? [];
  if (excludeNodes.some((n) => n === "")) throw invalidArgument("spec.requirements.exclude_nodes has an empty node id.");
  return {
    cpuMillis,
    memoryBytes,
    diskBytes,
    requireKvm,
    hypervisor,
    needsCells,
    nodeSelector: { ...nodeSelector },
    excludeNodes: [...excludeNodes],
    derivation,
  };
}
