// The aggregator: the node registry, the auctions that place workloads, the placements and auction
// records, and the cluster event log, on a ClusterStore. One replica leads (it won the store's
// election; at once with the embedded store) and is the only one that acts; the others answer
// UNAVAILABLE naming the leader until they take over.
//
// A Deploy: validate the spec → ask every READY node that the spec does not rule out for a bid, in
// parallel, for at most the window → decide() the order → record the placement (PROVISIONING) and
// the auction durably → ExecuteProvisioning on the winner (request_id = workload id, so a retry
// cannot provision twice) → on failure, release whatever it left and try the next in order → PLACED.
// Because the placement is durable before any node is asked to provision, a replica that takes over
// finds every unfinished placement and finishes it (same node, same request_id) instead of losing or
// duplicating it.
import { randomUUID } from "node:crypto";
import { clone, create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  AuctionRecordSchema,
  AuctionState,
  AuctionTrigger,
  BidOutcome,
  ClusterEventKind,
  DeployResponseSchema,
  NodeSchema,
  NodeState,
  PlacementState,
  RequestBidRequestSchema,
  WorkloadPlacementSchema,
  WorkloadSpecSchema,
  type AuctionRecord,
  type ClusterEvent,
  type DeployRequest,
  type DeployResponse,
  type DeregisterNodeRequest,
  type ExecuteProvisioningResponse,
  type GetAuctionRequest,
  type GetPlacementRequest,
  type HeartbeatRequest,
  type Lease,
  type ListAuctionsRequest,
  type ListNodesRequest,
  type ListPlacementsRequest,
  type Node,
  type RegisterNodeRequest,
  type ReleasePlacementRequest,
  type StreamClusterEventsRequest,
  type WorkloadPlacement,
  type WorkloadSpec,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { NotLeaderError, StoreUnavailableError, type ClusterStore, type Leadership } from "./store/store.js";
import { EventLog, type NewEvent } from "./events/events.js";
import { NodeRegistry } from "./nodes/registry.js";
import { Deadman } from "./fencing/deadman.js";
import { BmcRegistry, RedfishFencer, type Fencer } from "./fencing/fencing.js";
import { NodeClients, type NodeTls } from "./nodes/node-clients.js";
import { collectBids, decide, diskWearOf, formatMs, whyNoBid, type BidTarget, type Contender } from "./auction/auction.js";
import {
  alreadyExists,
  describeError,
  dnsLabel,
  duration,
  durationMs,
  failedPrecondition,
  internal,
  invalidArgument,
  labelFilter,
  labels as checkLabels,
  matchesFilter,
  msOf,
  notFound,
  paginate,
  preciseNow,
  reference,
  resourceExhausted,
  silentLogger,
  tenant as checkTenant,
  timestamp,
  unavailable,
} from "@aether/server";
import { nodeId as checkNodeId, requestId as checkRequestId } from "./validate.js";
import { compareStrings, sleep } from "./util.js";

export const DEFAULT_AUCTION_WINDOW_MS = 250;
export const DEFAULT_LEASE_TTL_MS = 15_000;
export const DEFAULT_PROVISION_TIMEOUT_MS = 60_000;
export const DEFAULT_EVENT_RETENTION = 10_000;
const MAX_WINDOW_MS = 60_000;
const DEFAULT_GRACE_MS = 30_000;

const PLACEMENTS_PREFIX = "placements/";
const AUCTIONS_PREFIX = "auctions/";
const REQUESTS_PREFIX = "requests/";
const LEADER_KEY = "leader";

export interface AggregatorOptions {
  store: ClusterStore;
  /** This replica's name in the election and in the standby's answer ("agg-1", host:pid). */
  replica: string;
  /** Where clients reach this replica ("https://10.0.0.5:7450"); named by standbys while it leads. */
  advertise?: string;
  /** How long an auction waits for bids unless DeployRequest.bid_timeout says otherwise (250 ms). */
  auctionWindowMs?: number;
  /** Node lease length (15 s); nodes are told to heartbeat every third of it. */
  leaseTtlMs?: number;
  /** How long a node may take to provision a workload it won (60 s). */
  provisionTimeoutMs?: number;
  /** How many cluster events are kept for replay (10 000). */
  eventRetention?: number;
  /** TLS material for https:// node addresses. */
  nodeTls?: NodeTls;
  /**
   * Switches silent nodes off through their BMCs (deadman.ts). Unset: no BMC is registered, so a
   * silent node stays SUSPECT with an alert and its workloads stay where they are.
   */
  fencer?: Fencer;
  /** Longest time from a fence request to power state "Off" (60 s). */
  fenceTimeoutMs?: number;
  /** Time between power state reads while fencing (500 ms). */
  fencePollIntervalMs?: number;
  /** First wait before fencing again after an unconfirmed fence (10 s; doubles up to 5 min). */
  fenceRetryMs?: number;
  log?: Logger;
}

interface LeaderRecord {
  replica: string;
  advertise: string;
  since: string;
}

interface AuctionJob {
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
}

const LIVE_PLACEMENT = new Set([PlacementState.BIDDING, PlacementState.PROVISIONING, PlacementState.PLACED, PlacementState.REPLACING]);
const ON_NODE = new Set([PlacementState.PROVISIONING, PlacementState.PLACED]);
const stateName = (names: Record<number, string>, v: number) => names[v] ?? String(v);

/** Newest first: create_time descending, then id. */
function newestFirst<T extends { createTime?: { seconds: bigint; nanos: number } | undefined }>(key: (x: T) => string) {
  return (a: T, b: T) => msOf(b.createTime) - msOf(a.createTime) || compareStrings(key(b), key(a));
}

export class Aggregator {
  readonly store: ClusterStore;
  readonly replica: string;
  readonly windowMs: number;
  readonly leaseTtlMs: number;
  readonly provisionTimeoutMs: number;
  private advertise: string;
  private readonly log: Logger;
  private readonly events: EventLog;
  private readonly registry: NodeRegistry;
  private readonly clients: NodeClients;
  private readonly deadman: Deadman;
  private readonly startMs = Date.now();

  private placements = new Map<string, WorkloadPlacement>();
  private auctions = new Map<string, AuctionRecord>();
  /** "<tenant>/<request_id>" → workload id. */
  private requests = new Map<string, string>();
  /** Deploys under way by request key, so a retry waits for the first instead of deploying again. */
  private readonly inflightRequests = new Map<string, Promise<DeployResponse>>();
  /** Workloads whose auction or re-placement is running. */
  private readonly inflightWorkloads = new Set<string>();
  /** "<tenant>/<name>" of deploys that have no placement record yet. */
  private readonly reservedNames = new Set<string>();
  /** Ends open event streams (leadership lost, shutdown). */
  private readonly streamEnders = new Set<(why: ConnectError | undefined) => void>();

  private leadership: Leadership | undefined;
  private leading = false;
  private streamsClosed = false;
  private stopping = false;
  private started = false;
  private leadingWaiters: Array<() => void> = [];

  constructor(options: AggregatorOptions) {
    this.store = options.store;
    this.replica = options.replica;
    this.advertise = options.advertise ?? "";
    this.windowMs = options.auctionWindowMs ?? DEFAULT_AUCTION_WINDOW_MS;
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.provisionTimeoutMs = options.provisionTimeoutMs ?? DEFAULT_PROVISION_TIMEOUT_MS;
    if (!(this.windowMs >= 1 && this.windowMs <= MAX_WINDOW_MS)) throw new RangeError(`auction window ${this.windowMs} ms is out of range (1 ms to 60 s)`);
    if (!(this.leaseTtlMs >= 100)) throw new RangeError(`lease TTL ${this.leaseTtlMs} ms is too short (at least 100 ms)`);
    this.log = options.log ?? silentLogger();
    this.events = new EventLog(this.store, options.eventRetention ?? DEFAULT_EVENT_RETENTION, this.log.child({ room: "events" }));
    this.registry = new NodeRegistry(this.store, this.events, this.leaseTtlMs, this.log.child({ room: "registry" }));
    this.clients = new NodeClients(options.nodeTls);
    this.deadman = new Deadman(
      {
        store: this.store,
        registry: this.registry,
        log: this.log.child({ room: "deadman" }),
        emit: (event) => this.emit(event),
        movablePlacements: (nodeId) => [...this.placements.values()].filter((p) => p.node === nodeId && ON_NODE.has(p.state) && !this.inflightWorkloads.has(p.workloadId)),
        replaceFenced: (placement, node, lastHeartbeatMs) => this.replaceFenced(placement, node, lastHeartbeatMs),
        abandonFenced: (placement, node, reason) => this.abandonFenced(placement, node, reason),
        release: async (address, workloadId, tenant, graceMs, timeoutMs) =>
          (await this.clients.bid(address).releaseWorkload({ workloadId, tenant, gracePeriod: duration(graceMs) }, { timeoutMs })).released,
      },
      {
        fencer: options.fencer ?? new RedfishFencer(new BmcRegistry([]), () => {
          throw new Error("no BMC is registered");
        }),
        fenceTimeoutMs: options.fenceTimeoutMs,
        pollIntervalMs: options.fencePollIntervalMs,
        retryMs: options.fenceRetryMs,
        leaseTtlMs: this.leaseTtlMs,
      },
    );
  }

  // ---------------------------------------------------------------- leadership

  /** Starts campaigning in the background; see whenLeading(). */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.leadLoop();
  }

  /** Sets where clients reach this replica (before start(); the bound TCP port is known only after listening). */
  setAdvertise(address: string): void {
    this.advertise = address;
  }

  /** True while this replica leads and serves. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Resolves once this replica leads. */
  whenLeading(): Promise<void> {
    if (this.leading) return Promise.resolve();
    return new Promise((resolve) => this.leadingWaiters.push(resolve));
  }

  private async leadLoop(): Promise<void> {
    while (!this.stopping) {
      let leadership: Leadership;
      try {
        leadership = await this.store.campaign(this.replica);
      } catch (err) {
        if (this.stopping) break;
        this.log.warn({ err: describeError(err) }, "campaign for leadership failed; retrying");
        await sleep(1000);
        continue;
      }
      if (this.stopping) {
        await leadership.resign().catch(() => undefined);
        break;
      }
      try {
        await this.becomeLeader(leadership);
      } catch (err) {
        this.log.error({ err: describeError(err) }, "could not take over as leader; resigning and campaigning again");
        this.becomeStandby(unavailable(`this replica could not take over: ${describeError(err)}`));
        await leadership.resign().catch(() => undefined);
        await sleep(1000);
        continue;
      }
      await leadership.lost;
      if (this.leadership === leadership) {
        this.log.warn("leadership lost; this replica is a standby now");
        this.becomeStandby(unavailable("this replica lost its leadership; reconnect: another replica leads within seconds (resume with after_sequence)."));
      }
    }
  }

  private async becomeLeader(leadership: Leadership): Promise<void> {
    const now = Date.now();
    await this.events.load();
    await this.registry.load(now);
    await this.deadman.load();
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
    const record: LeaderRecord = { replica: this.replica, advertise: this.advertise, since: new Date(now).toISOString() };
    await this.store.put(LEADER_KEY, JSON.stringify(record));
    this.leadership = leadership;
    this.leading = true;
    // The deadman sweeps expired leases and fences silent nodes, on the leader only.
    this.deadman.start();
    this.log.info({ replica: this.replica, store: this.store.description, nodes: this.registry.list().length, placements: placements.size, auctions: auctions.size }, "leading");
    for (const resolve of this.leadingWaiters.splice(0)) resolve();
    this.resumeUnfinished();
  }

  private becomeStandby(why: ConnectError | undefined): void {
    this.leading = false;
    this.leadership = undefined;
    this.deadman.stop();
    for (const end of [...this.streamEnders]) end(why);
    this.registry.reset();
    this.events.reset();
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

  /** The sentence a standby answers with. */
  async standbySentence(): Promise<string> {
    let leader: LeaderRecord | undefined;
    try {
      const raw = await this.store.get(LEADER_KEY);
      if (raw !== undefined) leader = JSON.parse(raw) as LeaderRecord;
    } catch {
      leader = undefined;
    }
    if (this.stopping) return `this replica (${this.replica}) is shutting down; retry against another replica, which takes over within seconds.`;
    if (leader && leader.replica !== this.replica) {
      return `this replica (${this.replica}) is a standby; the leader is ${leader.replica}${leader.advertise ? ` at ${leader.advertise}` : ""} (since ${leader.since}): send requests there, or retry here, since a standby takes over within seconds when the leader is gone.`;
    }
    return `this replica (${this.replica}) is a standby and no leader is known yet (an election is under way, or the store ${this.store.description} cannot be reached): retry in a few seconds.`;
  }

  /** SERVING while leading; otherwise the reason (for NodeService.CheckHealth). */
  async health(): Promise<{ leading: boolean; reasons: string[]; uptimeMs: number }> {
    return { leading: this.leading, reasons: this.leading ? [] : [await this.standbySentence()], uptimeMs: Date.now() - this.startMs };
  }

  /** Ends every open event stream and refuses new ones (the first step of shutting down); other calls are still served. */
  endStreams(): void {
    this.streamsClosed = true;
    const why = unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`);
    for (const end of [...this.streamEnders]) end(why);
  }

  /** Stops serving: ends streams, resigns leadership (so another replica takes over at once), closes node connections. The store stays open. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const leadership = this.leadership;
    this.becomeStandby(unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`));
    if (leadership) await leadership.resign().catch((err: unknown) => this.log.warn({ err: describeError(err) }, "resigning leadership failed"));
    this.clients.close();
  }

  /** Runs a request on the leader, turning store failures into UNAVAILABLE sentences. */
  private async guarded<T>(work: () => Promise<T>): Promise<T> {
    if (!this.leading) throw unavailable(await this.standbySentence());
    try {
      return await work();
    } catch (err) {
      throw this.translate(err);
    }
  }

  private translate(err: unknown): ConnectError {
    if (err instanceof ConnectError) return err;
    if (err instanceof NotLeaderError) return unavailable(`this replica lost its leadership while acting (${err.message}); retry: another replica leads within seconds.`);
    if (err instanceof StoreUnavailableError) return unavailable(`the cluster store is unavailable, so nothing was recorded: ${err.message}`);
    this.log.error({ err: describeError(err), stack: (err as Error).stack }, "internal error");
    return internal(`internal error in aether-aggregator: ${describeError(err)}; its log has the details.`);
  }

  private async emit(event: NewEvent): Promise<void> {
    try {
      await this.events.append(event);
    } catch (err) {
      this.log.warn({ err: describeError(err), kind: event.kind }, "could not record a cluster event");
    }
  }

  // ---------------------------------------------------------------- nodes

  async registerNode(req: RegisterNodeRequest): Promise<{ node: Node; lease: Lease }> {
    return this.guarded(async () => {
      const previous = this.registry.get(req.nodeId)?.address;
      // A fenced node rejoins as a new member, once the workloads it had then are released on it.
      const rejoin = await this.deadman.beforeRegister(req);
      const node = await this.registry.register(req, rejoin);
      await this.deadman.afterRegister(node, rejoin);
      if (previous !== undefined && previous !== node.address) this.forgetAddress(previous);
      return { node: this.withCount(node), lease: node.lease as Lease };
    });
  }

  /** Closes the connection to an address no registered node uses any more. */
  private forgetAddress(address: string): void {
    if (!this.registry.list().some((n) => n.address === address)) this.clients.forget(address);
  }

  async heartbeat(req: HeartbeatRequest): Promise<{ lease: Lease }> {
    return this.guarded(async () => ({ lease: await this.registry.heartbeat(req) }));
  }

  async deregisterNode(req: DeregisterNodeRequest): Promise<Record<string, never>> {
    return this.guarded(async () => {
      const node = await this.registry.deregister(req);
      if (!req.rePlace) this.forgetAddress(node.address);
      if (req.rePlace) {
        for (const p of this.placements.values()) {
          if (p.node === node.id && ON_NODE.has(p.state)) {
            this.replace(p, node).catch((err: unknown) => this.log.warn({ workload: p.workloadId, err: describeError(err) }, "re-placement failed"));
          }
        }
      }
      return {};
    });
  }

  async listNodes(req: ListNodesRequest): Promise<{ nodes: Node[]; nextPageToken: string }> {
    return this.guarded(async () => {
      const terms = labelFilter(req.filter);
      const counts = this.placementCounts();
      const all = this.registry
        .list()
        .filter((n) => (req.state === 0 || n.state === req.state) && matchesFilter(n.labels, terms))
        .map((n) => this.withCount(n, counts));
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { nodes: page, nextPageToken };
    });
  }

  private withCount(node: Node, counts = this.placementCounts()): Node {
    const copy = clone(NodeSchema, node);
    copy.placementCount = counts.get(node.id) ?? 0;
    return copy;
  }

  /** Live placements (PROVISIONING or PLACED) per node. */
  private placementCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const p of this.placements.values()) if (p.node !== "" && ON_NODE.has(p.state)) counts.set(p.node, (counts.get(p.node) ?? 0) + 1);
    return counts;
  }

  // ---------------------------------------------------------------- deploy

  async deploy(req: DeployRequest): Promise<DeployResponse> {
    return this.guarded(async () => {
      const spec = normalizeSpec(req.spec);
      const windowMs = durationMs("bid_timeout", req.bidTimeout, this.windowMs);
      if (windowMs < 1 || windowMs > MAX_WINDOW_MS) {
        throw invalidArgument(`bid_timeout ${formatMs(windowMs)} is out of range: give 1 ms to 60 s (unset: this aggregator's window, ${formatMs(this.windowMs)}).`);
      }
      const rid = checkRequestId(req.requestId);
      const requestKey = rid === "" ? undefined : `${spec.tenant}/${encodeURIComponent(rid)}`;
      if (requestKey !== undefined) {
        const pending = this.inflightRequests.get(requestKey);
        if (pending) return pending;
        const prior = this.placements.get(this.requests.get(requestKey) ?? "");
        if (prior && prior.state !== PlacementState.FAILED) return this.responseFor(prior);
      }
      const nameKey = `${spec.tenant}/${spec.name}`;
      const holder = this.liveByName(spec.tenant, spec.name);
      if (holder || this.reservedNames.has(nameKey)) {
        throw alreadyExists(
          `workload name ${spec.name} is already used in tenant ${spec.tenant} by a live placement${holder ? ` (workload ${holder.workloadId} on node ${holder.node || "-"})` : " being deployed right now"}; release it first, or choose another name.`,
        );
      }
      this.reservedNames.add(nameKey);
      const workloadId = randomUUID();
      setIdentity(spec, workloadId);
      const placement = create(WorkloadPlacementSchema, {
        workloadId,
        name: spec.name,
        tenant: spec.tenant,
        labels: spec.labels,
        createTime: timestamp(preciseNow()),
        state: PlacementState.BIDDING,
        spec,
      });
      const work = this.track(workloadId, () => this.runAuction({ spec, windowMs, trigger: AuctionTrigger.DEPLOY, placement, requestKey }));
      if (requestKey !== undefined) this.inflightRequests.set(requestKey, work);
      try {
        return await work;
      } finally {
        this.reservedNames.delete(nameKey);
        if (requestKey !== undefined && this.inflightRequests.get(requestKey) === work) this.inflightRequests.delete(requestKey);
      }
    });
  }

  private async track<T>(workloadId: string, work: () => Promise<T>): Promise<T> {
    this.inflightWorkloads.add(workloadId);
    try {
      return await work();
    } finally {
      this.inflightWorkloads.delete(workloadId);
    }
  }

  private liveByName(tenant: string, name: string): WorkloadPlacement | undefined {
    for (const p of this.placements.values()) if (p.tenant === tenant && p.name === name && LIVE_PLACEMENT.has(p.state)) return p;
    return undefined;
  }

  private responseFor(placement: WorkloadPlacement): DeployResponse {
    const auction = this.auctions.get(placement.auctionId);
    return create(DeployResponseSchema, { placement: clone(WorkloadPlacementSchema, placement), auction: auction && clone(AuctionRecordSchema, auction) });
  }

  /** Writes an auction record, a placement and the request key together; memory follows once they are durable. */
  private async save(record: AuctionRecord | undefined, placement: WorkloadPlacement | undefined, requestKey?: string): Promise<void> {
    const r = record && clone(AuctionRecordSchema, record);
    const p = placement && clone(WorkloadPlacementSchema, placement);
    await Promise.all([
      r && this.store.put(`${AUCTIONS_PREFIX}${r.id}`, toJsonString(AuctionRecordSchema, r)),
      p && this.store.put(`${PLACEMENTS_PREFIX}${p.workloadId}`, toJsonString(WorkloadPlacementSchema, p)),
      p && requestKey !== undefined && this.requests.get(requestKey) !== p.workloadId ? this.store.put(`${REQUESTS_PREFIX}${requestKey}`, p.workloadId) : undefined,
    ]);
    if (r) this.auctions.set(r.id, r);
    if (p) this.placements.set(p.workloadId, p);
    if (p && requestKey !== undefined) this.requests.set(requestKey, p.workloadId);
  }

  /** One auction: bids, decision, provisioning (with fallback), records and events. */
  private async runAuction(job: AuctionJob): Promise<DeployResponse> {
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

    // Who is asked: READY nodes the spec does not rule out.
    const excluded: Array<{ node: string; reason: string }> = [];
    const targets: BidTarget[] = [];
    const selector = Object.entries(spec.requirements?.nodeSelector ?? {});
    const specExcludes = new Set(spec.requirements?.excludeNodes ?? []);
    const moveOff = new Set(job.exclude ?? []);
    for (const node of this.registry.list()) {
      if (!this.registry.isLive(node, Date.now())) excluded.push({ node: node.id, reason: this.registry.whyNotLive(node) });
      else if (moveOff.has(node.id)) excluded.push({ node: node.id, reason: "the workload is being moved off it" });
      else if (specExcludes.has(node.id)) excluded.push({ node: node.id, reason: "excluded by the spec's exclude_nodes" });
      else {
        const mismatch = selector.filter(([k, v]) => node.labels[k] !== v);
        if (mismatch.length > 0) {
          const has = mismatch.map(([k]) => `${k}=${node.labels[k] ?? "(unset)"}`).join(", ");
          excluded.push({ node: node.id, reason: `its labels do not match node_selector (wants ${mismatch.map(([k, v]) => `${k}=${v}`).join(", ")}; has ${has})` });
        } else {
          targets.push({ node: node.id, client: this.clients.bid(node.address) });
        }
      }
    }

    const bidding = await collectBids(targets, create(RequestBidRequestSchema, { auctionId, spec }), job.windowMs);
    record.bids = bidding.bids;
    record.biddingDuration = duration(bidding.biddingMs);
    for (const bid of bidding.bids) {
      if (bid.outcome === BidOutcome.ERROR || bid.outcome === BidOutcome.TIMED_OUT) {
        this.log.warn({ auction: auctionId, node: bid.node, outcome: BidOutcome[bid.outcome], error: bid.error }, "bid ignored");
      }
    }

    const tDecide = performance.now();
    const counts = this.placementCounts();
    const contenders: Contender[] = bidding.bids
      .filter((b) => b.outcome === BidOutcome.BID)
      .map((b) => {
        const thermal = this.registry.get(b.node)?.thermal;
        return { node: b.node, score: b.score, placements: counts.get(b.node) ?? 0, cpuCelsius: thermal?.cpuCelsius, inletCelsius: thermal?.inletCelsius, diskWear: diskWearOf(b.breakdown) };
      });
    const decision = decide(contenders);
    record.decisionDuration = duration(performance.now() - tDecide);
    record.tieBreakReason = decision.tieBreakReason;

    if (decision.order.length === 0) {
      const reasons = [...bidding.bids.map((b) => ({ node: b.node, reason: whyNoBid(b) })), ...excluded].sort((a, b) => compareStrings(a.node, b.node));
      const sentence =
        reasons.length === 0
          ? `no node can host workload ${spec.name}: no node is registered with this aggregator; start aetherd with the aggregator configured on at least one host.`
          : `no node can host workload ${spec.name}: ${reasons.map((r) => `${r.node}: ${r.reason.replace(/\.$/, "")}`).join("; ")}.`;
      return this.fail(record, placement, job, sentence, t0, resourceExhausted);
    }
    const first = decision.order[0] as Contender;
    void this.emit({
      kind: ClusterEventKind.AUCTION_DECIDED,
      node: first.node,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId,
      message: `auction for ${spec.name}: ${first.node} won with ${first.score} of ${record.bids.length} node(s) asked${decision.tieBreakReason ? ` (${decision.tieBreakReason})` : ""}.`,
      attributes: { score: String(first.score), bids: String(contenders.length), ...(decision.decidedBy ? { tie_break: decision.decidedBy } : {}) },
    });

    // Provisioning: the winner, then the next in order while they fail.
    const tProvision = performance.now();
    const failures: string[] = [];
    let provisioned: { node: string; score: number; resourceId: string } | undefined;
    const previousNode = placement.node;
    for (const contender of decision.order) {
      record.state = AuctionState.PROVISIONING;
      record.winner = contender.node;
      record.winningScore = contender.score;
      placement.state = PlacementState.PROVISIONING;
      placement.node = contender.node;
      placement.stateReason = "";
      placement.resourceId = "";
      await this.save(record, placement, job.requestKey);
      const node = this.registry.get(contender.node);
      try {
        if (!node) throw failedPrecondition(`node ${contender.node} was deregistered during the auction`);
        const response = await this.clients.bid(node.address).executeProvisioning({ auctionId, spec, requestId: spec.workloadId }, { timeoutMs: this.provisionTimeoutMs });
        provisioned = { node: contender.node, score: contender.score, resourceId: resourceIdOf(response) };
        break;
      } catch (err) {
        const why = describeError(err);
        failures.push(`${contender.node} failed to provision it (${why.replace(/\.$/, "")})`);
        const bid = record.bids.find((b) => b.node === contender.node);
        if (bid) bid.error = `won, but provisioning failed: ${why}`;
        this.log.warn({ auction: auctionId, node: contender.node, err: why }, "provisioning failed; trying the next bidder");
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
    record.stateReason =
      failures.length === 0
        ? `${provisioned.node} won with ${provisioned.score} and provisioned the workload.`
        : `${failures.join("; ")}; ${provisioned.node}, next in order with ${provisioned.score}, provisioned it.`;
    record.endTime = timestamp(Date.now());
    record.totalDuration = duration(performance.now() - t0);
    placement.state = PlacementState.PLACED;
    placement.stateReason = "";
    placement.node = provisioned.node;
    placement.resourceId = provisioned.resourceId;
    placement.placeTime = timestamp(Date.now());
    try {
      await this.save(record, placement, job.requestKey);
    } catch (err) {
      // Provisioned, but it cannot be recorded: undo it rather than leave a workload nobody knows of.
      const node = this.registry.get(provisioned.node);
      if (node) this.releaseQuietly(node, spec);
      throw err;
    }
    const replaced = job.trigger === AuctionTrigger.REPLACEMENT;
    const fenced = job.fenced;
    void this.emit({
      kind: replaced ? ClusterEventKind.WORKLOAD_REPLACED : ClusterEventKind.WORKLOAD_PLACED,
      node: provisioned.node,
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      auctionId,
      message: replaced
        ? `workload ${spec.name} moved from ${previousNode || "-"} to ${provisioned.node}.`
        : `workload ${spec.name} placed on ${provisioned.node}${placement.resourceId ? ` as ${placement.resourceId}` : ""}.`,
      attributes: {
        score: String(provisioned.score),
        ...(replaced ? { from_node: previousNode, to_node: provisioned.node } : {}),
        ...(fenced ? { fenced_node: fenced.node, last_heartbeat: new Date(fenced.lastHeartbeatMs).toISOString(), since_last_heartbeat_ms: String(Date.now() - fenced.lastHeartbeatMs) } : {}),
      },
    });
    this.log.info(
      { auction: auctionId, workload: spec.workloadId, name: spec.name, node: provisioned.node, score: provisioned.score, bids: record.bids.length, ms: Number((performance.now() - t0).toFixed(2)) },
      "workload placed",
    );
    return create(DeployResponseSchema, { placement: clone(WorkloadPlacementSchema, placement), auction: clone(AuctionRecordSchema, record) });
  }

  private async fail(record: AuctionRecord, placement: WorkloadPlacement, job: AuctionJob, sentence: string, t0: number, makeError: (s: string) => ConnectError): Promise<never> {
    record.state = AuctionState.FAILED;
    record.stateReason = sentence;
    record.endTime = timestamp(Date.now());
    record.totalDuration = duration(performance.now() - t0);
    placement.state = PlacementState.FAILED;
    placement.stateReason = sentence;
    placement.node = "";
    placement.resourceId = "";
    await this.save(record, placement, job.requestKey);
    const { spec } = job;
    void this.emit({ kind: ClusterEventKind.AUCTION_FAILED, workloadId: spec.workloadId, tenant: spec.tenant, auctionId: record.id, message: sentence });
    void this.emit({ kind: ClusterEventKind.WORKLOAD_FAILED, workloadId: spec.workloadId, tenant: spec.tenant, auctionId: record.id, message: `workload ${spec.name} could not be placed: ${sentence}` });
    this.log.warn({ auction: record.id, workload: spec.workloadId, name: spec.name, reason: sentence }, "auction failed");
    throw makeError(`${sentence.replace(/\.$/, "")} (auction ${record.id}).`);
  }

  /** Asks a node to drop a workload it may have half-provisioned; failures are only logged. */
  private releaseQuietly(node: Node, spec: WorkloadSpec): void {
    this.clients
      .bid(node.address)
      .releaseWorkload({ workloadId: spec.workloadId, tenant: spec.tenant, gracePeriod: duration(5000) }, { timeoutMs: 10_000 })
      .catch((err: unknown) => this.log.warn({ node: node.id, workload: spec.workloadId, err: describeError(err) }, "could not release a workload after its provisioning failed"));
  }

  /** Moves a workload off a node that left (DeregisterNode with re_place). */
  private async replace(current: WorkloadPlacement, from: Node): Promise<void> {
    if (this.inflightWorkloads.has(current.workloadId)) return;
    await this.track(current.workloadId, async () => {
      const placement = clone(WorkloadPlacementSchema, current);
      placement.state = PlacementState.REPLACING;
      placement.stateReason = `node ${from.id} was deregistered with re_place; placing the workload elsewhere.`;
      await this.save(undefined, placement);
      await this.clients
        .bid(from.address)
        .releaseWorkload({ workloadId: placement.workloadId, tenant: placement.tenant }, { timeoutMs: DEFAULT_GRACE_MS + 5000 })
        .catch((err: unknown) => this.log.warn({ node: from.id, workload: placement.workloadId, err: describeError(err) }, "could not release the workload on the node it leaves"));
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      await this.runAuction({ spec, windowMs: this.windowMs, trigger: AuctionTrigger.REPLACEMENT, placement, requestKey: undefined, exclude: [from.id] }).catch(() => undefined);
    });
  }

  /**
   * Moves a workload off a node whose power off was confirmed: REPLACING (durable, so a replica that
   * takes over finishes it), then an auction among the other nodes. Nothing is asked of the fenced node.
   */
  private async replaceFenced(current: WorkloadPlacement, from: Node, lastHeartbeatMs: number): Promise<void> {
    await this.whileOnFencedNode(current, from, async (placement) => {
      placement.state = PlacementState.REPLACING;
      placement.stateReason = `node ${from.id} (${from.name}) was fenced (power off confirmed through its BMC); placing the workload elsewhere.`;
      await this.save(undefined, placement);
      const spec = placement.spec ?? create(WorkloadSpecSchema);
      await this.runAuction({
        spec,
        windowMs: this.windowMs,
        trigger: AuctionTrigger.REPLACEMENT,
        placement,
        requestKey: undefined,
        exclude: [from.id],
        fenced: { node: from.id, lastHeartbeatMs },
      }).catch(() => undefined);
    });
  }

  /** A workload of a fenced node that is not started elsewhere: FAILED, with the reason. */
  private async abandonFenced(current: WorkloadPlacement, from: Node, reason: string): Promise<void> {
    await this.whileOnFencedNode(current, from, async (placement) => {
      placement.state = PlacementState.FAILED;
      placement.stateReason = reason;
      placement.node = "";
      placement.resourceId = "";
      await this.save(undefined, placement);
      void this.emit({ kind: ClusterEventKind.WORKLOAD_FAILED, node: from.id, workloadId: placement.workloadId, tenant: placement.tenant, message: `workload ${placement.name}: ${reason}`, attributes: { fenced_node: from.id } });
    });
  }

  /**
   * Runs `change` on a copy of the workload's placement if it is still on the fenced node `from`:
   * on the leader only, one change per workload at a time (the same lock as deploys and releases).
   */
  private async whileOnFencedNode(current: WorkloadPlacement, from: Node, change: (placement: WorkloadPlacement) => Promise<void>): Promise<void> {
    if (this.inflightWorkloads.has(current.workloadId) || !this.leading) return;
    await this.track(current.workloadId, async () => {
      const latest = this.placements.get(current.workloadId);
      if (!latest || latest.node !== from.id || !ON_NODE.has(latest.state)) return;
      await change(clone(WorkloadPlacementSchema, latest));
    });
  }

  /** After a takeover: finish every placement the previous leader left half done. */
  private resumeUnfinished(): void {
    const byWorkload = new Map([...this.requests].map(([key, wid]) => [wid, key]));
    for (const p of [...this.placements.values()]) {
      if (p.state !== PlacementState.PROVISIONING && p.state !== PlacementState.BIDDING && p.state !== PlacementState.REPLACING) continue;
      if (this.inflightWorkloads.has(p.workloadId)) continue;
      const requestKey = byWorkload.get(p.workloadId);
      const work = this.track(p.workloadId, () => this.resume(p, requestKey));
      if (requestKey !== undefined) this.inflightRequests.set(requestKey, work);
      work
        .catch((err: unknown) => this.log.warn({ workload: p.workloadId, err: describeError(err) }, "could not finish a placement left unfinished"))
        .finally(() => {
          if (requestKey !== undefined && this.inflightRequests.get(requestKey) === work) this.inflightRequests.delete(requestKey);
        });
    }
  }

  private async resume(current: WorkloadPlacement, requestKey: string | undefined): Promise<DeployResponse> {
    const placement = clone(WorkloadPlacementSchema, current);
    const spec = placement.spec ?? create(WorkloadSpecSchema);
    const previous = this.auctions.get(placement.auctionId);
    const node = placement.node ? this.registry.get(placement.node) : undefined;
    this.log.info({ workload: placement.workloadId, state: PlacementState[placement.state], node: placement.node }, "finishing a placement the previous leader left unfinished");
    if (placement.state === PlacementState.PROVISIONING && node && this.registry.isLive(node, Date.now())) {
      try {
        // Same request_id: a node that already provisioned it returns what it made.
        const response = await this.clients.bid(node.address).executeProvisioning({ auctionId: placement.auctionId, spec, requestId: placement.workloadId }, { timeoutMs: this.provisionTimeoutMs });
        placement.state = PlacementState.PLACED;
        placement.resourceId = resourceIdOf(response);
        placement.placeTime = timestamp(Date.now());
        placement.stateReason = "";
        if (previous) {
          previous.state = AuctionState.SUCCEEDED;
          previous.stateReason = `${node.id} provisioned the workload (confirmed by the replica that took over, ${this.replica}).`;
          previous.endTime = timestamp(Date.now());
        }
        await this.save(previous, placement, requestKey);
        void this.emit({ kind: ClusterEventKind.WORKLOAD_PLACED, node: node.id, workloadId: placement.workloadId, tenant: placement.tenant, auctionId: placement.auctionId, message: `workload ${placement.name} placed on ${node.id} (finished after a change of leader).` });
        return this.responseFor(placement);
      } catch (err) {
        this.log.warn({ workload: placement.workloadId, node: node.id, err: describeError(err) }, "the node did not confirm the provisioning; holding a new auction");
        this.releaseQuietly(node, spec);
      }
    }
    if (previous && previous.state !== AuctionState.SUCCEEDED && previous.state !== AuctionState.FAILED) {
      previous.state = AuctionState.FAILED;
      previous.stateReason = `the leader changed before the workload was provisioned; ${this.replica} holds a new auction for it.`;
      previous.endTime = timestamp(Date.now());
      await this.save(previous, undefined);
    }
    const replacing = placement.state === PlacementState.REPLACING;
    const trigger = replacing ? AuctionTrigger.REPLACEMENT : AuctionTrigger.DEPLOY;
    const from = replacing && placement.node ? this.registry.get(placement.node) : undefined;
    return this.runAuction({
      spec,
      windowMs: this.windowMs,
      trigger,
      placement,
      requestKey,
      exclude: replacing && placement.node ? [placement.node] : [],
      ...(from?.state === NodeState.FENCED && { fenced: { node: from.id, lastHeartbeatMs: msOf(from.heartbeatTime) } }),
    });
  }

  // ---------------------------------------------------------------- placements

  private resolvePlacement(ref: string, tenant: string): WorkloadPlacement {
    // By id too only within the tenant: an id is no key to another tenant's workload.
    const byId = this.placements.get(ref);
    if (byId && byId.tenant === tenant) return byId;
    const named = [...this.placements.values()].filter((p) => p.tenant === tenant && p.name === ref).sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
    const found = named.find((p) => LIVE_PLACEMENT.has(p.state)) ?? named[0];
    if (!found) throw notFound(`no workload ${ref} in tenant ${tenant}: aether cluster placements lists them.`);
    return found;
  }

  async getPlacement(req: GetPlacementRequest): Promise<{ placement: WorkloadPlacement }> {
    return this.guarded(async () => {
      const found = this.resolvePlacement(reference("workload", req.workload), checkTenant(req.tenant));
      return { placement: clone(WorkloadPlacementSchema, found) };
    });
  }

  async listPlacements(req: ListPlacementsRequest): Promise<{ placements: WorkloadPlacement[]; nextPageToken: string }> {
    return this.guarded(async () => {
      const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
      const terms = labelFilter(req.filter);
      if (req.node !== "") checkNodeId("node", req.node);
      const all = [...this.placements.values()]
        .filter((p) => (tenant === undefined || p.tenant === tenant) && (req.node === "" || p.node === req.node) && (req.state === 0 || p.state === req.state) && matchesFilter(p.labels, terms))
        .sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { placements: page.map((p) => clone(WorkloadPlacementSchema, p)), nextPageToken };
    });
  }

  async releasePlacement(req: ReleasePlacementRequest): Promise<{ placement: WorkloadPlacement }> {
    return this.guarded(async () => {
      const tenant = checkTenant(req.tenant);
      const graceMs = durationMs("grace_period", req.gracePeriod, DEFAULT_GRACE_MS);
      const found = this.resolvePlacement(reference("workload", req.workload), tenant);
      if (found.state === PlacementState.RELEASED) return { placement: clone(WorkloadPlacementSchema, found) };
      if (this.inflightWorkloads.has(found.workloadId)) {
        throw failedPrecondition(`workload ${found.name} is being placed right now (${stateName(PlacementState, found.state)}); release it once that finishes.`);
      }
      return this.track(found.workloadId, async () => {
        const placement = clone(WorkloadPlacementSchema, found);
        let reason: string;
        const node = placement.node ? this.registry.get(placement.node) : undefined;
        if (placement.node === "" || !ON_NODE.has(placement.state)) {
          reason = `released; it was ${stateName(PlacementState, placement.state)} and on no node.`;
        } else if (!node) {
          reason = `released; its node ${placement.node} is no longer registered, so it was not asked to stop the workload.`;
        } else {
          try {
            const { released } = await this.clients
              .bid(node.address)
              .releaseWorkload({ workloadId: placement.workloadId, tenant: placement.tenant, gracePeriod: duration(graceMs) }, { timeoutMs: graceMs + 15_000 });
            reason = released ? `released from node ${node.id}.` : `released; node ${node.id} no longer had it.`;
          } catch (err) {
            throw unavailable(`could not release workload ${placement.name} on node ${node.id} (${node.address}): ${describeError(err).replace(/\.$/, "")}; the placement was not changed: try again.`);
          }
        }
        placement.state = PlacementState.RELEASED;
        placement.stateReason = reason;
        await this.save(undefined, placement);
        void this.emit({ kind: ClusterEventKind.WORKLOAD_RELEASED, node: found.node, workloadId: placement.workloadId, tenant: placement.tenant, message: `workload ${placement.name} ${reason}` });
        return { placement: clone(WorkloadPlacementSchema, placement) };
      });
    });
  }

  // ---------------------------------------------------------------- auctions

  async getAuction(req: GetAuctionRequest): Promise<{ auction: AuctionRecord }> {
    return this.guarded(async () => {
      const id = reference("auction", req.auction);
      const found = this.auctions.get(id);
      if (!found) throw notFound(`auction ${id} does not exist: aether cluster auctions lists them.`);
      return { auction: clone(AuctionRecordSchema, found) };
    });
  }

  async listAuctions(req: ListAuctionsRequest): Promise<{ auctions: AuctionRecord[]; nextPageToken: string }> {
    return this.guarded(async () => {
      const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
      const terms = labelFilter(req.filter);
      const all = [...this.auctions.values()]
        .filter((a) => (tenant === undefined || a.tenant === tenant) && (req.workloadId === "" || a.workloadId === req.workloadId) && (req.state === 0 || a.state === req.state) && matchesFilter(a.labels, terms))
        .sort(newestFirst<AuctionRecord>((a) => a.id));
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { auctions: page.map((a) => clone(AuctionRecordSchema, a)), nextPageToken };
    });
  }

  // ---------------------------------------------------------------- events

  /**
   * The retained events from the requested start, then (with follow) new ones as they happen, until
   * signal aborts (the client cancelled), leadership is lost or the aggregator stops.
   */
  async *streamClusterEvents(req: StreamClusterEventsRequest, signal?: AbortSignal): AsyncGenerator<ClusterEvent> {
    if (!this.leading) throw unavailable(await this.standbySentence());
    if (this.streamsClosed) throw unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`);
    const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
    const kinds = new Set(req.kinds);
    const wanted = (e: ClusterEvent) => (kinds.size === 0 || kinds.has(e.kind)) && (tenant === undefined || e.tenant === "" || e.tenant === tenant);

    const queue: ClusterEvent[] = [];
    let wake: () => void = () => {};
    let ended: { why: ConnectError | undefined } | undefined;
    const unsubscribe = req.follow
      ? this.events.subscribe((e) => {
          queue.push(e);
          wake();
        })
      : () => false;
    const end = (why: ConnectError | undefined) => {
      ended = { why };
      wake();
    };
    this.streamEnders.add(end);
    const onAbort = () => end(undefined);
    signal?.addEventListener("abort", onAbort);
    try {
      const history = this.events.history();
      let backlog: readonly ClusterEvent[];
      switch (req.start.case) {
        case "tailEvents":
          backlog = req.start.value === 0 ? [] : history.slice(-req.start.value);
          break;
        case "afterSequence": {
          const after = req.start.value;
          backlog = history.filter((e) => e.sequence > after);
          break;
        }
        default:
          backlog = history;
      }
      let last = history.at(-1)?.sequence ?? 0n;
      for (const e of backlog) if (wanted(e)) yield e;
      if (!req.follow) return;
      for (;;) {
        while (queue.length > 0) {
          const e = queue.shift() as ClusterEvent;
          if (e.sequence <= last) continue;
          last = e.sequence;
          if (wanted(e)) yield e;
        }
        if (ended !== undefined) break;
        if (signal?.aborted) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = () => {};
      }
      const why = (ended as { why: ConnectError | undefined } | undefined)?.why;
      if (why !== undefined && !signal?.aborted) throw why;
    } finally {
      unsubscribe();
      this.streamEnders.delete(end);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

/** Checks a WorkloadSpec from a DeployRequest and returns a normalized copy (name, tenant filled in). */
export function normalizeSpec(input: WorkloadSpec | undefined): WorkloadSpec {
  if (input === undefined) throw invalidArgument("spec is missing: give the workload's name and what to run (executable, cell or vm).");
  const spec = clone(WorkloadSpecSchema, input);
  spec.workloadId = "";
  if (spec.kind.case === undefined) throw invalidArgument("spec has nothing to run: set spec.executable, spec.cell or spec.vm.");
  if (spec.name === "") spec.name = spec.kind.value.name;
  if (spec.name === "") throw invalidArgument("spec.name is empty: give the workload a name (a DNS label such as web-1).");
  dnsLabel("spec.name", spec.name);
  spec.tenant = checkTenant(spec.tenant);
  checkLabels(spec.labels);
  const requirements = spec.requirements;
  if (requirements) {
    checkLabels(requirements.nodeSelector);
    for (const id of requirements.excludeNodes) checkNodeId("requirements.exclude_nodes", id);
  }
  if (spec.kind.case === "executable") {
    const argv0 = spec.kind.value.argv[0];
    if (argv0 === undefined) throw invalidArgument("spec.executable.argv is empty: give the program (an absolute path) and its arguments.");
    if (!argv0.startsWith("/")) throw invalidArgument(`spec.executable.argv[0] ${JSON.stringify(argv0.slice(0, 80))} is not an absolute path: nodes run exactly the program named, e.g. /bin/sleep.`);
  }
  return spec;
}

/** The spec as nodes see it: the workload's id, and the kind's name/tenant/request_id from the workload. */
function setIdentity(spec: WorkloadSpec, workloadId: string): void {
  spec.workloadId = workloadId;
  if (spec.kind.case !== undefined) {
    spec.kind.value.name = spec.name;
    spec.kind.value.tenant = spec.tenant;
    spec.kind.value.requestId = workloadId;
  }
}

function resourceIdOf(response: ExecuteProvisioningResponse): string {
  return response.resource.case === undefined ? "" : response.resource.value.id;
}
