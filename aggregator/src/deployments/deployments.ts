// The deployment RPCs: Create, Get, List, Update, Scale, Delete and Watch. Each validates, decides
// under the deployment's lock, writes the record and wakes the reconcile loop (reconcile.ts), which
// does the placing and releasing; nothing here talks to a node.
import { randomUUID } from "node:crypto";
import { clone } from "@bufbuild/protobuf";
import {
  ClusterEventKind,
  DeploymentSchema,
  DeploymentState,
  type CreateDeploymentRequest,
  type DeleteDeploymentRequest,
  type Deployment,
  type DeploymentInstance,
  type GetDeploymentRequest,
  type ListDeploymentsRequest,
  type ScaleDeploymentRequest,
  type UpdateDeploymentRequest,
  type WatchDeploymentRequest,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import {
  alreadyExists,
  dnsLabel,
  durationMs,
  failedPrecondition,
  invalidArgument,
  labelFilter,
  labels as checkLabels,
  matchesFilter,
  paginate,
  preciseNow,
  reference,
  tenant as checkTenant,
  timestamp,
} from "@aether/server";
import type { Context } from "../context.js";
import { DEFAULT_GRACE_MS, newestFirst } from "../placements/book.js";
import type { KeyedMutex } from "../util.js";
import { requestId as checkRequestId } from "../validate.js";
import type { DeploymentBook } from "./book.js";
import { instancesOf, withStatus } from "./status.js";
import { normalizeStrategy, normalizeTraffic } from "../rollouts/validate.js";
import { checkInstances, checkPortRange, normalizeDeployment, normalizeTemplate, sameTemplate } from "./template.js";

/** What the API asks of the reconcile loop. */
export interface ReconcileHandle {
  /** Reconcile this deployment soon. */
  kick(deploymentId: string): void;
  /** Why the last placement of an instance of this deployment failed, while it keeps failing. */
  failure(deploymentId: string): string | undefined;
  /** How long this deployment's instances are given to stop when it is deleted. */
  setGrace(deploymentId: string, graceMs: number): void;
}

/** What starts a rollout when a template changes (rollouts/rollouts.ts). */
export interface RolloutStarter {
  /** Called under the deployment's lock, before the new revision is saved. */
  begin(before: Deployment, after: Deployment): Promise<unknown>;
}

export interface DeploymentView {
  deployment: Deployment;
  instances: DeploymentInstance[];
}

export class Deployments {
  private readonly creating = new Map<string, Promise<Deployment>>();

  constructor(
    private readonly ctx: Context,
    readonly book: DeploymentBook,
    private readonly loop: ReconcileHandle,
    /** One change per deployment at a time (shared with the reconcile loop). */
    private readonly locks: KeyedMutex,
    private readonly rollouts?: RolloutStarter,
  ) {}

  view(d: Deployment): DeploymentView {
    return { deployment: withStatus(this.ctx.book, d, this.loop.failure(d.id)), instances: instancesOf(this.ctx.book, d) };
  }

  async create(req: CreateDeploymentRequest): Promise<Deployment> {
    const d = normalizeDeployment(req.deployment);
    const rid = checkRequestId(req.requestId);
    const requestKey = rid === "" ? undefined : `${d.tenant}/${encodeURIComponent(rid)}`;
    if (requestKey !== undefined) {
      const pending = this.creating.get(requestKey);
      if (pending) return pending;
      const prior = this.book.deployments.get(this.book.requests.get(requestKey) ?? "");
      if (prior) return this.view(prior).deployment;
    }
    const work = this.locks.run(`name:${d.tenant}/${d.name}`, async () => {
      const holder = this.book.byName(d.tenant, d.name);
      if (holder)
        throw alreadyExists(
          `deployment name ${d.name} is already used in tenant ${d.tenant} (deployment ${holder.id}, ${holder.instances} instance(s)); delete it first (aether deploy delete ${d.name}), or choose another name.`,
        );
      const now = timestamp(preciseNow());
      d.id = randomUUID();
      d.createTime = now;
      d.updateTime = now;
      d.revision = 1n;
      await this.book.save(d, requestKey);
      this.changed(d, `deployment ${d.name} created: ${d.instances} instance(s) of revision 1.`);
      return this.view(d).deployment;
    });
    if (requestKey !== undefined) this.creating.set(requestKey, work);
    try {
      return await work;
    } finally {
      if (requestKey !== undefined) this.creating.delete(requestKey);
    }
  }

  get(req: GetDeploymentRequest): DeploymentView {
    return this.view(this.book.resolve(reference("deployment", req.deployment), checkTenant(req.tenant)));
  }

  list(req: ListDeploymentsRequest): { deployments: Deployment[]; nextPageToken: string } {
    const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
    const terms = labelFilter(req.filter);
    const all = [...this.book.deployments.values()]
      .filter((d) => (tenant === undefined || d.tenant === tenant) && matchesFilter(d.labels, terms))
      .sort(newestFirst<Deployment>((d) => d.id));
    const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
    return { deployments: page.map((d) => this.view(d).deployment), nextPageToken };
  }

  /** `confine`: a tenant's caller updates it, so its instances are confined from now on. */
  async update(req: UpdateDeploymentRequest, confine = false): Promise<{ deployment: Deployment; templateChanged: boolean }> {
    const tenant = checkTenant(req.tenant);
    const ref = reference("deployment", req.deployment);
    if (req.instances !== undefined) checkInstances("instances", req.instances);
    if (req.replaceLabels) checkLabels(req.labels);
    else if (Object.keys(req.labels).length > 0)
      throw invalidArgument(
        "labels is set but replace_labels is false: set replace_labels to replace the deployment's labels (an empty labels with replace_labels clears them).",
      );
    return this.change(ref, tenant, (d) => {
      const template = req.template && normalizeTemplate("template", req.template, d.name, d.tenant);
      const templateChanged = template !== undefined && !sameTemplate(template, d.template);
      const what: string[] = [];
      if (templateChanged) {
        d.template = template;
        d.revision += 1n;
        d.finishedInstances = 0;
        what.push(`template changed (revision ${d.revision})`);
      }
      if (req.instances !== undefined && req.instances !== d.instances) {
        what.push(`instances ${d.instances} → ${req.instances}`);
        d.instances = req.instances;
        d.finishedInstances = 0;
      }
      if (req.replaceLabels) {
        d.labels = { ...req.labels };
        what.push("labels replaced");
      }
      if (req.strategy !== undefined) {
        d.strategy = normalizeStrategy("strategy", req.strategy, d.instances);
        what.push("strategy set");
      }
      if (req.traffic !== undefined) {
        d.traffic = normalizeTraffic("traffic", req.traffic, d.template?.kind.case === "executable");
        what.push("endpoint set");
      }
      checkPortRange("traffic", d);
      if (confine && !d.confined && what.length > 0) {
        d.confined = true;
        what.push("its instances are confined from now on (a tenant updated it)");
      }
      return { templateChanged, summary: what.length > 0 ? what.join(", ") : undefined };
    });
  }

  async scale(req: ScaleDeploymentRequest): Promise<Deployment> {
    const tenant = checkTenant(req.tenant);
    const ref = reference("deployment", req.deployment);
    const instances = checkInstances("instances", req.instances);
    const done = await this.change(ref, tenant, (d) => {
      if (instances === d.instances && d.finishedInstances === 0) return { templateChanged: false, summary: undefined };
      const summary = `scaled from ${d.instances} to ${instances} instance(s)`;
      d.instances = instances;
      d.finishedInstances = 0;
      return { templateChanged: false, summary };
    });
    return done.deployment;
  }

  async delete(req: DeleteDeploymentRequest): Promise<Deployment> {
    const tenant = checkTenant(req.tenant);
    const ref = reference("deployment", req.deployment);
    const graceMs = durationMs("grace_period", req.gracePeriod, DEFAULT_GRACE_MS);
    const found = this.book.resolve(ref, tenant);
    this.loop.setGrace(found.id, graceMs);
    const done = await this.change(ref, tenant, (d) => {
      if (d.state === DeploymentState.DELETING) return { templateChanged: false, summary: undefined };
      d.state = DeploymentState.DELETING;
      return { templateChanged: false, summary: "being deleted: its instances are released" };
    });
    return done.deployment;
  }

  /** Applies a change to a deployment under its lock; writes and announces it when there was one. */
  private async change(
    ref: string,
    tenant: string,
    apply: (d: Deployment) => { templateChanged: boolean; summary: string | undefined },
  ): Promise<{ deployment: Deployment; templateChanged: boolean }> {
    const found = this.book.resolve(ref, tenant);
    return this.locks.run(found.id, async () => {
      const latest = this.book.deployments.get(found.id);
      if (!latest)
        throw failedPrecondition(`deployment ${found.name} was deleted while this call waited; create it again if it is still needed.`);
      if (latest.state === DeploymentState.DELETING)
        throw failedPrecondition(`deployment ${latest.name} is being deleted; wait until it is gone, then create it again.`);
      const d = clone(DeploymentSchema, latest);
      const { templateChanged, summary } = apply(d);
      if (templateChanged && this.rollouts) await this.rollouts.begin(latest, d);
      if (summary !== undefined) {
        d.updateTime = timestamp(preciseNow());
        await this.book.save(d);
        this.changed(d, `deployment ${d.name}: ${summary}.`);
      }
      return { deployment: this.view(d).deployment, templateChanged };
    });
  }

  private changed(d: Deployment, message: string): void {
    this.loop.kick(d.id);
    void this.ctx.emit({
      kind: ClusterEventKind.DEPLOYMENT_CHANGED,
      tenant: d.tenant,
      message,
      attributes: { deployment: d.name, revision: String(d.revision), instances: String(d.instances) },
    });
  }

  /**
   * The deployment now, then again after each change to it or its instances (coalesced), until it is
   * deleted (a last message with state DELETED), signal aborts or leadership is lost (`ended`).
   */
  async *watch(req: WatchDeploymentRequest, signal: AbortSignal | undefined, ended: () => boolean): AsyncGenerator<DeploymentView> {
    const found = this.book.resolve(reference("deployment", req.deployment), checkTenant(req.tenant));
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
        const d = this.book.deployments.get(found.id);
        if (!d) {
          const gone = clone(DeploymentSchema, found);
          gone.state = DeploymentState.DELETED;
          gone.stateReason = `deployment ${found.name} and its instances are gone.`;
          gone.runningInstances = 0;
          gone.pendingInstances = 0;
          yield { deployment: gone, instances: [] };
          return;
        }
        const view = this.view(d);
        const key = JSON.stringify(view, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
        if (key !== last) {
          last = key;
          yield view;
        }
        // Coalesce bursts (an auction writes its placement several times in a few milliseconds).
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
