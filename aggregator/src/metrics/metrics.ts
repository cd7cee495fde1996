// aether-aggregator's Prometheus metrics, read from the rooms when Prometheus scrapes (prom-client
// collect() callbacks; nothing polls): nodes by lease state and lifecycle, each node's lease age,
// placements by tenant and state, the auctions (decision and bidding time, bidders per auction, by
// state), the fencing phases, the active alerts, whether this replica leads, and the store's
// failures, and the deployments (by state; each one's wanted, running and pending instances). The
// RPC metrics (aether_rpc_*) are counted by @aether/server's listen(). A standby has no
// nodes, placements or auctions in memory: its series say so (aether_aggregator_leader 0) rather
// than repeat the leader's.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import {
  AlertSeverity,
  AuctionState,
  DeploymentState,
  AuctionTrigger,
  NodeLifecycle,
  NodeState,
  PlacementState,
  type Alert,
  type AuctionRecord,
  type Deployment,
  type Rollout,
  RolloutPhase,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { LATENCY_BUCKETS_SECONDS } from "@aether/server";
import type { ClusterStore, Leadership, StoreEntry } from "../store/store.js";

/** What the metrics read, given by the composition (aggregator.ts). */
export interface ObservedAggregator {
  replica: string;
  leading(): boolean;
  nodes(): Node[];
  placements(): Iterable<WorkloadPlacement>;
  auctions(): Iterable<AuctionRecord>;
  /** The active alerts (alerts/); unset: none. */
  alerts?(): Alert[];
  /** The deployments with their computed state and instance counts; unset: none. */
  deployments?(): Deployment[];
  /** The rollouts kept (active and recently ended); unset: none. */
  rollouts?(): Rollout[];
}

const seconds = (d: { seconds: bigint; nanos: number } | undefined) => (d === undefined ? 0 : Number(d.seconds) + d.nanos / 1e9);
const name = (names: Record<number, string>, v: number) => (names[v] ?? String(v)).toLowerCase();

