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
    const outcomes: Array<string | undefined> = [];
    await pool(
      Array.from({ length: missing }, (_, i) => i),
      START_CONCURRENCY,
      async () => {
        if (generation !== this.generation || !this.ctx.leading()) return;
        outcomes.push(await this.startInstance(d));
      },
    );
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

  /** Places one instance of the deployment's current revision; returns why it failed, or undefined. */
  private async startInstance(d: Deployment): Promise<string | undefined> {
    if (!d.template) return "the deployment has no template";
    const name = this.instanceName(d);
    const workloadId = randomUUID();
    const spec = normalizeSpec(instanceSpec(d.template, d.name, d.tenant, d.revision, name));
    spec.confined = d.confined;
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
      deploymentRevision: d.revision,
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
    }
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
