// The reconcile loop, on the leader only: it holds each deployment's live instances to the number
// wanted. Every second (and at once after a change) it asks the nodes which instances ended
// (liveness.ts) and applies the restart policy to them, then, per deployment, places the missing
// instances by auction (spread: a node that already runs an instance of the deployment sees its bid
// scaled down), removes surplus ones (an older revision first, then the newest), rolls a new
// revision one instance at a time (the new one placed before an old one goes), and finishes a delete.
//
// A fenced node's instances are the deadman's: they stay live (PLACED on a SUSPECT node) until the
// fence is confirmed, then the deadman moves them or marks them FAILED, and only then does this loop
// count them gone. Everything it decides is a placement or a deployment record in the store first,
// so a replica that takes over counts the same instances (placements a previous leader left
// PROVISIONING are finished by resume.ts, not placed again).
//
// While a rollout acts on a deployment (rollouts/plan.ts), the loop keeps the number of instances of
// each of its two revisions the rollout wants, placing the missing ones; their surplus is the rollout
// controller's to drain and stop. An instance of a deployment with an endpoint is given a free port of
// the endpoint's range (PORT in its environment).
//
// It is past 400 lines because the loop's three jobs share its state (the claims of the spread, the
// backoff of failing placements, the instances whose end it is recording): the endings, one
// deployment's step (place, remove, roll, delete), and the placing of one instance.
import { randomBytes, randomUUID } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import {
  AuctionTrigger,
  ClusterEventKind,
  DeploymentSchema,
  DeploymentState,
  PlacementState,
  ReleasePlacementRequestSchema,
  RestartPolicy,
  WorkloadPlacementSchema,
  type Deployment,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ConnectError } from "@connectrpc/connect";
