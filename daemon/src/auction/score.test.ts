// The score function: each decline reason, bounds, determinism and monotonicity.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { score, WEIGHTS, type ScoreInput } from "./score.js";

const GiB = 2 ** 30;

function input(
  overrides: {
    requirements?: Partial<ScoreInput["requirements"]>;
    node?: Partial<ScoreInput["node"]>;
    capacity?: Partial<ScoreInput["capacity"]>;
    committed?: Partial<ScoreInput["committed"]>;
    telemetry?: Partial<ScoreInput["telemetry"]>;
    pool?: ScoreInput["pool"];
    rules?: Partial<ScoreInput["rules"]>;
  } = {},
): ScoreInput {
  return {
    requirements: {
      cpuMillis: 100,
      memoryBytes: 0,
      diskBytes: 0,
      requireKvm: false,
      hypervisor: "none",
      needsCells: false,
      nodeSelector: {},
      excludeNodes: [],
      ...overrides.requirements,
    },
    node: {
      id: "node-a",
      labels: { rack: "r1", "aether.io/arch": "x64" },
      kvm: { usable: false, reason: "/dev/kvm is missing" },
      hypervisors: { qemu: true, firecracker: false },
      cells: { available: true, reason: "" },
      ...overrides.node,
    },
    capacity: { cpuCount: 8, memoryTotalBytes: 32 * GiB, ...overrides.capacity },
    committed: { cpuMillis: 0, memoryBytes: 0, heldMemoryBytes: 0, heldDiskBytes: 0, workloads: 0, ...overrides.committed },
    telemetry: {
      memoryAvailableBytes: 30 * GiB,
      load1m: 1,
      runnableTasks: 2,
      pressureSomeAvg10: { cpu: 5, memory: 0, io: 1 },
      diskWearPercent: [],
      disksUnknown: ["vda"],
      ...overrides.telemetry,
    },
    pool: overrides.pool ?? { name: "default", freeBytes: 100 * GiB },
    rules: { memoryOvercommit: 1, cpuOvercommit: 4, ...overrides.rules },
  };
}

