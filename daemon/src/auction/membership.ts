// Cluster membership: when aetherd is configured with an aggregator, it registers this node (its id,
// the address the aggregator calls it back on, labels, rack position and capabilities) and renews
// its lease with heartbeats. A lease the aggregator no longer knows (expired, or the node was fenced)
// means registering again; an aggregator that cannot be reached is retried with backoff, and the
// node keeps running its workloads meanwhile: membership never stops local work.
//
// With several aggregator replicas (an etcd store), the node talks to one at a time: when it does
// not answer or is a standby (UNAVAILABLE), the next is tried at once; the backoff starts only once
// every replica has failed in a row. The new leader keeps every lease for a full TTL from its
// takeover, so a node reaches it in time.
//
// A graceful shutdown leaves the cluster (leave): the node is deregistered, so one stopped on purpose
// is not suspected and fenced when its lease runs out, unless an operator took it off duty.
import { availableParallelism, totalmem } from "node:os";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type AetherClient } from "@aether/sdk/client";
import { NodeLifecycle } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { outgoingConnectOptions, type OutgoingTls } from "@aether/server";
import type { Logger } from "pino";
import type { HeartbeatTelemetry } from "./heartbeat-telemetry.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HeldReplicaSchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

export interface MembershipOptions {
  /** Where the aggregator's replicas listen (unix:///path.sock or https://host:port or http://127.0.0.1:port). */
  aggregators: string[];
  /** This node's identity for the call (its node certificate and the cluster CA), used on https. */
  identity: OutgoingTls;
  /** The address the aggregator calls this node's BidService on. */
  advertise: string;
  nodeId: string;
  name: string;
  labels: Record<string, string>;
  position: { rack: string; chassis: string; slot: number };
  capabilities: { kvm: boolean; qemu: boolean; firecracker: boolean; zfs: boolean; cgroupV2: boolean; pools: string[]; version: string };
  /** The node's figures for each heartbeat (the aggregator's alerts); unset: heartbeats carry none. */
  telemetry?: () => Promise<HeartbeatTelemetry>;
  /** The replicas of other nodes' VMs this node holds, for each heartbeat (where the aggregator restarts a fenced node's VM). */
  replicas?: () => Array<MessageInitShape<typeof HeldReplicaSchema>>;
}

const MIN_RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;

export class Membership {
  private client: AetherClient | undefined;
  /** The replica talked to (an index into aggregators), and how many failed in a row. */
  private current = 0;
  private failuresInRow = 0;
  private timer: NodeJS.Timeout | undefined;
  private leaseId = "";
  /** The node's lifecycle as the aggregator answered the last registration. */
  private lifecycle = NodeLifecycle.UNSPECIFIED;
  private stopped = false;
  private retryMs = MIN_RETRY_MS;
  /** The last state, for NodeInfo and logs: "registering", "registered", "unreachable: ...". */
  status = "registering";

  constructor(
    private readonly options: MembershipOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    void this.register();
  }

