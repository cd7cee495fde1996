// The rollout RPCs (Get, List, Watch, Pause, Resume, Promote, Rollback) and the start of a rollout
// when a deployment's template changes. Each change is written under the deployment's lock, recorded
// in the rollout's history and announced; the controller (controller.ts) acts on it.
import { randomUUID } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import {
  RolloutDecisionSchema,
  RolloutPhase,
  RolloutSchema,
  type Deployment,
  type GetRolloutRequest,
  type ListRolloutsRequest,
  type Rollout,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { dnsLabel, failedPrecondition, notFound, paginate, preciseNow, reference, tenant as checkTenant, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import type { DeploymentBook } from "../deployments/book.js";
import { wanted } from "../deployments/status.js";
import type { KeyedMutex } from "../util.js";
import { isActive, newestFirst, type RolloutBook } from "./book.js";
import { announce, restoreStable } from "./controller.js";
import { strategyName } from "./strategies/index.js";
import { figures } from "./strategies/strategy.js";

export type RolloutAction = "pause" | "resume" | "promote" | "rollback";

export class Rollouts {
  constructor(
    private readonly ctx: Context,
    private readonly deployments: DeploymentBook,
    readonly book: RolloutBook,
    private readonly locks: KeyedMutex,
  ) {}

  /**
   * The template of `before` changed into `after`'s: a rollout from the revision running now to the
   * new one, by the deployment's strategy. A rollout still under way is superseded; the stable
   * revision stays the one it was rolling from. Called under the deployment's lock, before it is saved.
   */
  async begin(before: Deployment, after: Deployment): Promise<Rollout> {
    const now = timestamp(preciseNow());
    const running = this.book.activeOf(before.id);
    if (running) {
      const ended = clone(RolloutSchema, running);
      ended.phase = RolloutPhase.SUPERSEDED;
      ended.phaseReason = `a newer template (revision ${after.revision}) replaced this rollout.`;
      ended.endTime = now;
      await this.book.save(ended);
    }
    const r = create(RolloutSchema, {
      id: randomUUID(),
      deployment: after.name,
      deploymentId: after.id,
      tenant: after.tenant,
      fromRevision: running ? running.fromRevision : before.revision,
      toRevision: after.revision,
      fromTemplate: running ? running.fromTemplate : before.template,
      strategy: after.strategy,
      phase: RolloutPhase.PROGRESSING,
      stage: 0,
      weight: 0,
      stableInstances: wanted(before),
      newInstances: 0,
      createTime: now,
      stageTime: now,
    });
    const reason = `revision ${r.toRevision} rolls out by ${strategyName(r.strategy)} over revision ${r.fromRevision}${running ? ` (superseding rollout ${running.id})` : ""}.`;
    r.phaseReason = reason;
    const facts = figures({ strategy: strategyName(r.strategy), instances: wanted(after) });
    r.history.push(create(RolloutDecisionSchema, { time: now, action: "start", reason, stage: 0, weight: 0, figures: facts }));
    await this.book.save(r);
    announce(this.ctx, r, "start", reason, facts);
    return r;
  }

  /** A rollout by id, or a deployment's (by id or name) latest; NOT_FOUND otherwise. */
  resolve(ref: string, tenant: string): Rollout {
    const byId = this.book.rollouts.get(ref);
    if (byId && byId.tenant === tenant) return byId;
    const d = this.deployments.resolve(ref, tenant);
    const latest = this.book.of(d.id)[0];
    if (!latest)
      throw notFound(`deployment ${d.name} has had no rollout: one starts when its template changes (aether deploy update ${d.name} ...).`);
    return latest;
  }

  get(req: { rollout: string; tenant: string }): Rollout {
    return this.resolve(reference("rollout", req.rollout), checkTenant(req.tenant));
  }

  list(req: ListRolloutsRequest): { rollouts: Rollout[]; nextPageToken: string } {
    const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
    const deployment = req.deployment === "" ? undefined : dnsLabel("deployment", req.deployment);
    const all = [...this.book.rollouts.values()]
      .filter((r) => (tenant === undefined || r.tenant === tenant) && (deployment === undefined || r.deployment === deployment))
      .sort(newestFirst);
    const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
    return { rollouts: page, nextPageToken };
  }

  /** Pause, resume, promote or roll back, by hand. */
  async act(action: RolloutAction, ref: string, tenant: string): Promise<Rollout> {
    const found = this.resolve(reference("rollout", ref), checkTenant(tenant));
    return this.locks.run(found.deploymentId, async () => {
      const r = this.book.rollouts.get(found.id);
      if (!r) throw notFound(`rollout ${found.id} is gone; aether rollout list shows the current ones.`);
      if (!isActive(r))
        throw failedPrecondition(
          `the rollout of ${r.deployment} to revision ${r.toRevision} has ended (${RolloutPhase[r.phase]}); a new one starts with the next template change.`,
        );
      const next = clone(RolloutSchema, r);
      let reason: string;
      switch (action) {
        case "pause":
          if (r.phase !== RolloutPhase.PROGRESSING)
            throw failedPrecondition(
              `the rollout of ${r.deployment} is ${RolloutPhase[r.phase]}, not progressing: only a progressing rollout can be paused.`,
            );
          next.phase = RolloutPhase.PAUSED;
          reason = `paused by hand at stage ${r.stage + 1} (${r.weight} % to revision ${r.toRevision}).`;
          break;
        case "resume":
          if (r.phase !== RolloutPhase.PAUSED)
            throw failedPrecondition(
              `the rollout of ${r.deployment} is ${RolloutPhase[r.phase]}, not paused: aether rollout pause ${r.deployment} holds it first.`,
            );
          next.phase = RolloutPhase.PROGRESSING;
          // The stage's hold counts again from now.
          next.stageTime = timestamp(preciseNow());
          reason = `resumed by hand at stage ${r.stage + 1}.`;
          break;
        case "promote":
          if (r.phase === RolloutPhase.ROLLING_BACK)
            throw failedPrecondition(`the rollout of ${r.deployment} is rolling back; it cannot be promoted.`);
          next.phase = RolloutPhase.PROGRESSING;
          reason = `promoted by hand: revision ${r.toRevision} takes every instance and all the traffic once ready.`;
          break;
        case "rollback":
          if (r.phase === RolloutPhase.ROLLING_BACK) return r;
          next.phase = RolloutPhase.ROLLING_BACK;
          reason = `rolled back by hand: all traffic goes back to revision ${r.fromRevision}.`;
          break;
      }
      next.phaseReason = reason;
      next.history.push(
        create(RolloutDecisionSchema, {
          time: timestamp(preciseNow()),
          action,
          reason,
          stage: next.stage,
          weight: next.weight,
          figures: {},
        }),
      );
      if (action === "rollback") await restoreStable(this.deployments, next);
      await this.book.save(next);
      announce(this.ctx, next, action, reason, {});
      return next;
    });
  }

  /** The rollout now, then after each change, until it ended (the last message), signal aborts or leadership is lost. */
  async *watch(req: { rollout: string; tenant: string }, signal: AbortSignal | undefined, ended: () => boolean): AsyncGenerator<Rollout> {
    const found = this.get(req);
    let wake: (() => void) | undefined;
    let dirty = true;
    const unsubscribe = this.book.subscribe(() => {
      dirty = true;
      wake?.();
    });
    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    let last = "";
    try {
      while (!signal?.aborted && !ended()) {
        if (!dirty) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        if (signal?.aborted || ended()) break;
        dirty = false;
        const r = this.book.rollouts.get(found.id) ?? found;
        const key = `${r.phase}/${r.stage}/${r.weight}/${r.stableInstances}/${r.newInstances}/${r.history.length}`;
        if (key !== last) {
          last = key;
          yield r;
        }
        if (!isActive(r)) return;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
