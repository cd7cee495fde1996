// The aggregator: the node registry, the auctions that place workloads, the placements and auction
// records, and the cluster event log, on a ClusterStore. One replica leads (it won the store's
// election; at once with the embedded store) and is the only one that acts; the others answer
// UNAVAILABLE naming the leader until they take over.
//
// This file is the composition: it makes the rooms and wires them together, and runs every request
// on the leader (guarded()); it is past 400 lines because each RPC's guarded entry point is here, a
// few lines each, and nothing else. What each room does:
//
//   store/        the ClusterStore interface; the embedded store and etcd (replicas, one leader)
//   leadership/   the election: take over (each room reads its state), lead, stand down
//   nodes/        the node registry (leases, states), the clients that call each node, the node RPCs
//   auction/      bids and decide(); a Deploy and the auction run (provisioning, the next bidder on failure)
//   placements/   the placement book (placements, auction records, request ids), release, queries,
//                 resuming what a previous leader left unfinished, moving workloads off a node
//   fencing/      the deadman switch (SUSPECT → FENCING → FENCED through a BMC) and the BMC registry
//   maintenance/  cordon, drain (moving workloads off a node within a disruption budget), uncordon,
//                 and shutdown (drain, then power off through the node's BMC)
//   events/       the cluster event log and its streams
//   backup/       the cluster's state committed to git on every change (batched), listed, restored
//   alerts/       thresholds held against the nodes' telemetry and lease ages; active alerts
//   replicas/     where the replicas of VMs' volumes are (heartbeats say): a fenced node's VM starts there
//   deployments/  deployments (a template, N instances, a revision) and the reconcile loop that keeps them
//   service/      the RPC handlers and the mapping of failures to RPC codes
//
// Because a placement is durable before any node is asked to provision, a replica that takes over
// finds every unfinished placement and finishes it (same node, same request_id) instead of losing or
// duplicating it.
import type { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import type {
  CreateDeploymentRequest,
  DeleteDeploymentRequest,
  Deployment,
  GetDeploymentRequest,
  ListDeploymentsRequest,
  ScaleDeploymentRequest,
  UpdateDeploymentRequest,
  WatchDeploymentRequest,
  GetRolloutRequest,
  ListRolloutsRequest,
  Rollout,
  Alert,
  AlertThreshold,
  AuctionRecord,
  ClusterEvent,
  CordonNodeRequest,
  DeployRequest,
  DrainNodeRequest,
  DrainProgress,
  DeployResponse,
  DeregisterNodeRequest,
  GetAuctionRequest,
  GetPlacementRequest,
  HeartbeatRequest,
  Lease,
  ListAuctionsRequest,
  ListNodesRequest,
  ListPlacementsRequest,
  Node,
  RegisterNodeRequest,
  ReleasePlacementRequest,
  ReportMigrationRequest,
  ShutdownNodeRequest,
  StreamClusterEventsRequest,
  UncordonNodeRequest,
  WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, duration, failedPrecondition, silentLogger, unavailable } from "@aether/server";
import type { Context } from "./context.js";
import type { ClusterStore } from "./store/store.js";
import { Election } from "./leadership/election.js";
import { EventLog, type NewEvent } from "./events/events.js";
import { EventStreams } from "./events/stream.js";
import { NodeRegistry } from "./nodes/registry.js";
import { NodeClients, type NodeTls } from "./nodes/node-clients.js";
import { Membership, type NodeCaller } from "./nodes/membership.js";
import { AuctionRunner } from "./auction/run.js";
import { deploy, MAX_WINDOW_MS } from "./auction/deploy.js";
import { PlacementBook } from "./placements/book.js";
import { releasePlacement } from "./placements/release.js";
import { getAuction, getPlacement, listAuctions, listPlacements } from "./placements/queries.js";
import { Replacement } from "./placements/replacement.js";
import { MigrationReports } from "./placements/migrated.js";
import { Resumption } from "./placements/resume.js";
import { Deadman } from "./fencing/deadman.js";
import { BmcRegistry, RedfishFencer, type Fencer } from "./fencing/fencing.js";
import { toConnectError } from "./service/errors.js";
import { Maintenance } from "./maintenance/drain.js";
import { Moves } from "./maintenance/move.js";
import { PowerOff } from "./maintenance/power.js";
import { Backups, type BackupSettings } from "./backup/backup.js";
import { ObservedStore } from "./backup/observed-store.js";
import type { ObservedAggregator } from "./metrics/metrics.js";
import type { HealthCheck } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { clusterHealth } from "./service/health.js";
import { Alerts, checkTelemetry } from "./alerts/alerts.js";
import { DeploymentBook } from "./deployments/book.js";
import { Deployments, type DeploymentView } from "./deployments/deployments.js";
import { Reconciler } from "./deployments/reconcile.js";
import { withStatus } from "./deployments/status.js";
import { RolloutBook } from "./rollouts/book.js";
import { RolloutController } from "./rollouts/controller.js";
import { HaproxyRouter } from "./rollouts/haproxy-router.js";
import { revisionTargets } from "./rollouts/plan.js";
import { Rollouts, type RolloutAction } from "./rollouts/rollouts.js";
import { KeyedMutex } from "./util.js";
import { ReplicaIndex, type ReplicaHolders } from "./replicas/replica-index.js";

export const DEFAULT_AUCTION_WINDOW_MS = 250;
export const DEFAULT_LEASE_TTL_MS = 15_000;
export const DEFAULT_PROVISION_TIMEOUT_MS = 60_000;
export const DEFAULT_EVENT_RETENTION = 10_000;

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
  /** The trust domain nodes' certificates must be in when the aggregator calls them over https; unset: any. */
  nodeTrustDomain?: string;
  /**
   * Switches silent nodes off through their BMCs (fencing/deadman.ts). Unset: no BMC is registered,
   * so a silent node stays SUSPECT with an alert and its workloads stay where they are.
   */
  fencer?: Fencer;
  /** Longest time from a fence request to power state "Off" (60 s). */
  fenceTimeoutMs?: number;
  /** Time between power state reads while fencing (500 ms). */
  fencePollIntervalMs?: number;
  /** First wait before fencing again after an unconfirmed fence (10 s; doubles up to 5 min). */
  fenceRetryMs?: number;
  /** Backs the cluster's state up to a git repository (backup/); unset: no backups. */
  backup?: BackupSettings;
  /** Alert thresholds by name ([alerts] in the configuration) over the defaults (alerts/thresholds.ts). */
  alertThresholds?: Record<string, number>;
  /** How often the deployments' reconcile loop asks the nodes which instances ended (1 s). */
  reconcileIntervalMs?: number;
  log?: Logger;
}

