// One move of a drain: an auction among the other ON_DUTY nodes (trigger DRAIN), then the kind's
// mover (movers.ts) on the winner, then on the next bidder if that failed; at most two attempts.
// The placement is MOVING, with target_node, in the store before any node is asked to act, and PLACED
// on its new node only once the old copy is released; if the move fails it is PLACED where it was.
// A replica that takes over settles a MOVING placement it finds (settleMoving): forward when the
// target is live (it holds or re-creates the copy with the same request_id, then the source
// releases it), else back on the source; a VM by asking its source for the move's migration again
// (same request_id) and following it to its end. Either way one copy runs.
import { randomUUID } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import {
  AuctionRecordSchema,
  AuctionState,
  AuctionTrigger,
  ClusterEventKind,
  PlacementState,
  WorkloadPlacementSchema,
  WorkloadSpecSchema,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, duration, preciseNow, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import type { NewEvent } from "../events/events.js";
import { resourceIdOf, type AuctionRunner } from "../auction/run.js";
import { CannotMove, migrateVm, migrationRequestId, moversFor, type Mover } from "./movers.js";
import { MigrationState, VmState } from "@aether/sdk/gen/aether/vm/v1/vm_pb";

/** How many targets a move is tried on before the workload stays where it is. */
export const MOVE_ATTEMPTS = 2;

/** A move that did not happen: the workload still runs on its node; the sentence says why. */
export class MoveFailed extends Error {}

export class Moves {
  private readonly movers: Record<string, Mover>;

  constructor(
    private readonly ctx: Context,
    private readonly runner: AuctionRunner,
    movers?: Record<string, Mover>,
  ) {
    this.movers = movers ?? moversFor(ctx);
  }

  /**
   * Moves a workload off `from`; resolves once it runs elsewhere and is released on `from` (or is
   * no longer on `from`: released or moved meanwhile). Throws MoveFailed with the sentence.
   */
  async move(
    current: WorkloadPlacement,
    from: Node,
    emit: (event: NewEvent) => Promise<void> = (e) => this.ctx.emit(e).then(() => undefined),
  ): Promise<void> {
    await this.ctx.book.track(current.workloadId, async () => {
      const latest = this.ctx.book.placements.get(current.workloadId);
      if (!latest || latest.node !== from.id || latest.state !== PlacementState.PLACED) return;
      const placement = clone(WorkloadPlacementSchema, latest);
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      const kind = spec.kind.case ?? "executable";
      const mover = this.movers[kind];
      try {
        if (!mover) throw new CannotMove(`workload ${placement.name} is of no kind the aggregator can move`);
        mover.check(placement, from);
      } catch (err) {
        if (err instanceof CannotMove) return this.failed(emit, placement, from, undefined, `${err.message}.`);
        throw err;
      }

      const t0 = performance.now();
      const auctionId = randomUUID();
      const record = create(AuctionRecordSchema, {
        id: auctionId,
        workloadId: spec.workloadId,
        tenant: spec.tenant,
        labels: spec.labels,
        createTime: timestamp(preciseNow()),
        state: AuctionState.BIDDING,
        trigger: AuctionTrigger.DRAIN,
        bidTimeout: duration(this.ctx.windowMs),
      });
      placement.auctionHistory.push(auctionId);
      const { decision, noBidder } = await this.runner.bidAndDecide(record, spec, this.ctx.windowMs, [from.id]);
      if (noBidder !== undefined) {
        this.endRecord(record, AuctionState.FAILED, noBidder, t0);
        return this.failed(
          emit,
          placement,
          from,
          record,
          `workload ${placement.name} cannot move off node ${from.id}: ${noBidder.replace(/^no node can host workload [^:]+: /, "no other node can host it: ")}`,
        );
      }
      const failures: string[] = [];
      for (const contender of decision.order.slice(0, MOVE_ATTEMPTS)) {
        const to = this.ctx.registry.get(contender.node);
        if (!to) {
          failures.push(`${contender.node} was deregistered`);
          continue;
        }
        record.state = AuctionState.PROVISIONING;
        record.winner = to.id;
        record.winningScore = contender.score;
        placement.state = PlacementState.MOVING;
        placement.auctionId = auctionId;
        placement.targetNode = to.id;
        placement.stateReason = `a drain of node ${from.id} is moving it to ${to.id}.`;
        await this.ctx.book.save(record, placement);
        const startedMs = Date.now();
        await emit({
          kind: ClusterEventKind.WORKLOAD_MOVING,
          node: from.id,
          workloadId: placement.workloadId,
          tenant: placement.tenant,
          auctionId,
          message: `workload ${placement.name} is moving from ${from.id} (${from.name}) to ${to.id} (${to.name}), which won with ${contender.score}.`,
          attributes: { from_node: from.id, to_node: to.id, score: String(contender.score), attempt: String(failures.length + 1) },
        });
        try {
          const moved = await (mover as Mover).move({ placement, spec, from, to, auctionId });
          this.endRecord(
            record,
            AuctionState.SUCCEEDED,
            `${to.id} won with ${contender.score}; the workload moved there from ${from.id}.`,
            t0,
          );
          placement.state = PlacementState.PLACED;
          placement.node = to.id;
          placement.resourceId = moved.resourceId;
          placement.targetNode = "";
          placement.stateReason = `moved from node ${from.id} by a drain.`;
          placement.placeTime = timestamp(Date.now());
          await this.ctx.book.save(record, placement);
          await emit({
            kind: ClusterEventKind.WORKLOAD_MOVED,
            node: to.id,
            workloadId: placement.workloadId,
            tenant: placement.tenant,
            auctionId,
            message: `workload ${placement.name} moved from ${from.id} (${from.name}) to ${to.id} (${to.name})${moved.resourceId ? ` as ${moved.resourceId}` : ""} in ${Date.now() - startedMs} ms${moved.attributes["downtime_ms"] ? ` (live migration, ${moved.attributes["downtime_ms"]} ms downtime)` : ""}.`,
            attributes: {
              from_node: from.id,
              to_node: to.id,
              move_started_at: new Date(startedMs).toISOString(),
              move_ms: String(Date.now() - startedMs),
              ...moved.attributes,
            },
          });
          return;
        } catch (err) {
          const why = err instanceof Error && !(err instanceof CannotMove) ? describeError(err) : (err as Error).message;
          failures.push(`on ${to.id}: ${why.replace(/\.$/, "")}`);
          placement.state = PlacementState.PLACED;
          placement.targetNode = "";
          placement.stateReason = "";
          await this.ctx.book.save(undefined, placement);
          if (err instanceof CannotMove) {
            this.endRecord(record, AuctionState.FAILED, err.message, t0);
            return this.failed(emit, placement, from, record, `${err.message}.`);
          }
        }
      }
      const sentence = `workload ${placement.name} could not be moved off node ${from.id} (${failures.join("; ")}); it stays running on ${from.id}.`;
      this.endRecord(record, AuctionState.FAILED, sentence, t0);
      return this.failed(emit, placement, from, record, sentence);
    });
  }

  private endRecord(
    record: { state: AuctionState; stateReason: string; endTime?: unknown; totalDuration?: unknown },
    state: AuctionState,
    reason: string,
    t0: number,
  ): void {
    record.state = state;
    record.stateReason = reason;
    record.endTime = timestamp(Date.now());
    record.totalDuration = duration(performance.now() - t0);
  }

  /** Records the failure (the workload PLACED where it was, saying why) and throws MoveFailed. */
  private async failed(
    emit: (event: NewEvent) => Promise<void>,
    placement: WorkloadPlacement,
    from: Node,
    record: Parameters<Context["book"]["save"]>[0],
    sentence: string,
  ): Promise<never> {
    placement.state = PlacementState.PLACED;
    placement.node = from.id;
    placement.targetNode = "";
    placement.stateReason = `a drain could not move it: ${sentence}`;
    await this.ctx.book.save(record, placement);
    await emit({
      kind: ClusterEventKind.WORKLOAD_MOVE_FAILED,
      node: from.id,
      workloadId: placement.workloadId,
      tenant: placement.tenant,
      auctionId: record?.id ?? "",
      message: sentence,
    });
    throw new MoveFailed(sentence);
  }

  /**
   * Where a VM left MOVING is: the source is asked again for the move's migration (same request_id:
   * the one under way or ended, or it starts now) and followed to its end; when the source cannot
   * answer, the node that has the VM keeps it. Never provisions a VM again (it may run elsewhere).
   */
  private async settleVm(
    placement: WorkloadPlacement,
    from: Node | undefined,
    to: Node | undefined,
  ): Promise<{ node: Node; resourceId: string; forward: boolean } | undefined> {
    if (from && to) {
      try {
        const m = await migrateVm(this.ctx, placement, from, to, migrationRequestId(placement.auctionId, to.id));
        if (m.state === MigrationState.SUCCEEDED) return { node: to, resourceId: m.vmId, forward: true };
        if (m.state === MigrationState.FAILED) return { node: from, resourceId: placement.resourceId, forward: false };
      } catch (err) {
        this.ctx.log.warn(
          { workload: placement.workloadId, err: describeError(err) },
          "could not follow the VM's migration; looking for the VM",
        );
      }
    }
    for (const [node, forward] of [
      [to, true],
      [from, false],
    ] as const) {
      if (!node) continue;
      const found = await this.ctx.clients
        .vm(node)
        .getVm({ vm: placement.resourceId, tenant: placement.tenant }, { timeoutMs: 10_000 })
        .then((r) => r.vm)
        .catch(() => undefined);
      if (found && found.state !== VmState.STOPPED && found.state !== VmState.FAILED) return { node, resourceId: found.id, forward };
    }
    return undefined;
  }

  /** After a takeover: settles a placement a previous leader left MOVING (see the top of this file). */
  async settleMoving(current: WorkloadPlacement): Promise<void> {
    await this.ctx.book.track(current.workloadId, async () => {
      const placement = clone(WorkloadPlacementSchema, current);
      if (placement.state !== PlacementState.MOVING) return;
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      const from = this.ctx.registry.get(placement.node);
      const to = this.ctx.registry.get(placement.targetNode);
      const record = this.ctx.book.auctions.get(placement.auctionId);
      const provision = (node: Node) =>
        this.ctx.clients
          .bid(node)
          .executeProvisioning(
            { auctionId: placement.auctionId, spec, requestId: placement.workloadId },
            { timeoutMs: this.ctx.provisionTimeoutMs },
          );
      const release = (node: Node | undefined) =>
        node
          ? this.ctx.clients
              .bid(node)
              .releaseWorkload({ workloadId: placement.workloadId, tenant: placement.tenant }, { timeoutMs: 45_000 })
              .then(() => undefined)
          : Promise.resolve();
      let kept: { node: Node; resourceId: string; forward: boolean } | undefined;
      if (spec.kind.case === "vm") {
        kept = await this.settleVm(placement, from, to);
        if (!kept) {
          this.ctx.log.warn(
            { workload: placement.workloadId, from: placement.node, to: placement.targetNode },
            "a VM left MOVING by the previous leader cannot be located yet; it stays MOVING",
          );
          return;
        }
      } else if (to && this.ctx.registry.isLive(to, Date.now()) && spec.kind.case === "executable") {
        try {
          const response = await provision(to);
          await release(from);
          kept = { node: to, resourceId: resourceIdOf(response), forward: true };
        } catch (err) {
          this.ctx.log.warn({ workload: placement.workloadId, err: describeError(err) }, "could not finish a move forward; moving it back");
        }
      }
      if (!kept && from) {
        const response = await provision(from);
        await release(to).catch(() => undefined);
        kept = { node: from, resourceId: resourceIdOf(response), forward: false };
      }
      if (!kept) return;
      placement.state = PlacementState.PLACED;
      placement.node = kept.node.id;
      placement.resourceId = kept.resourceId || placement.resourceId;
      placement.targetNode = "";
      placement.stateReason = kept.forward
        ? `moved by a drain (finished by ${this.ctx.replica} after a change of leader).`
        : `a move was cut short by a change of leader; ${this.ctx.replica} kept it on ${kept.node.id}.`;
      if (record && record.state !== AuctionState.SUCCEEDED && record.state !== AuctionState.FAILED) {
        record.state = kept.forward ? AuctionState.SUCCEEDED : AuctionState.FAILED;
        record.stateReason = placement.stateReason;
        record.endTime = timestamp(Date.now());
      }
      await this.ctx.book.save(record, placement);
      void this.ctx.emit({
        kind: kept.forward ? ClusterEventKind.WORKLOAD_MOVED : ClusterEventKind.WORKLOAD_MOVE_FAILED,
        node: kept.node.id,
        workloadId: placement.workloadId,
        tenant: placement.tenant,
        auctionId: placement.auctionId,
        message: `workload ${placement.name}: ${placement.stateReason}`,
        attributes: { from_node: from?.id ?? current.node, to_node: to?.id ?? current.targetNode },
      });
    });
  }
}
