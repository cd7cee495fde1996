// immediate: every old instance goes and the new ones are placed at once (a short outage is the
// price of speed); done when every new instance is ready.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { figures, type Observed, type Plan } from "./strategy.js";

export function immediate(_r: Rollout, o: Observed): Plan {
  const plan: Plan = { stable: 0, fresh: o.wanted, weight: 100, stage: 0 };
  if (o.newReady >= o.wanted && o.stableLive === 0)
    return {
      ...plan,
      stage: 1,
      outcome: "succeeded",
      decision: {
        action: "succeed",
        reason: `all ${o.wanted} instance(s) of the new revision are ready.`,
        figures: figures({ ready_new: o.newReady }),
      },
    };
  return plan;
}
