// Cells proved by measuring, not by reading files back: the kernel OOM-kills, throttles and caps
// processes in them; isolation changes what a process sees; bad input leaves no cgroup behind.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Code, ConnectError, observe, runtime } from "@aether/sdk";
import { CellBackend } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { CgroupVersion } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { collect, eventually, isRunning, startDaemon, useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";

const MiB = 1024n * 1024n;
const SH = "/bin/sh";

/** utime+stime of a process in seconds, from /proc (USER_HZ = 100). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Every directory below a cgroup path, to prove nothing was left behind. */
function cgroupTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let names: string[] = [];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) {
        out.push(p);
        walk(p);
      }
    }
  };
  walk(dir);
  return out.sort();
}

describe("cells", () => {
  const env = useDaemon();
  const start = (cell: string, argv: string[]) => env.aether.runtime.startExecutable({ cell, argv });

  it("the node reports which cgroup hierarchy cells use", async () => {
    const { node } = await env.aether.node.getNodeInfo({});
    const { cell } = await env.aether.cells.allocateCell({ name: "probe" });
    const expected = cell?.backend === CellBackend.CGROUP_V1 ? CgroupVersion.V1 : CgroupVersion.V2;
    assert.equal(node?.capabilities?.cgroup?.cellsVersion, expected);
    await env.aether.cells.freeCell({ cell: "probe" });
  });

  it("a process over its cell's 64 MiB memory limit is OOM-killed, and says so; a neighbour outside is untouched", async () => {
    await env.aether.cells.allocateCell({ name: "small", limits: { memoryMaxBytes: 64n * MiB } });
    const neighbour = (await env.aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"] })).executable;
    // The shell holds 256 MiB of command substitution output in memory.
    const hog = (await start("small", [SH, "-c", "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived ${#x}"])).executable;
    const { executable: done } = await env.aether.runtime.waitExecutable({ executable: hog?.id ?? "" });
    assert.equal(done?.signal, "SIGKILL");
    assert.match(done?.stateReason ?? "", /OOM killer .*cell small reached its memory limit/);
    const logs = await collect(env.aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: hog?.id ?? "" }));
    assert.doesNotMatch(logs[observe.LogChannel.STDOUT] ?? "", /survived/);
    const { stats } = await env.aether.cells.getCellStats({ cell: "small" });
    assert.ok((stats?.oomKillCount ?? 0n) >= 1n);
    assert.ok((stats?.memoryPeakBytes ?? 0n) <= 64n * MiB);
    assert.ok(isRunning(neighbour?.pid ?? 0), "the neighbour outside the cell still runs");
    await env.aether.runtime.stopExecutable({ executable: neighbour?.id ?? "", gracePeriod: { seconds: 0n } });
  });

  it("a busy loop in a cell with cpu max 20% of one CPU uses 15-25% (cgroup accounting and /proc agree)", async () => {
    await env.aether.cells.allocateCell({ name: "slow", limits: { cpuMax: { quotaUsec: 20_000n, periodUsec: 100_000n } } });
    const spin = (await start("slow", [SH, "-c", "while :; do :; done"])).executable;
    const pid = spin?.pid ?? 0;
    await new Promise((r) => setTimeout(r, 300)); // past the first period
    const before = (await env.aether.cells.getCellStats({ cell: "slow" })).stats;
    const procBefore = cpuSeconds(pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 2000));
    const after = (await env.aether.cells.getCellStats({ cell: "slow" })).stats;
    const procAfter = cpuSeconds(pid);
    const wall = (performance.now() - t0) / 1000;
    const cgroupShare = Number((after?.cpuUsageUsec ?? 0n) - (before?.cpuUsageUsec ?? 0n)) / 1e6 / wall;
    const procShare = (procAfter - procBefore) / wall;
    assert.ok(cgroupShare >= 0.15 && cgroupShare <= 0.25, `cgroup accounting: ${(cgroupShare * 100).toFixed(1)}% of a CPU`);
    assert.ok(procShare >= 0.15 && procShare <= 0.25, `/proc: ${(procShare * 100).toFixed(1)}% of a CPU`);
    assert.ok((after?.cpuThrottledPeriods ?? 0n) > (before?.cpuThrottledPeriods ?? 0n), "the kernel throttled it");
    await env.aether.runtime.stopExecutable({ executable: spin?.id ?? "", gracePeriod: { seconds: 0n } });
  });

  it("a fork bomb in a cell with pids max 32 never exceeds 32 tasks, and aetherd stays responsive", async () => {
    await env.aether.cells.allocateCell({ name: "bomb", limits: { pidsMax: 32n } });
    const bomb = (await start("bomb", [SH, "-c", "i=0; while [ $i -lt 500 ]; do /bin/sleep 60 & i=$((i+1)); done; wait"])).executable;
    let peak = 0;
    let slowest = 0;
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      const { stats } = await env.aether.cells.getCellStats({ cell: "bomb" });
      peak = Math.max(peak, Number(stats?.pidsCurrent ?? 0n));
      const t = performance.now();
      await env.aether.node.checkHealth({});
      slowest = Math.max(slowest, performance.now() - t);
    }
    assert.ok(peak <= 32, `peak ${peak} tasks`);
    assert.ok(peak >= 30, `the bomb really tried (peak ${peak})`);
    assert.ok(slowest < 500, `a health check took ${slowest.toFixed(0)} ms during the bomb`);
    // dash gives up when fork fails, leaving its children behind: the executable's own cgroup
    // knows them, so they are killed with it and the cell is left empty.
    const { executable: ended } = await env.aether.runtime.waitExecutable({ executable: bomb?.id ?? "", timeout: { seconds: 20n } });
    // What was left: sleeps, and maybe a forked shell caught before it ran sleep.
    assert.match(ended?.stateReason ?? "", /; \d+ processes it left running \((sleep|sh)(, (sleep|sh))?\) were killed$/);
    await eventually(
      async () => ((await env.aether.cells.getCell({ cell: "bomb" })).cell?.processCount === 0 ? true : undefined),
      5000,
      "the cell to be empty",
    );
    await env.aether.cells.freeCell({ cell: "bomb" });
  });

  it("with pid isolation a process is pid 1; with network isolation it sees only lo; uts gives the cell's hostname", async () => {
    await env.aether.cells.allocateCell({ name: "boxed", isolation: { pid: true, network: true, uts: true, ipc: true, mount: true } });
    const probe = (
      await start("boxed", [
        SH,
        "-c",
        "echo pid=$$; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; hostname; ls /proc | grep -c '^[0-9]'",
      ])
    ).executable;
    await env.aether.runtime.waitExecutable({ executable: probe?.id ?? "" });
    const out = (await collect(env.aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: probe?.id ?? "" })))[
      observe.LogChannel.STDOUT
    ];
    const [pidLine, netdev, hostname, procCount] = (out ?? "").trim().split("\n");
    assert.equal(pidLine, "pid=1");
    assert.equal(netdev, "lo");
    assert.equal(hostname, "boxed");
    assert.ok(Number(procCount) <= 3, `its /proc shows only its own processes (${procCount})`);

    // Two processes of the cell share its network namespace (like a pod), each with its own pid 1.
    const server = (await start("boxed", ["/bin/sh", "-c", "readlink /proc/self/ns/net; sleep 60"])).executable;
    const other = (await start("boxed", ["/bin/sh", "-c", "readlink /proc/self/ns/net"])).executable;
    await env.aether.runtime.waitExecutable({ executable: other?.id ?? "" });
    const nsA = await eventually(
      async () =>
        (await collect(env.aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: server?.id ?? "" })))[
          observe.LogChannel.STDOUT
        ],
    );
    const nsB = (await collect(env.aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: other?.id ?? "" })))[
      observe.LogChannel.STDOUT
    ];
    assert.equal(nsA, nsB);
    assert.notEqual(nsA?.trim(), readlinkSync("/proc/self/ns/net"), "not the host's network namespace");
    // pid 1 ignores SIGTERM without a handler: the stop ends with SIGKILL after the grace period.
    const { executable: stopped } = await env.aether.runtime.stopExecutable({
      executable: server?.id ?? "",
      gracePeriod: { nanos: 300_000_000 },
    });
    assert.equal(stopped?.state, runtime.ExecutableState.EXITED);
  });

  it("nested cells: listed in tree order, children inherit isolation and are bounded by the parent", async () => {
    await env.aether.cells.allocateCell({ name: "team-a", limits: { memoryMaxBytes: 128n * MiB }, isolation: { network: true } });
    await env.aether.cells.allocateCell({ name: "team-a/web", limits: { cpuWeight: 200 } });
    await env.aether.cells.allocateCell({ name: "team-a/build" });
    const { cells } = await env.aether.cells.listCells({ root: "team-a" });
    assert.deepEqual(
      cells.map((c) => c.name),
      ["team-a", "team-a/build", "team-a/web"],
    );
    assert.deepEqual(cells[0]?.children, ["team-a/build", "team-a/web"]);
    assert.equal(cells[2]?.parent, "team-a");
    assert.equal(cells[2]?.isolation?.network, true, "inherited");
    assert.equal(cells[2]?.namespaceHolderPid, cells[0]?.namespaceHolderPid, "the parent's namespaces");
    assert.equal(cells[2]?.limits?.cpuWeight, 200);
    const shares = readFileSync(
      join(
        cells[2]?.cgroupPaths.cpu ?? cells[2]?.cgroupPaths.unified ?? "",
        cells[2]?.backend === CellBackend.CGROUP_V1 ? "cpu.shares" : "cpu.weight",
      ),
      "utf8",
    ).trim();
    assert.equal(shares, cells[2]?.backend === CellBackend.CGROUP_V1 ? "2048" : "200", "weight 200 is twice the default share");
    await rejectsWith(
      env.aether.cells.freeCell({ cell: "team-a" }),
      Code.FailedPrecondition,
      /has child cells \(team-a\/build, team-a\/web\)/,
    );
  });

  it("Free refuses a cell with live processes unless asked to stop them; UpdateCell refuses memory below usage", async () => {
    await env.aether.cells.allocateCell({ name: "busy" });
    const hold = (await start("busy", [SH, "-c", "x=$(head -c 20971520 /dev/zero | tr '\\0' a); sleep 600"])).executable;
    await rejectsWith(
      env.aether.cells.freeCell({ cell: "busy" }),
      Code.FailedPrecondition,
      /1 running executable\(s\) \(.+\); stop them, or free with stop_executables/,
    );
    await eventually(
      async () => ((await env.aether.cells.getCellStats({ cell: "busy" })).stats?.memoryCurrentBytes ?? 0n) > 20n * MiB || undefined,
      10_000,
      "the process to hold 20 MiB",
    );
    await rejectsWith(
      env.aether.cells.updateCell({ cell: "busy", limits: { memoryMaxBytes: 4n * MiB } }),
      Code.FailedPrecondition,
      /below what cell busy uses now/,
    );
    const { cell } = await env.aether.cells.updateCell({ cell: "busy", limits: { memoryMaxBytes: 512n * MiB, pidsMax: 100n } });
    assert.equal(cell?.limits?.memoryMaxBytes, 512n * MiB);
    const freed = await env.aether.cells.freeCell({ cell: "busy", stopExecutables: true });
    assert.deepEqual(freed.stoppedExecutables, [hold?.name]);
    await eventually(() => (isRunning(hold?.pid ?? 0) ? undefined : true));
  });

  describe("bad input gets a clear error and leaves no cgroup behind", () => {
    const cases: Array<[string, () => Promise<unknown>, Code, RegExp]> = [
      [
        "weight 0",
        () => env.aether.cells.allocateCell({ name: "w0", limits: { cpuWeight: 0 } }),
        Code.InvalidArgument,
        /cpu_weight 0 is outside 1..10000/,
      ],
      [
        "weight too high",
        () => env.aether.cells.allocateCell({ name: "w1", limits: { cpuWeight: 10001 } }),
        Code.InvalidArgument,
        /outside 1..10000/,
      ],
      [
        "period out of range",
        () => env.aether.cells.allocateCell({ name: "p0", limits: { cpuMax: { quotaUsec: 5000n, periodUsec: 10n } } }),
        Code.InvalidArgument,
        /period_usec 10 is outside/,
      ],
      [
        "tiny memory",
        () => env.aether.cells.allocateCell({ name: "m0", limits: { memoryMaxBytes: 4096n } }),
        Code.InvalidArgument,
        /below 1 MiB/,
      ],
      [
        "garbage cpuset",
        () => env.aether.cells.allocateCell({ name: "c0", limits: { cpusetCpus: "zero-one" } }),
        Code.InvalidArgument,
        /not a list like/,
      ],
      [
        "cpuset outside the host's CPUs",
        () => env.aether.cells.allocateCell({ name: "c1", limits: { cpusetCpus: "0-511" } }),
        Code.InvalidArgument,
        /not within the CPUs the parent may use/,
      ],
      ["dot-dot name", () => env.aether.cells.allocateCell({ name: "../escape" }), Code.InvalidArgument, /each '\/'-separated part/],
      ["absolute name", () => env.aether.cells.allocateCell({ name: "/etc" }), Code.InvalidArgument, /each '\/'-separated part/],
      ["empty part", () => env.aether.cells.allocateCell({ name: "a//b" }), Code.InvalidArgument, /each '\/'-separated part/],
      ["missing parent", () => env.aether.cells.allocateCell({ name: "ghost/child" }), Code.NotFound, /parent cell ghost does not exist/],
      ["freeing the root", () => env.aether.cells.freeCell({ cell: "/" }), Code.NotFound, /no cell/],
      ["freeing nothing", () => env.aether.cells.freeCell({ cell: "" }), Code.InvalidArgument, /is empty/],
      ["unknown cell for a process", () => start("nowhere", ["/bin/true"]), Code.NotFound, /no cell with id or name "nowhere"/],
    ];
    for (const [what, call, code, pattern] of cases) {
      it(what, async () => {
        const { cell } = await env.aether.cells.allocateCell({
          name: `anchor-${what.replace(/[^a-z]+/g, "-").replace(/^-|-$/g, "")}`.slice(0, 60),
        });
        const root = join(cell?.cgroupPaths.pids ?? cell?.cgroupPaths.unified ?? "", "..", "..");
        const before = cgroupTree(root);
        await rejectsWith(call(), code, pattern);
        assert.deepEqual(cgroupTree(root), before, "no cgroup was created or removed");
        await env.aether.cells.freeCell({ cell: cell?.id ?? "" });
      });
    }
    it("a duplicate name", async () => {
      await env.aether.cells.allocateCell({ name: "twice" });
      await rejectsWith(env.aether.cells.allocateCell({ name: "twice" }), Code.AlreadyExists, /already exists/);
    });
  });
});

