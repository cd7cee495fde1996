// Cluster membership: when aetherd is configured with an aggregator, it registers this node (its id,
// the address the aggregator calls it back on, labels, rack position and capabilities) and renews
// its lease with heartbeats. A lease the aggregator no longer knows (expired, or the node was fenced)
// means registering again; an aggregator that cannot be reached is retried with backoff, and the
// node keeps running its workloads meanwhile: membership never stops local work.
import { availableParallelism, totalmem } from "node:os";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type AetherClient } from "@aether/sdk";
import { outgoingConnectOptions, type OutgoingTls } from "@aether/server";
import type { Logger } from "pino";

export interface MembershipOptions {
  /** Where the aggregator listens (unix:///path.sock or https://host:port or http://127.0.0.1:port). */
  aggregator: string;
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

  private async aggregator(): Promise<AetherClient> {
    this.client ??= await connect(outgoingConnectOptions(this.options.aggregator, this.options.identity, "aether-aggregator"));
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
      this.retryMs = MIN_RETRY_MS;
      this.log.info({ aggregator: o.aggregator, lease: this.leaseId, intervalMs }, "registered with the aggregator");
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
      this.schedule(intervalMs, () => this.heartbeat(intervalMs));
    } catch (err) {
      // The aggregator forgot the lease (expired, fenced, aggregator restarted): register again.
      if (err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.NotFound)) {
        this.log.warn({ reason: err.rawMessage }, "the aggregator refused the heartbeat; registering again");
        this.schedule(0, () => this.register());
        return;
      }
      this.unreachable(err, () => this.heartbeat(intervalMs));
    }
  }

  private unreachable(err: unknown, retry: () => Promise<void>): void {
    const message = err instanceof ConnectError ? err.rawMessage : (err as Error).message;
    this.status = `unreachable: ${message}`;
    this.log.warn({ aggregator: this.options.aggregator, retryMs: this.retryMs, err: message }, "the aggregator did not answer; retrying");
    this.schedule(this.retryMs, retry);
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
  }

  /** Stops heartbeating (aetherd shutting down); the lease then runs out at the aggregator. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.client?.close();
  }
}
