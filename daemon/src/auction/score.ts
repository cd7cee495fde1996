// The bid: how well this node fits a workload, as a pure function of what the node has, what it has
// promised, what the kernel says, and the over-commit rules. Same input, same answer, always.
//
// Decline (-1) when hosting the workload would break what the node runs or cannot work at all,
// checked in this order (the first that applies is the decline_reason):
//   1. the node is in requirements.exclude_nodes;
//   2. a requirements.node_selector label does not match the node's labels;
//   3. the workload needs KVM (require_kvm, a Firecracker VM, a VM asking for KVM acceleration)
//      and KVM is not confirmed usable here;
//   4. a VM needs a hypervisor that is not installed, or the workload needs cells that do not work;
//   5. memory: needed > available after commitments, where
//        available = min(total × memory_overcommit − committed, MemAvailable − held)
//      (committed: running VMs + QEMU overhead, cells' memory max, provisioned workloads' declared
//      memory and outstanding bid holds; held: the holds alone, which the kernel cannot see yet);
//   6. CPU: needed > CPUs × 1000 × cpu_overcommit − committed millis;
//   7. disk: disk_bytes > free space of the default pool (minus disk held by bids).
//
// Otherwise the score is 1 + 999 × Σ weight × value over these factors (weights sum to 1; each
// value is 0..1, 1 best), rounded, so it is always 1..1000:
//   free_memory 0.30  memory left after placing it, as a share of the memory that may be committed
//   free_cpu    0.20  CPU left after placing it, as a share of the CPU that may be committed
//   pressure    0.15  1 − the worst PSI "some avg10" of cpu/memory/io (0.5 when the kernel has no PSI)
//   load        0.15  1 − 1-minute load average per CPU (capped at 1)
//   disk_wear   0.10  1 − the most worn disk's percentage used (0.5 when no disk reports wear)
//   spread      0.10  8 / (8 + workloads the node runs or holds): fewer workloads is better
// More free memory or CPU never lowers the score; unknown figures are neutral, never invented.

/** The resources and node properties a workload needs, every field resolved (see spec.ts). */
export interface ScoreRequirements {
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
  requireKvm: boolean;
  hypervisor: "qemu" | "firecracker" | "either" | "none";
  needsCells: boolean;
  nodeSelector: Record<string, string>;
  excludeNodes: string[];
}

export interface ScoreInput {
  requirements: ScoreRequirements;
  node: {
    id: string;
    labels: Record<string, string>;
    kvm: { usable: boolean; reason: string };
    hypervisors: { qemu: boolean; firecracker: boolean };
    cells: { available: boolean; reason: string };
  };
  /** What the host has. */
  capacity: { cpuCount: number; memoryTotalBytes: number };
  /** What is promised, outstanding bid holds included (but not a hold of this same workload). */
  committed: { cpuMillis: number; memoryBytes: number; heldMemoryBytes: number; heldDiskBytes: number; workloads: number };
  /** Figures read from the kernel; undefined where the host cannot give them. */
  telemetry: {
    memoryAvailableBytes: number;
    load1m: number;
    runnableTasks: number;
    /** PSI "some avg10" in percent per resource; a resource the kernel does not expose is absent. */
    pressureSomeAvg10: { cpu?: number; memory?: number; io?: number };
    /** Percentage of rated endurance used, per disk that reports it. */
    diskWearPercent: Array<{ device: string; percentageUsed: number }>;
    /** Disks that report no wear figure. */
    disksUnknown: string[];
  };
  /** The default pool's free space; undefined when the pool cannot say (unavailable). */
  pool: { name: string; freeBytes: number } | { name: string; unavailable: string };
  rules: { memoryOvercommit: number; cpuOvercommit: number };
}

export interface Factor {
  name: string;
  value: number;
  weight: number;
  detail: string;
}

export interface ScoreResult {
  /** 1..1000, or -1 when the node declines. */
  score: number;
  breakdown: { factors: Factor[]; declineReason: string };
}

export const WEIGHTS = {
  free_memory: 0.3,
  free_cpu: 0.2,
  pressure: 0.15,
  load: 0.15,
  disk_wear: 0.1,
  spread: 0.1,
} as const;

/** Workloads at which the spread factor reaches 0.5. */
const SPREAD_HALF = 8;

/**
 * What kind of reason a decline gave, a short word for metrics labels (aether_bids_total{reason}):
 * the sentences below name figures and labels, which must not become label values.
 */
export function declineKind(declineReason: string): string {
  const kinds: Array<[RegExp, string]> = [
    [/^the workload excludes this node/, "excluded"],
    [/^node_selector /, "node_selector"],
    [/needs KVM/, "kvm"],
    [/needs (QEMU|Firecracker)/, "hypervisor"],
    [/needs cells/, "cells"],
    [/^not enough memory/, "memory"],
    [/^not enough CPU/, "cpu"],
    [/disk/, "disk"],
  ];
  return kinds.find(([pattern]) => pattern.test(declineReason))?.[1] ?? "other";
}

