// ab: both revisions run side by side, each caller sent by a hash of its header or cookie (the proxy
// does the hashing, so the same caller always lands on the same side); it lasts until promoted (the
// new revision wins) or rolled back.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { Observed, Plan } from "./strategy.js";

export function ab(r: Rollout, o: Observed): Plan {
  const spec = r.strategy?.kind.case === "ab" ? r.strategy.kind.value : undefined;
  return { stable: o.wanted, fresh: o.wanted, weight: spec?.percent ?? 50, stage: 0 };
}