describe("cells survive a restart of aetherd", () => {
  it("limits, isolation and the processes inside are all still there after kill -9", async () => {
    let daemon = await startDaemon();
    let aether = await daemon.client();
    await aether.cells.allocateCell({
      name: "keep",
      labels: { tier: "db" },
      limits: { memoryMaxBytes: 96n * MiB, pidsMax: 50n },
      isolation: { network: true },
    });
    const inside = (await aether.runtime.startExecutable({ cell: "keep", argv: ["/bin/sleep", "600"] })).executable;
    const holder = (await aether.cells.getCell({ cell: "keep" })).cell?.namespaceHolderPid;
    await daemon.kill9();
    daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    try {
      const { cell } = await aether.cells.getCell({ cell: "keep" });
      assert.equal(cell?.limits?.memoryMaxBytes, 96n * MiB);
      assert.equal(cell?.labels.tier, "db");
      assert.equal(cell?.namespaceHolderPid, holder, "the same namespaces");
      assert.equal(cell?.processCount, 1);
      const { executable } = await aether.runtime.getExecutable({ executable: inside?.id ?? "" });
      assert.equal(executable?.state, runtime.ExecutableState.RUNNING);
      assert.equal(executable?.cell, "keep");
      await rejectsWith(aether.cells.freeCell({ cell: "keep" }), Code.FailedPrecondition, /running executable/);
      await aether.cells.freeCell({ cell: "keep", stopExecutables: true });
      assert.equal(isRunning(holder ?? 0), false, "the namespace holder went with the cell");
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
