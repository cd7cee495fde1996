// The strategies as pure functions: a rolling update never plans fewer ready instances than
// wanted - maxUnavailable; a canary goes through its stages and fails a stage on its error rate but
// not on a few milliseconds of p95; the weights split the traffic by group, never to nobody.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RolloutPhase, RolloutSchema, type Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { splitWeights } from "./router.js";
import { canary } from "./strategies/canary.js";
import { rolling } from "./strategies/rolling.js";
import type { Observed } from "./strategies/strategy.js";

const observed = (over: Partial<Observed>): Observed => ({
  nowMs: 0,
  wanted: 4,
  stableLive: 4,
  newLive: 0,
  stableReady: 4,
  newReady: 0,
  traffic: true,
  stable: undefined,
  fresh: undefined,
  stageStartMs: 0,
  ...over,
});

describe("rollout strategies", () => {
  it("rolling 4 with maxUnavailable 1: every plan keeps 3 ready, and it ends with 4 new", () => {
    let r: Rollout = create(RolloutSchema, {
      phase: RolloutPhase.PROGRESSING,
      stableInstances: 4,
      strategy: { kind: { case: "rolling", value: { maxUnavailable: 1 } } },
    });
    for (let step = 0; step < 20; step++) {
      // New instances are ready as soon as placed; removed old ones are gone at once.
      const o = observed({
        stableLive: r.stableInstances,
        stableReady: r.stableInstances,
        newLive: r.newInstances,
        newReady: r.newInstances,
      });
      const plan = rolling(r, o);
      assert.ok(plan.stable + o.newReady >= 3, `step ${step}: ${plan.stable} old + ${o.newReady} new ready`);
      assert.ok(plan.stable + plan.fresh <= 4, `step ${step}: no surge (${plan.stable} + ${plan.fresh})`);
      if (plan.outcome === "succeeded") {
        assert.equal(plan.fresh, 4);
        assert.equal(plan.stable, 0);
        return;
      }
      r = create(RolloutSchema, { ...r, stableInstances: plan.stable, newInstances: plan.fresh, stage: plan.stage, weight: plan.weight });
    }
    assert.fail("the rolling update did not end in 20 steps");
  });

  it("canary: a held stage passes to the next; 20 % errors fail the first stage at once; 4 ms against 1 ms is not slow", () => {
    const r = create(RolloutSchema, {
      phase: RolloutPhase.PROGRESSING,
      stableInstances: 2,
      newInstances: 1,
      weight: 5,
      strategy: { kind: { case: "canary", value: { hold: { seconds: 10n } } } },
    });
    const base = { wanted: 2, stableLive: 2, stableReady: 2, newLive: 1, newReady: 1 };
    const quick = canary(
      r,
      observed({ ...base, nowMs: 1_000, fresh: { requests: 15, errors: 0, p95Ms: 4 }, stable: { requests: 300, errors: 0, p95Ms: 1 } }),
    );
    assert.equal(quick.stage, 0, "held");
    const passed = canary(
      r,
      observed({ ...base, nowMs: 11_000, fresh: { requests: 30, errors: 0, p95Ms: 4 }, stable: { requests: 600, errors: 0, p95Ms: 1 } }),
    );
    assert.equal(passed.stage, 1);
    assert.equal(passed.decision?.action, "stage");
    const failed = canary(
      r,
      observed({ ...base, nowMs: 2_000, fresh: { requests: 20, errors: 4, p95Ms: 1 }, stable: { requests: 400, errors: 0, p95Ms: 1 } }),
    );
    assert.equal(failed.outcome, "rollback");
    assert.equal(failed.decision?.figures.error_rate, "0.2");
    const slow = canary(
      r,
      observed({ ...base, nowMs: 11_000, fresh: { requests: 30, errors: 0, p95Ms: 400 }, stable: { requests: 600, errors: 0, p95Ms: 20 } }),
    );
    assert.equal(slow.outcome, "rollback", "400 ms against 20 ms is slow");
  });

  it("weights: 5 % to one new backend against two stable ones, and a group with no ready backend gets nothing", () => {
    const w = splitWeights(["a", "b"], ["n"], 5);
    const share = (w.get("n") ?? 0) / [...w.values()].reduce((x, y) => x + y, 0);
    assert.ok(Math.abs(share - 0.05) < 0.005, `new share ${share}`);
    for (const v of w.values()) assert.ok(v >= 0 && v <= 256);
    assert.deepEqual([...splitWeights(["a"], [], 50)], [["a", 256]]);
    assert.deepEqual([...splitWeights([], ["n"], 5)], [["n", 256]]);
  });
});