export class Aggregator {
  readonly store: ClusterStore;
  readonly replica: string;
  readonly windowMs: number;
  readonly leaseTtlMs: number;
  readonly provisionTimeoutMs: number;
  private readonly log: Logger;
  private readonly events: EventLog;
  private readonly registry: NodeRegistry;
  private readonly clients: NodeClients;
  private readonly book: PlacementBook;
  private readonly election: Election;
  private readonly streams: EventStreams;
  private readonly runner: AuctionRunner;
  private readonly replacement: Replacement;
  private readonly resumption: Resumption;
  private readonly deadman: Deadman;
  private readonly membership: Membership;
  private readonly maintenance: Maintenance;
  private readonly backups: Backups | undefined;
  private readonly alerts: Alerts;
  private readonly deploymentBook: DeploymentBook;
  private readonly reconciler: Reconciler;
  private readonly deployments: Deployments;
  private readonly rolloutBook: RolloutBook;
  private readonly rollouts: Rollouts;
  private readonly rolloutController: RolloutController;
  private readonly ctx: Context;
  private readonly fencer: Fencer;
  private readonly startMs = Date.now();
  /** Where the replicas of VMs' volumes are, as the nodes' heartbeats say. */
  private readonly replicas = new ReplicaIndex();

  constructor(options: AggregatorOptions) {
    // With backups, every write the rooms make is reported to the backup room, which commits a batch.
    this.store = options.backup ? new ObservedStore(options.store, (key) => this.backups?.changed(key)) : options.store;
    this.replica = options.replica;
    this.windowMs = options.auctionWindowMs ?? DEFAULT_AUCTION_WINDOW_MS;
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.provisionTimeoutMs = options.provisionTimeoutMs ?? DEFAULT_PROVISION_TIMEOUT_MS;
    if (!(this.windowMs >= 1 && this.windowMs <= MAX_WINDOW_MS))
      throw new RangeError(`auction window ${this.windowMs} ms is out of range (1 ms to 60 s)`);
    if (!(this.leaseTtlMs >= 100)) throw new RangeError(`lease TTL ${this.leaseTtlMs} ms is too short (at least 100 ms)`);
    this.log = options.log ?? silentLogger();
    this.events = new EventLog(this.store, options.eventRetention ?? DEFAULT_EVENT_RETENTION, this.log.child({ room: "events" }));
    this.registry = new NodeRegistry(this.store, this.events, this.leaseTtlMs, this.log.child({ room: "registry" }));
    this.clients = new NodeClients({
      ...options.nodeTls,
      ...(options.nodeTrustDomain !== undefined && { trustDomain: options.nodeTrustDomain }),
    });
    this.book = new PlacementBook(this.store, this.log);
    this.election = new Election(this.store, this.replica, options.advertise ?? "", this.log, {
      takeOver: (now) => this.takeOver(now),
      lead: () => this.lead(),
      resume: () => {
        this.resumption.resumeUnfinished();
        void this.maintenance
          .resume()
          .catch((err: unknown) => this.log.warn({ err: describeError(err) }, "could not resume the drains a previous leader left"));
      },
      standDown: (why) => this.standDown(why),
    });
    this.streams = new EventStreams(this.events, this.replica, this.election);
    this.ctx = {
      store: this.store,
      replica: this.replica,
      windowMs: this.windowMs,
      provisionTimeoutMs: this.provisionTimeoutMs,
      log: this.log,
      registry: this.registry,
      clients: this.clients,
      book: this.book,
      leading: () => this.election.isLeader,
      emit: (event) => this.emit(event),
    };
    this.runner = new AuctionRunner(this.ctx);
    this.replacement = new Replacement(this.ctx, this.runner);
    this.resumption = new Resumption(this.ctx, this.runner);
    const fencer =
      options.fencer ??
      new RedfishFencer(new BmcRegistry([]), () => {
        throw new Error("no BMC is registered");
      });
    this.fencer = fencer;
    this.deadman = new Deadman(
      {
        store: this.store,
        registry: this.registry,
        log: this.log.child({ room: "deadman" }),
        emit: async (event) => void (await this.emit(event)),
        movablePlacements: (nodeId) => this.book.movable(nodeId),
        replaceFenced: (placement, node, lastHeartbeatMs, holders) =>
          this.replacement.replaceFenced(placement, node, lastHeartbeatMs, holders),
        replicaHolders: (workloadId, fencedNode) => this.liveReplicaHolders(workloadId, fencedNode),
        abandonFenced: (placement, node, reason) => this.replacement.abandonFenced(placement, node, reason),
        release: async (node, workloadId, tenant, graceMs, timeoutMs) =>
          (await this.clients.bid(node).releaseWorkload({ workloadId, tenant, gracePeriod: duration(graceMs) }, { timeoutMs })).released,
      },
      {
        fencer,
        fenceTimeoutMs: options.fenceTimeoutMs,
        pollIntervalMs: options.fencePollIntervalMs,
        retryMs: options.fenceRetryMs,
        leaseTtlMs: this.leaseTtlMs,
      },
    );
    this.membership = new Membership(this.ctx, this.deadman, this.replacement, new MigrationReports(this.ctx));
    this.deploymentBook = new DeploymentBook(this.store, this.log.child({ room: "deployments" }));
    this.book.saved.add((p) => {
      if (p.deployment === "") return;
      this.reconciler.placementSaved(p);
      this.deploymentBook.changed();
    });
    const deploymentLocks = new KeyedMutex();
    this.reconciler = new Reconciler(this.ctx, this.runner, this.deploymentBook, deploymentLocks, options.reconcileIntervalMs);
    this.rolloutBook = new RolloutBook(this.store, this.log.child({ room: "rollouts" }));
    this.rollouts = new Rollouts(this.ctx, this.deploymentBook, this.rolloutBook, deploymentLocks);
    this.reconciler.setRevisionTargets((d) => revisionTargets(this.rolloutBook, this.book, d));
    this.rolloutController = new RolloutController(
      this.ctx,
      this.deploymentBook,
      this.rolloutBook,
      deploymentLocks,
      new HaproxyRouter(this.clients, (ref) => this.registry.find(ref)),
      (id) => this.reconciler.kick(id),
    );
    this.reconciler.setBeforeGone((d) => this.rolloutController.forget(d));
    this.deployments = new Deployments(this.ctx, this.deploymentBook, this.reconciler, deploymentLocks, this.rollouts);
    this.maintenance = new Maintenance(
      this.ctx,
      new Moves(this.ctx, this.runner),
      new PowerOff(this.ctx, { fencer, fenceTimeoutMs: this.deadman.fenceTimeoutMs, pollIntervalMs: this.deadman.pollIntervalMs }),
    );
    this.backups = options.backup
      ? new Backups(
          {
            store: options.store,
            log: this.log.child({ room: "backup" }),
            leading: () => this.election.isLeader,
            liveNodes: () => this.registry.list().flatMap((n) => (this.registry.isLive(n, Date.now()) ? [n.name || n.id] : [])),
            rebuild: (write) => this.rebuild(write),
            emit: (event) => this.emit(event),
          },
          options.backup,
        )
      : undefined;
    this.alerts = new Alerts(
      {
        store: this.store,
        log: this.log.child({ room: "alerts" }),
        emit: (event) => this.emit(event),
        nodes: () => this.registry.list(),
        findNode: (ref) => this.registry.find(ref),
      },
      options.alertThresholds,
    );
  }

