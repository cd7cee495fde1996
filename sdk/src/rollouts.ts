// Waiting for a rollout (issue 16): `await aether.rollouts.wait("web")` follows the deployment's latest
// rollout (WatchRollout) and resolves with it once it SUCCEEDED, or rejects with a RolloutFailedError
// when it was rolled back or superseded by a newer one; the error carries the rollout, whose history
// says which decision ended it and on what figures.
import type { Client } from "@connectrpc/connect";
import { RolloutPhase, type AggregatorService, type Rollout } from "./gen/aether/auction/v1/auction_pb.js";

/** A rollout that did not succeed (rolled back, or superseded by a newer one); `rollout` holds its decisions and their figures. */
export class RolloutFailedError extends Error {
  constructor(readonly rollout: Rollout) {
    const last = rollout.history[rollout.history.length - 1];
    super(
      `the rollout of ${rollout.deployment} to revision ${rollout.toRevision} ended ${RolloutPhase[rollout.phase]}: ${last?.reason ?? rollout.phaseReason}`,
    );
    this.name = "RolloutFailedError";
  }
}

/** Options of `aether.rollouts.wait`. */
export interface WaitOptions {
  /** Tenant used to resolve the deployment's name. Default: "default". */
  tenant?: string;
  /** Gives up (rejects with the signal's reason) when aborted. */
  signal?: AbortSignal;
  /** Called with the rollout at each change (a stage, a decision). */
  onChange?: (rollout: Rollout) => void;
}

/** `aether.rollouts`: helpers over the aggregator's rollout RPCs. */
export interface RolloutHelpers {
  /**
   * Resolves once the latest rollout of the deployment (by name or id, or a rollout id) succeeded;
   * rejects with RolloutFailedError when it was rolled back or superseded.
   *
   * @example
   * ```ts
   * await aether.aggregator.updateDeployment({ deployment: "web", template });
   * const done = await aether.rollouts.wait("web", { onChange: (r) => console.log(r.weight, r.phaseReason) });
   * ```
   */
  wait(deployment: string, options?: WaitOptions): Promise<Rollout>;
}

export function rolloutHelpers(aggregator: Client<typeof AggregatorService>): RolloutHelpers {
  return {
    async wait(deployment, options = {}) {
      const stream = aggregator.watchRollout({ rollout: deployment, tenant: options.tenant ?? "" }, { signal: options.signal });
      let last: Rollout | undefined;
      for await (const { rollout } of stream) {
        if (!rollout) continue;
        last = rollout;
        options.onChange?.(rollout);
        if (rollout.phase === RolloutPhase.SUCCEEDED) return rollout;
        if (rollout.phase === RolloutPhase.ROLLED_BACK || rollout.phase === RolloutPhase.SUPERSEDED) throw new RolloutFailedError(rollout);
      }
      throw new Error(
        `the watch of ${deployment}'s rollout ended before the rollout did${last ? ` (it was ${RolloutPhase[last.phase]})` : ""}: the aggregator stopped or lost leadership; wait again`,
      );
    },
  };
}
