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
import { availableParallelism, totalmem } from "node:os";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type AetherClient } from "@aether/sdk";
import { outgoingConnectOptions, type OutgoingTls } from "@aether/server";
import type { Logger } from "pino";

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
      const { lease } = await aggregator.aggregator.registerNode(
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
      await aggregator.aggregator.heartbeat(
        { nodeId: this.options.nodeId, leaseId: this.leaseId },
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

  /** Stops heartbeating (aetherd shutting down); the lease then runs out at the aggregator. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.client?.close();
  }
}