  // ---------------------------------------------------------------- leadership

  /** Starts campaigning in the background; see whenLeading(). */
  start(): void {
    this.election.start();
  }

  /** Sets where clients reach this replica (before start(); the bound TCP port is known only after listening). */
  setAdvertise(address: string): void {
    this.election.setAdvertise(address);
  }

  /** True while this replica leads and serves. */
  get isLeader(): boolean {
    return this.election.isLeader;
  }

  /** Resolves once this replica leads. */
  whenLeading(): Promise<void> {
    return this.election.whenLeading();
  }

  /** This replica won the election: every room reads its state. */
  private async takeOver(now: number): Promise<void> {
    await this.events.load();
    await this.registry.load(now);
    await this.deadman.load();
    await this.book.load();
    await this.maintenance.load();
    await this.alerts.load();
    await this.deploymentBook.load();
    await this.rolloutBook.load();
  }

  /** This replica leads now. */
  private lead(): void {
    // The deadman sweeps expired leases and fences silent nodes, on the leader only.
    this.deadman.start();
    this.backups?.start();
    this.alerts.start();
    this.reconciler.start();
    this.rolloutController.start();
    this.log.info(
      {
        replica: this.replica,
        store: this.store.description,
        nodes: this.registry.list().length,
        placements: this.book.placements.size,
        auctions: this.book.auctions.size,
      },
      "leading",
    );
  }

