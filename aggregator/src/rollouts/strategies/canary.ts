// canary: the new revision takes a growing share of the traffic (default 5, 25, 50, 100 %), each
// stage held for a while and judged on the proxy's figures for each revision's backends since the
// stage began: the new revision's error rate (5xx over requests) and its p95 response time against
// the stable one's. A stage that fails (at its end, or earlier once the evidence is plain) rolls
// back. Without an endpoint the stages are shares of the instances, and a stage passes when every
// new instance stays ready through its hold.
import type { Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { msOf } from "@aether/server";
import { figures, type Observed, type Plan } from "./strategy.js";

export const DEFAULT_STAGES = [5, 25, 50, 100];
export const DEFAULT_HOLD_MS = 30_000;
export const DEFAULT_MAX_ERROR_RATE = 0.01;
export const DEFAULT_MAX_LATENCY_RATIO = 2;
/**
 * A p95 is judged slow only when it is also this much above the stable one: HAProxy's times are whole
 * milliseconds, and 4 ms against 1 ms (a ratio of 4) is noise on a busy host, not a slower revision.
 */
export const LATENCY_FLOOR_MS = 50;
/** Requests to the new revision after which a stage may fail before its hold ends. */
const EARLY_EVIDENCE = 20;

export interface CanarySettings {
  stages: number[];
  holdMs: number;
  maxErrorRate: number;
  maxLatencyRatio: number;
}

export function canarySettings(r: Rollout): CanarySettings {
  const spec = r.strategy?.kind.case === "canary" ? r.strategy.kind.value : undefined;
  return {
    stages: spec && spec.stages.length > 0 ? spec.stages : DEFAULT_STAGES,
    holdMs: spec?.hold ? msOf(spec.hold) : DEFAULT_HOLD_MS,
    maxErrorRate: spec?.maxErrorRate || DEFAULT_MAX_ERROR_RATE,
    maxLatencyRatio: spec?.maxLatencyRatio || DEFAULT_MAX_LATENCY_RATIO,
  };
}

export function canary(r: Rollout, o: Observed): Plan {
  const s = canarySettings(r);
  const stage = Math.min(r.stage, s.stages.length - 1);
  const share = s.stages[stage] as number;
  const last = stage === s.stages.length - 1;
  // With an endpoint the whole stable set stays until the end; the new set grows with its share.
  const freshFor = (pct: number) => Math.min(o.wanted, Math.max(1, Math.ceil((o.wanted * pct) / 100)));
  const fresh = freshFor(share);
  const stable = o.traffic ? o.wanted : o.wanted - (last ? 0 : fresh);
  const ready = o.newReady >= fresh;
  const plan: Plan = { stable, fresh, weight: ready ? share : r.weight, stage };
  if (!ready) return plan;

  const verdict = judge(o, s);
  const held = o.nowMs - o.stageStartMs >= s.holdMs && r.weight === share;
  if (verdict.failed && (held || verdict.plain))
    return {
      ...plan,
      outcome: "rollback",
      decision: { action: "rollback", reason: `stage ${stage + 1} (${share} %) failed: ${verdict.why}`, figures: verdict.figures },
    };
  if (!held) return plan;
  if (last)
    return {
      stable: 0,
      fresh: o.wanted,
      weight: 100,
      stage: stage + 1,
      outcome: "succeeded",
      decision: { action: "succeed", reason: `the last stage (${share} %) passed: ${verdict.why}`, figures: verdict.figures },
    };
  const next = s.stages[stage + 1] as number;
  return {
    stable: o.traffic ? o.wanted : o.wanted - (stage + 1 === s.stages.length - 1 ? 0 : freshFor(next)),
    fresh: freshFor(next),
    weight: share,
    stage: stage + 1,
    decision: {
      action: "stage",
      reason: `stage ${stage + 1} (${share} %) passed: ${verdict.why}; going to ${next} %.`,
      figures: verdict.figures,
    },
  };
}

interface Verdict {
  failed: boolean;
  /** The failure is plain before the hold ends (enough requests already). */
  plain: boolean;
  why: string;
  figures: Record<string, string>;
}

function judge(o: Observed, s: CanarySettings): Verdict {
  if (!o.traffic || !o.fresh || !o.stable) {
    const failed = o.newReady < o.newLive || o.newLive === 0;
    return {
      failed,
      plain: failed,
      why: failed ? `${o.newLive - o.newReady} new instance(s) are not ready` : `all ${o.newReady} new instance(s) stayed ready`,
      figures: figures({ ready_new: o.newReady, live_new: o.newLive }),
    };
  }
  const { fresh, stable } = o;
  const errorRate = fresh.requests === 0 ? 0 : fresh.errors / fresh.requests;
  const ratio = fresh.p95Ms !== undefined && stable.p95Ms !== undefined && stable.p95Ms > 0 ? fresh.p95Ms / stable.p95Ms : undefined;
  const facts = figures({
    requests_new: fresh.requests,
    errors_new: fresh.errors,
    error_rate: errorRate,
    max_error_rate: s.maxErrorRate,
    p95_ms_new: fresh.p95Ms,
    p95_ms_stable: stable.p95Ms,
    latency_ratio: ratio,
    max_latency_ratio: s.maxLatencyRatio,
    latency_floor_ms: LATENCY_FLOOR_MS,
    requests_stable: stable.requests,
  });
  if (errorRate > s.maxErrorRate)
    return {
      failed: true,
      plain: fresh.requests >= EARLY_EVIDENCE,
      why: `error rate ${(errorRate * 100).toFixed(1)} % over ${fresh.requests} request(s), above ${(s.maxErrorRate * 100).toFixed(1)} %`,
      figures: facts,
    };
  // Response times of a few requests say little: latency is judged at the hold's end only.
  const slower = (fresh.p95Ms ?? 0) - (stable.p95Ms ?? 0);
  if (ratio !== undefined && ratio > s.maxLatencyRatio && slower >= LATENCY_FLOOR_MS && fresh.requests >= EARLY_EVIDENCE)
    return {
      failed: true,
      plain: false,
      why: `p95 ${fresh.p95Ms} ms is ${ratio.toFixed(2)}× the stable ${stable.p95Ms} ms, above ${s.maxLatencyRatio}×`,
      figures: facts,
    };
  return {
    failed: false,
    plain: false,
    why: `error rate ${(errorRate * 100).toFixed(1)} % over ${fresh.requests} request(s)${ratio !== undefined ? `, p95 ${ratio.toFixed(2)}× the stable one` : ""}`,
    figures: facts,
  };
}
