// The shapes of plans and of apply's result, in a module of their own: plan.ts, apply.ts, cluster.ts
// and common.ts all speak of them, and none of those imports another just for a type (no cycles).
import type { Manifest } from "./define.js";

/** What applying will do to one resource. */
export type ActionKind = "create" | "update" | "replace" | "delete" | "unchanged" | "conflict";

/** One step of a plan. */
export interface PlannedAction {
  /** What happens: a volume's `update` grows it; a `conflict` blocks apply. */
  kind: ActionKind;
  /** The kind of resource. */
  resource: "executable" | "cell" | "volume" | "vm" | "deployment";
  /** The resource's name in the manifest's tenant. */
  name: string;
  /** Why: what differs, or why nothing does. */
  reason: string;
  /** The live resource's id, for replace, delete and unchanged. */
  liveId?: string;
  /** Whether the live resource is running (replace and delete stop it first). */
  liveRunning?: boolean;
  /** For a volume's update: the size it grows to, in bytes. */
  sizeBytes?: number;
  /** Cluster manifests: the node the live placement is on (for replace, delete and unchanged). */
  node?: string;
  /** Cluster manifests, in {@link ApplyResult.applied}: where a create or replace was placed. */
  placed?: PlacedWorkload;
}

/** Where the aggregator placed an executable or a VM of a cluster manifest. */
export interface PlacedWorkload {
  /** Id of the workload (a UUID): what `aether cluster placements` lists. */
  workloadId: string;
  /** Id of the node that won the auction and runs it. */
  node: string;
  /** Id of the executable (its `runtime.getExecutable`) or VM (its `vm.getVm`) on that node. */
  resourceId: string;
  /** Id of the auction that placed it. */
  auctionId: string;
}

/** The steps that make a node (or, for a cluster manifest, the cluster) match a manifest. */
export interface Plan {
  /** The manifest planned for. */
  manifest: Manifest;
  /** Every step, changing or not: volumes, then cells, then VMs, then executables (a cluster manifest: executables, VMs, deployments). */
  actions: PlannedAction[];
  /** Number of actions that change something (create, update, replace, delete). */
  changes: number;
  /**
   * Actions that block apply: a resource of the same name that the manifest does not manage, or a
   * volume that cannot become what the manifest declares without losing data (a smaller size,
   * another pool, format, image or labels).
   */
  conflicts: PlannedAction[];
}

/** What apply did: the plan, and the steps it carried out in the order it carried them out. */
export interface ApplyResult extends Plan {
  /** Steps that changed something, in execution order; for a cluster manifest, with where each create or replace was placed. */
  applied: PlannedAction[];
}