export function score(input: ScoreInput): ScoreResult {
  const { requirements: need, node, capacity, committed, telemetry, rules } = input;
  const decline = (declineReason: string, factors: Factor[] = []): ScoreResult => ({ score: -1, breakdown: { factors, declineReason } });

  if (need.excludeNodes.includes(node.id)) return decline(`the workload excludes this node (${node.id}).`);
  for (const key of Object.keys(need.nodeSelector).sort()) {
    const want = need.nodeSelector[key];
    const have = node.labels[key];
    if (have !== want) {
      return decline(
        `node_selector ${key}=${want} does not match: this node's ${key} is ${have === undefined ? "not set" : JSON.stringify(have)}.`,
      );
    }
  }
  if (need.requireKvm && !node.kvm.usable) return decline(`the workload needs KVM; this node has no usable KVM: ${node.kvm.reason}`);
  if (need.hypervisor === "qemu" && !node.hypervisors.qemu) return decline("the VM needs QEMU, which is not installed on this node.");
  if (need.hypervisor === "firecracker" && !node.hypervisors.firecracker)
    return decline("the VM needs Firecracker, which is not installed on this node.");
  if (need.hypervisor === "either" && !node.hypervisors.qemu && !node.hypervisors.firecracker)
    return decline("the VM needs QEMU or Firecracker; neither is installed on this node.");
  if (need.needsCells && !node.cells.available)
    return decline(`the workload needs cells, which do not work on this node: ${node.cells.reason}`);

  // Memory: what may be promised under the rules, and what the kernel says is really there.
  const memoryLimit = capacity.memoryTotalBytes * rules.memoryOvercommit;
  const byCommitments = memoryLimit - committed.memoryBytes;
  const byKernel = telemetry.memoryAvailableBytes - committed.heldMemoryBytes;
  const memoryFree = Math.max(0, Math.min(byCommitments, byKernel));
  const memoryDetail =
    `${gib(memoryFree)} free after commitments (${gib(committed.memoryBytes)} committed of ${gib(memoryLimit)} allowed at over-commit ${rules.memoryOvercommit}; ` +
    `${gib(telemetry.memoryAvailableBytes)} available per the kernel, ${gib(committed.heldMemoryBytes)} held by bids); needs ${gib(need.memoryBytes)}`;
  if (need.memoryBytes > memoryFree)
    return decline(
      `not enough memory: the workload needs ${gib(need.memoryBytes)} and this node has ${gib(memoryFree)} free after its commitments (${memoryDetail}).`,
    );

  const cpuLimit = capacity.cpuCount * 1000 * rules.cpuOvercommit;
  const cpuFree = Math.max(0, cpuLimit - committed.cpuMillis);
  const cpuDetail = `${cpuFree} millis free of ${cpuLimit} allowed (${capacity.cpuCount} CPUs at over-commit ${rules.cpuOvercommit}, ${committed.cpuMillis} committed); needs ${need.cpuMillis}`;
  if (need.cpuMillis > cpuFree)
    return decline(
      `not enough CPU: the workload needs ${need.cpuMillis} millis and this node has ${cpuFree} free after its commitments (${cpuDetail}).`,
    );

  if (need.diskBytes > 0) {
    const pool = input.pool;
    if ("unavailable" in pool)
      return decline(
        `the workload needs ${gib(need.diskBytes)} of disk and the default pool ${pool.name} is unavailable: ${pool.unavailable}`,
      );
    const diskFree = Math.max(0, pool.freeBytes - committed.heldDiskBytes);
    if (need.diskBytes > diskFree) {
      return decline(
        `not enough disk: the workload needs ${gib(need.diskBytes)} and the default pool ${pool.name} has ${gib(diskFree)} free (${gib(committed.heldDiskBytes)} held by bids).`,
      );
    }
  }

  const factors: Factor[] = [];
  const add = (name: keyof typeof WEIGHTS, value: number, detail: string) =>
    factors.push({ name, value: clamp01(value), weight: WEIGHTS[name], detail });

  add("free_memory", memoryLimit > 0 ? (memoryFree - need.memoryBytes) / memoryLimit : 0, memoryDetail);
  add("free_cpu", cpuLimit > 0 ? (cpuFree - need.cpuMillis) / cpuLimit : 0, cpuDetail);

  const psi = (["cpu", "memory", "io"] as const).flatMap((r) => {
    const v = telemetry.pressureSomeAvg10[r];
    return v === undefined ? [] : [{ r, v }];
  });
  if (psi.length === 0) add("pressure", 0.5, "unknown: the kernel exposes no pressure stall information (neutral)");
  else {
    const worst = psi.reduce((a, b) => (b.v > a.v ? b : a));
    add("pressure", 1 - worst.v / 100, `PSI some avg10: ${psi.map((p) => `${p.r} ${p.v.toFixed(2)}%`).join(", ")}; worst ${worst.r}`);
  }

  const perCpu = capacity.cpuCount > 0 ? telemetry.load1m / capacity.cpuCount : 1;
  add(
    "load",
    1 - Math.min(1, perCpu),
    `load average ${telemetry.load1m.toFixed(2)} on ${capacity.cpuCount} CPUs (${perCpu.toFixed(2)} per CPU); run queue ${telemetry.runnableTasks}`,
  );

  if (telemetry.diskWearPercent.length === 0) {
    add(
      "disk_wear",
      0.5,
      `unknown: no disk reports wear${telemetry.disksUnknown.length > 0 ? ` (${telemetry.disksUnknown.join(", ")})` : ""} (neutral)`,
    );
  } else {
    const worst = telemetry.diskWearPercent.reduce((a, b) => (b.percentageUsed > a.percentageUsed ? b : a));
    add("disk_wear", 1 - worst.percentageUsed / 100, `most worn disk ${worst.device}: ${worst.percentageUsed}% of rated endurance used`);
  }

  add("spread", SPREAD_HALF / (SPREAD_HALF + committed.workloads), `${committed.workloads} workload(s) running or held on this node`);

  const sum = factors.reduce((s, f) => s + f.weight * f.value, 0);
  return { score: Math.min(1000, Math.max(1, Math.round(1 + 999 * sum))), breakdown: { factors, declineReason: "" } };
}

function clamp01(v: number): number {
  if (!Number.isFinite(v)) return 0;
  return Math.min(1, Math.max(0, v));
}

/** Bytes as GiB with two decimals: "12.50 GiB". */
export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}
