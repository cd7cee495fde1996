// One auction run: ask the READY, ON_DUTY nodes the spec does not rule out for bids within the window,
// decide() the order, record the placement (PROVISIONING) and the auction durably, then
// ExecuteProvisioning on the winner (request_id = workload id, so a retry cannot provision twice);
// on failure, release whatever it left and try the next in order. Deploys, re-placements and
// resumed placements all end here.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import {
  AuctionRecordSchema,
  AuctionState,
  BidBreakdownSchema,
  BidFactorSchema,
  AuctionTrigger,
  BidOutcome,
  ClusterEventKind,
  DeployResponseSchema,
  PlacementState,
  RequestBidRequestSchema,
  type AuctionRecord,
  type Bid,
  type DeployResponse,
  type ExecuteProvisioningResponse,
  type Node,
  type WorkloadPlacement,
  type WorkloadSpec,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, duration, failedPrecondition, preciseNow, resourceExhausted, timestamp, unavailable } from "@aether/server";
import type { Context } from "../context.js";
import { compareStrings } from "../util.js";
import { collectBids, decide, diskWearOf, MIN_SCORE, whyNoBid, type BidTarget, type Contender, type Decision } from "./auction.js";

export interface AuctionJob {
  /** Normalized, with workload_id and the kind's name/tenant/request_id set. */
  spec: WorkloadSpec;
  windowMs: number;
  trigger: AuctionTrigger;
  /** The working copy of the placement (new, or the existing one being re-placed). */
  placement: WorkloadPlacement;
  requestKey: string | undefined;
  /** Nodes to leave out besides the spec's exclude_nodes (the node a workload moves off). */
  exclude?: string[];
  /** Set when the workload moves off a fenced node: for the WORKLOAD_REPLACED event's attributes. */
  fenced?: { node: string; lastHeartbeatMs: number };
  /** Set for a deployment's instance: nodes that already run instances of it see their bids scaled down. */
  spread?: Spread;
  /**
   * Set for a VM that starts from replicas of its volumes: only these nodes are asked (node id to
   * the time of the last consistent point it holds), and the event says how old the point was.
   */
  replicas?: ReadonlyMap<string, number>;
}

/**
 * Spreading the instances of one deployment: a node that already runs k of them has its score
 * divided by 1 + k (at least 1), recorded as a "deployment_spread" factor of its bid's breakdown.
 */
export interface Spread {
  /** What the factor's sentence names ("deployment web"). */
  what: string;
  /** How many instances the node runs (or an auction decided for it moments ago). */
  on(node: string): number;
  /** The auction decided for node: count it there until its placement says so. */
  claim(node: string): void;
}

/** Scales down the bids of nodes that already run instances of the same deployment (see Spread). */
export function applySpread(bids: Bid[], spread: Spread): void {
  for (const bid of bids) {
    if (bid.outcome !== BidOutcome.BID) continue;
    const k = spread.on(bid.node);
    if (k === 0) continue;
    const before = bid.score;
    bid.score = Math.max(MIN_SCORE, Math.round(before / (1 + k)));
    bid.breakdown ??= create(BidBreakdownSchema);
    bid.breakdown.factors.push(
      create(BidFactorSchema, {
        name: "deployment_spread",
        value: 1 / (1 + k),
        weight: 1,
        detail: `${k} instance(s) of ${spread.what} already on this node: the aggregator divided the node's score ${before} by ${1 + k}`,
      }),
    );
  }
}

export function resourceIdOf(response: ExecuteProvisioningResponse): string {
  return response.resource.case === undefined ? "" : response.resource.value.id;
}

export class AuctionRunner {
  constructor(private readonly ctx: Context) {}