  /** This replica does not lead (any more): every room forgets what it read. */
  private standDown(why: ConnectError | undefined): void {
    this.backups?.stop();
    this.deadman.stop();
    this.alerts.stop();
    this.reconciler.stop();
    this.rolloutController.stop();
    this.maintenance.stop(why);
    this.streams.endAll(why);
    this.registry.reset();
    this.events.reset();
    this.book.reset();
    this.deploymentBook.reset();
    this.rolloutBook.reset();
  }

  /** A restore: the rooms stand down, the store is rewritten, and they read it again as on a take-over. */
  private async rebuild(write: () => Promise<void>): Promise<void> {
    const why = `this replica (${this.replica}) is restoring the cluster's state from a backup; retry in a few seconds.`;
    await this.election.suspend(why, async () => {
      this.standDown(unavailable(why));
      await write();
      await this.takeOver(Date.now());
      this.lead();
    });
  }

  /** The sentence a standby answers with. */
  async standbySentence(): Promise<string> {
    return this.election.standbySentence();
  }

  /** SERVING while leading; otherwise the reason (for NodeService.CheckHealth). */
  async health(): Promise<{ leading: boolean; reasons: string[]; uptimeMs: number }> {
    return {
      leading: this.election.isLeader,
      reasons: this.election.isLeader ? [] : [await this.standbySentence()],
      uptimeMs: Date.now() - this.startMs,
    };
  }

