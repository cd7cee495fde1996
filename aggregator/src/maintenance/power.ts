// Powering a drained node off for good (the last step of ShutdownNode): SHUTTING_DOWN is recorded
// first, then the node's BMC (the one the deadman fences it with) is asked for GracefulShutdown and
// then ForceOff once the graceful timeout has passed; only power state "Off" read back makes it
// DECOMMISSIONED. A power off that is not confirmed puts it back DRAINED, saying why (and the deadman
// watches it again).
import { ClusterEventKind, NodeLifecycle, type Node } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError } from "@aether/server";
import type { Context } from "../context.js";
import type { NewEvent } from "../events/events.js";
import { fenceTargetOf, type Fencer, type LocatedBmc } from "../fencing/fencing.js";
import { formatMs } from "../auction/auction.js";

/** How long a graceful shutdown is given before ForceOff, unless the request says otherwise. */
export const DEFAULT_GRACEFUL_TIMEOUT_MS = 120_000;

export interface PowerSettings {
  fencer: Fencer;
  /** Longest time from ForceOff to "Off" (the deadman's fence timeout). */
  fenceTimeoutMs: number;
  /** Time between power state reads. */
  pollIntervalMs: number;
}

export class PowerOff {
  constructor(
    private readonly ctx: Context,
    private readonly settings: PowerSettings,
  ) {}

  /** The node's BMC, or a sentence saying why there is none. */
  locate(node: Node): { found: LocatedBmc } | { none: string } {
    return this.settings.fencer.locate(fenceTargetOf(node));
  }

  /**
   * Powers a DRAINED (or, after a takeover, SHUTTING_DOWN) node off; resolves with undefined once it
   * is DECOMMISSIONED, or with the sentence saying why it is DRAINED again.
   */
  async powerOff(node: Node, gracefulTimeoutMs: number, step: (event: NewEvent) => Promise<void>): Promise<string | undefined> {
    const started = await this.ctx.registry.setLifecycle(
      node.id,
      (n) => n.lifecycle === NodeLifecycle.DRAINED || n.lifecycle === NodeLifecycle.SHUTTING_DOWN,
      NodeLifecycle.SHUTTING_DOWN,
      `being powered off through its BMC (graceful for up to ${formatMs(gracefulTimeoutMs)}, then forced).`,
    );
    if (!started) return `node ${node.id} is no longer DRAINED (it was uncordoned or deregistered), so it was not powered off.`;
    const location = this.locate(started);
    const back = async (why: string): Promise<string> => {
      const sentence = `node ${node.id} (${node.name}) could not be powered off: ${why.replace(/\.$/, "")}. It is DRAINED again (no workloads, none placed on it); check its BMC and run aether cluster shutdown ${node.name} again.`;
      await this.ctx.registry.setLifecycle(node.id, (n) => n.lifecycle === NodeLifecycle.SHUTTING_DOWN, NodeLifecycle.DRAINED, sentence);
      await step({ kind: ClusterEventKind.NODE_SHUTDOWN_FAILED, node: node.id, message: sentence });
      return sentence;
    };
    if ("none" in location) return back(location.none);
    await step({
      kind: ClusterEventKind.NODE_SHUTTING_DOWN,
      node: node.id,
      message: `node ${node.id} (${node.name}) is being powered off through ${location.found.description}: GracefulShutdown, then ForceOff after ${formatMs(gracefulTimeoutMs)}.`,
      attributes: { bmc: location.found.endpoint, graceful_timeout_ms: String(gracefulTimeoutMs) },
    });
    const t0 = Date.now();
    const { fencer, fenceTimeoutMs, pollIntervalMs } = this.settings;
    let outcome: { confirmed: boolean; reason: string; graceful?: boolean };
    try {
      outcome = fencer.shutdown
        ? await fencer.shutdown(fenceTargetOf(started), location.found, { gracefulTimeoutMs, timeoutMs: fenceTimeoutMs, pollIntervalMs })
        : {
            ...(await fencer.fence(fenceTargetOf(started), location.found, { timeoutMs: fenceTimeoutMs, pollIntervalMs })),
            graceful: false,
          };
    } catch (err) {
      outcome = { confirmed: false, reason: describeError(err) };
    }
    if (!outcome.confirmed) return back(outcome.reason);
    const reason = `powered off through its BMC (${outcome.graceful ? "graceful shutdown" : "forced"}): ${outcome.reason.replace(/\.$/, "")}.`;
    await this.ctx.registry.setLifecycle(node.id, (n) => n.lifecycle === NodeLifecycle.SHUTTING_DOWN, NodeLifecycle.DECOMMISSIONED, reason);
    await step({
      kind: ClusterEventKind.NODE_DECOMMISSIONED,
      node: node.id,
      message: `node ${node.id} (${node.name}) is decommissioned: ${reason}`,
      attributes: { graceful: String(outcome.graceful === true), power_off_ms: String(Date.now() - t0) },
    });
    return undefined;
  }
}
