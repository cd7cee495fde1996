// The deadman switch for real: three aetherd on this machine register with one aether-aggregator,
// each mapped to a test BMC (node-a by name, node-b by its slot; node-c has none). node-b stops
// answering (SIGSTOP of its aetherd, its workloads still running, as a hung host); the aggregator
// suspects it, fences it through its BMC, whose "power off" kills node-b's aetherd and workloads,
// and only then starts node-b's workloads on node-a or node-c, where they really run. node-b started
// again rejoins as a new member without its old workloads. A BMC stuck in PoweringOff, refusing the
// credentials or hanging leaves the workloads where they are with alerts, never two copies; so does
// node-c, which has no BMC. The timing split (detection, fence, re-placement) is printed.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AetherClient } from "@aether/sdk";
import {
  ClusterEventKind,
  NodeState,
  PlacementState,
  type ClusterEvent,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, powerOffHost, repoRoot, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startTestBmc, type TestBmc } from "./helpers/test-bmc.js";
import { runCommand } from "./helpers/run.js";
import { loadConfig } from "@aether/aggregator";

const TTL_MS = 2000;
const FENCE_TIMEOUT_MS = 2000;
const NAMES = ["node-a", "node-b", "node-c"] as const;
type Name = (typeof NAMES)[number];

const ms = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : Number.NaN);
const WORKLOAD_LABEL = "aether.io/workload";

interface Member {
  name: Name;
  dir: string;
  config: string;
  daemon: TestDaemon;
  client: AetherClient;
  id: string;
}

