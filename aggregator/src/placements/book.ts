// The placement book: the leader's copy of every workload placement, every auction record and every
// request_id, read from the store when this replica takes over and written back before memory
// changes (save()), plus the locks that keep one change per workload at a time (track()).
import { clone, create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import {
  AuctionRecordSchema,
  DeployResponseSchema,
  PlacementState,
  WorkloadPlacementSchema,
  type AuctionRecord,
  type DeployResponse,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, msOf, notFound, resolveIdPrefix, rpcError } from "@aether/server";
import type { ClusterStore } from "../store/store.js";
import { compareStrings } from "../util.js";

export const PLACEMENTS_PREFIX = "placements/";
export const AUCTIONS_PREFIX = "auctions/";
export const REQUESTS_PREFIX = "requests/";
/** How long a workload is given to stop when it is released (unless the request says otherwise). */
export const DEFAULT_GRACE_MS = 30_000;

export const LIVE_PLACEMENT = new Set([
  PlacementState.BIDDING,
  PlacementState.PROVISIONING,
  PlacementState.PLACED,
  PlacementState.REPLACING,
  PlacementState.MOVING,
]);
/** On their node: being provisioned, placed, or being moved off it by a drain (it still runs there). */
export const ON_NODE = new Set([PlacementState.PROVISIONING, PlacementState.PLACED, PlacementState.MOVING]);
export const stateName = (names: Record<number, string>, v: number) => names[v] ?? String(v);

/** Newest first: create_time descending, then id. */
export function newestFirst<T extends { createTime?: { seconds: bigint; nanos: number } | undefined }>(key: (x: T) => string) {
  return (a: T, b: T) => msOf(b.createTime) - msOf(a.createTime) || compareStrings(key(b), key(a));
}

export class PlacementBook {
  placements = new Map<string, WorkloadPlacement>();
  auctions = new Map<string, AuctionRecord>();
  /** "<tenant>/<request_id>" → workload id. */
  requests = new Map<string, string>();
  /** Deploys under way by request key, so a retry waits for the first instead of deploying again. */
  readonly inflightRequests = new Map<string, Promise<DeployResponse>>();
  /** Workloads whose auction or re-placement is running. */
  readonly inflightWorkloads = new Set<string>();
  /** "<tenant>/<name>" of deploys that have no placement record yet. */
  readonly reservedNames = new Set<string>();
  /** Called after every placement written (a deployment's watchers follow its instances with it). */
  readonly saved = new Set<(placement: WorkloadPlacement) => void>();

  constructor(
    private readonly store: ClusterStore,
    private readonly log: Logger,
  ) {}

  /** Reads the placements, auction records and request keys (on becoming the leader). */
  async load(): Promise<void> {
    const placements = new Map<string, WorkloadPlacement>();
    for (const entry of await this.store.list(PLACEMENTS_PREFIX)) {
      const p = this.parse(entry.key, () => fromJsonString(WorkloadPlacementSchema, entry.value, { ignoreUnknownFields: true }));
      if (p) placements.set(p.workloadId, p);
    }
    const auctions = new Map<string, AuctionRecord>();
    for (const entry of await this.store.list(AUCTIONS_PREFIX)) {
      const a = this.parse(entry.key, () => fromJsonString(AuctionRecordSchema, entry.value, { ignoreUnknownFields: true }));
      if (a) auctions.set(a.id, a);
    }
    const requests = new Map<string, string>();
    for (const entry of await this.store.list(REQUESTS_PREFIX)) requests.set(entry.key.slice(REQUESTS_PREFIX.length), entry.value);
    this.placements = placements;
    this.auctions = auctions;
    this.requests = requests;
  }

  /** Forgets everything read (leadership lost, shutdown). */
  reset(): void {
    this.placements = new Map();
    this.auctions = new Map();
    this.requests = new Map();
  }

  private parse<T>(key: string, read: () => T): T | undefined {
    try {
      return read();
    } catch (err) {
      this.log.warn({ key, err: describeError(err) }, "skipping an unreadable record");
      return undefined;
    }
  }

  /** Writes an auction record, a placement and the request key together; memory follows once they are durable. */
  async save(record: AuctionRecord | undefined, placement: WorkloadPlacement | undefined, requestKey?: string): Promise<void> {
    const r = record && clone(AuctionRecordSchema, record);
    const p = placement && clone(WorkloadPlacementSchema, placement);
    await Promise.all([
      r && this.store.put(`${AUCTIONS_PREFIX}${r.id}`, toJsonString(AuctionRecordSchema, r)),
      p && this.store.put(`${PLACEMENTS_PREFIX}${p.workloadId}`, toJsonString(WorkloadPlacementSchema, p)),
      p && requestKey !== undefined && this.requests.get(requestKey) !== p.workloadId
        ? this.store.put(`${REQUESTS_PREFIX}${requestKey}`, p.workloadId)
        : undefined,
    ]);
    if (r) this.auctions.set(r.id, r);
    if (p) this.placements.set(p.workloadId, p);
    if (p && requestKey !== undefined) this.requests.set(requestKey, p.workloadId);
    if (p) for (const listener of this.saved) listener(p);
  }

  /** Runs work while the workload counts as being worked on (deploy, release, re-placement). */
  async track<T>(workloadId: string, work: () => Promise<T>): Promise<T> {
    this.inflightWorkloads.add(workloadId);
    try {
      return await work();
    } finally {
      this.inflightWorkloads.delete(workloadId);
    }
  }

  liveByName(tenant: string, name: string): WorkloadPlacement | undefined {
    for (const p of this.placements.values()) if (p.tenant === tenant && p.name === name && LIVE_PLACEMENT.has(p.state)) return p;
    return undefined;
  }

  responseFor(placement: WorkloadPlacement): DeployResponse {
    const auction = this.auctions.get(placement.auctionId);
    return create(DeployResponseSchema, {
      placement: clone(WorkloadPlacementSchema, placement),
      auction: auction && clone(AuctionRecordSchema, auction),
    });
  }

  /**
   * A workload by id, name or unique id prefix within the tenant (by name: the live one, else the
   * newest; a prefix several share is INVALID_ARGUMENT naming them).
   */
  resolve(ref: string, tenant: string): WorkloadPlacement {
    // By id too only within the tenant: an id is no key to another tenant's workload.
    const byId = this.placements.get(ref);
    if (byId && byId.tenant === tenant) return byId;
    const named = [...this.placements.values()]
      .filter((p) => p.tenant === tenant && p.name === ref)
      .sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
    const found = named.find((p) => LIVE_PLACEMENT.has(p.state)) ?? named[0] ?? this.byIdPrefix(ref, tenant);
    if (!found) throw notFound(`no workload ${ref} in tenant ${tenant}: aether cluster placements lists them.`);
    return found;
  }

  /** The workload of the tenant whose id alone starts with ref (the shared rule of @aether/server). */
  private byIdPrefix(ref: string, tenant: string): WorkloadPlacement | undefined {
    try {
      return resolveIdPrefix(this.placements, ref, tenant, (p) => ({ id: p.workloadId, name: p.name, tenant: p.tenant }), {
        noun: "workload",
        hint: "",
      });
    } catch (err) {
      throw rpcError(err);
    }
  }

  /** Live placements (PROVISIONING or PLACED) per node. */
  counts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const p of this.placements.values()) if (p.node !== "" && ON_NODE.has(p.state)) counts.set(p.node, (counts.get(p.node) ?? 0) + 1);
    return counts;
  }

  /** The node's placements that are PROVISIONING or PLACED on it and not being worked on right now. */
  movable(nodeId: string): WorkloadPlacement[] {
    return [...this.placements.values()].filter(
      (p) => p.node === nodeId && ON_NODE.has(p.state) && !this.inflightWorkloads.has(p.workloadId),
    );
  }
}
