// The v2 backend against a directory tree laid out like the unified hierarchy (these machines have
// no v2 controllers to test it on for real): what it writes, where processes go, what it removes.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { CellLimitsSchema } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { directoryTreeCgroupFs } from "./cgroup-fs.js";
import { CgroupV2Backend, PROCS_LEAF } from "./cgroup-v2.js";
import { limitsFromProto } from "./limits.js";

function fakeHierarchy(): string {
  const own = join(mkdtempSync(join(tmpdir(), "aether-cgroup2-")), "aetherd.service");
  mkdirSync(own);
  writeFileSync(join(own, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  writeFileSync(join(own, "cgroup.subtree_control"), "");
  writeFileSync(join(own, "cpuset.cpus.effective"), "0-3\n");
  writeFileSync(join(own, "cpuset.mems.effective"), "0\n");
  return own;
}

const read = (...parts: string[]) => readFileSync(join(...parts), "utf8");

describe("cgroup v2 backend (directory tree)", () => {
  it("creates the tree with controllers delegated at every level and processes in a _procs leaf", async () => {
    const own = fakeHierarchy();
    const backend = new CgroupV2Backend(join(own, "aether"), directoryTreeCgroupFs);
    const limits = limitsFromProto(
      create(CellLimitsSchema, {
        cpuWeight: 250,
        cpuMax: { quotaUsec: 20_000n, periodUsec: 100_000n },
        cpusetCpus: "1-2",
        memoryMaxBytes: 64n << 20n,
        memoryHighBytes: 48n << 20n,
        pidsMax: 32n,
      }),
    );
    await backend.create(["default", "web"], limits);
    const cell = join(own, "aether", "default", "web");
    for (const dir of [join(own, "aether"), join(own, "aether", "default"), cell]) {
      assert.equal(read(dir, "cgroup.subtree_control"), "+cpu +cpuset +memory +pids", dir);
    }
    assert.equal(read(cell, "cpu.weight"), "250");
    assert.equal(read(cell, "cpu.max"), "20000 100000");
    assert.equal(read(cell, "cpuset.cpus"), "1-2");
    assert.equal(read(cell, "memory.max"), String(64 << 20));
    assert.equal(read(cell, "memory.high"), String(48 << 20));
    assert.equal(read(cell, "pids.max"), "32");
    assert.ok(existsSync(join(cell, PROCS_LEAF)));
    assert.deepEqual(backend.procsFiles(["default", "web"]), [join(cell, PROCS_LEAF, "cgroup.procs")]);
    assert.deepEqual(backend.paths(["default", "web"]), { unified: cell });
    assert.equal(await backend.parentCpus(["default", "web", "child"]), "1-2", "a child cell is bounded by its parent's CPUs");
    writeFileSync(join(own, "aether", "cpuset.cpus.effective"), "0-3\n"); // what the kernel shows there
    assert.equal(await backend.parentCpus(["other", "top"]), "0-3", "a new tenant is bounded by the root's CPUs");
  });

  it("writes 'max' for unlimited, reads stats in the v2 formats, and removes the tenant folder with its last cell", async () => {
    const own = fakeHierarchy();
    const backend = new CgroupV2Backend(join(own, "aether"), directoryTreeCgroupFs);
    await backend.create(["t", "a"], limitsFromProto(undefined));
    await backend.create(["t", "b"], limitsFromProto(undefined));
    const a = join(own, "aether", "t", "a");
    assert.equal(read(a, "cpu.max"), "max 100000");
    assert.equal(read(a, "memory.max"), "max");
    assert.equal(read(a, "pids.max"), "max");
    assert.equal(read(a, "cpu.weight"), "100");
    writeFileSync(
      join(a, "cpu.stat"),
      "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\nthrottled_usec 700\n",
    );
    writeFileSync(join(a, "memory.current"), "4096\n");
    writeFileSync(join(a, "memory.peak"), "8192\n");
    writeFileSync(join(a, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
    writeFileSync(join(a, "pids.current"), "2\n");
    assert.deepEqual(await backend.stats(["t", "a"]), {
      cpuUsageUsec: 1500,
      cpuUserUsec: 1000,
      cpuSystemUsec: 500,
      cpuThrottledUsec: 700,
      cpuPeriods: 10,
      cpuThrottledPeriods: 4,
      memoryCurrentBytes: 4096,
      memoryPeakBytes: 8192,
      oomKillCount: 1,
      pidsCurrent: 2,
    });
    await backend.remove(["t", "a"]);
    assert.equal(existsSync(a), false);
    assert.ok(existsSync(join(own, "aether", "t")), "another cell remains in the tenant");
    await backend.remove(["t", "b"]);
    assert.equal(existsSync(join(own, "aether", "t")), false);
  });

  it("refuses to remove a cell that still has child cells", async () => {
    const own = fakeHierarchy();
    const backend = new CgroupV2Backend(join(own, "aether"), directoryTreeCgroupFs);
    await backend.create(["t", "p"], limitsFromProto(undefined));
    await backend.create(["t", "p", "c"], limitsFromProto(undefined));
    await assert.rejects(backend.remove(["t", "p"]), /child cgroups/);
  });
});