  private schedule(ms: number, work: () => Promise<void>): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void work(), ms);
    this.timer.unref();
  }

  private get address(): string {
    return this.options.aggregators[this.current] as string;
  }

  private async aggregator(): Promise<AetherClient> {
    this.client ??= await connect(outgoingConnectOptions(this.address, this.options.identity, "aether-aggregator"));
    return this.client;
  }

  private async register(): Promise<void> {
    const o = this.options;
    try {
      const aggregator = await this.aggregator();
      const { lease, node } = await aggregator.aggregator.registerNode(
        {
          nodeId: o.nodeId,
          name: o.name,
          labels: o.labels,
          address: o.advertise,
          position: o.position,
          capabilities: { cpuCount: availableParallelism(), memoryTotalBytes: BigInt(totalmem()), lvmThin: false, ...o.capabilities },
        },
        { timeoutMs: 5000 },
      );
      this.leaseId = lease?.id ?? "";
      this.lifecycle = node?.lifecycle ?? NodeLifecycle.UNSPECIFIED;
      const intervalMs = lease?.heartbeatInterval
        ? Number(lease.heartbeatInterval.seconds) * 1000 + lease.heartbeatInterval.nanos / 1e6
        : 5000;
      this.status = "registered";
      this.answered();
      this.log.info({ aggregator: this.address, lease: this.leaseId, intervalMs }, "registered with the aggregator");
      this.schedule(intervalMs, () => this.heartbeat(intervalMs));
    } catch (err) {
      this.unreachable(err, () => this.register());
    }
  }

  private async heartbeat(intervalMs: number): Promise<void> {
    try {
      const aggregator = await this.aggregator();
      const telemetry = await this.telemetry();
      await aggregator.aggregator.heartbeat(
        { nodeId: this.options.nodeId, leaseId: this.leaseId, ...(telemetry && { telemetry }), replicas: this.options.replicas?.() ?? [] },
        { timeoutMs: Math.max(1000, intervalMs) },
      );
      this.answered();
      this.schedule(intervalMs, () => this.heartbeat(intervalMs));
    } catch (err) {
      // The aggregator forgot the lease (expired, fenced, aggregator restarted): register again.
      if (err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.NotFound)) {
        this.log.warn({ reason: err.rawMessage }, "the aggregator refused the heartbeat; registering again");
        this.schedule(0, () => this.register());
        return;
      }
      // Never wait longer than a heartbeat interval: the lease is running out meanwhile.
      this.unreachable(err, () => this.heartbeat(intervalMs), intervalMs);
    }
  }

  /** The figures for a heartbeat; one that cannot be read is left out (the lease matters more). */
  private async telemetry(): Promise<HeartbeatTelemetry | undefined> {
    try {
      return await this.options.telemetry?.();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not read the node's telemetry for the heartbeat");
      return undefined;
    }
  }

  private answered(): void {
    this.retryMs = MIN_RETRY_MS;
    this.failuresInRow = 0;
  }

  /** The aggregator did not answer (or is a standby): the next replica at once, else retry with backoff. */
  private unreachable(err: unknown, retry: () => Promise<void>, maxWaitMs = MAX_RETRY_MS): void {
    const message = err instanceof ConnectError ? err.rawMessage : (err as Error).message;
    const failed = this.address;
    this.status = `unreachable: ${message}`;
    this.failuresInRow++;
    const { aggregators } = this.options;
    if (aggregators.length > 1) {
      this.client?.close();
      this.client = undefined;
      this.current = (this.current + 1) % aggregators.length;
    }
    const everyOneFailed = this.failuresInRow >= aggregators.length;
    const waitMs = everyOneFailed ? Math.min(this.retryMs, maxWaitMs) : 0;
    this.log.warn({ aggregator: failed, next: this.address, retryMs: waitMs, err: message }, "the aggregator did not answer; retrying");
    this.schedule(waitMs, retry);
    if (everyOneFailed) {
      this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
      this.failuresInRow = 0;
    }
  }

  /**
   * One call to the aggregator for another room of aetherd (a live migration's report): the replica
   * talked to now, else the next when it is a standby or does not answer, each once. Throws the
   * last failure (the caller keeps what it sends and tries again later).
   */
  async call<T>(work: (aggregator: AetherClient) => Promise<T>): Promise<T> {
    const { aggregators } = this.options;
    for (let tried = 1; ; tried++) {
      try {
        return await work(await this.aggregator());
      } catch (err) {
        const failover = !(err instanceof ConnectError) || err.code === Code.Unavailable || err.code === Code.DeadlineExceeded;
        if (tried >= aggregators.length || !failover) throw err;
        this.client?.close();
        this.client = undefined;
        this.current = (this.current + 1) % aggregators.length;
      }
    }
  }

  /** Stops heartbeating (aetherd shutting down); the lease then runs out at the aggregator. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.client?.close();
  }

  /**
   * Leaves the cluster as aetherd shuts down gracefully: stops heartbeating and deregisters this node,
   * so a node stopped on purpose is not suspected and fenced once its lease runs out. Its workloads
   * stay placed on it (re_place false: they keep running, and the node registers again, same id,
   * when aetherd starts). A node an operator took off duty (cordoned, draining, drained, shutting
   * down, decommissioned) stays registered: deregistering would forget that, and it would come back
   * on duty. Takes at most `timeoutMs`: an aggregator that does not answer in time is logged, and the
   * lease runs out there.
   */
  async leave(timeoutMs: number): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const outOfTime = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.deregister(deadline), outOfTime]);
    } catch (err) {
      const message = err instanceof ConnectError ? err.rawMessage : (err as Error).message;
      this.log.warn({ aggregator: this.address, err: message }, "could not deregister from the aggregator; its lease will run out there");
    } finally {
      clearTimeout(timer);
      this.client?.close();
    }
  }

  /** leave's calls: the node's lifecycle as the aggregator has it now, then DeregisterNode; the next replica if one is a standby. */
  private async deregister(deadline: number): Promise<void> {
    const { nodeId, aggregators } = this.options;
    const timeoutMs = () => Math.max(1, deadline - Date.now());
    for (let tried = 1; ; tried++) {
      try {
        const aggregator = await this.aggregator();
        const lifecycle = await this.currentLifecycle(aggregator, timeoutMs);
        if (lifecycle === undefined) {
          this.log.info({ aggregator: this.address }, "not registered with the aggregator; nothing to deregister");
          return;
        }
        if (lifecycle !== NodeLifecycle.UNSPECIFIED && lifecycle !== NodeLifecycle.JOINING && lifecycle !== NodeLifecycle.ON_DUTY) {
          this.log.info(
            { aggregator: this.address, lifecycle: NodeLifecycle[lifecycle] },
            "stays registered with the aggregator: an operator took it off duty, and deregistering would forget that",
          );
          return;
        }
        await aggregator.aggregator.deregisterNode({ nodeId, rePlace: false }, { timeoutMs: timeoutMs() });
        this.log.info({ aggregator: this.address }, "deregistered from the aggregator");
        return;
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.NotFound) {
          this.log.info({ aggregator: this.address }, "not registered with the aggregator; nothing to deregister");
          return;
        }
        // A standby (or a replica that is down): the next one, while there is one and time is left.
        if (tried >= aggregators.length || !(err instanceof ConnectError) || err.code !== Code.Unavailable) throw err;
        this.client?.close();
        this.client = undefined;
        this.current = (this.current + 1) % aggregators.length;
      }
    }
  }

  /**
   * This node's lifecycle in the aggregator's registry (undefined: not registered). Where the
   * caller may not list nodes (a policy that denies it), the one the last registration answered.
   */
  private async currentLifecycle(aggregator: AetherClient, timeoutMs: () => number): Promise<NodeLifecycle | undefined> {
    let pageToken = "";
    try {
      do {
        const page = await aggregator.aggregator.listNodes({ pageSize: 1000, pageToken }, { timeoutMs: timeoutMs() });
        const own = page.nodes.find((n) => n.id === this.options.nodeId);
        if (own) return own.lifecycle;
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      return undefined;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.PermissionDenied) return this.lifecycle;
      throw err;
    }
  }
}
