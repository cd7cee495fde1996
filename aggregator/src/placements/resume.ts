// After a takeover: every placement the previous leader left half done (BIDDING, PROVISIONING,
// REPLACING) is finished. A PROVISIONING one whose node is live is confirmed with the same
// request_id (a node that already provisioned it returns what it made); otherwise its auction is
// marked FAILED and a new one is held, so a workload is neither lost nor duplicated.
import { clone, create } from "@bufbuild/protobuf";
import {
  AuctionState,
  AuctionTrigger,
  ClusterEventKind,
  NodeState,
  PlacementState,
  WorkloadPlacementSchema,
  WorkloadSpecSchema,
  type DeployResponse,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, msOf, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import { resourceIdOf, type AuctionRunner } from "../auction/run.js";

export class Resumption {
  constructor(
    private readonly ctx: Context,
    private readonly runner: AuctionRunner,
  ) {}

  /** After a takeover: finish every placement the previous leader left half done. */
  resumeUnfinished(): void {
    const byWorkload = new Map([...this.ctx.book.requests].map(([key, wid]) => [wid, key]));
    for (const p of [...this.ctx.book.placements.values()]) {
      if (p.state !== PlacementState.PROVISIONING && p.state !== PlacementState.BIDDING && p.state !== PlacementState.REPLACING) continue;
      if (this.ctx.book.inflightWorkloads.has(p.workloadId)) continue;
      const requestKey = byWorkload.get(p.workloadId);
      const work = this.ctx.book.track(p.workloadId, () => this.resume(p, requestKey));
      if (requestKey !== undefined) this.ctx.book.inflightRequests.set(requestKey, work);
      work
        .catch((err: unknown) =>
          this.ctx.log.warn({ workload: p.workloadId, err: describeError(err) }, "could not finish a placement left unfinished"),
        )
        .finally(() => {
          if (requestKey !== undefined && this.ctx.book.inflightRequests.get(requestKey) === work)
            this.ctx.book.inflightRequests.delete(requestKey);
        });
    }
  }

  private async resume(current: WorkloadPlacement, requestKey: string | undefined): Promise<DeployResponse> {
    const placement = clone(WorkloadPlacementSchema, current);
    const spec = placement.spec ?? create(WorkloadSpecSchema);
    const previous = this.ctx.book.auctions.get(placement.auctionId);
    const node = placement.node ? this.ctx.registry.get(placement.node) : undefined;
    this.ctx.log.info(
      { workload: placement.workloadId, state: PlacementState[placement.state], node: placement.node },
      "finishing a placement the previous leader left unfinished",
    );
    if (placement.state === PlacementState.PROVISIONING && node && this.ctx.registry.isLive(node, Date.now())) {
      try {
        // Same request_id: a node that already provisioned it returns what it made.
        const response = await this.ctx.clients
          .bid(node)
          .executeProvisioning(
            { auctionId: placement.auctionId, spec, requestId: placement.workloadId },
            { timeoutMs: this.ctx.provisionTimeoutMs },
          );
        placement.state = PlacementState.PLACED;
        placement.resourceId = resourceIdOf(response);
        placement.placeTime = timestamp(Date.now());
        placement.stateReason = "";
        if (previous) {
          previous.state = AuctionState.SUCCEEDED;
          previous.stateReason = `${node.id} provisioned the workload (confirmed by the replica that took over, ${this.ctx.replica}).`;
          previous.endTime = timestamp(Date.now());
        }
        await this.ctx.book.save(previous, placement, requestKey);
        void this.ctx.emit({
          kind: ClusterEventKind.WORKLOAD_PLACED,
          node: node.id,
          workloadId: placement.workloadId,
          tenant: placement.tenant,
          auctionId: placement.auctionId,
          message: `workload ${placement.name} placed on ${node.id} (finished after a change of leader).`,
        });
        return this.ctx.book.responseFor(placement);
      } catch (err) {
        this.ctx.log.warn(
          { workload: placement.workloadId, node: node.id, err: describeError(err) },
          "the node did not confirm the provisioning; holding a new auction",
        );
        this.runner.releaseQuietly(node, spec);
      }
    }
    if (previous && previous.state !== AuctionState.SUCCEEDED && previous.state !== AuctionState.FAILED) {
      previous.state = AuctionState.FAILED;
      previous.stateReason = `the leader changed before the workload was provisioned; ${this.ctx.replica} holds a new auction for it.`;
      previous.endTime = timestamp(Date.now());
      await this.ctx.book.save(previous, undefined);
    }
    const replacing = placement.state === PlacementState.REPLACING;
    const trigger = replacing ? AuctionTrigger.REPLACEMENT : AuctionTrigger.DEPLOY;
    const from = replacing && placement.node ? this.ctx.registry.get(placement.node) : undefined;
    return this.runner.run({
      spec,
      windowMs: this.ctx.windowMs,
      trigger,
      placement,
      requestKey,
      exclude: replacing && placement.node ? [placement.node] : [],
      ...(from?.state === NodeState.FENCED && { fenced: { node: from.id, lastHeartbeatMs: msOf(from.heartbeatTime) } }),
    });
  }
}