  /** One auction: bids, decision, provisioning (with fallback), records and events. */
  async run(job: AuctionJob): Promise<DeployResponse> {
    const { spec, placement } = job;
    const t0 = performance.now();
    const startMs = preciseNow();
    const auctionId = randomUUID();
    const record = create(AuctionRecordSchema, {
      id: auctionId,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      labels: spec.labels,
      createTime: timestamp(startMs),
      state: AuctionState.BIDDING,
      trigger: job.trigger,
      bidTimeout: duration(job.windowMs),
    });
    placement.auctionId = auctionId;
    placement.auctionHistory.push(auctionId);
    if (placement.state !== PlacementState.REPLACING) placement.state = PlacementState.BIDDING;

    const { decision, noBidder } = await this.bidAndDecide(record, spec, job.windowMs, job.exclude ?? [], job.spread, job.replicas);
    if (noBidder !== undefined) return this.fail(record, placement, job, noBidder, t0, resourceExhausted);
    const first = decision.order[0] as Contender;
    void this.ctx.emit({
      kind: ClusterEventKind.AUCTION_DECIDED,
      node: first.node,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId,
      message: `auction for ${spec.name}: ${first.node} won with ${first.score} of ${record.bids.length} node(s) asked${decision.tieBreakReason ? ` (${decision.tieBreakReason})` : ""}.`,
      attributes: {
        score: String(first.score),
        bids: String(decision.order.length),
        ...(decision.decidedBy ? { tie_break: decision.decidedBy } : {}),
      },
    });

    // Provisioning: the winner, then the next in order while they fail.
    const tProvision = performance.now();
    const failures: string[] = [];
    let provisioned: { node: string; score: number; resourceId: string; importMs?: number } | undefined;
    const previousNode = placement.node;
    for (const contender of decision.order) {
      record.state = AuctionState.PROVISIONING;
      record.winner = contender.node;
      record.winningScore = contender.score;
      placement.state = PlacementState.PROVISIONING;
      placement.node = contender.node;
      placement.stateReason = "";
      placement.resourceId = "";
      await this.ctx.book.save(record, placement, job.requestKey);
      const node = this.ctx.registry.get(contender.node);
      try {
        if (!node) throw failedPrecondition(`node ${contender.node} was deregistered during the auction`);
        const response = await this.ctx.clients
          .bid(node)
          .executeProvisioning({ auctionId, spec, requestId: spec.workloadId }, { timeoutMs: this.ctx.provisionTimeoutMs });
        provisioned = { node: contender.node, score: contender.score, resourceId: resourceIdOf(response) };
        if (response.imageImportDuration) {
          record.imageImportDuration = response.imageImportDuration;
          provisioned.importMs = Number(response.imageImportDuration.seconds) * 1000 + response.imageImportDuration.nanos / 1e6;
        }
        break;
      } catch (err) {
        const why = describeError(err);
        failures.push(`${contender.node} failed to provision it (${why.replace(/\.$/, "")})`);
        const bid = record.bids.find((b) => b.node === contender.node);
        if (bid) bid.error = `won, but provisioning failed: ${why}`;
        this.ctx.log.warn({ auction: auctionId, node: contender.node, err: why }, "provisioning failed; trying the next bidder");
        if (node) this.releaseQuietly(node, spec);
      }
    }
    record.provisioningDuration = duration(performance.now() - tProvision);

    if (!provisioned) {
      record.winner = first.node;
      record.winningScore = first.score;
      const sentence = `every node that bid failed to provision workload ${spec.name}: ${failures.join("; ")}. Deploy again (with the same request_id, so that a retry cannot place it twice).`;
      return this.fail(record, placement, job, sentence, t0, unavailable);
    }

    record.state = AuctionState.SUCCEEDED;
    record.winner = provisioned.node;
    record.winningScore = provisioned.score;
    const imported = provisioned.importMs === undefined ? "" : ` (after importing its image in ${provisioned.importMs.toFixed(0)} ms)`;
    record.stateReason =
      failures.length === 0
        ? `${provisioned.node} won with ${provisioned.score} and provisioned the workload${imported}.`
        : `${failures.join("; ")}; ${provisioned.node}, next in order with ${provisioned.score}, provisioned it${imported}.`;
    record.endTime = timestamp(Date.now());
    record.totalDuration = duration(performance.now() - t0);
    placement.state = PlacementState.PLACED;
    placement.stateReason = "";
    placement.node = provisioned.node;
    placement.resourceId = provisioned.resourceId;
    placement.placeTime = timestamp(Date.now());
    try {
      await this.ctx.book.save(record, placement, job.requestKey);
    } catch (err) {
      // Provisioned, but it cannot be recorded: undo it rather than leave a workload nobody knows of.
      const node = this.ctx.registry.get(provisioned.node);
      if (node) this.releaseQuietly(node, spec);
      throw err;
    }
    const replaced = job.trigger === AuctionTrigger.REPLACEMENT;
    const fenced = job.fenced;
    void this.ctx.emit({
      kind: replaced ? ClusterEventKind.WORKLOAD_REPLACED : ClusterEventKind.WORKLOAD_PLACED,
      node: provisioned.node,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId,
      message: replaced
        ? `workload ${spec.name} moved from ${previousNode || "-"} to ${provisioned.node}${dataLossSentence(job, provisioned.node)}.`
        : `workload ${spec.name} placed on ${provisioned.node}${placement.resourceId ? ` as ${placement.resourceId}` : ""}.`,
      attributes: {
        score: String(provisioned.score),
        ...(replaced ? { from_node: previousNode, to_node: provisioned.node } : {}),
        ...(fenced
          ? {
              fenced_node: fenced.node,
              last_heartbeat: new Date(fenced.lastHeartbeatMs).toISOString(),
              since_last_heartbeat_ms: String(Date.now() - fenced.lastHeartbeatMs),
            }
          : {}),
        ...replicaPointAttributes(job, provisioned.node),
      },
    });
    this.ctx.log.info(
      {
        auction: auctionId,
        workload: spec.workloadId,
        name: spec.name,
        node: provisioned.node,
        score: provisioned.score,
        bids: record.bids.length,
        ms: Number((performance.now() - t0).toFixed(2)),
      },
      "workload placed",
    );
    // The working copies themselves: the book keeps its own (save() clones), and nothing changes
    // these once the run is over, so a third copy of a record of 100 bids is not needed.
    return create(DeployResponseSchema, { placement, auction: record });
  }

