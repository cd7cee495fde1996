// What the deadman keeps and what it needs: its defaults, the fencing record it keeps per node in
// the store (under fencing/<node id>), the restart policy that decides which workloads of a fenced
// node are started elsewhere, and the host interface through which it reaches the aggregator.
import type { Logger } from "pino";
import type { Node, WorkloadPlacement, WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "../store/store.js";
import type { NewEvent } from "../events/events.js";
import type { NodeRegistry } from "../nodes/registry.js";
import type { Fencer } from "./fencing.js";

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
  /** Marks the placement REPLACING (durably) and runs an auction without the fenced node; settles once placed or failed. */
  replaceFenced(placement: WorkloadPlacement, node: Node, lastHeartbeatMs: number): Promise<void>;
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