describe("score", () => {
  it("bids 1..1000 with factors 0..1 whose weights sum to 1", () => {
    const r = score(input());
    assert.ok(r.score >= 1 && r.score <= 1000, `score ${r.score}`);
    assert.equal(r.breakdown.declineReason, "");
    assert.deepEqual(
      r.breakdown.factors.map((f) => f.name),
      ["free_memory", "free_cpu", "pressure", "load", "disk_wear", "spread"],
    );
    for (const f of r.breakdown.factors) {
      assert.ok(f.value >= 0 && f.value <= 1, `${f.name} ${f.value}`);
      assert.ok(f.detail.length > 0);
    }
    const sum = Object.values(WEIGHTS).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-9);
  });

  it("declines a workload that excludes the node", () => {
    const r = score(input({ requirements: { excludeNodes: ["node-b", "node-a"] } }));
    assert.equal(r.score, -1);
    assert.match(r.breakdown.declineReason, /excludes this node \(node-a\)/);
  });

  it("declines when a node_selector label does not match, or is missing", () => {
    const wrong = score(input({ requirements: { nodeSelector: { rack: "r2" } } }));
    assert.equal(wrong.score, -1);
    assert.match(wrong.breakdown.declineReason, /node_selector rack=r2 does not match: this node's rack is "r1"/);
    const missing = score(input({ requirements: { nodeSelector: { tier: "ssd" } } }));
    assert.equal(missing.score, -1);
    assert.match(missing.breakdown.declineReason, /tier is not set/);
    assert.ok(score(input({ requirements: { nodeSelector: { rack: "r1" } } })).score > 0);
  });

  it("declines require_kvm without usable KVM, and bids with it", () => {
    const r = score(input({ requirements: { requireKvm: true } }));
    assert.equal(r.score, -1);
    assert.match(r.breakdown.declineReason, /needs KVM; this node has no usable KVM: \/dev\/kvm is missing/);
    assert.ok(score(input({ requirements: { requireKvm: true }, node: { kvm: { usable: true, reason: "ok" } } })).score > 0);
  });

  it("declines a VM whose hypervisor is missing and a cell where cells do not work", () => {
    assert.match(score(input({ requirements: { hypervisor: "firecracker" } })).breakdown.declineReason, /needs Firecracker/);
    assert.match(
      score(input({ requirements: { hypervisor: "qemu" }, node: { hypervisors: { qemu: false, firecracker: true } } })).breakdown
        .declineReason,
      /needs QEMU/,
    );
    assert.ok(
      score(input({ requirements: { hypervisor: "either" }, node: { hypervisors: { qemu: false, firecracker: true } } })).score > 0,
    );
    const cells = score(input({ requirements: { needsCells: true }, node: { cells: { available: false, reason: "no cgroup v2" } } }));
    assert.match(cells.breakdown.declineReason, /needs cells, which do not work on this node: no cgroup v2/);
  });

  it("declines memory beyond what the commitments leave, under the over-commit ratio", () => {
    const tooBig = score(input({ requirements: { memoryBytes: 40 * GiB } }));
    assert.equal(tooBig.score, -1);
    assert.match(tooBig.breakdown.declineReason, /^not enough memory: the workload needs 40.00 GiB/);
    // 32 GiB host, 28 GiB committed: 4 GiB left at 1.0, so 6 GiB is refused ...
    const committed = { memoryBytes: 28 * GiB };
    assert.equal(score(input({ requirements: { memoryBytes: 6 * GiB }, committed })).score, -1);
    // ... and fits at over-commit 1.5 (48 GiB may be promised), the kernel having 30 GiB available.
    assert.ok(score(input({ requirements: { memoryBytes: 6 * GiB }, committed, rules: { memoryOvercommit: 1.5 } })).score > 0);
    // Over-commit never conjures memory the kernel does not have (minus what bids hold).
    const kernelShort = score(
      input({
        requirements: { memoryBytes: 6 * GiB },
        rules: { memoryOvercommit: 2 },
        telemetry: { memoryAvailableBytes: 8 * GiB },
        committed: { memoryBytes: 3 * GiB, heldMemoryBytes: 3 * GiB },
      }),
    );
    assert.equal(kernelShort.score, -1);
    assert.match(kernelShort.breakdown.declineReason, /5.00 GiB free/);
  });

  it("declines CPU beyond CPUs × cpu_overcommit minus commitments", () => {
    // 8 CPUs × 4 = 32000 millis; 31000 committed leaves 1000.
    const r = score(input({ requirements: { cpuMillis: 2000 }, committed: { cpuMillis: 31_000 } }));
    assert.equal(r.score, -1);
    assert.match(r.breakdown.declineReason, /^not enough CPU: the workload needs 2000 millis and this node has 1000 free/);
    assert.ok(score(input({ requirements: { cpuMillis: 2000 }, committed: { cpuMillis: 31_000 }, rules: { cpuOvercommit: 5 } })).score > 0);
  });

  it("declines disk beyond the default pool's free space, counting disk held by bids", () => {
    const r = score(input({ requirements: { diskBytes: 200 * GiB } }));
    assert.equal(r.score, -1);
    assert.match(
      r.breakdown.declineReason,
      /not enough disk: the workload needs 200.00 GiB and the default pool default has 100.00 GiB free/,
    );
    assert.equal(score(input({ requirements: { diskBytes: 60 * GiB }, committed: { heldDiskBytes: 50 * GiB } })).score, -1);
    assert.ok(score(input({ requirements: { diskBytes: 60 * GiB } })).score > 0);
    const unavailable = score(input({ requirements: { diskBytes: GiB }, pool: { name: "default", unavailable: "the folder is gone" } }));
    assert.match(unavailable.breakdown.declineReason, /default pool default is unavailable: the folder is gone/);
    // No disk needed: the pool does not matter.
    assert.ok(score(input({ pool: { name: "default", unavailable: "gone" } })).score > 0);
  });

  it("checks in a fixed order: the first reason that applies is given", () => {
    const r = score(input({ requirements: { excludeNodes: ["node-a"], requireKvm: true, memoryBytes: 100 * GiB } }));
    assert.match(r.breakdown.declineReason, /excludes this node/);
  });

  it("is deterministic: the same input gives the same score and breakdown", () => {
    const a = score(input({ requirements: { memoryBytes: 3 * GiB, cpuMillis: 1500 }, committed: { workloads: 4, memoryBytes: 5 * GiB } }));
    const b = score(input({ requirements: { memoryBytes: 3 * GiB, cpuMillis: 1500 }, committed: { workloads: 4, memoryBytes: 5 * GiB } }));
    assert.deepEqual(a, b);
  });

  it("more free memory never lowers the score", () => {
    let previous = -Infinity;
    for (let availableGiB = 1; availableGiB <= 32; availableGiB++) {
      const s = score(input({ requirements: { memoryBytes: GiB }, telemetry: { memoryAvailableBytes: availableGiB * GiB } })).score;
      if (availableGiB === 1) assert.ok(s >= 1, "exactly enough memory still bids");
      assert.ok(s >= previous, `available ${availableGiB} GiB: ${s} < ${previous}`);
      previous = s;
    }
    let before = Infinity;
    for (let committedGiB = 0; committedGiB <= 30; committedGiB += 2) {
      const s = score(input({ requirements: { memoryBytes: GiB }, committed: { memoryBytes: committedGiB * GiB } })).score;
      assert.ok(s <= before, `more committed memory raised the score at ${committedGiB} GiB`);
      before = s;
    }
  });

  it("stays within 1..1000 at the extremes, and unknown figures are neutral", () => {
    const best = score(
      input({
        capacity: { cpuCount: 64, memoryTotalBytes: 1024 * GiB },
        telemetry: {
          memoryAvailableBytes: 1024 * GiB,
          load1m: 0,
          pressureSomeAvg10: { cpu: 0, memory: 0, io: 0 },
          diskWearPercent: [{ device: "nvme0n1", percentageUsed: 0 }],
        },
        requirements: { cpuMillis: 0 },
      }),
    );
    assert.equal(best.score, 1000);
    const worst = score(
      input({
        requirements: { memoryBytes: 2 * GiB, cpuMillis: 1000 },
        capacity: { cpuCount: 1, memoryTotalBytes: 2 * GiB },
        rules: { cpuOvercommit: 1 },
        telemetry: {
          memoryAvailableBytes: 2 * GiB,
          load1m: 50,
          pressureSomeAvg10: { cpu: 100, memory: 100, io: 100 },
          diskWearPercent: [{ device: "sda", percentageUsed: 180 }],
        },
        committed: { workloads: 1e9 },
      }),
    );
    assert.equal(worst.score, 1);
    const unknown = score(input({ telemetry: { pressureSomeAvg10: {}, diskWearPercent: [], disksUnknown: [] } })).breakdown.factors;
    assert.equal(unknown.find((f) => f.name === "pressure")?.value, 0.5);
    assert.match(unknown.find((f) => f.name === "pressure")?.detail ?? "", /^unknown/);
    assert.equal(unknown.find((f) => f.name === "disk_wear")?.value, 0.5);
  });

  it("a worn disk, pressure, load and more workloads each lower the score", () => {
    const base = score(input()).score;
    assert.ok(
      score(input({ telemetry: { diskWearPercent: [{ device: "nvme0n1", percentageUsed: 90 }] } })).score <
        score(input({ telemetry: { diskWearPercent: [{ device: "nvme0n1", percentageUsed: 5 }] } })).score,
    );
    assert.ok(score(input({ telemetry: { pressureSomeAvg10: { cpu: 60, memory: 0, io: 1 } } })).score < base);
    assert.ok(score(input({ telemetry: { load1m: 7 } })).score < base);
    assert.ok(score(input({ committed: { workloads: 10 } })).score < base);
  });
});