/** The registry with every family; store errors are counted by countStoreErrors on the same registry. */
export function aggregatorMetrics(observed: ObservedAggregator, registry = new Registry()): Registry {
  const registers = [registry];
  const countBy = <T>(items: Iterable<T>, labels: (item: T) => Record<string, string>) => {
    const counts = new Map<string, [Record<string, string>, number]>();
    for (const item of items) {
      const l = labels(item);
      const key = JSON.stringify(l);
      const entry = counts.get(key) ?? [l, 0];
      entry[1]++;
      counts.set(key, entry);
    }
    return [...counts.values()];
  };
  const gauge = (metric: string, help: string, labelNames: string[], read: () => Array<[Record<string, string>, number]>) =>
    new Gauge({
      name: metric,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });

  gauge("aether_aggregator_leader", "1 while this replica leads the cluster, 0 while it stands by.", ["replica"], () => [
    [{ replica: observed.replica }, observed.leading() ? 1 : 0],
  ]);
  gauge(
    "aether_nodes",
    "Registered nodes, by lease state (ready, suspect, fencing, fenced, fence_failed) and lifecycle.",
    ["state", "lifecycle"],
    () => countBy(observed.nodes(), (n) => ({ state: name(NodeState, n.state), lifecycle: name(NodeLifecycle, n.lifecycle) })),
  );
  gauge("aether_node_lease_age_seconds", "Time since each node's last heartbeat (or registration).", ["node", "node_id"], () => {
    const now = Date.now() / 1000;
    return observed.nodes().map((n) => [{ node: n.name, node_id: n.id }, Math.max(0, now - seconds(n.heartbeatTime ?? n.registerTime))]);
  });
  gauge(
    "aether_alerts_active",
    "Active alerts: 1 for each node's figure past a threshold (alert: the threshold's name, cpu_warning, lease_age_critical, ...).",
    ["node", "node_id", "alert", "severity"],
    () => {
      const names = new Map(observed.nodes().map((n) => [n.id, n.name]));
      return (observed.alerts?.() ?? []).map((a) => [
        { node: names.get(a.node) ?? "", node_id: a.node, alert: a.thresholdName, severity: name(AlertSeverity, a.severity) },
        1,
      ]);
    },
  );
  gauge(
    "aether_node_fencing",
    "Nodes in a fencing phase: suspect (lease ran out), fencing (power off asked of its BMC), fenced (Off read back), fence_failed.",
    ["phase"],
    () => {
      const phases = [NodeState.SUSPECT, NodeState.FENCING, NodeState.FENCED, NodeState.FENCE_FAILED];
      const nodes = observed.nodes();
      return phases.map((p) => [{ phase: name(NodeState, p) }, nodes.filter((n) => n.state === p).length]);
    },
  );
  gauge("aether_placements", "Workload placements, by tenant and state.", ["tenant", "state"], () =>
    countBy(observed.placements(), (p) => ({ tenant: p.tenant, state: name(PlacementState, p.state) })),
  );
  gauge("aether_node_placements", "Placements on each node (provisioning, placed or moving there).", ["node_id"], () =>
    countBy(
      [...observed.placements()].filter(
        (p) => p.node !== "" && [PlacementState.PROVISIONING, PlacementState.PLACED, PlacementState.MOVING].includes(p.state),
      ),
      (p) => ({ node_id: p.node }),
    ),
  );
  gauge("aether_deployments", "Deployments, by tenant and state (progressing, available, degraded, deleting).", ["tenant", "state"], () =>
    countBy(observed.deployments?.() ?? [], (d) => ({ tenant: d.tenant, state: name(DeploymentState, d.state) })),
  );
  gauge("aether_rollouts", "Rollouts kept (active and the last ones ended), by tenant and phase.", ["tenant", "phase"], () =>
    countBy(observed.rollouts?.() ?? [], (r) => ({ tenant: r.tenant, phase: name(RolloutPhase, r.phase) })),
  );
  gauge(
    "aether_deployment_instances",
    "Each deployment's instances: wanted (its instance count), running, and pending (being placed or started).",
    ["tenant", "deployment", "status"],
    () =>
      (observed.deployments?.() ?? []).flatMap((d) => {
        const labels = (status: string) => ({ tenant: d.tenant, deployment: d.name, status });
        return [
          [labels("wanted"), d.instances] as [Record<string, string>, number],
          [labels("running"), d.runningInstances],
          [labels("pending"), d.pendingInstances],
        ];
      }),
  );
  new Counter({
    name: "aether_auctions_total",
    help: "Auctions recorded, by state (running, succeeded, failed) and trigger.",
    labelNames: ["state", "trigger"],
    registers,
    collect() {
      this.reset();
      for (const [labels, n] of countBy(observed.auctions(), (a) => ({
        state: name(AuctionState, a.state),
        trigger: name(AuctionTrigger, a.trigger),
      })))
        this.inc(labels, n);
    },
  });
  // Histograms rebuilt from the auction records at each scrape: the records are the truth (a replica
  // that takes over has them all), and counting them again is cheap next to holding an auction.
  const fromAuctions = (metric: string, help: string, buckets: number[], value: (a: AuctionRecord) => number | undefined) =>
    new Histogram({
      name: metric,
      help,
      buckets,
      registers,
      collect() {
        this.reset();
        for (const a of observed.auctions()) {
          const v = value(a);
          if (v !== undefined) this.observe(v);
        }
      },
    });
  const ended = (a: AuctionRecord) => a.state === AuctionState.SUCCEEDED || a.state === AuctionState.FAILED;
  fromAuctions(
    "aether_auction_decision_seconds",
    "Time from an auction's start to its decision (bidding and picking the winner).",
    LATENCY_BUCKETS_SECONDS,
    (a) => (ended(a) ? seconds(a.biddingDuration) + seconds(a.decisionDuration) : undefined),
  );
  fromAuctions(
    "aether_auction_bidding_seconds",
    "Time an auction waited for bids (until all answered or its window closed).",
    LATENCY_BUCKETS_SECONDS,
    (a) => (ended(a) ? seconds(a.biddingDuration) : undefined),
  );
  fromAuctions("aether_auction_bidders", "Nodes asked to bid in each auction.", [0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128], (a) =>
    ended(a) ? a.bids.length : undefined,
  );
  fromAuctions(
    "aether_auction_positive_bids",
    "Nodes that bid (score > 0) in each auction.",
    [0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128],
    (a) => (ended(a) ? a.bids.filter((b) => b.score > 0).length : undefined),
  );
  return registry;
}

/**
 * The store, with every failed operation counted (aether_store_errors_total by operation): the
 * etcd that cannot be reached, the write refused because this replica lost its leadership.
 */
export function countStoreErrors(store: ClusterStore, registry: Registry): ClusterStore {
  const errors = new Counter({
    name: "aether_store_errors_total",
    help: "Cluster store operations that failed, by operation (get, list, put, delete, campaign).",
    labelNames: ["operation"],
    registers: [registry],
  });
  for (const operation of ["get", "list", "put", "delete", "campaign"]) errors.inc({ operation }, 0);
  const counted =
    <A extends unknown[], R>(operation: string, call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await call(...args);
      } catch (err) {
        errors.inc({ operation });
        throw err;
      }
    };
  return {
    get description() {
      return store.description;
    },
    get: counted("get", (key: string): Promise<string | undefined> => store.get(key)),
    list: counted("list", (prefix: string): Promise<StoreEntry[]> => store.list(prefix)),
    put: counted("put", (key: string, value: string): Promise<void> => store.put(key, value)),
    delete: counted("delete", (key: string): Promise<void> => store.delete(key)),
    campaign: counted("campaign", (candidate: string): Promise<Leadership> => store.campaign(candidate)),
    close: () => store.close(),
  };
}