  /** Every check CheckHealth answers with: this replica's own, then each node's (service/health.ts). */
  async clusterHealth(): Promise<HealthCheck[]> {
    return clusterHealth({
      leading: this.election.isLeader,
      standby: this.election.isLeader ? "" : await this.standbySentence(),
      store: this.store,
      nodes: this.registry.list(),
      nodeHealth: (node, timeoutMs) => this.clients.node(node).checkHealth({}, { timeoutMs }),
      fencer: this.fencer,
    });
  }

  /** What the Prometheus metrics read when scraped (metrics/metrics.ts). */
  observed(): ObservedAggregator {
    return {
      replica: this.replica,
      leading: () => this.election.isLeader,
      nodes: () => this.registry.list(),
      placements: () => this.book.placements.values(),
      auctions: () => this.book.auctions.values(),
      alerts: () => (this.election.isLeader ? this.alerts.list("") : []),
      deployments: () =>
        this.election.isLeader
          ? [...this.deploymentBook.deployments.values()].map((d) => withStatus(this.book, d, this.reconciler.failure(d.id)))
          : [],
      rollouts: () => (this.election.isLeader ? [...this.rolloutBook.rollouts.values()] : []),
    };
  }

  /** Ends every open event stream and refuses new ones (the first step of shutting down); other calls are still served. */
  endStreams(): void {
    this.streams.close();
  }

  /** Stops serving: ends streams, resigns leadership (so another replica takes over at once), closes node connections. The store stays open. */
  async stop(): Promise<void> {
    if (this.election.isStopping) return;
    await this.election.stop();
    this.clients.close();
  }

  /** Runs a request on the leader, turning store failures into UNAVAILABLE sentences. */
  private async guarded<T>(work: () => Promise<T>): Promise<T> {
    if (!this.election.isLeader) throw unavailable(await this.standbySentence());
    try {
      return await work();
    } catch (err) {
      throw toConnectError(err, this.log);
    }
  }

  private async emit(event: NewEvent): Promise<ClusterEvent | undefined> {
    try {
      return await this.events.append(event);
    } catch (err) {
      this.log.warn({ err: describeError(err), kind: event.kind }, "could not record a cluster event");
      return undefined;
    }
  }

  // ---------------------------------------------------------------- nodes

  async registerNode(req: RegisterNodeRequest, as?: NodeCaller): Promise<{ node: Node; lease: Lease }> {
    return this.guarded(() => this.membership.registerNode(req, as));
  }

  async heartbeat(req: HeartbeatRequest, as?: NodeCaller): Promise<{ lease: Lease }> {
    return this.guarded(async () => {
      const telemetry = req.telemetry && checkTelemetry(req.telemetry);
      const held = ReplicaIndex.check(req.replicas);
      const renewed = await this.membership.heartbeat(req, as);
      this.replicas.set(req.nodeId, held);
      // An alert that cannot be recorded is logged; the lease is renewed all the same.
      if (telemetry)
        await this.alerts
          .observe(req.nodeId, telemetry)
          .catch((err: unknown) => this.log.warn({ node: req.nodeId, err: describeError(err) }, "could not evaluate the alerts"));
      return renewed;
    });
  }