  /**
   * The auction proper: asks the READY, ON_DUTY nodes the spec (and `exclude`: the node a workload
   * moves off) does not rule out for bids within the window, records the bids and timings in
   * `record`, and decides the order. `noBidder` is the sentence saying why no node can host it,
   * when none bid. Provisioning is the caller's (run(), or a drain's move).
   */
  async bidAndDecide(
    record: AuctionRecord,
    spec: WorkloadSpec,
    windowMs: number,
    exclude: string[],
    spread?: Spread,
    replicas?: ReadonlyMap<string, number>,
  ): Promise<{ decision: Decision; noBidder: string | undefined }> {
    const auctionId = record.id;
    // Who is asked: READY nodes on duty (not cordoned, draining, drained...) the spec does not rule out.
    const excluded: Array<{ node: string; reason: string }> = [];
    const targets: BidTarget[] = [];
    const selector = Object.entries(spec.requirements?.nodeSelector ?? {});
    const specExcludes = new Set(spec.requirements?.excludeNodes ?? []);
    const moveOff = new Set(exclude);
    for (const node of this.ctx.registry.list()) {
      if (moveOff.has(node.id)) excluded.push({ node: node.id, reason: "the workload is being moved off it" });
      else if (!this.ctx.registry.canBid(node, Date.now()))
        excluded.push({ node: node.id, reason: this.ctx.registry.whyNoAuction(node, Date.now()) });
      else if (specExcludes.has(node.id)) excluded.push({ node: node.id, reason: "excluded by the spec's exclude_nodes" });
      else if (replicas && !replicas.has(node.id))
        excluded.push({ node: node.id, reason: "it holds no replica of the VM's volumes, and the VM starts from its replicas" });
      else {
        const mismatch = selector.filter(([k, v]) => node.labels[k] !== v);
        if (mismatch.length > 0) {
          const has = mismatch.map(([k]) => `${k}=${node.labels[k] ?? "(unset)"}`).join(", ");
          excluded.push({
            node: node.id,
            reason: `its labels do not match node_selector (wants ${mismatch.map(([k, v]) => `${k}=${v}`).join(", ")}; has ${has})`,
          });
        } else {
          targets.push({ node: node.id, client: this.ctx.clients.bidder(node) });
        }
      }
    }

    const bidding = await collectBids(targets, create(RequestBidRequestSchema, { auctionId, spec }), windowMs);
    record.bids = bidding.bids;
    record.biddingDuration = duration(bidding.biddingMs);
    for (const bid of bidding.bids) {
      if (bid.outcome === BidOutcome.ERROR || bid.outcome === BidOutcome.TIMED_OUT) {
        this.ctx.log.warn({ auction: auctionId, node: bid.node, outcome: BidOutcome[bid.outcome], error: bid.error }, "bid ignored");
      }
    }

    const tDecide = performance.now();
    if (spread) applySpread(bidding.bids, spread);
    const counts = this.ctx.book.counts();
    const contenders: Contender[] = bidding.bids
      .filter((b) => b.outcome === BidOutcome.BID)
      .map((b) => {
        const thermal = this.ctx.registry.get(b.node)?.thermal;
        return {
          node: b.node,
          score: b.score,
          placements: counts.get(b.node) ?? 0,
          cpuCelsius: thermal?.cpuCelsius,
          inletCelsius: thermal?.inletCelsius,
          diskWear: diskWearOf(b.breakdown),
        };
      });
    const decision = decide(contenders);
    // Counted at once: the next auction of the same deployment may decide before this placement is saved.
    if (spread && decision.order[0]) spread.claim(decision.order[0].node);
    record.decisionDuration = duration(performance.now() - tDecide);
    record.tieBreakReason = decision.tieBreakReason;

    if (decision.order.length === 0) {
      const reasons = [...bidding.bids.map((b) => ({ node: b.node, reason: whyNoBid(b) })), ...excluded].sort((a, b) =>
        compareStrings(a.node, b.node),
      );
      const sentence =
        reasons.length === 0
          ? `no node can host workload ${spec.name}: no node is registered with this aggregator; start aetherd with the aggregator configured on at least one host.`
          : `no node can host workload ${spec.name}: ${reasons.map((r) => `${r.node}: ${r.reason.replace(/\.$/, "")}`).join("; ")}.`;
      return { decision, noBidder: sentence };
    }
    return { decision, noBidder: undefined };
  }