describe("fencing: three aetherd, test BMCs, one aggregator", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-fencing-"));
  let agg: TestAggregator;
  const bmcs = new Map<Name, TestBmc>();
  const members = new Map<Name, Member>();
  /** pids of node-b's workloads, killed with it when its BMC powers it off. */
  let bWorkloadPids: number[] = [];
  let bPoweredOff = 0;
  /** Nodes whose aetherd is stopped (SIGSTOP): not asked anything. */
  const hung = new Set<Name>();

  const member = (n: Name) => members.get(n) as Member;
  const bmc = (n: Name) => bmcs.get(n) as TestBmc;

  async function startMember(name: Name, slot: number): Promise<Member> {
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    const config = join(dir, `${name}.toml`);
    writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\nchassis = "c1"\nslot = ${slot}\n`);
    const existing = members.get(name);
    const daemon = await startDaemon({
      dir: nodeDir,
      args: ["--config", config],
      ...(existing && { cgroupRoot: existing.daemon.cgroupRoot }),
    });
    const client = await daemon.client();
    const id = await eventually(
      async () => (await client.node.getNodeInfo({}).catch(() => undefined))?.node?.id,
      10_000,
      `${name} answering`,
    );
    const m = { name, dir: nodeDir, config, daemon, client, id };
    members.set(name, m);
    return m;
  }

  /** The BMC's "power off" of node-b: its aetherd and every workload process, at once. */
  async function powerOffB(): Promise<void> {
    bPoweredOff++;
    await powerOffHost(member("node-b").daemon, bWorkloadPids);
    hung.delete("node-b");
  }

  async function events(): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const r of agg.client.aggregator.streamClusterEvents({})) if (r.event) out.push(r.event);
    return out;
  }

  async function nodeOf(name: Name): Promise<Node | undefined> {
    return (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === name);
  }

  async function placements(): Promise<WorkloadPlacement[]> {
    return (await agg.client.aggregator.listPlacements({ pageSize: 1000 })).placements;
  }

  /** Executables running on a node that carry a workload id, by workload id. */
  async function runningWorkloads(name: Name): Promise<Map<string, string>> {
    const { executables } = await member(name).client.runtime.listExecutables({ pageSize: 1000 });
    return new Map(
      executables
        .filter((e) => e.state === ExecutableState.RUNNING && e.labels[WORKLOAD_LABEL])
        .map((e) => [e.labels[WORKLOAD_LABEL] as string, e.id]),
    );
  }

  /** Deploys sleeps until node-b holds at least `onB` of them (the spread tie-break shares them out). */
  async function deployUntilOnB(prefix: string, onB: number): Promise<WorkloadPlacement[]> {
    const bId = member("node-b").id;
    const mine: WorkloadPlacement[] = [];
    for (let i = 0; mine.filter((p) => p.node === bId).length < onB; i++) {
      assert.ok(i < 20, `node-b got ${onB} of ${i} workloads`);
      const { placement } = await agg.client.aggregator.deploy({
        spec: {
          name: `${prefix}-${i}`,
          requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      });
      assert.equal(placement?.state, PlacementState.PLACED, placement?.stateReason);
      mine.push(placement as WorkloadPlacement);
    }
    return mine;
  }

  /** Stops node-b's aetherd (SIGSTOP): no heartbeats, no answers; its workloads keep running. */
  async function hangB(): Promise<void> {
    const { executables } = await member("node-b").client.runtime.listExecutables({ pageSize: 1000 });
    bWorkloadPids = executables.filter((e) => e.state === ExecutableState.RUNNING && e.pid > 0).map((e) => e.pid);
    process.kill(member("node-b").daemon.process.pid as number, "SIGSTOP");
    hung.add("node-b");
  }

  /**
   * No workload runs twice: every answering node's running workloads, plus `hungOnB` (workloads of
   * node-b while its aetherd is stopped and cannot be asked; their processes are checked by pid).
   */
  async function assertNoDuplicates(hungOnB: string[] = []): Promise<void> {
    const seen = new Map<string, string>();
    const add = (wid: string, where: string) => {
      assert.ok(!seen.has(wid), `workload ${wid} runs on ${seen.get(wid)} and on ${where}`);
      seen.set(wid, where);
    };
    for (const wid of hungOnB) add(wid, "node-b (its aetherd stopped, its processes alive)");
    for (const name of NAMES) {
      const d = member(name).daemon.process;
      if (hung.has(name) || d.exitCode !== null || d.signalCode !== null) continue;
      for (const wid of (await runningWorkloads(name)).keys()) add(wid, name);
    }
  }

  before(async () => {
    // BMCs first (the aggregator's config names them), then the aggregator, then the nodes.
    bmcs.set("node-a", await startTestBmc({ profile: "dmtf" }));
    bmcs.set("node-b", await startTestBmc({ profile: "ilo5", onPowerOff: () => powerOffB() }));
    const entries: string[] = [];
    for (const [name, b] of bmcs) {
      const pw = join(dir, `${name}.password`);
      writeFileSync(pw, `${b.password}\n`);
      chmodSync(pw, 0o600);
      writeFileSync(join(dir, `${name}-ca.pem`), b.caPem);
      const match = name === "node-b" ? `slot = 2\nchassis = "c1"` : `node = "${name}"`;
      entries.push(
        `[[bmcs]]\n${match}\nendpoint = "${b.url}"\nusername = "${b.username}"\npassword_file = "${name}.password"\nca_file = "${name}-ca.pem"\nprofile = "${b.profile}"\nrequest_timeout_ms = 800\nretries = 0\n`,
      );
    }
    writeFileSync(join(dir, "bmcs.toml"), entries.join("\n"));
    agg = await startAggregator({
      dir: join(dir, "agg"),
      args: [
        "--lease-ttl-ms",
        String(TTL_MS),
        "--bmcs",
        join(dir, "bmcs.toml"),
        "--fence-timeout-ms",
        String(FENCE_TIMEOUT_MS),
        "--fence-poll-interval-ms",
        "50",
        "--fence-retry-ms",
        "300",
      ],
    });
    await startMember("node-a", 1);
    await startMember("node-b", 2);
    await startMember("node-c", 3);
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({ state: NodeState.READY })).nodes.length === 3 ? true : undefined),
      20_000,
      "three READY nodes",
    );
  });

  after(async () => {
    for (const m of members.values()) {
      const pid = m.daemon.process.pid;
      if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGCONT");
    }
    for (const m of members.values()) {
      if (m.daemon.process.exitCode === null && m.daemon.process.signalCode === null) {
        await stopWorkloads(m.client);
        m.client.close();
        await m.daemon.stop();
      }
      m.daemon.cleanup();
    }
    for (const p of bWorkloadPids) {
      try {
        process.kill(-p, "SIGKILL");
      } catch {
        // Gone.
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    for (const b of bmcs.values()) await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a node that stops answering is suspected, fenced through its BMC, and only then are its workloads running on the others", async (t) => {
    const placed = await deployUntilOnB("w", 2);
    const b = member("node-b");
    const onB = placed.filter((p) => p.node === b.id);
    const before = (await events()).at(-1)?.sequence ?? 0n;
    await hangB();
    assert.ok(bWorkloadPids.length >= onB.length);

    const moved = await eventually(
      async () => {
        const all = await placements();
        const now = onB.map((p) => all.find((x) => x.workloadId === p.workloadId));
        return now.every((p) => p?.state === PlacementState.PLACED && p.node !== b.id) ? (now as WorkloadPlacement[]) : undefined;
      },
      TTL_MS + FENCE_TIMEOUT_MS + 15_000,
      "node-b's workloads re-placed",
    );
    assert.equal(bPoweredOff, 1, "the BMC powered node-b off once");
    assert.equal(bmc("node-b").powerState, "Off");
    assert.equal(bmc("node-a").resets.length, 0, "no other node was fenced");
    // Really running where they were placed, once.
    for (const p of moved) {
      const name = NAMES.find((n) => member(n).id === p.node) as Name;
      assert.ok(name === "node-a" || name === "node-c", `${p.name} moved to ${p.node}`);
      const { executable } = await member(name).client.runtime.getExecutable({ executable: p.resourceId });
      assert.equal(executable?.state, ExecutableState.RUNNING, `${p.name} runs on ${name}`);
      assert.equal(executable?.labels[WORKLOAD_LABEL], p.workloadId);
    }
    for (const pid of bWorkloadPids) assert.ok(!isRunning(pid), `node-b's old process ${pid} is gone`);
    await assertNoDuplicates();
    assert.equal((await nodeOf("node-b"))?.state, NodeState.FENCED);

    // The audit: suspect → fencing → fenced → re-placed, in order, with times.
    const mine = (await events()).filter((e) => e.sequence > before && (e.node === b.id || e.attributes.fenced_node === b.id));
    const first = (k: ClusterEventKind) => mine.find((e) => e.kind === k);
    const suspect = first(ClusterEventKind.NODE_SUSPECT);
    const fencing = first(ClusterEventKind.NODE_FENCING);
    const fenced = first(ClusterEventKind.NODE_FENCED);
    const replaced = mine.filter((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED);
    assert.ok(suspect && fencing && fenced, mine.map((e) => ClusterEventKind[e.kind]).join(" "));
    assert.equal(replaced.length, onB.length);
    assert.ok(
      suspect.sequence < fencing.sequence && fencing.sequence < fenced.sequence && replaced.every((e) => e.sequence > fenced.sequence),
    );
    assert.ok(
      ms(suspect.time) <= ms(fencing.time) && ms(fencing.time) <= ms(fenced.time) && replaced.every((e) => ms(e.time) >= ms(fenced.time)),
    );
    assert.ok(!mine.some((e) => e.kind === ClusterEventKind.NODE_FENCE_FAILED));
    assert.equal(fenced.attributes.bmc, bmc("node-b").url);

    const lastBeat = Date.parse(suspect.attributes.last_heartbeat ?? "");
    const detection = ms(suspect.time) - lastBeat;
    const fence = ms(fenced.time) - ms(suspect.time);
    const replacement = Math.max(...replaced.map((e) => ms(e.time))) - ms(fenced.time);
    const total = detection + fence + replacement;
    t.diagnostic(
      `BMC delay 0 s, TTL ${TTL_MS} ms: last heartbeat → suspect ${detection.toFixed(0)} ms (TTL + ${(detection - TTL_MS).toFixed(0)} ms), ` +
        `suspect → fenced ${fence.toFixed(0)} ms (BMC ${fenced.attributes.fence_duration_ms} ms), fenced → ${replaced.length} workloads running elsewhere ${replacement.toFixed(0)} ms; ` +
        `total ${total.toFixed(0)} ms, overhead beyond TTL + BMC delay ${(total - TTL_MS).toFixed(0)} ms`,
    );
    assert.ok(detection >= TTL_MS - 5, `suspected only after the TTL (${detection} ms)`);
    assert.ok(total - TTL_MS < 3000, `overhead ${total - TTL_MS} ms`);
  });

  it("node-b started again rejoins as a new member and does not resume its old workloads", async () => {
    const old = member("node-b");
    const before = (await events()).at(-1)?.sequence ?? 0n;
    const staleIds = (await placements())
      .filter((p) => p.auctionHistory.length === 2 && p.state === PlacementState.PLACED)
      .map((p) => p.workloadId);
    assert.ok(staleIds.length >= 2);
    const again = await startMember("node-b", 2);
    assert.equal(again.id, old.id, "the same node id (its state folder)");
    const node = await eventually(
      async () => {
        const n = await nodeOf("node-b");
        return n?.state === NodeState.READY ? n : undefined;
      },
      20_000,
      "node-b READY again",
    );
    assert.equal(node.labels["aether.io/incarnation"], "2");
    // Its old workloads are gone from it (released before it was let in), and still run elsewhere.
    const { executables } = await again.client.runtime.listExecutables({ pageSize: 1000 });
    for (const wid of staleIds)
      assert.ok(!executables.some((e) => e.labels[WORKLOAD_LABEL] === wid), `stale workload ${wid} was released on node-b`);
    for (const p of (await placements()).filter((x) => staleIds.includes(x.workloadId))) assert.notEqual(p.node, node.id);
    await assertNoDuplicates();
    const rejoined = (await events()).find((e) => e.sequence > before && e.kind === ClusterEventKind.NODE_REGISTERED && e.node === node.id);
    assert.ok(rejoined, "a registration event");
    assert.equal(rejoined.attributes.incarnation, "2");
    assert.match(rejoined.message, /rejoined .* as a new member \(incarnation 2\) after being fenced/);
  });

  it("an unconfirmed fence (PoweringOff forever, refused credentials, a hanging BMC) leaves the workloads where they are, with alerts; never two copies", async (t) => {
    const b = member("node-b");
    const placed = await deployUntilOnB("u", 1);
    const onB = placed.filter((p) => p.node === b.id);
    const before = (await events()).at(-1)?.sequence ?? 0n;
    const alerts = async (since = before) =>
      (await events()).filter((e) => e.sequence > since && e.node === b.id && e.kind === ClusterEventKind.NODE_FENCE_FAILED);
    /** The first alert matching pattern that was raised after now. */
    const expectAlert = async (pattern: RegExp, what: string) => {
      const since = (await events()).at(-1)?.sequence ?? 0n;
      return eventually(
        async () => (await alerts(since)).find((e) => pattern.test(e.message)),
        TTL_MS + 3 * FENCE_TIMEOUT_MS + 10_000,
        what,
      );
    };
    const stillOnB = async () => {
      const all = await placements();
      for (const p of onB) {
        const now = all.find((x) => x.workloadId === p.workloadId);
        assert.equal(now?.state, PlacementState.PLACED);
        assert.equal(now?.node, b.id, `${p.name} stays on node-b`);
      }
      for (const pid of bWorkloadPids) assert.ok(isRunning(pid), "node-b's workloads still run (the fence did not happen)");
      await assertNoDuplicates(onB.map((p) => p.workloadId));
    };

    bmc("node-b").powerState = "On";
    bmc("node-b").setMisbehaviour({ kind: "stuckPoweringOff" });
    await hangB();
    const stuck = await expectAlert(/not confirmed .*PoweringOff/, "the PoweringOff alert");
    assert.equal(stuck.attributes.alert, "true");
    assert.equal((await nodeOf("node-b"))?.state, NodeState.FENCE_FAILED);
    await stillOnB();

    bmc("node-b").setMisbehaviour({ kind: "status", status: 401, on: "any" });
    bmc("node-b").powerState = "On";
    const refused = await expectAlert(/refused the credentials/, "the refused-credentials alert");
    await stillOnB();

    bmc("node-b").setMisbehaviour({ kind: "hang" });
    const hangs = await expectAlert(/hung|did not answer/, "the hanging-BMC alert");
    t.diagnostic(`alerts: ${[stuck, refused, hangs].map((e) => e.message).join("\n")}`);
    await stillOnB();
    assert.equal(bPoweredOff, 1, "node-b was not powered off again");

    // The BMC recovers, but expires the session right after ForceOff: the fence is confirmed all the same.
    bmc("node-b").setMisbehaviour({ kind: "expireSessionsOnPowerOff" });
    await eventually(
      async () => {
        const all = await placements();
        return onB.every((p) => {
          const now = all.find((x) => x.workloadId === p.workloadId);
          return now?.state === PlacementState.PLACED && now.node !== b.id;
        })
          ? true
          : undefined;
      },
      30_000,
      "node-b's workloads re-placed once the fence was confirmed",
    );
    assert.equal(bPoweredOff, 2);
    await assertNoDuplicates();
    const all = await alerts();
    assert.ok(all.length >= 3, `${all.length} alerts`);
    for (const e of all) assert.ok(!e.message.includes(bmc("node-b").password), "no password in events");
  });

  it("a node with no BMC is suspected with an alert and keeps its workloads", async () => {
    const c = member("node-c");
    const onC = (await placements()).filter((p) => p.node === c.id && p.state === PlacementState.PLACED);
    assert.ok(onC.length > 0, "node-c hosts workloads");
    const before = (await events()).at(-1)?.sequence ?? 0n;
    process.kill(c.daemon.process.pid as number, "SIGSTOP");
    hung.add("node-c");
    try {
      const alert = await eventually(
        async () => (await events()).find((e) => e.sequence > before && e.node === c.id && e.kind === ClusterEventKind.NODE_FENCE_FAILED),
        TTL_MS + 10_000,
        "the no-BMC alert",
      );
      assert.equal(alert.attributes.cause, "no_bmc");
      assert.match(alert.message, /no BMC is registered for node node-c .*slot 3 of chassis c1.*its workloads stay where they are/);
      await new Promise((r) => setTimeout(r, 1000));
      const node = await nodeOf("node-c");
      assert.equal(node?.state, NodeState.SUSPECT);
      const all = await placements();
      for (const p of onC) assert.equal(all.find((x) => x.workloadId === p.workloadId)?.node, c.id, `${p.name} stays on node-c`);
      await assertNoDuplicates();
    } finally {
      process.kill(c.daemon.process.pid as number, "SIGCONT");
      hung.delete("node-c");
    }
    // Back: it registers again and is READY with its workloads, which never moved.
    await eventually(async () => ((await nodeOf("node-c"))?.state === NodeState.READY ? true : undefined), 15_000, "node-c READY again");
    const running = await runningWorkloads("node-c");
    for (const p of onC) assert.ok(running.has(p.workloadId), `${p.name} still runs on node-c`);
    await assertNoDuplicates();
  });

  it("aether cluster events and nodes show the fencing, and no password is anywhere in the aggregator's output", async () => {
    const env = { AETHER_AGGREGATOR: `unix://${agg.socket}` };
    const out = await runCommand("aether", ["cluster", "events", "--tail", "1000"], { env });
    assert.equal(out.code, 0, out.stderr);
    const b = member("node-b").id;
    for (const kind of ["node suspect", "node fencing", "node fenced", "node fence failed", "workload replaced"]) {
      assert.match(out.stdout, new RegExp(`  ${kind}  `), `aether cluster events shows ${kind}`);
    }
    const lines = out.stdout.split("\n").filter((l) => l.includes(`  ${b}  `) || l.includes(`from ${b}`));
    const order = ["node suspect", "node fencing", "node fenced", "workload replaced"].map((k) =>
      lines.findIndex((l) => l.includes(`  ${k}  `)),
    );
    assert.ok(
      order.every((i, k) => i >= 0 && (k === 0 || i > (order[k - 1] as number))),
      `suspect → fencing → fenced → replaced in order:\n${lines.join("\n")}`,
    );
    const nodes = await runCommand("aether", ["cluster", "nodes"], { env });
    assert.equal(nodes.code, 0, nodes.stderr);
    const log = agg.log() + readFileSync(join(agg.stateDir, "aggregator.log"), "utf8");
    for (const b2 of bmcs.values()) {
      assert.ok(!log.includes(b2.password), "no BMC password in the aggregator's log");
      assert.ok(!out.stdout.includes(b2.password), "no BMC password in the events");
    }
  });

  it("the README's [[bmcs]] example is what aether-aggregator accepts", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const block = [...readme.matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => m[1] ?? "").find((b) => b.includes("[[bmcs]]"));
    assert.ok(block, "README.md has a [[bmcs]] example");
    const file = join(dir, "readme-bmcs.toml");
    writeFileSync(file, block);
    const config = loadConfig({ bmcs: file, socket: join(dir, "x.sock"), stateDir: join(dir, "x") });
    assert.equal(config.bmcs.length, 2);
    assert.equal(config.bmcs[0]?.node, "node-b");
    assert.equal(config.bmcs[1]?.slot, 3);
    assert.equal(config.bmcs[1]?.chassis, "c7000-1");
  });
});
