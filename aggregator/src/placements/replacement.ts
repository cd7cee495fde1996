// Moving workloads off a node: one deregistered with re_place (it is asked to release them first),
// or one whose power off was confirmed through its BMC (the deadman's replaceFenced and
// abandonFenced; nothing is asked of the fenced node). REPLACING is recorded before the auction, so
// a replica that takes over finishes it (resume.ts).
import { clone, create } from "@bufbuild/protobuf";
import {
  AuctionTrigger,
  ClusterEventKind,
  PlacementState,
  WorkloadPlacementSchema,
  WorkloadSpecSchema,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError } from "@aether/server";
import type { Context } from "../context.js";
import type { AuctionRunner } from "../auction/run.js";
import { DEFAULT_GRACE_MS, ON_NODE } from "./book.js";
import type { ReplicaHolders } from "../replicas/replica-index.js";

export class Replacement {
  constructor(
    private readonly ctx: Context,
    private readonly runner: AuctionRunner,
  ) {}

  /** Moves a workload off a node that left (DeregisterNode with re_place). */
  async replace(current: WorkloadPlacement, from: Node): Promise<void> {
    if (this.ctx.book.inflightWorkloads.has(current.workloadId)) return;
    await this.ctx.book.track(current.workloadId, async () => {
      const placement = clone(WorkloadPlacementSchema, current);
      placement.state = PlacementState.REPLACING;
      placement.stateReason = `node ${from.id} was deregistered with re_place; placing the workload elsewhere.`;
      await this.ctx.book.save(undefined, placement);
      await this.ctx.clients
        .bid(from)
        .releaseWorkload({ workloadId: placement.workloadId, tenant: placement.tenant }, { timeoutMs: DEFAULT_GRACE_MS + 5000 })
        .catch((err: unknown) =>
          this.ctx.log.warn(
            { node: from.id, workload: placement.workloadId, err: describeError(err) },
            "could not release the workload on the node it leaves",
          ),
        );
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      await this.runner
        .run({
          spec,
          windowMs: this.ctx.windowMs,
          trigger: AuctionTrigger.REPLACEMENT,
          placement,
          requestKey: undefined,
          exclude: [from.id],
        })
        .catch(() => undefined);
    });
  }

  /**
   * Moves a workload off a node whose power off was confirmed: REPLACING (durable, so a replica that
   * takes over finishes it), then an auction among the other nodes. Nothing is asked of the fenced node.
   */
  async replaceFenced(current: WorkloadPlacement, from: Node, lastHeartbeatMs: number, holders?: ReplicaHolders): Promise<void> {
    await this.whileOnFencedNode(current, from, async (placement) => {
      placement.state = PlacementState.REPLACING;
      placement.stateReason = `node ${from.id} (${from.name}) was fenced (power off confirmed through its BMC); placing the workload elsewhere${holders ? `, on a node holding replicas of its volumes (${[...holders.points.keys()].join(", ")})` : ""}.`;
      await this.ctx.book.save(undefined, placement);
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      await this.runner
        .run({
          spec,
          windowMs: this.ctx.windowMs,
          trigger: AuctionTrigger.REPLACEMENT,
          placement,
          requestKey: undefined,
          exclude: [from.id],
          fenced: { node: from.id, lastHeartbeatMs },
          ...(holders && { replicas: holders.points }),
        })
        .catch(() => undefined);
    });
  }

  /** A workload of a fenced node that is not started elsewhere: FAILED, with the reason. */
  async abandonFenced(current: WorkloadPlacement, from: Node, reason: string): Promise<void> {
    await this.whileOnFencedNode(current, from, async (placement) => {
      placement.state = PlacementState.FAILED;
      placement.stateReason = reason;
      placement.node = "";
      placement.resourceId = "";
      await this.ctx.book.save(undefined, placement);
      void this.ctx.emit({
        kind: ClusterEventKind.WORKLOAD_FAILED,
        node: from.id,
        workloadId: placement.workloadId,
        tenant: placement.tenant,
        message: `workload ${placement.name}: ${reason}`,
        attributes: { fenced_node: from.id },
      });
    });
  }

  /**
   * Runs `change` on a copy of the workload's placement if it is still on the fenced node `from`:
   * on the leader only, one change per workload at a time (the same lock as deploys and releases).
   */
  private async whileOnFencedNode(
    current: WorkloadPlacement,
    from: Node,
    change: (placement: WorkloadPlacement) => Promise<void>,
  ): Promise<void> {
    if (this.ctx.book.inflightWorkloads.has(current.workloadId) || !this.ctx.leading()) return;
    await this.ctx.book.track(current.workloadId, async () => {
      const latest = this.ctx.book.placements.get(current.workloadId);
      if (!latest || latest.node !== from.id || !ON_NODE.has(latest.state)) return;
      await change(clone(WorkloadPlacementSchema, latest));
    });
  }
}
