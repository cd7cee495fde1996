// What a strategy sees and what it answers. A strategy is a pure function of the rollout record and
// what was observed now: the controller (../controller.ts) observes, asks, records the answer and
// applies it (instances per revision through the reconcile loop, weights through the proxy), so a
// new leader that reads the record asks the same question and gets the same answer.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

/** Requests, 5xx answers and p95 response time of one revision's backends since the stage began. */
export interface GroupFigures {
  requests: number;
  errors: number;
  p95Ms: number | undefined;
}

export interface Observed {
  nowMs: number;
  /** Instances the deployment wants. */
  wanted: number;
  /** Instances of the stable (old) and new revision that are live, and of those, ready (running, and UP in the proxy when there is one). */
  stableLive: number;
  newLive: number;
  stableReady: number;
  newReady: number;
  /** Whether the deployment has a service endpoint (weights mean traffic, and figures are measured). */
  traffic: boolean;
  stable: GroupFigures | undefined;
  fresh: GroupFigures | undefined;
  /** When the current stage began (ms). */
  stageStartMs: number;
}

export interface Decision {
  action: string;
  reason: string;
  figures: Record<string, string>;
}

export interface Plan {
  /** Instances wanted live of the stable and of the new revision. */
  stable: number;
  fresh: number;
  /** Percent of traffic to the new revision. */
  weight: number;
  stage: number;
  /** Set when this answer is a decision worth recording (a step, a stage passed or failed). */
  decision?: Decision;
  /** The rollout ends: the new revision won, or it goes back. */
  outcome?: "succeeded" | "rollback";
}

export type Strategy = (r: Rollout, o: Observed) => Plan;

/** The plan as the rollout record holds it now (nothing changes). */
export function unchanged(r: Rollout): Plan {
  return { stable: r.stableInstances, fresh: r.newInstances, weight: r.weight, stage: r.stage };
}

export function percent(part: number, whole: number): number {
  return whole === 0 ? 0 : Math.round((100 * part) / whole);
}

/** The figures of a decision as strings (a cluster event's attributes). */
export function figures(values: Record<string, number | string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue;
    out[key] = typeof value === "number" ? String(Number.isInteger(value) ? value : Number(value.toFixed(4))) : value;
  }
  return out;
}