import { describeError, duration, preciseNow, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import type { AuctionRunner, Spread } from "../auction/run.js";
import { normalizeSpec, setIdentity } from "../auction/deploy.js";
import { releasePlacement } from "../placements/release.js";
import { DEFAULT_GRACE_MS, ON_NODE } from "../placements/book.js";
import { pool, type KeyedMutex } from "../util.js";
import type { DeploymentBook } from "./book.js";
import type { ReconcileHandle } from "./deployments.js";
import { endedInstances, type Ending } from "./liveness.js";
import { isInstanceOf, liveInstances, wanted } from "./status.js";
import { instanceSpec, restartPolicyName } from "./template.js";
import type { RevisionTarget } from "../rollouts/plan.js";
import { PORT_ENV, portOf } from "../rollouts/endpoint.js";
import type { DeploymentTemplate } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

export const DEFAULT_RECONCILE_INTERVAL_MS = 1_000;
/** Instances placed at once per deployment. */
const START_CONCURRENCY = 16;
const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;

interface Failure {
  sentence: string;
  retryAtMs: number;
  delayMs: number;
}

export class Reconciler implements ReconcileHandle {
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private checking = false;
  /** Deployments whose reconcile step is running. */
  private readonly busy = new Set<string>();
  /** Deployments to reconcile again once their running step ends. */
  private readonly again = new Set<string>();
  private readonly failures = new Map<string, Failure>();
  private readonly graces = new Map<string, number>();
  /** Per deployment: node → instances an auction decided for moments ago and whose placement does not say so yet. */
  private readonly claims = new Map<string, Map<string, number>>();
  private generation = 0;
  /** Instances whose end this loop is recording (their FAILED is not news to placementSaved()). */
  private readonly ending = new Set<string>();
  /** Instances already counted finished by placementSaved(). */
  private readonly counted = new Set<string>();
  /** Ports of endpoint ranges given to instances whose placement is not recorded yet ("<deployment id>/<port>"). */
  private readonly portsGiven = new Set<string>();
  /** What else goes with a deleted deployment (its endpoint), before its record does. */
  private beforeGone: (d: Deployment) => Promise<void> = async () => undefined;
  /** Per revision targets while a rollout acts on a deployment (set by the composition root). */
  private targetsOf: (d: Deployment) => RevisionTarget[] | undefined = () => undefined;

  constructor(
    private readonly ctx: Context,
    private readonly runner: AuctionRunner,
    private readonly book: DeploymentBook,
    private readonly locks: KeyedMutex,
    private readonly intervalMs = DEFAULT_RECONCILE_INTERVAL_MS,
  ) {}

  start(): void {
    this.stop();
    const generation = this.generation;
    this.timer = setInterval(() => void this.pass(generation), this.intervalMs);
    this.timer.unref();
    this.kickAll();
  }

  stop(): void {
    this.generation++;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = undefined;
    this.soon = undefined;
    this.failures.clear();
    this.again.clear();
    this.claims.clear();
  }

  kick(deploymentId: string): void {
    this.failures.delete(deploymentId);
    this.again.add(deploymentId);
    this.kickAll();
  }

  failure(deploymentId: string): string | undefined {
    return this.failures.get(deploymentId)?.sentence;
  }

  /** Who removes what else a deleted deployment had (the rollouts' endpoint) before its record goes. */
  setBeforeGone(beforeGone: (d: Deployment) => Promise<void>): void {
    this.beforeGone = beforeGone;
  }

  /** Who says how many instances of each revision to keep while a rollout runs. */
  setRevisionTargets(targetsOf: (d: Deployment) => RevisionTarget[] | undefined): void {
    this.targetsOf = targetsOf;
  }

  setGrace(deploymentId: string, graceMs: number): void {
    this.graces.set(deploymentId, graceMs);
  }

  private kickAll(): void {
    if (this.soon || this.timer === undefined) return;
    const generation = this.generation;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.pass(generation);
    }, 0);
  }

  /** One pass: which instances ended, then a step for every deployment not already being worked on. */
  private async pass(generation: number): Promise<void> {
    if (generation !== this.generation || !this.ctx.leading()) return;
    if (!this.checking) {
      this.checking = true;
      try {
        await this.checkEndings(generation);
      } catch (err) {
        this.ctx.log.warn({ err: describeError(err) }, "could not check which deployment instances ended");
      } finally {
        this.checking = false;
      }
    }
    if (generation !== this.generation) return;
    for (const d of [...this.book.deployments.values()]) this.step(d.id, generation);
  }

  private step(id: string, generation: number): void {
    if (this.busy.has(id)) {
      this.again.add(id);
      return;
    }
    this.busy.add(id);
    this.again.delete(id);
    void this.reconcile(id, generation)
      .catch((err: unknown) => this.ctx.log.warn({ deployment: id, err: describeError(err) }, "a reconcile step failed"))
      .finally(() => {
        this.busy.delete(id);
        if (this.again.has(id) && generation === this.generation) this.step(id, generation);
      });
  }

  // ---------------------------------------------------------------- endings

  private async checkEndings(generation: number): Promise<void> {
    const deployments = [...this.book.deployments.values()];
    const instances = deployments.flatMap((d) =>
      liveInstances(this.ctx.book, d).filter((p) => !this.ctx.book.inflightWorkloads.has(p.workloadId)),
    );
    if (instances.length === 0) return;
    const endings = await endedInstances(this.ctx, instances);
    if (generation !== this.generation) return;
    await Promise.all(
      endings.map(async (ending) => {
        const d = deployments.find((each) => isInstanceOf(ending.placement, each));
        if (!d) return;
        try {
          await this.end(d, ending);
        } catch (err) {
          this.ctx.log.warn({ instance: ending.placement.name, err: describeError(err) }, "could not record an instance's end");
        }
      }),
    );
  }

  /** An instance ended: recorded as such, released on its node, and (by the restart policy) replaced or counted finished. */
  private async end(d: Deployment, ending: Ending): Promise<void> {
    const id = ending.placement.workloadId;
    if (this.ctx.book.inflightWorkloads.has(id) || !this.ctx.leading()) return;
    await this.ctx.book.track(id, async () => {
      const latest = this.ctx.book.placements.get(id);
      if (!latest || latest.state !== PlacementState.PLACED || latest.node !== ending.placement.node) return;
      const policy = d.template?.restartPolicy ?? RestartPolicy.ALWAYS;
      const replace =
        d.state !== DeploymentState.DELETING &&
        (policy === RestartPolicy.NEVER ? false : policy === RestartPolicy.ON_FAILURE ? !ending.succeeded : true);
      const placement = clone(WorkloadPlacementSchema, latest);
      placement.state = ending.succeeded ? PlacementState.RELEASED : PlacementState.FAILED;
      placement.stateReason = `instance ${placement.name} ended on node ${placement.node}: ${ending.reason}; ${
        replace ? "a new instance replaces it" : "it is not replaced"
      } (restart policy ${restartPolicyName(policy)}).`;
      this.ending.add(id);
      try {
        await this.ctx.book.save(undefined, placement);
      } finally {
        this.ending.delete(id);
      }
      if (!replace && d.state !== DeploymentState.DELETING) await this.countFinished(d.id);
      else this.book.changed();
      void this.ctx.emit({
        kind: ClusterEventKind.INSTANCE_ENDED,
        node: latest.node,
        workloadId: id,
        tenant: placement.tenant,
        message: placement.stateReason,
        attributes: { deployment: d.name, instance: placement.name, restart_policy: restartPolicyName(policy) },
      });
      // What is left of it on the node (the exited process's record, the stopped VM and its disks).
      const node = this.ctx.registry.get(latest.node);
      if (node)
        await this.ctx.clients
          .bid(node)
          .releaseWorkload({ workloadId: id, tenant: placement.tenant, gracePeriod: duration(5_000) }, { timeoutMs: 20_000 })
          .catch((err: unknown) =>
            this.ctx.log.warn({ node: node.id, instance: placement.name, err: describeError(err) }, "could not release an ended instance"),
          );
    });
    this.again.add(d.id);
  }

  /** One more instance of the deployment ended and is not replaced (restart policy). */
  private async countFinished(deploymentId: string): Promise<void> {
    await this.locks.run(deploymentId, async () => {
      const current = this.book.deployments.get(deploymentId);
      if (!current || current.state === DeploymentState.DELETING) return;
      const next = clone(DeploymentSchema, current);
      next.finishedInstances = Math.min(next.instances, next.finishedInstances + 1);
      await this.book.save(next);
    });
  }

  /**
   * A placement was written. An instance that had run and that someone else marked FAILED (the
   * deadman, for a fenced node's instance it does not start elsewhere; a re-placement no node could
   * take) has ended too: under restart policy never it counts finished, or the loop would replace it.
   */
  placementSaved(p: WorkloadPlacement): void {
    if (p.deployment === "" || p.state !== PlacementState.FAILED || p.placeTime === undefined) return;
    if (this.ending.has(p.workloadId) || this.counted.has(p.workloadId) || !this.ctx.leading()) return;
    const d = [...this.book.deployments.values()].find((each) => isInstanceOf(p, each));
    if (!d || d.state === DeploymentState.DELETING || d.template?.restartPolicy !== RestartPolicy.NEVER) return;
    this.counted.add(p.workloadId);
    void this.countFinished(d.id).catch((err: unknown) =>
      this.ctx.log.warn({ deployment: d.name, instance: p.name, err: describeError(err) }, "could not count an instance finished"),
    );
  }

  // ---------------------------------------------------------------- one deployment

  private async reconcile(id: string, generation: number): Promise<void> {
    const d = this.book.deployments.get(id);
    if (!d || generation !== this.generation || !this.ctx.leading()) return;
    const live = liveInstances(this.ctx.book, d);
    if (d.state === DeploymentState.DELETING) return this.finishDelete(d, live);
    const targets = this.targetsOf(d);
    if (targets) return this.reconcileTargets(d, live, targets, generation);

    const want = wanted(d);
    const current = live.filter((p) => p.deploymentRevision === d.revision);
    const old = live.filter((p) => p.deploymentRevision !== d.revision);
    const currentPending = current.some((p) => !ON_NODE.has(p.state) || p.state === PlacementState.PROVISIONING);

    // Too many: an older revision's first (once the new ones are placed), then the newest.
    if (live.length > want) {
      const surplus = live.length - want;
      const idle = (p: WorkloadPlacement) => !this.ctx.book.inflightWorkloads.has(p.workloadId);
      const candidates = [...(currentPending ? [] : [...old].reverse()), ...current].filter(idle).slice(0, surplus);
      await pool(candidates, START_CONCURRENCY, (p) =>
        this.remove(d, p, `deployment ${d.name} has more instances than the ${want} wanted`),
      );
      if (candidates.length > 0) this.again.add(id);
      return;
    }
    if (this.failures.get(id) && live.length >= want) this.failures.delete(id);

    // Too few of the current revision: place some (one more than wanted while an older revision rolls out).
    const room = want + (old.length > 0 ? 1 : 0) - live.length;
    const missing = Math.min(want - current.length, room);
    if (missing <= 0) return;
    const failure = this.failures.get(id);
    if (failure && failure.retryAtMs > Date.now()) {
      setTimeout(() => this.kickAll(), failure.retryAtMs - Date.now()).unref();
      return;
    }
    await this.place(
      d,
      Array.from({ length: missing }, () => ({ template: d.template, revision: d.revision })),
      failure,
      generation,
    );
  }

  /** A rollout's step: each of its revisions brought up to its count; instances of any other revision removed. */
  private async reconcileTargets(d: Deployment, live: WorkloadPlacement[], targets: RevisionTarget[], generation: number): Promise<void> {
    const idle = (p: WorkloadPlacement) => !this.ctx.book.inflightWorkloads.has(p.workloadId);
    const others = live.filter((p) => !targets.some((t) => t.revision === p.deploymentRevision)).filter(idle);
    await pool(others, START_CONCURRENCY, (p) =>
      this.remove(d, p, `revision ${p.deploymentRevision} is no longer part of deployment ${d.name}'s rollout`),
    );
    const wantedNow: Array<{ template: DeploymentTemplate | undefined; revision: bigint }> = [];
    for (const t of targets) {
      const missing = t.count - live.filter((p) => p.deploymentRevision === t.revision).length;
      for (let i = 0; i < missing; i++) wantedNow.push({ template: t.template, revision: t.revision });
    }
    if (wantedNow.length === 0) {
      if (others.length > 0) this.again.add(d.id);
      return;
    }
    const failure = this.failures.get(d.id);
    if (failure && failure.retryAtMs > Date.now()) {
      setTimeout(() => this.kickAll(), failure.retryAtMs - Date.now()).unref();
      return;
    }
    await this.place(d, wantedNow, failure, generation);
  }

  /** Places these instances; a failure backs the deployment off (its sentence is the deployment's reason). */
  private async place(
    d: Deployment,
    instances: Array<{ template: DeploymentTemplate | undefined; revision: bigint }>,
    failure: Failure | undefined,
    generation: number,
  ): Promise<void> {
    const id = d.id;
    const outcomes: Array<string | undefined> = [];
    await pool(instances, START_CONCURRENCY, async (each) => {
      if (generation !== this.generation || !this.ctx.leading()) return;
      outcomes.push(await this.startInstance(d, each.template, each.revision));
    });
    const failed = outcomes.filter((o): o is string => o !== undefined);
    if (failed.length > 0) {
      const delayMs = Math.min(MAX_BACKOFF_MS, (failure?.delayMs ?? FIRST_BACKOFF_MS / 2) * 2);
      this.failures.set(id, { sentence: failed[failed.length - 1] as string, retryAtMs: Date.now() + delayMs, delayMs });
      this.book.changed();
      setTimeout(() => this.kickAll(), delayMs).unref();
    } else if (failure) {
      this.failures.delete(id);
    }
    this.again.add(id);
  }

  /** Places one instance of a revision of the deployment; returns why it failed, or undefined. */
  private async startInstance(d: Deployment, template: DeploymentTemplate | undefined, revision: bigint): Promise<string | undefined> {
    if (!template) return `the deployment has no template for revision ${revision}`;
    const name = this.instanceName(d);
    const workloadId = randomUUID();
    const spec = normalizeSpec(instanceSpec(template, d.name, d.tenant, revision, name));
    spec.confined = d.confined;
    const port = d.traffic && spec.kind.case === "executable" ? this.freePort(d) : undefined;
    if (d.traffic && spec.kind.case === "executable" && port === undefined)
      return `every port of the endpoint's range ${d.traffic.backendPortFirst}..${d.traffic.backendPortLast} is taken by an instance`;
    if (port !== undefined && spec.kind.case === "executable") {
      spec.kind.value.env = { ...spec.kind.value.env, [PORT_ENV]: String(port) };
      this.portsGiven.add(`${d.id}/${port}`);
    }
    setIdentity(spec, workloadId);
    const placement = create(WorkloadPlacementSchema, {
      workloadId,
      name,
      tenant: d.tenant,
      labels: spec.labels,
      createTime: timestamp(preciseNow()),
      state: PlacementState.BIDDING,
      spec,
      deployment: d.name,
      deploymentRevision: revision,
    });
    const claimed: string[] = [];
    const spread: Spread = {
      what: `deployment ${d.name}`,
      on: (node) => this.instancesOn(d, node),
      claim: (node) => {
        claimed.push(node);
        this.claim(d.id, node, +1);
      },
    };
    try {
      await this.ctx.book.track(workloadId, () =>
        this.runner.run({
          spec,
          windowMs: this.ctx.windowMs,
          trigger: AuctionTrigger.DEPLOYMENT,
          placement,
          requestKey: undefined,
          spread,
        }),
      );
      return undefined;
    } catch (err) {
      // The sentence itself: the deployment's state_reason is read by people, not matched on codes.
      return err instanceof ConnectError ? err.rawMessage : describeError(err);
    } finally {
      for (const node of claimed) this.claim(d.id, node, -1);
      if (port !== undefined) this.portsGiven.delete(`${d.id}/${port}`);
    }
  }

  /** A port of the deployment's endpoint range that no live instance has and none being placed was given. */
  private freePort(d: Deployment): number | undefined {
    if (!d.traffic) return undefined;
    const taken = new Set(liveInstances(this.ctx.book, d).map(portOf));
    for (let port = d.traffic.backendPortFirst; port <= d.traffic.backendPortLast; port++)
      if (!taken.has(port) && !this.portsGiven.has(`${d.id}/${port}`)) return port;
    return undefined;
  }

  /** The deployment's instances on node, and those an auction has just decided for it. */
  private instancesOn(d: Deployment, node: string): number {
    let count = this.claims.get(d.id)?.get(node) ?? 0;
    for (const p of this.ctx.book.placements.values()) if (p.node === node && ON_NODE.has(p.state) && isInstanceOf(p, d)) count++;
    return count;
  }

  private claim(id: string, node: string, delta: number): void {
    const perNode = this.claims.get(id) ?? new Map<string, number>();
    const next = (perNode.get(node) ?? 0) + delta;
    if (next <= 0) perNode.delete(node);
    else perNode.set(node, next);
    this.claims.set(id, perNode);
  }

  /** <deployment>-<6 hex digits>, not used by a live placement of the tenant. */
  private instanceName(d: Deployment): string {
    for (;;) {
      const name = `${d.name}-${randomBytes(3).toString("hex")}`;
      if (!this.ctx.book.liveByName(d.tenant, name) && !this.ctx.book.reservedNames.has(`${d.tenant}/${name}`)) return name;
    }
  }

  private async remove(d: Deployment, p: WorkloadPlacement, why: string): Promise<void> {
    const graceMs = this.graces.get(d.id) ?? DEFAULT_GRACE_MS;
    try {
      await releasePlacement(
        this.ctx,
        create(ReleasePlacementRequestSchema, { workload: p.workloadId, tenant: p.tenant, gracePeriod: duration(graceMs) }),
      );
      this.ctx.log.info({ deployment: d.name, instance: p.name, why }, "instance removed");
    } catch (err) {
      this.ctx.log.warn({ deployment: d.name, instance: p.name, err: describeError(err) }, "could not remove an instance; trying again");
    }
  }

  private async finishDelete(d: Deployment, live: WorkloadPlacement[]): Promise<void> {
    const idle = live.filter((p) => !this.ctx.book.inflightWorkloads.has(p.workloadId));
    await pool(idle, START_CONCURRENCY, (p) => this.remove(d, p, `deployment ${d.name} is being deleted`));
    if (liveInstances(this.ctx.book, d).length > 0) {
      setTimeout(() => this.kick(d.id), 500).unref();
      return;
    }
    try {
      await this.beforeGone(d);
    } catch (err) {
      this.ctx.log.warn({ deployment: d.name, err: describeError(err) }, "could not remove a deleted deployment's endpoint; trying again");
      setTimeout(() => this.kick(d.id), 1_000).unref();
      return;
    }
    await this.locks.run(d.id, async () => {
      const current = this.book.deployments.get(d.id);
      if (!current) return;
      await this.book.remove(current);
    });
    this.graces.delete(d.id);
    this.failures.delete(d.id);
    void this.ctx.emit({
      kind: ClusterEventKind.DEPLOYMENT_CHANGED,
      tenant: d.tenant,
      message: `deployment ${d.name} deleted: every instance was released.`,
      attributes: { deployment: d.name, revision: String(d.revision), instances: "0" },
    });
  }
}
