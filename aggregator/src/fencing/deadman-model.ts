// What the deadman keeps and what it needs: its defaults, the fencing record it keeps per node in
// the store (under fencing/<node id>), the restart policy that decides which workloads of a fenced
// node are started elsewhere, and the host interface through which it reaches the aggregator.
import type { Logger } from "pino";
import type { Node, WorkloadPlacement, WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "../store/store.js";
import type { NewEvent } from "../events/events.js";
import type { NodeRegistry } from "../nodes/registry.js";
import type { Fencer } from "./fencing.js";
import type { ReplicaHolders } from "../replicas/replica-index.js";

export const DEFAULT_FENCE_TIMEOUT_MS = 60_000;
export const DEFAULT_FENCE_POLL_INTERVAL_MS = 500;
export const DEFAULT_FENCE_RETRY_MS = 10_000;
/** Backoff between fence attempts doubles up to this. */
export const MAX_FENCE_RETRY_MS = 300_000;

/** Workload label that says whether the workload is started elsewhere when its node is fenced. */
export const RESTART_LABEL = "aether.io/restart";
export const FENCING_PREFIX = "fencing/";
export const fencingKey = (id: string) => `${FENCING_PREFIX}${id}`;

export type RestartPolicy = "on-fence" | "never";

/**
 * Whether a workload is started again elsewhere when its node is fenced: the label
 * aether.io/restart ("on-fence" or "never") decides; without it executables and VMs are, cells are
 * not (the aggregator does not know what their owner started in them).
 */
export function restartPolicy(spec: WorkloadSpec | undefined): RestartPolicy {
  const label = spec?.labels[RESTART_LABEL];
  if (label === "never" || label === "on-fence") return label;
  return spec?.kind.case === "cell" ? "never" : "on-fence";
}

/** Label that says a VM's disks are disposable: aether.io/disk=ephemeral. */
export const DISK_LABEL = "aether.io/disk";

/**
 * Why starting this VM on another node would lose what its guest wrote, or undefined when it has
 * nothing to lose there. A VM's volumes (its boot clone of an image included) live in its node's
 * pools only, so a copy elsewhere would boot from a fresh clone, or not at all: that is data loss, not
 * a restart. Nothing is at risk for a VM that boots a kernel and initramfs with at most read-only host
 * files (a stateless microVM), or one labelled aether.io/disk=ephemeral.
 */
export function vmDataAtRisk(spec: WorkloadSpec | undefined): string | undefined {
  if (spec?.kind.case !== "vm" || spec.labels[DISK_LABEL] === "ephemeral") return undefined;
  const vm = spec.kind.value;
  const disks: string[] = [];
  if (vm.boot?.source.case === "disk") {
    const boot = vm.boot.source.value;
    disks.push(boot.image !== "" ? `its boot disk, a clone of image ${boot.image}` : `boot volume ${boot.volume}`);
  }
  for (const d of vm.disks) {
    if (d.source.case === "volume") disks.push(`volume ${d.source.value}`);
    else if (d.source.case === "hostPath" && !d.readOnly) disks.push(`writable host file ${d.source.value}`);
  }
  if (disks.length === 0) return undefined;
  return `its disks (${disks.join(", ")}) were on that node only and have no replica, so a copy started elsewhere would not have what the guest wrote (label it ${DISK_LABEL}=ephemeral if its disks are disposable)`;
}

/** What the deadman keeps per node in the store. */
export interface FencingRecord {
  node: string;
  /** Member generation: 1 at the first registration, +1 each time the node rejoins after a fence. */
  incarnation: number;
  phase: "member" | "suspect" | "fencing" | "fenced" | "fence_failed";
  /** The lease of the incarnation the phase is about. */
  leaseId: string;
  lastHeartbeatMs?: number;
  suspectMs?: number;
  fenceStartMs?: number;
  fencedMs?: number;
  attempts: number;
  nextAttemptMs?: number;
  /** The BMC, described without credentials. */
  bmc?: string;
  /** Lease id of the suspect episode an unfenceable node was already reported for. */
  alertedLease?: string;
  /** Workloads the node had when it was fenced: released on it before it rejoins. */
  stale: Array<{ workloadId: string; tenant: string; name: string }>;
}

/** What the deadman needs from the aggregator. */
export interface DeadmanHost {
  readonly store: ClusterStore;
  readonly registry: NodeRegistry;
  readonly log: Logger;
  emit(event: NewEvent): Promise<void>;
  /** The node's placements that are PROVISIONING or PLACED on it and not being worked on right now. */
  movablePlacements(nodeId: string): WorkloadPlacement[];
  /**
   * Marks the placement REPLACING (durably) and runs an auction without the fenced node (among
   * `holders` only, when given: a VM that starts from replicas of its volumes); settles once placed or failed.
   */
  replaceFenced(placement: WorkloadPlacement, node: Node, lastHeartbeatMs: number, holders?: ReplicaHolders): Promise<void>;
  /** The live nodes holding replicas of a workload's VM volumes (heartbeats say), but the fenced one. */
  replicaHolders?(workloadId: string, fencedNode: string): ReplicaHolders | undefined;
  /** Marks a workload that is not restarted elsewhere FAILED, saying why. */
  abandonFenced(placement: WorkloadPlacement, node: Node, reason: string): Promise<void>;
  /** Asks a node (called at its address, over TLS only if its certificate names it) to release a workload; true when it had it. */
  release(
    node: { address: string; name: string },
    workloadId: string,
    tenant: string,
    graceMs: number,
    timeoutMs: number,
  ): Promise<boolean>;
}

export interface DeadmanOptions {
  fencer: Fencer;
  /** Longest time from the fence request to power state "Off" (60 s). */
  fenceTimeoutMs?: number;
  /** Time between power state reads while fencing (500 ms). */
  pollIntervalMs?: number;
  /** First wait before fencing again after an unconfirmed fence (10 s); doubles up to 5 min. */
  retryMs?: number;
  /** The node lease TTL, for sweeping at least every tenth of it. */
  leaseTtlMs: number;
}
