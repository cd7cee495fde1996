import assert from "node:assert/strict";
import { it } from "node:test";
import { formatList, isSubset, limitsFromProto, parseList, weightToShares } from "./limits.js";

it("maps cpu weight to v1 shares linearly: the default to the default, ratios kept, clamped", () => {
  assert.equal(weightToShares(100), 1024);
  assert.equal(weightToShares(200), 2048);
  assert.equal(weightToShares(50), 512);
  assert.equal(weightToShares(1), 10);
  assert.equal(weightToShares(10_000), 102_400);
  assert.equal(weightToShares(0), 2, "never below the kernel's minimum");
});

it("parses, normalizes and compares kernel CPU lists", () => {
  assert.deepEqual(parseList("0-2,5,7-8"), [0, 1, 2, 5, 7, 8]);
  assert.equal(formatList([0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
  assert.equal(parseList("3-1"), undefined);
  assert.equal(parseList("a"), undefined);
  assert.ok(isSubset("1", "0-1"));
  assert.ok(!isSubset("0-2", "0-1"));
});

it("fills defaults: weight 100, period 100 ms, everything else unlimited", () => {
  assert.deepEqual(limitsFromProto(undefined), {
    cpuWeight: 100,
    cpuQuotaUsec: 0,
    cpuPeriodUsec: 100_000,
    cpusetCpus: "",
    cpusetMems: "",
    memoryMaxBytes: 0,
    memoryHighBytes: 0,
    pidsMax: 0,
  });
});
