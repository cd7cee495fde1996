// rolling: new instances are added while no more than wanted + maxSurge run, and an old one is taken
// out only while at least wanted - maxUnavailable stay ready; traffic is spread evenly over the ready
// instances, so the new revision's share grows one instance at a time.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { figures, percent, type Observed, type Plan } from "./strategy.js";

export function rolling(r: Rollout, o: Observed): Plan {
  const spec = r.strategy?.kind.case === "rolling" ? r.strategy.kind.value : undefined;
  let surge = spec?.maxSurge ?? 0;
  const unavailable = spec?.maxUnavailable ?? 0;
  if (surge === 0 && unavailable === 0) surge = 1;
  const minReady = Math.max(0, o.wanted - unavailable);
  // Old instances being taken out are not counted ready any more.
  const stableReady = Math.min(o.stableReady, r.stableInstances);
  const removable = Math.max(0, stableReady + o.newReady - minReady);
  const stable = Math.max(0, r.stableInstances - Math.min(removable, r.stableInstances));
  const fresh = Math.min(o.wanted, Math.max(r.newInstances, o.wanted + surge - stable));
  const weight = percent(o.newReady, o.newReady + Math.min(stableReady, stable));
  const plan: Plan = { stable, fresh, weight, stage: o.wanted - Math.min(o.wanted, stable) };
  const facts = figures({ ready_new: o.newReady, ready_old: stableReady, min_ready: minReady, max_surge: surge });
  if (stable === 0 && o.newReady >= o.wanted)
    return {
      ...plan,
      weight: 100,
      outcome: "succeeded",
      decision: { action: "succeed", reason: `all ${o.wanted} instance(s) replaced.`, figures: facts },
    };
  if (stable !== r.stableInstances)
    plan.decision = {
      action: "step",
      reason: `${o.newReady} new instance(s) ready: ${r.stableInstances - stable} old one(s) taken out (${stable} left), at least ${minReady} kept ready.`,
      figures: facts,
    };
  return plan;
}