  /** The nodes that hold replicas of a workload's VM and can take it now (READY, on duty). */
  private liveReplicaHolders(workloadId: string, fencedNode: string): ReplicaHolders | undefined {
    const fenced = this.registry.get(fencedNode);
    const held = fenced && this.replicas.holders(workloadId, fenced);
    if (!held) return undefined;
    const now = Date.now();
    const points = new Map(
      [...held.points].filter(([id]) => {
        const node = this.registry.get(id);
        return node !== undefined && this.registry.canBid(node, now);
      }),
    );
    return points.size === 0 ? undefined : { points };
  }

  async reportMigration(req: ReportMigrationRequest, as?: NodeCaller): Promise<{ placementMoved: boolean }> {
    return this.guarded(() => this.membership.reportMigration(req, as));
  }

  async deregisterNode(req: DeregisterNodeRequest, as?: NodeCaller): Promise<Record<string, never>> {
    return this.guarded(() => this.membership.deregisterNode(req, as));
  }

  async listNodes(req: ListNodesRequest): Promise<{ nodes: Node[]; nextPageToken: string }> {
    return this.guarded(() => this.membership.listNodes(req));
  }

  // ---------------------------------------------------------------- deploy, placements, auctions

  async deploy(req: DeployRequest): Promise<DeployResponse> {
    return this.guarded(() => deploy(this.ctx, this.runner, req));
  }

  async getPlacement(req: GetPlacementRequest): Promise<{ placement: WorkloadPlacement }> {
    return this.guarded(() => getPlacement(this.book, req));
  }

  async listPlacements(req: ListPlacementsRequest): Promise<{ placements: WorkloadPlacement[]; nextPageToken: string }> {
    return this.guarded(() => listPlacements(this.book, req));
  }

  async releasePlacement(req: ReleasePlacementRequest): Promise<{ placement: WorkloadPlacement }> {
    return this.guarded(() => releasePlacement(this.ctx, req));
  }

  async getAuction(req: GetAuctionRequest): Promise<{ auction: AuctionRecord }> {
    return this.guarded(() => getAuction(this.book, req));
  }

  async listAuctions(req: ListAuctionsRequest): Promise<{ auctions: AuctionRecord[]; nextPageToken: string }> {
    return this.guarded(() => listAuctions(this.book, req));
  }

  // ---------------------------------------------------------------- maintenance

  async cordonNode(req: CordonNodeRequest): Promise<{ node: Node }> {
    return this.guarded(async () => ({ node: this.membership.counted(await this.maintenance.cordon(req)) }));
  }

  async uncordonNode(req: UncordonNodeRequest): Promise<{ node: Node }> {
    return this.guarded(async () => ({ node: this.membership.counted(await this.maintenance.uncordon(req)) }));
  }

  /** The drain's progress until it ends (see maintenance/drain.ts); the client going away does not stop it. */
  async *drainNode(req: DrainNodeRequest, signal?: AbortSignal): AsyncGenerator<DrainProgress> {
    yield* this.guardedStream(() => this.maintenance.drain(req, signal));
  }

  /** The drain's, then the power off's progress until the node is DECOMMISSIONED or the shutdown stops. */
  async *shutdownNode(req: ShutdownNodeRequest, signal?: AbortSignal): AsyncGenerator<DrainProgress> {
    yield* this.guardedStream(() => this.maintenance.shutdown(req, signal));
  }

  /** A stream on the leader, its failures phrased as guarded() phrases them. */
  private async *guardedStream<T>(open: () => AsyncGenerator<T>): AsyncGenerator<T> {
    if (!this.election.isLeader) throw unavailable(await this.standbySentence());
    try {
      yield* open();
    } catch (err) {
      throw toConnectError(err, this.log);
    }
  }

