// The rollout controller, on the leader only: every half second, for each deployment, it observes
// the instances of the rollout's two revisions (running, and UP in the deployment's proxy when it has
// one, with the proxy's figures per backend), asks the strategy what to do, records the answer
// (targets, weight, stage, and each decision with its figures as a cluster event) before acting on
// it, then puts the endpoint (weights through the runtime API) and drains and stops the instances the
// targets no longer want. Instances are placed by the reconcile loop (plan.ts tells it how many of
// each revision); only this controller removes instances of a rollout's revisions, after a drain.
// A little past 400 lines because observing, recording and acting are one tick that must keep its
// order (a decision is recorded before it is acted on); the strategies are pure modules beside it.
import { clone, create } from "@bufbuild/protobuf";
import {
  ClusterEventKind,
  DeploymentSchema,
  DeploymentState,
  ReleasePlacementRequestSchema,
  RolloutDecisionSchema,
  RolloutPhase,
  RolloutSchema,
  type Deployment,
  type Rollout,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, duration, msOf, preciseNow, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import type { DeploymentBook } from "../deployments/book.js";
import { liveInstances, wanted } from "../deployments/status.js";
import { releasePlacement } from "../placements/release.js";
import { KeyedMutex } from "../util.js";
import { isActive, type RolloutBook } from "./book.js";
import { CommandHealth } from "./command-health.js";
import { endpointFor, endpointName, hostOf, portOf } from "./endpoint.js";
import { isRunning, latestRollout, revisionTargets } from "./plan.js";
import type { BackendFigures, TrafficRouter } from "./router.js";
import { strategyOf } from "./strategies/index.js";
import { figures, type GroupFigures, type Observed, type Plan } from "./strategies/strategy.js";

export const DEFAULT_ROLLOUT_INTERVAL_MS = 500;
/** Longest wait for a drained backend's open requests before its instance is stopped. */
const DRAIN_MAX_MS = 5_000;
/** Grace given to a drained instance to stop. */
const STOP_GRACE_MS = 5_000;

export class RolloutController {
  private timer: NodeJS.Timeout | undefined;
  private generation = 0;
  private readonly busy = new Set<string>();
  /** Instances being drained and stopped (workload ids). */
  private readonly removing = new Set<string>();
  /** Per rollout and stage: each backend's counters when the stage began (the figures are deltas). */
  private readonly baselines = new Map<string, Map<string, BackendFigures>>();
  /** The endpoint last put per deployment (JSON), so an unchanged one is not put again. */
  private readonly put = new Map<string, string>();
  /** Where each deployment's endpoint was put (removed when the deployment is deleted). */
  private readonly endpoints = new Map<string, { node: string; name: string }>();
  /** One call to a deployment's endpoint at a time (a put never lands after its removal). */
  private readonly routing = new KeyedMutex();
  /** Deployments being deleted whose endpoint was removed. */
  private readonly removed = new Set<string>();
  /** Each instance's command health check (traffic.command_check), when the deployment has one. */
  private readonly commands: CommandHealth;

  constructor(
    private readonly ctx: Context,
    private readonly deployments: DeploymentBook,
    private readonly rollouts: RolloutBook,
    private readonly locks: KeyedMutex,
    private readonly router: TrafficRouter,
    private readonly kickReconcile: (deploymentId: string) => void,
    private readonly intervalMs = DEFAULT_ROLLOUT_INTERVAL_MS,
  ) {
    this.commands = new CommandHealth(ctx);
  }

  start(): void {
    this.stop();
    const generation = this.generation;
    this.timer = setInterval(() => this.tick(generation), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.generation++;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.baselines.clear();
    this.put.clear();
    this.endpoints.clear();
    this.removed.clear();
    this.commands.clear();
  }

  /**
   * What goes with a deleted deployment, before its record does (the reconcile loop calls it): its
   * endpoint, and its rollouts (one still under way ends SUPERSEDED first, so a watcher hears of it).
   */
  async forget(d: Deployment): Promise<void> {
    if (d.traffic && !this.removed.has(d.id)) {
      await this.removeEndpoint(d.id, d.traffic.node, endpointName(d));
      this.removed.add(d.id);
    }
    await this.locks.run(d.id, async () => {
      const active = this.rollouts.activeOf(d.id);
      if (active) {
        const ended = clone(RolloutSchema, active);
        ended.phase = RolloutPhase.SUPERSEDED;
        ended.phaseReason = `deployment ${d.name} was deleted.`;
        ended.endTime = timestamp(preciseNow());
        await this.rollouts.save(ended);
      }
    });
    await this.rollouts.removeOf(d.id);
  }

  private async removeEndpoint(id: string, node: string, name: string): Promise<void> {
    await this.routing.run(id, async () => {
      await this.router.remove(node, name);
      this.put.delete(id);
      this.endpoints.delete(id);
    });
  }

  private tick(generation: number): void {
    if (generation !== this.generation || !this.ctx.leading()) return;
    for (const id of this.removed) if (!this.deployments.deployments.has(id)) this.removed.delete(id);
    // The endpoints of deployments that are gone (deleted between two ticks).
    for (const [id, where] of this.endpoints)
      if (!this.deployments.deployments.has(id) && !this.busy.has(id))
        void this.removeEndpoint(id, where.node, where.name).catch((err: unknown) =>
          this.ctx.log.warn({ endpoint: where.name, err: describeError(err) }, "could not remove a deleted deployment's endpoint"),
        );
    for (const d of [...this.deployments.deployments.values()]) {
      if (this.busy.has(d.id)) continue;
      this.busy.add(d.id);
      void this.step(d.id, generation)
        .catch((err: unknown) => this.ctx.log.warn({ deployment: d.name, err: describeError(err) }, "a rollout step failed"))
        .finally(() => this.busy.delete(d.id));
    }
  }

  private async step(id: string, generation: number): Promise<void> {
    const d = this.deployments.deployments.get(id);
    if (!d || generation !== this.generation) return;
    if (d.state === DeploymentState.DELETING) {
      // A deleted deployment serves nothing: its endpoint goes first (its instances are being released).
      // (Once per leadership: a new leader removes it again, which changes nothing when it is gone.)
      if (d.traffic && !this.removed.has(id)) {
        await this.removeEndpoint(id, d.traffic.node, endpointName(d));
        this.removed.add(id);
      }
      return;
    }
    this.commands.observe(d, liveInstances(this.ctx.book, d).filter(isRunning));
    const stats = d.traffic ? await this.router.stats(d.traffic.node, endpointName(d)).catch(() => undefined) : undefined;
    let r = latestRollout(this.rollouts, d);
    if (r && isActive(r)) r = await this.advance(d, r, stats, generation);
    if (generation !== this.generation) return;
    const latest = this.deployments.deployments.get(id) ?? d;
    await this.route(latest, r, stats);
    this.removeSurplus(latest, stats);
  }

  // ---------------------------------------------------------------- decide

  private ready(d: Deployment, p: WorkloadPlacement, stats: Map<string, BackendFigures> | undefined): boolean {
    if (!isRunning(p) || this.removing.has(p.workloadId)) return false;
    if (!d.traffic) return true;
    if (!this.commands.ready(d, p)) return false;
    const b = stats?.get(p.name);
    return b !== undefined && b.healthy && b.checked;
  }

  private observe(d: Deployment, r: Rollout, stats: Map<string, BackendFigures> | undefined): Observed {
    const live = liveInstances(this.ctx.book, d).filter((p) => !this.removing.has(p.workloadId));
    const of = (rev: bigint) => live.filter((p) => p.deploymentRevision === rev);
    const stable = of(r.fromRevision);
    const fresh = of(r.toRevision);
    const key = `${r.id}/${r.stage}/${r.weight}`;
    if (stats && !this.baselines.has(key)) this.baselines.set(key, new Map([...stats].map(([k, v]) => [k, { ...v }])));
    const base = this.baselines.get(key);
    const group = (members: WorkloadPlacement[]): GroupFigures | undefined => {
      if (!stats || !base) return undefined;
      let requests = 0;
      let errors = 0;
      let p95Ms: number | undefined;
      for (const p of members) {
        const now = stats.get(p.name);
        if (!now) continue;
        const before = base.get(p.name);
        requests += now.requests - (before?.requests ?? 0);
        errors += now.errors5xx - (before?.errors5xx ?? 0);
        if (now.p95Ms !== undefined) p95Ms = Math.max(p95Ms ?? 0, now.p95Ms);
      }
      return { requests, errors, p95Ms };
    };
    return {
      nowMs: Date.now(),
      wanted: wanted(d),
      stableLive: stable.length,
      newLive: fresh.length,
      stableReady: stable.filter((p) => this.ready(d, p, stats)).length,
      newReady: fresh.filter((p) => this.ready(d, p, stats)).length,
      traffic: d.traffic !== undefined && stats !== undefined,
      stable: group(stable),
      fresh: group(fresh),
      stageStartMs: msOf(r.stageTime),
    };
  }

  private async advance(d: Deployment, r: Rollout, stats: Map<string, BackendFigures> | undefined, generation: number): Promise<Rollout> {
    if (r.phase === RolloutPhase.PAUSED) return r;
    const o = this.observe(d, r, stats);
    let plan: Plan;
    if (r.phase === RolloutPhase.ROLLING_BACK) plan = rollbackPlan(r, o);
    else if (r.history.some((h) => h.action === "promote")) plan = promotePlan(r, o);
    else plan = strategyOf(r.strategy)(r, o);
    const same =
      plan.stable === r.stableInstances &&
      plan.fresh === r.newInstances &&
      plan.weight === r.weight &&
      plan.stage === r.stage &&
      !plan.outcome;
    if (same && !plan.decision) return r;
    if (generation !== this.generation || !this.ctx.leading()) return r;
    return this.record(d, r, plan);
  }

  /** Writes the plan (and its decision) into the rollout, then announces the decision; nothing if the rollout changed meanwhile (a pause by hand). */
  private async record(d: Deployment, seen: Rollout, plan: Plan): Promise<Rollout> {
    return this.locks.run(d.id, async () => {
      const r = this.rollouts.rollouts.get(seen.id);
      if (!r || r.phase !== seen.phase || r.history.length !== seen.history.length || r.stage !== seen.stage) return r ?? seen;
      return this.write(d, r, plan);
    });
  }

  private async write(d: Deployment, r: Rollout, plan: Plan): Promise<Rollout> {
    const next = clone(RolloutSchema, r);
    const now = timestamp(preciseNow());
    if (plan.stage !== r.stage || plan.weight !== r.weight) next.stageTime = now;
    next.stableInstances = plan.stable;
    next.newInstances = plan.fresh;
    next.weight = plan.weight;
    next.stage = plan.stage;
    if (plan.outcome === "succeeded") {
      next.phase = RolloutPhase.SUCCEEDED;
      next.endTime = now;
    } else if (plan.outcome === "rollback") {
      next.phase = r.phase === RolloutPhase.ROLLING_BACK ? RolloutPhase.ROLLED_BACK : RolloutPhase.ROLLING_BACK;
      if (next.phase === RolloutPhase.ROLLED_BACK) next.endTime = now;
    }
    if (plan.decision) {
      next.history.push(
        create(RolloutDecisionSchema, {
          time: now,
          action: plan.decision.action,
          reason: plan.decision.reason,
          stage: next.stage,
          weight: next.weight,
          figures: plan.decision.figures,
        }),
      );
      next.phaseReason = plan.decision.reason;
    }
    if (next.phase === RolloutPhase.ROLLING_BACK && r.phase !== RolloutPhase.ROLLING_BACK) await restoreStable(this.deployments, next);
    await this.rollouts.save(next);
    this.kickReconcile(d.id);
    if (plan.decision) announce(this.ctx, next, plan.decision.action, plan.decision.reason, plan.decision.figures);
    return next;
  }

  // ---------------------------------------------------------------- act

  private backends(d: Deployment, stats: Map<string, BackendFigures> | undefined) {
    return liveInstances(this.ctx.book, d).flatMap((p) => {
      const port = portOf(p);
      const node = this.ctx.registry.get(p.node);
      if (!isRunning(p) || port === undefined || !node) return [];
      return [
        {
          id: p.name,
          address: `${hostOf(node.address)}:${port}`,
          revision: p.deploymentRevision,
          ready: this.ready(d, p, stats),
          removing: this.removing.has(p.workloadId),
          maint: this.commands.down(d, p),
        },
      ];
    });
  }

  /** Puts the deployment's endpoint with the weights the rollout (or its absence) says, when it changed. */
  private async route(d: Deployment, r: Rollout | undefined, stats: Map<string, BackendFigures> | undefined): Promise<void> {
    if (!d.traffic) return;
    await this.routing.run(d.id, async () => {
      // Deleted meanwhile: its endpoint is being removed, not put again.
      const now = this.deployments.deployments.get(d.id);
      if (!now || now.state === DeploymentState.DELETING || this.removed.has(d.id)) return;
      // A backend not in the proxy yet is put in at weight 0 and weighted once its checks pass.
      const endpoint = endpointFor(d, this.backends(d, stats), r);
      const key = JSON.stringify(endpoint);
      if (this.put.get(d.id) === key && stats !== undefined) return;
      await this.router.ensureEndpoint(endpoint);
      this.put.set(d.id, key);
      this.endpoints.set(d.id, { node: endpoint.node, name: endpoint.name });
    });
  }

  /** Drains (at the proxy) and stops the instances of a rollout's revisions beyond their targets. */
  private removeSurplus(d: Deployment, stats: Map<string, BackendFigures> | undefined): void {
    const targets = revisionTargets(this.rollouts, this.ctx.book, d);
    if (!targets) return;
    const live = liveInstances(this.ctx.book, d).filter(
      (p) => !this.removing.has(p.workloadId) && !this.ctx.book.inflightWorkloads.has(p.workloadId),
    );
    for (const target of targets) {
      const mine = live.filter((p) => p.deploymentRevision === target.revision);
      const surplus = mine.length - target.count;
      if (surplus <= 0) continue;
      // Those not serving first, then the oldest.
      const order = [...mine].sort(
        (a, b) => Number(this.ready(d, a, stats)) - Number(this.ready(d, b, stats)) || msOf(a.createTime) - msOf(b.createTime),
      );
      for (const p of order.slice(0, surplus)) void this.drainAndStop(d, p);
    }
  }

  private async drainAndStop(d: Deployment, p: WorkloadPlacement): Promise<void> {
    this.removing.add(p.workloadId);
    try {
      if (d.traffic) {
        try {
          // Weight 0 and DRAIN: no new request; the open ones finish.
          await this.route(d, latestRollout(this.rollouts, d), await this.router.stats(d.traffic.node, endpointName(d)));
          const until = Date.now() + DRAIN_MAX_MS;
          while (Date.now() < until) {
            const b = (await this.router.stats(d.traffic.node, endpointName(d)))?.get(p.name);
            if (!b || b.currentSessions === 0) break;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        } catch (err) {
          this.ctx.log.warn({ instance: p.name, err: describeError(err) }, "could not drain an instance at its proxy; stopping it anyway");
        }
      }
      if (!this.ctx.leading()) return;
      await releasePlacement(
        this.ctx,
        create(ReleasePlacementRequestSchema, { workload: p.workloadId, tenant: p.tenant, gracePeriod: duration(STOP_GRACE_MS) }),
      );
      this.ctx.log.info(
        { deployment: d.name, instance: p.name, revision: String(p.deploymentRevision) },
        "instance drained and stopped by its rollout",
      );
    } catch (err) {
      this.ctx.log.warn(
        { deployment: d.name, instance: p.name, err: describeError(err) },
        "could not stop an instance of a rollout; trying again",
      );
    } finally {
      this.removing.delete(p.workloadId);
      this.kickReconcile(d.id);
    }
  }
}

/** Going back: the stable set brought to full strength, all traffic to it, then the new set goes. */
function rollbackPlan(r: Rollout, o: Observed): Plan {
  const plan: Plan = { stable: o.wanted, fresh: r.newInstances, weight: 0, stage: r.stage };
  if (o.stableReady < o.wanted) return plan;
  return {
    ...plan,
    fresh: 0,
    outcome: "rollback",
    decision: {
      action: "rolled-back",
      reason: `all ${o.wanted} instance(s) of revision ${r.fromRevision} are ready and take all the traffic; revision ${r.toRevision} is stopped.`,
      figures: figures({ ready_old: o.stableReady }),
    },
  };
}

/** Promoted: the new set brought to full strength, then all traffic to it, then the old set goes. */
function promotePlan(r: Rollout, o: Observed): Plan {
  const plan: Plan = { stable: r.stableInstances, fresh: o.wanted, weight: r.weight, stage: r.stage };
  if (o.newReady < o.wanted) return plan;
  return {
    stable: 0,
    fresh: o.wanted,
    weight: 100,
    stage: r.stage,
    outcome: "succeeded",
    decision: {
      action: "succeed",
      reason: `promoted: all ${o.wanted} new instance(s) are ready and take all the traffic.`,
      figures: figures({ ready_new: o.newReady }),
    },
  };
}

/** The deployment takes its stable template and revision again (a rollback); the caller holds the deployment's lock. */
export async function restoreStable(deployments: DeploymentBook, r: Rollout): Promise<void> {
  const current = deployments.deployments.get(r.deploymentId);
  if (!current || current.revision !== r.toRevision) return;
  const d = clone(DeploymentSchema, current);
  d.template = r.fromTemplate;
  d.revision = r.fromRevision;
  d.updateTime = timestamp(preciseNow());
  await deployments.save(d);
}

/** A decision as a cluster event, with its figures as attributes. */
export function announce(ctx: Context, r: Rollout, action: string, reason: string, values: Record<string, string>): void {
  void ctx.emit({
    kind: ClusterEventKind.ROLLOUT_DECISION,
    tenant: r.tenant,
    message: `rollout of deployment ${r.deployment} (revision ${r.fromRevision} → ${r.toRevision}): ${reason}`,
    attributes: {
      ...values,
      rollout: r.id,
      deployment: r.deployment,
      action,
      stage: String(r.stage),
      weight: String(r.weight),
    },
  });
}
