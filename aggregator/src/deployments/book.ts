// The deployment book: the leader's copy of every deployment record (deployments/<id> in the store)
// and of the request ids of CreateDeployment, read on take-over and written before memory changes;
// lookups by id, name or id prefix within a tenant; and the listeners WatchDeployment waits on.
import { clone, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, type Deployment } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, resolveInTenant, rpcError } from "@aether/server";
import type { ClusterStore } from "../store/store.js";

export const DEPLOYMENTS_PREFIX = "deployments/";
export const DEPLOYMENT_REQUESTS_PREFIX = "deployment-requests/";

export class DeploymentBook {
  deployments = new Map<string, Deployment>();
  /** "<tenant>/<request_id>" → deployment id. */
  requests = new Map<string, string>();
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly store: ClusterStore,
    private readonly log: Logger,
  ) {}

  async load(): Promise<void> {
    const deployments = new Map<string, Deployment>();
    for (const entry of await this.store.list(DEPLOYMENTS_PREFIX)) {
      try {
        const d = fromJsonString(DeploymentSchema, entry.value, { ignoreUnknownFields: true });
        deployments.set(d.id, d);
      } catch (err) {
        this.log.warn({ key: entry.key, err: describeError(err) }, "skipping an unreadable deployment record");
      }
    }
    const requests = new Map<string, string>();
    for (const entry of await this.store.list(DEPLOYMENT_REQUESTS_PREFIX))
      requests.set(entry.key.slice(DEPLOYMENT_REQUESTS_PREFIX.length), entry.value);
    this.deployments = deployments;
    this.requests = requests;
    this.changed();
  }

  reset(): void {
    this.deployments = new Map();
    this.requests = new Map();
    this.changed();
  }

  /** Writes a deployment (and the request key that created it); memory follows once durable. */
  async save(deployment: Deployment, requestKey?: string): Promise<void> {
    const d = clone(DeploymentSchema, deployment);
    // What is computed from the placements is not stored (DELETING is: a new leader finishes the delete).
    if (d.state !== DeploymentState.DELETING) d.state = 0;
    d.stateReason = "";
    d.runningInstances = 0;
    d.pendingInstances = 0;
    await Promise.all([
      this.store.put(`${DEPLOYMENTS_PREFIX}${d.id}`, toJsonString(DeploymentSchema, d)),
      requestKey !== undefined ? this.store.put(`${DEPLOYMENT_REQUESTS_PREFIX}${requestKey}`, d.id) : undefined,
    ]);
    this.deployments.set(d.id, d);
    if (requestKey !== undefined) this.requests.set(requestKey, d.id);
    this.changed();
  }

  /** Removes a deployment's record once every instance is gone. */
  async remove(deployment: Deployment): Promise<void> {
    await this.store.delete(`${DEPLOYMENTS_PREFIX}${deployment.id}`);
    this.deployments.delete(deployment.id);
    this.changed();
  }

  byName(tenant: string, name: string): Deployment | undefined {
    for (const d of this.deployments.values()) if (d.tenant === tenant && d.name === name) return d;
    return undefined;
  }

  /** A deployment by id, name or unique id prefix within the tenant; NOT_FOUND otherwise. */
  resolve(ref: string, tenant: string): Deployment {
    try {
      return resolveInTenant(this.deployments, ref, tenant, (d) => ({ id: d.id, name: d.name, tenant: d.tenant }), {
        noun: "deployment",
        hint: "aether deploy list lists them.",
      });
    } catch (err) {
      throw rpcError(err);
    }
  }

  /** Calls listener whenever a deployment or (through notify()) one of its instances changes; returns the unsubscribe. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Something a watcher may care about changed (a deployment, or a placement). */
  changed(): void {
    for (const listener of this.listeners) listener();
  }
}