  private async fail(
    record: AuctionRecord,
    placement: WorkloadPlacement,
    job: AuctionJob,
    sentence: string,
    t0: number,
    makeError: (s: string) => ConnectError,
  ): Promise<never> {
    record.state = AuctionState.FAILED;
    record.stateReason = sentence;
    record.endTime = timestamp(Date.now());
    record.totalDuration = duration(performance.now() - t0);
    placement.state = PlacementState.FAILED;
    placement.stateReason = sentence;
    placement.node = "";
    placement.resourceId = "";
    await this.ctx.book.save(record, placement, job.requestKey);
    const { spec } = job;
    void this.ctx.emit({
      kind: ClusterEventKind.AUCTION_FAILED,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId: record.id,
      message: sentence,
    });
    void this.ctx.emit({
      kind: ClusterEventKind.WORKLOAD_FAILED,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId: record.id,
      message: `workload ${spec.name} could not be placed: ${sentence}`,
    });
    this.ctx.log.warn({ auction: record.id, workload: spec.workloadId, name: spec.name, reason: sentence }, "auction failed");
    throw makeError(`${sentence.replace(/\.$/, "")} (auction ${record.id}).`);
  }

  /** Asks a node to drop a workload it may have half-provisioned; failures are only logged. */
  releaseQuietly(node: Node, spec: WorkloadSpec): void {
    this.ctx.clients
      .bid(node)
      .releaseWorkload({ workloadId: spec.workloadId, tenant: spec.tenant, gracePeriod: duration(5000) }, { timeoutMs: 10_000 })
      .catch((err: unknown) =>
        this.ctx.log.warn(
          { node: node.id, workload: spec.workloadId, err: describeError(err) },
          "could not release a workload after its provisioning failed",
        ),
      );
  }
}

/**
 * The data-loss window of a VM started from replicas: its disks are as of the replica's last
 * consistent point; what the guest wrote after it, until its node stopped (not before its last
 * heartbeat, at the latest when the fence was confirmed: now), is lost.
 */
function replicaPointAttributes(job: AuctionJob, node: string): Record<string, string> {
  const pointMs = job.replicas?.get(node);
  if (pointMs === undefined) return {};
  const lastHeartbeatMs = job.fenced?.lastHeartbeatMs ?? Date.now();
  return {
    replica_point: new Date(pointMs).toISOString(),
    data_loss_window_ms: String(Math.round(Math.max(0, Date.now() - pointMs))),
    data_loss_window_at_least_ms: String(Math.round(Math.max(0, lastHeartbeatMs - pointMs))),
  };
}

function dataLossSentence(job: AuctionJob, node: string): string {
  const pointMs = job.replicas?.get(node);
  if (pointMs === undefined) return "";
  const s = (ms: number) => `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
  const lastHeartbeatMs = job.fenced?.lastHeartbeatMs ?? Date.now();
  return `, started from the replicas of its volumes taken at ${new Date(pointMs).toISOString()}: what the guest wrote after that point is lost (data-loss window ${s(lastHeartbeatMs - pointMs)} to ${s(Date.now() - pointMs)}: at least up to its node's last heartbeat, at most up to the fence)`;
}
