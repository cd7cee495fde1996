// ReleasePlacement: the node stops the workload (within the grace period), then the placement is
// RELEASED, durably, with the reason; one change per workload at a time (the book's track()).
import { clone } from "@bufbuild/protobuf";
import {
  ClusterEventKind,
  PlacementState,
  WorkloadPlacementSchema,
  type ReleasePlacementRequest,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, duration, durationMs, failedPrecondition, reference, tenant as checkTenant, unavailable } from "@aether/server";
import type { Context } from "../context.js";
import { DEFAULT_GRACE_MS, ON_NODE, stateName } from "./book.js";

export async function releasePlacement(ctx: Context, req: ReleasePlacementRequest): Promise<{ placement: WorkloadPlacement }> {
  const tenant = checkTenant(req.tenant);
  const graceMs = durationMs("grace_period", req.gracePeriod, DEFAULT_GRACE_MS);
  const found = ctx.book.resolve(reference("workload", req.workload), tenant);
  if (found.state === PlacementState.RELEASED) return { placement: clone(WorkloadPlacementSchema, found) };
  if (ctx.book.inflightWorkloads.has(found.workloadId)) {
    throw failedPrecondition(
      `workload ${found.name} is being placed right now (${stateName(PlacementState, found.state)}); release it once that finishes.`,
    );
  }
  return ctx.book.track(found.workloadId, async () => {
    const placement = clone(WorkloadPlacementSchema, found);
    let reason: string;
    const node = placement.node ? ctx.registry.get(placement.node) : undefined;
    if (placement.node === "" || !ON_NODE.has(placement.state)) {
      reason = `released; it was ${stateName(PlacementState, placement.state)} and on no node.`;
    } else if (!node) {
      reason = `released; its node ${placement.node} is no longer registered, so it was not asked to stop the workload.`;
    } else {
      try {
        const { released } = await ctx.clients
          .bid(node)
          .releaseWorkload(
            { workloadId: placement.workloadId, tenant: placement.tenant, gracePeriod: duration(graceMs) },
            { timeoutMs: graceMs + 15_000 },
          );
        reason = released ? `released from node ${node.id}.` : `released; node ${node.id} no longer had it.`;
      } catch (err) {
        throw unavailable(
          `could not release workload ${placement.name} on node ${node.id} (${node.address}): ${describeError(err).replace(/\.$/, "")}; the placement was not changed: try again.`,
        );
      }
    }
    placement.state = PlacementState.RELEASED;
    placement.stateReason = reason;
    await ctx.book.save(undefined, placement);
    void ctx.emit({
      kind: ClusterEventKind.WORKLOAD_RELEASED,
      node: found.node,
      workloadId: placement.workloadId,
      tenant: placement.tenant,
      message: `workload ${placement.name} ${reason}`,
    });
    return { placement: clone(WorkloadPlacementSchema, placement) };
  });
}
