// blue-green: a full set of the new revision is started next to the old one and must be ready in
// full; then one switch sends all traffic to it; the old set drains for the grace period and goes.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { msOf } from "@aether/server";
import { figures, type Observed, type Plan } from "./strategy.js";

export const DEFAULT_BLUE_GREEN_GRACE_MS = 10_000;

export function blueGreen(r: Rollout, o: Observed): Plan {
  const spec = r.strategy?.kind.case === "blueGreen" ? r.strategy.kind.value : undefined;
  const graceMs = spec?.gracePeriod ? msOf(spec.gracePeriod) : DEFAULT_BLUE_GREEN_GRACE_MS;
  if (r.stage === 0) {
    const plan: Plan = { stable: o.wanted, fresh: o.wanted, weight: 0, stage: 0 };
    if (o.newReady < o.wanted) return plan;
    return {
      ...plan,
      weight: 100,
      stage: 1,
      decision: {
        action: "switch",
        reason: `all ${o.wanted} new instance(s) are ready: every request now goes to the new revision; the old set drains for ${graceMs} ms.`,
        figures: figures({ ready_new: o.newReady, ready_old: o.stableReady, grace_ms: graceMs }),
      },
    };
  }
  if (o.nowMs - o.stageStartMs < graceMs) return { stable: r.stableInstances, fresh: o.wanted, weight: 100, stage: 1 };
  return {
    stable: 0,
    fresh: o.wanted,
    weight: 100,
    stage: 2,
    outcome: "succeeded",
    decision: {
      action: "succeed",
      reason: `the old set drained for ${graceMs} ms and is stopped.`,
      figures: figures({ ready_new: o.newReady }),
    },
  };
}
