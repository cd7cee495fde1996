// Maintenance mode across three real aetherd and one aggregator (issue 14, items 5 and 6): a drain
// moves a node's executables elsewhere one at a time, each new copy running before the old one
// stops; the drained node takes part in no auction, also after the aggregator is killed with
// kill -9 and started again, until it is uncordoned; a drain that finds no other node to bid stops
// with a sentence and the workload keeps running where it was; shutdown drains a node and powers it
// off through its (test) BMC, and it ends DECOMMISSIONED. `aether cluster events` has every step.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { AetherClient } from "@aether/sdk";
import {
  ClusterEventKind,
  NodeLifecycle,
  NodeState,
  PlacementState,
  type ClusterEvent,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startTestBmc, type TestBmc } from "./helpers/test-bmc.js";
import { runCommand } from "./helpers/run.js";

const NAMES = ["node-0", "node-1", "node-2"] as const;
type Name = (typeof NAMES)[number];
const LEASE_TTL_MS = 3000;

describe("maintenance mode: cordon, drain, uncordon, shutdown", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-maintenance-"));
  const marks = join(dir, "marks.log");
  let agg: TestAggregator;
  let bmc: TestBmc;
  const daemons = new Map<Name, TestDaemon>();
  const clients = new Map<Name, AetherClient>();
  const ids = new Map<Name, string>();
  const env = () => ({ AETHER_AGGREGATOR: `unix://${agg.socket}` });
  const aether = (...args: string[]) => runCommand("aether", ["cluster", ...args], { env: env(), timeoutMs: 120_000 });

  const id = (n: Name) => ids.get(n) as string;
  const nameOf = (nodeId: string) => NAMES.find((n) => ids.get(n) === nodeId) ?? nodeId;
  async function node(n: Name): Promise<Node> {
    return (await agg.client.aggregator.listNodes({})).nodes.find((x) => x.id === id(n)) as Node;
  }
  async function placement(name: string): Promise<WorkloadPlacement> {
    return (await agg.client.aggregator.getPlacement({ workload: name })).placement as WorkloadPlacement;
  }
  async function events(): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const r of agg.client.aggregator.streamClusterEvents({})) if (r.event) out.push(r.event);
    return out;
  }
  /** The executable's state on the node the placement names. */
  async function runningOn(p: WorkloadPlacement): Promise<ExecutableState | undefined> {
    const client = clients.get(nameOf(p.node) as Name);
    assert.ok(client, `${p.name} is on one of the nodes (${p.node})`);
    return (await client.runtime.getExecutable({ executable: p.resourceId })).executable?.state;
  }
  /** An executable that writes "start NAME PID NS" when it starts and "stop NAME PID NS" on SIGTERM. */
  async function deploy(name: string) {
    const script = `echo "start $0 $$ $(/bin/date +%s%N)" >> ${marks}; trap 'echo "stop $0 $$ $(/bin/date +%s%N)" >> ${marks}; exit 0' TERM; while :; do /bin/sleep 0.1; done`;
    return agg.client.aggregator.deploy({
      spec: {
        name,
        requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
        kind: { case: "executable", value: { argv: ["/bin/sh", "-c", script, name] } },
      },
    });
  }
  const code = async (work: Promise<unknown>) =>
    work.then(
      () => "OK",
      (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)),
    );

  before(async () => {
    bmc = await startTestBmc({
      profile: "dmtf",
      // The power off of node-2: its aetherd stops (it has no workloads left by then).
      onPowerOff: async () => {
        const d = daemons.get("node-2");
        const c = clients.get("node-2");
        if (c) await stopWorkloads(c).catch(() => undefined);
        if (d && d.process.exitCode === null && d.process.signalCode === null) await d.stop();
      },
    });
    const pw = join(dir, "node-2.password");
    writeFileSync(pw, `${bmc.password}\n`);
    chmodSync(pw, 0o600);
    writeFileSync(join(dir, "node-2-ca.pem"), bmc.caPem);
    writeFileSync(
      join(dir, "bmcs.toml"),
      `[[bmcs]]\nnode = "node-2"\nendpoint = "${bmc.url}"\nusername = "${bmc.username}"\npassword_file = "node-2.password"\nca_file = "node-2-ca.pem"\nprofile = "dmtf"\n`,
    );
    agg = await startAggregator({
      dir: join(dir, "agg"),
      args: [
        "--auction-window-ms",
        "2000",
        "--lease-ttl-ms",
        String(LEASE_TTL_MS),
        "--bmcs",
        join(dir, "bmcs.toml"),
        "--fence-timeout-ms",
        "5000",
        "--fence-poll-interval-ms",
        "50",
      ],
    });
    for (const [i, name] of NAMES.entries()) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      const config = join(dir, `${name}.toml`);
      writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\nslot = ${i + 1}\n`);
      const d = await startDaemon({ dir: nodeDir, args: ["--config", config] });
      daemons.set(name, d);
      const c = await d.client();
      clients.set(name, c);
      ids.set(
        name,
        (await eventually(async () => (await c.node.getNodeInfo({}).catch(() => undefined))?.node?.id, 10_000, name)) as string,
      );
    }
    await eventually(
      async () => {
        const { nodes } = await agg.client.aggregator.listNodes({});
        const ready = nodes.filter((n) => n.state === NodeState.READY && n.lifecycle === NodeLifecycle.ON_DUTY);
        return ready.length === NAMES.length ? true : undefined;
      },
      20_000,
      "three READY nodes on duty",
    );
  });

  after(async () => {
    for (const [name, d] of daemons) {
      try {
        if (d.process.exitCode === null && d.process.signalCode === null) {
          await stopWorkloads(clients.get(name) as AetherClient);
          (clients.get(name) as AetherClient).close();
          await d.stop();
        }
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    if (bmc) await bmc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("checks its requests: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, each with a sentence", async () => {
    const drain = (req: { node: string; maxMoves?: number }) =>
      (async () => {
        for await (const _ of agg.client.aggregator.drainNode(req)) break;
      })();
    assert.equal(await code(drain({ node: "" })), "InvalidArgument");
    assert.equal(await code(drain({ node: "no-such-node" })), "NotFound");
    assert.equal(await code(drain({ node: "node-1", maxMoves: 65 })), "InvalidArgument");
    await assert.rejects(
      (async () => {
        for await (const _ of agg.client.aggregator.shutdownNode({ node: "node-1" })) break;
      })(),
      (err: ConnectError) =>
        err.code === Code.FailedPrecondition && /no BMC is registered for node node-1.*Nothing was changed/.test(err.rawMessage),
    );
    assert.equal((await node("node-1")).lifecycle, NodeLifecycle.ON_DUTY, "a refused shutdown changed nothing");
    const cli = await aether("drain", "no-such-node");
    assert.equal(cli.code, 3, "NOT_FOUND exits 3");
    assert.match(cli.stderr, /no node no-such-node is registered with this aggregator; aether cluster nodes lists them/);
    const help = await aether("drain", "--help");
    assert.match(help.stdout, /--max-moves/);
    assert.match(help.stdout, /Examples:/);
  });

  it("a cordoned node takes no new workloads; uncordon puts it back", async () => {
    for (const n of ["node-1", "node-2"] as const) {
      const { node: cordoned } = await agg.client.aggregator.cordonNode({ node: n });
      assert.equal(cordoned?.lifecycle, NodeLifecycle.CORDONED);
    }
    const table = await aether("nodes");
    assert.match(table.stdout, /node-1\s+ready\s+cordoned/);
    for (const w of ["d-1", "d-2"]) {
      const { placement: p, auction } = await deploy(w);
      assert.equal(p?.node, id("node-0"), `${w} goes to the one node on duty`);
      assert.deepEqual(
        auction?.bids.map((b) => b.node),
        [id("node-0")],
        "cordoned nodes are not asked",
      );
    }
    for (const n of ["node-1", "node-2"]) {
      const r = await aether("uncordon", n);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`node ${n} is on duty`));
    }
  });

  it("drain moves both executables off node-0, one at a time, each new copy running before the old one stops; node-0 is DRAINED and in no auction", async () => {
    const before = (await events()).at(-1)?.sequence ?? 0n;
    const r = await aether("drain", "node-0", "--json");
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map(
        (l) =>
          JSON.parse(l) as { lifecycle?: string; done?: boolean; workloadsMoved?: number; maxMoves?: number; movesInProgress?: number },
      );
    const last = lines.at(-1);
    assert.equal(last?.lifecycle, "NODE_LIFECYCLE_DRAINED");
    assert.equal(last?.done, true);
    assert.equal(last?.workloadsMoved, 2);
    assert.ok(
      lines.every((l) => (l.movesInProgress ?? 0) <= 1),
      "never more than one move under way",
    );
    assert.equal((await node("node-0")).lifecycle, NodeLifecycle.DRAINED);
    const drainedJson = await aether("nodes", "--lifecycle", "drained", "--json");
    assert.equal(drainedJson.code, 0, drainedJson.stderr);
    assert.deepEqual(
      (JSON.parse(drainedJson.stdout) as Array<{ name: string }>).map((n) => n.name),
      ["node-0"],
    );
    assert.equal((await aether("nodes", "--lifecycle", "resting")).code, 2, "an unknown lifecycle is a usage error");

    for (const w of ["d-1", "d-2"]) {
      const p = await placement(w);
      assert.equal(p.state, PlacementState.PLACED);
      assert.notEqual(p.node, id("node-0"), `${w} left node-0`);
      assert.equal(await runningOn(p), ExecutableState.RUNNING, `${w} runs on ${nameOf(p.node)}`);
    }
    const { executables } = await (clients.get("node-0") as AetherClient).runtime.listExecutables({});
    assert.equal(executables.filter((e) => e.state === ExecutableState.RUNNING).length, 0, "nothing runs on node-0 any more");

    // The new copy was started before the old one was told to stop: the new executable's record
    // (made by its node when it started it) is older than the old copy's own "stop" mark. (The new
    // copy's own "start" line can come later than that on a loaded machine: its shell runs when it
    // is scheduled, after its node already reported it running.)
    for (const w of ["d-1", "d-2"]) {
      const mine = await eventually(
        () => {
          const lines = readFileSync(marks, "utf8")
            .trim()
            .split("\n")
            .map((l) => l.split(" "))
            .filter((f) => f[1] === w);
          return lines.filter((f) => f[0] === "start").length === 2 ? lines : undefined;
        },
        10_000,
        `${w}: two copies started`,
      );
      const starts = mine.filter((f) => f[0] === "start");
      const stop = mine.find((f) => f[0] === "stop");
      assert.ok(stop, `${w}: the old copy stopped`);
      assert.equal(stop[2], starts[0]?.[2], `${w}: the first copy is the one that stopped`);
      const p = await placement(w);
      const created = (await (clients.get(nameOf(p.node) as Name) as AetherClient).runtime.getExecutable({ executable: p.resourceId }))
        .executable?.createTime;
      const createdNs = (created?.seconds ?? 0n) * 1_000_000_000n + BigInt(created?.nanos ?? 0);
      assert.ok(createdNs > 0n && createdNs < BigInt(stop[3] ?? "0"), `${w}: the new copy was started before the old one stopped`);
    }

    // The audit trail: draining, then moving/moved pairs that never overlap, then drained.
    const drainEvents = (await events()).filter((e) => e.sequence > before);
    const kinds = drainEvents
      .map((e) => e.kind)
      .filter((k) =>
        [
          ClusterEventKind.NODE_DRAINING,
          ClusterEventKind.WORKLOAD_MOVING,
          ClusterEventKind.WORKLOAD_MOVED,
          ClusterEventKind.NODE_DRAINED,
        ].includes(k),
      );
    assert.deepEqual(kinds, [
      ClusterEventKind.NODE_DRAINING,
      ClusterEventKind.WORKLOAD_MOVING,
      ClusterEventKind.WORKLOAD_MOVED,
      ClusterEventKind.WORKLOAD_MOVING,
      ClusterEventKind.WORKLOAD_MOVED,
      ClusterEventKind.NODE_DRAINED,
    ]);
    const moved = drainEvents.filter((e) => e.kind === ClusterEventKind.WORKLOAD_MOVED);
    const firstTime = moved[0]?.time;
    assert.ok(firstTime);
    const firstEnd = timestampMs(firstTime);
    const secondStart = Date.parse(moved[1]?.attributes["move_started_at"] ?? "");
    assert.ok(firstEnd <= secondStart, `the second move started (${secondStart}) after the first ended (${firstEnd})`);
    const text = await aether("events", "--tail", "20");
    assert.match(text.stdout, /node draining/);
    assert.match(text.stdout, /workload moved/);
    assert.match(text.stdout, /node drained/);

    const { auction } = await deploy("d-3");
    assert.ok(auction && !auction.bids.some((b) => b.node === id("node-0")), "the drained node is not asked to bid");
    assert.equal(auction?.bids.length, 2);
  });

  it("the drained state survives a kill -9 of the aggregator; uncordon puts node-0 back on duty and it bids again", async () => {
    await agg.kill9();
    agg = await startAggregator({
      dir: agg.dir,
      args: [
        "--auction-window-ms",
        "2000",
        "--lease-ttl-ms",
        String(LEASE_TTL_MS),
        "--bmcs",
        join(dir, "bmcs.toml"),
        "--fence-timeout-ms",
        "5000",
        "--fence-poll-interval-ms",
        "50",
      ],
    });
    const n0 = await node("node-0");
    assert.equal(n0.lifecycle, NodeLifecycle.DRAINED, n0.lifecycleReason);
    const { auction: still } = await deploy("d-4");
    assert.ok(still && !still.bids.some((b) => b.node === id("node-0")), "still not asked after the restart");

    const r = await aether("uncordon", "node-0");
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await node("node-0")).lifecycle, NodeLifecycle.ON_DUTY);
    const { auction } = await deploy("d-5");
    assert.ok(
      auction?.bids.some((b) => b.node === id("node-0")),
      "node-0 bids again",
    );
    assert.ok((await events()).some((e) => e.kind === ClusterEventKind.NODE_UNCORDONED && e.node === id("node-0")));
  });

  it("a drain with no other node able to bid stops with a sentence; the workload keeps running where it was", async () => {
    for (const n of ["node-1", "node-2"]) await agg.client.aggregator.cordonNode({ node: n });
    const { placement: stuck } = await deploy("stuck");
    assert.equal(stuck?.node, id("node-0"));
    const r = await aether("drain", "node-0");
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /the drain of node \S+ \(node-0\) stopped after moving 0 workload\(s\): workload \S+ cannot move off node \S+: no other node can host it: /,
    );
    assert.match(r.stderr, /CORDONED/);
    const p = await placement("stuck");
    for (const w of ["stuck", "d-5"]) {
      const still = await placement(w);
      if (still.node !== id("node-0")) continue;
      assert.equal(still.state, PlacementState.PLACED);
      assert.equal(await runningOn(still), ExecutableState.RUNNING, `${w} still runs on node-0`);
    }
    assert.equal(p.node, id("node-0"));
    const n0 = await node("node-0");
    assert.equal(n0.lifecycle, NodeLifecycle.CORDONED);
    assert.match(n0.lifecycleReason, /cannot move/);
    const trail = await events();
    assert.ok(trail.some((e) => e.kind === ClusterEventKind.WORKLOAD_MOVE_FAILED && e.node === id("node-0")));
    assert.ok(trail.some((e) => e.kind === ClusterEventKind.NODE_DRAIN_STOPPED && e.node === id("node-0")));
    for (const n of ["node-0", "node-1", "node-2"]) await agg.client.aggregator.uncordonNode({ node: n });
  });

  it("shutdown drains node-2 and powers it off through its BMC; it ends DECOMMISSIONED", async () => {
    const onTwo = (await agg.client.aggregator.listPlacements({ node: id("node-2"), state: PlacementState.PLACED })).placements;
    const r = await aether("shutdown", "node-2", "--graceful-timeout", "5s");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /node shutting down/);
    assert.match(r.stdout, /node decommissioned/);
    const n2 = await node("node-2");
    assert.equal(n2.lifecycle, NodeLifecycle.DECOMMISSIONED, n2.lifecycleReason);
    assert.ok(bmc.resets.includes("GracefulShutdown"), `the BMC was asked for a graceful shutdown (${bmc.resets.join(", ")})`);
    assert.equal(bmc.powerState, "Off");
    for (const p of onTwo) {
      const now = await placement(p.name);
      assert.notEqual(now.node, id("node-2"));
      assert.equal(await runningOn(now), ExecutableState.RUNNING, `${p.name} moved off node-2 first`);
    }
    // Its lease runs out without the deadman suspecting or fencing it: it was switched off on purpose.
    await new Promise((resolve) => setTimeout(resolve, LEASE_TTL_MS + 500));
    assert.equal((await node("node-2")).state, NodeState.READY);
    assert.ok(!(await events()).some((e) => e.kind === ClusterEventKind.NODE_SUSPECT && e.node === id("node-2")));
    assert.ok(existsSync(marks));
  });
});