  // ---------------------------------------------------------------- backups

  /** Runs a backup RPC (backup/) on the leader; FAILED_PRECONDITION when no repository is configured. */
  async withBackups<T>(act: (backups: Backups) => Promise<T>): Promise<T> {
    return this.guarded(async () => {
      if (!this.backups)
        throw failedPrecondition(
          "no backup repository is configured: set [backup] repository in the aggregator's configuration (or --backup-repository) and restart it.",
        );
      return act(this.backups);
    });
  }

  // ---------------------------------------------------------------- alerts

  async listAlerts(node: string): Promise<Alert[]> {
    return this.guarded(async () => this.alerts.list(node));
  }

  async listAlertThresholds(): Promise<AlertThreshold[]> {
    return this.guarded(async () => this.alerts.thresholds());
  }

  async setAlertThreshold(name: string, value: number): Promise<AlertThreshold> {
    return this.guarded(() => this.alerts.setThreshold(name, value));
  }

  // ---------------------------------------------------------------- deployments

  async createDeployment(req: CreateDeploymentRequest): Promise<Deployment> {
    return this.guarded(() => this.deployments.create(req));
  }

  async getDeployment(req: GetDeploymentRequest): Promise<DeploymentView> {
    return this.guarded(async () => this.deployments.get(req));
  }

  async listDeployments(req: ListDeploymentsRequest): Promise<{ deployments: Deployment[]; nextPageToken: string }> {
    return this.guarded(async () => this.deployments.list(req));
  }

  async updateDeployment(req: UpdateDeploymentRequest, confine: boolean): Promise<{ deployment: Deployment; templateChanged: boolean }> {
    return this.guarded(() => this.deployments.update(req, confine));
  }

  async scaleDeployment(req: ScaleDeploymentRequest): Promise<Deployment> {
    return this.guarded(() => this.deployments.scale(req));
  }

  async deleteDeployment(req: DeleteDeploymentRequest): Promise<Deployment> {
    return this.guarded(() => this.deployments.delete(req));
  }

  /** The deployment and its instances, again at every change, until it is gone or leadership is lost (UNAVAILABLE). */
  async *watchDeployment(req: WatchDeploymentRequest, signal?: AbortSignal): AsyncGenerator<DeploymentView> {
    yield* this.guardedStream(() => this.deployments.watch(req, signal, () => !this.election.isLeader));
    if (!this.election.isLeader && !signal?.aborted) throw unavailable(await this.standbySentence());
  }

  // ---------------------------------------------------------------- rollouts

  async getRollout(req: GetRolloutRequest): Promise<Rollout> {
    return this.guarded(async () => this.rollouts.get(req));
  }

  async listRollouts(req: ListRolloutsRequest): Promise<{ rollouts: Rollout[]; nextPageToken: string }> {
    return this.guarded(async () => this.rollouts.list(req));
  }

  async actOnRollout(action: RolloutAction, rollout: string, tenant: string): Promise<Rollout> {
    return this.guarded(() => this.rollouts.act(action, rollout, tenant));
  }

  /** The rollout again at every change until it ended or leadership is lost (UNAVAILABLE). */
  async *watchRollout(req: { rollout: string; tenant: string }, signal?: AbortSignal): AsyncGenerator<Rollout> {
    yield* this.guardedStream(() => this.rollouts.watch(req, signal, () => !this.election.isLeader));
    if (!this.election.isLeader && !signal?.aborted) throw unavailable(await this.standbySentence());
  }

  // ---------------------------------------------------------------- events

  /**
   * The retained events from the requested start, then (with follow) new ones as they happen, until
   * signal aborts (the client cancelled), leadership is lost or the aggregator stops.
   */
  streamClusterEvents(req: StreamClusterEventsRequest, signal?: AbortSignal): AsyncGenerator<ClusterEvent> {
    return this.streams.stream(req, signal);
  }
}
