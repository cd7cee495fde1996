// Maintenance mode with the aggregator in-process, fake nodes and a fake fencer: a drained node is
// still fenced when it goes silent; a shutdown ends DECOMMISSIONED (and then its silence fences
// nothing) or, unconfirmed, DRAINED again with the sentence; a VM whose node cannot live-migrate
// (UNIMPLEMENTED) and a cell stop a drain and stay where they are. And redfishShutdown: graceful,
// then forced.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ClusterEventKind,
  CordonNodeRequestSchema,
  HeartbeatRequestSchema,
  NodeLifecycle,
  NodeState,
  PlacementState,
  RegisterNodeRequestSchema,
  DeployRequestSchema,
  DrainNodeRequestSchema,
  GetPlacementRequestSchema,
  ListNodesRequestSchema,
  ReleasePlacementRequestSchema,
  ShutdownNodeRequestSchema,
  StreamClusterEventsRequestSchema,
  UncordonNodeRequestSchema,
  type DrainProgress,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { duration } from "@aether/server";
import { startFakeBidder, type FakeBidder } from "../../../test/helpers/fake-bidder.js";
import { Aggregator } from "../aggregator.js";
import type { ClusterStore, StoreEntry } from "../store/store.js";
import {
  redfishShutdown,
  type FenceOutcome,
  type FenceTarget,
  type Fencer,
  type LocatedBmc,
  type Location,
  type RedfishFenceClient,
  type ShutdownOutcome,
} from "../fencing/fencing.js";

// Short leases, so silence shows quickly; long enough that a loaded machine does not miss a heartbeat.
const TTL_MS = 1000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** One replica's store in memory: it always leads. */
class MemoryStore implements ClusterStore {
  readonly description = "memory";
  readonly values = new Map<string, string>();
  async get(key: string) {
    return this.values.get(key);
  }
  async list(prefix: string): Promise<StoreEntry[]> {
    return [...this.values]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, value]) => ({ key, value }));
  }
  async put(key: string, value: string) {
    this.values.set(key, value);
  }
  async delete(key: string) {
    this.values.delete(key);
  }
  async campaign() {
    return { lost: new Promise<void>(() => {}), resign: async () => {} };
  }
  async close() {}
}

/** Every node has a BMC; fences confirm; shutdowns go as `shutdowns` says. */
class FakeFencer implements Fencer {
  readonly fences: string[] = [];
  readonly shutdowns = new Map<string, ShutdownOutcome>();
  locate(node: FenceTarget): Location {
    return { found: { key: node.name, description: `the test BMC of ${node.name}`, endpoint: `https://bmc-${node.name}.test` } };
  }
  async fence(node: FenceTarget, _bmc: LocatedBmc): Promise<FenceOutcome> {
    this.fences.push(node.name);
    return { confirmed: true, reason: 'PowerState "Off" read back', powerState: "Off" };
  }
  async shutdown(node: FenceTarget): Promise<ShutdownOutcome> {
    return (
      this.shutdowns.get(node.name) ?? { confirmed: true, graceful: true, reason: 'PowerState "Off" read back after GracefulShutdown' }
    );
  }
}

describe("maintenance mode in the aggregator (in-process)", () => {
  const fencer = new FakeFencer();
  const agg = new Aggregator({
    store: new MemoryStore(),
    replica: "agg-1",
    leaseTtlMs: TTL_MS,
    auctionWindowMs: 2000,
    provisionTimeoutMs: 2000,
    fencer,
    fenceTimeoutMs: 300,
    fencePollIntervalMs: 10,
    fenceRetryMs: 150,
  });
  const bidders = new Map<string, FakeBidder>();
  const leases = new Map<string, string>();
  const silent = new Set<string>();
  let beat: NodeJS.Timeout | undefined;

  async function node(id: string, score: number): Promise<void> {
    if (!beat) {
      agg.start();
      await agg.whenLeading();
      beat = setInterval(() => {
        for (const [nodeId, leaseId] of leases)
          if (!silent.has(nodeId)) void agg.heartbeat(create(HeartbeatRequestSchema, { nodeId, leaseId })).catch(() => undefined);
      }, TTL_MS / 4);
    }
    const b = await startFakeBidder(id, { score });
    bidders.set(id, b);
    const { node: n, lease } = await agg.registerNode(create(RegisterNodeRequestSchema, { nodeId: id, name: id, address: b.address }));
    assert.equal(n.lifecycle, NodeLifecycle.ON_DUTY, "a registered node is on duty once its registration completes");
    leases.set(id, lease.id);
  }
  const find = async (id: string) => (await agg.listNodes(create(ListNodesRequestSchema))).nodes.find((n) => n.id === id);
  async function collect(stream: AsyncGenerator<DrainProgress>): Promise<{ progress: DrainProgress[]; error?: ConnectError }> {
    const progress: DrainProgress[] = [];
    try {
      for await (const p of stream) progress.push(p);
      return { progress };
    } catch (err) {
      return { progress, error: err as ConnectError };
    }
  }
  async function events() {
    const out = [];
    for await (const e of agg.streamClusterEvents(create(StreamClusterEventsRequestSchema))) out.push(e);
    return out;
  }

  after(async () => {
    clearInterval(beat);
    await agg.stop();
    for (const b of bidders.values()) await b.close();
  });

  it("a drained node still heartbeats; one that goes silent is suspected and fenced like any other", async () => {
    await node("quiet", 500);
    const { progress } = await collect(agg.drainNode(create(DrainNodeRequestSchema, { node: "quiet" })));
    assert.equal(progress.at(-1)?.lifecycle, NodeLifecycle.DRAINED);
    await sleep(TTL_MS * 2);
    assert.equal((await find("quiet"))?.state, NodeState.READY, "its heartbeats keep its lease");
    silent.add("quiet");
    const fenced = await eventually(
      async () => {
        const n = await find("quiet");
        return n?.state === NodeState.FENCED ? n : undefined;
      },
      5000,
      "the silent drained node fenced",
    );
    assert.equal(fenced.lifecycle, NodeLifecycle.DRAINED, "its lifecycle is kept beside the lease state");
    assert.ok(fencer.fences.includes("quiet"));
  });

  it("shutdown ends DECOMMISSIONED; its silence then fences nothing", async () => {
    await node("gone", 500);
    const { progress, error } = await collect(
      agg.shutdownNode(create(ShutdownNodeRequestSchema, { node: "gone", gracefulTimeout: duration(1000) })),
    );
    assert.equal(error, undefined);
    const kinds = progress.map((p) => p.event?.kind).filter((k) => k !== undefined);
    assert.deepEqual(kinds, [
      ClusterEventKind.NODE_DRAINING,
      ClusterEventKind.NODE_DRAINED,
      ClusterEventKind.NODE_SHUTTING_DOWN,
      ClusterEventKind.NODE_DECOMMISSIONED,
    ]);
    assert.equal(progress.at(-1)?.lifecycle, NodeLifecycle.DECOMMISSIONED);
    assert.equal(progress.at(-1)?.done, true);
    silent.add("gone");
    await sleep(TTL_MS * 3);
    assert.equal((await find("gone"))?.state, NodeState.READY, "not suspected: the aggregator switched it off itself");
    assert.ok(!fencer.fences.includes("gone"));
    // It comes back DRAINED when its aetherd registers again.
    const again = await agg.registerNode(
      create(RegisterNodeRequestSchema, { nodeId: "gone", name: "gone", address: bidders.get("gone")?.address }),
    );
    assert.equal(again.node.lifecycle, NodeLifecycle.DRAINED);
    assert.match(again.node.lifecycleReason, /registered again after it was shut down.*aether cluster uncordon gone/);
    leases.set("gone", again.lease.id);
    silent.delete("gone");
  });

  it("a power off the BMC does not confirm leaves the node DRAINED, saying why", async () => {
    await node("stuck-bmc", 500);
    fencer.shutdowns.set("stuck-bmc", { confirmed: false, graceful: false, reason: "the deadline passed with PowerState PoweringOff" });
    const { error } = await collect(agg.shutdownNode(create(ShutdownNodeRequestSchema, { node: "stuck-bmc" })));
    assert.equal(error?.code, Code.FailedPrecondition);
    assert.match(
      error?.rawMessage ?? "",
      /could not be powered off: the deadline passed with PowerState PoweringOff\. It is DRAINED again/,
    );
    assert.equal((await find("stuck-bmc"))?.lifecycle, NodeLifecycle.DRAINED);
    assert.ok((await events()).some((e) => e.kind === ClusterEventKind.NODE_SHUTDOWN_FAILED && e.node === "stuck-bmc"));
  });

  it("a VM whose node cannot live-migrate (UNIMPLEMENTED) and a cell stop the drain with a sentence and stay where they are", async () => {
    await node("host-a", 900);
    await node("host-b", 100);
    const vm = await agg.deploy(create(DeployRequestSchema, { spec: { name: "vm-1", kind: { case: "vm", value: { name: "vm-1" } } } }));
    assert.equal(vm.placement?.node, "host-a");
    const { error } = await collect(agg.drainNode(create(DrainNodeRequestSchema, { node: "host-a" })));
    assert.equal(error?.code, Code.FailedPrecondition);
    assert.match(
      error?.rawMessage ?? "",
      /VM vm-1 \(tenant default\) cannot be live-migrated off node host-a \(host-a\): its aetherd answers MigrateVm with UNIMPLEMENTED .*; it stays running there/,
    );
    assert.equal((await agg.getPlacement(create(GetPlacementRequestSchema, { workload: "vm-1" }))).placement.node, "host-a");
    assert.equal((await find("host-a"))?.lifecycle, NodeLifecycle.CORDONED);
    assert.equal(bidders.get("host-b")?.provisioned.length, 0, "nothing was started elsewhere");
    await agg.releasePlacement(create(ReleasePlacementRequestSchema, { workload: "vm-1" }));

    await agg.uncordonNode(create(UncordonNodeRequestSchema, { node: "host-a" }));
    await agg.deploy(create(DeployRequestSchema, { spec: { name: "cell-1", kind: { case: "cell", value: { name: "cell-1" } } } }));
    const cell = await collect(agg.drainNode(create(DrainNodeRequestSchema, { node: "host-a", maxMoves: 2 })));
    assert.match(cell.error?.rawMessage ?? "", /cell cell-1 \(tenant default\) cannot be moved off node host-a/);
    const p = (await agg.getPlacement(create(GetPlacementRequestSchema, { workload: "cell-1" }))).placement;
    assert.equal(p.state, PlacementState.PLACED);
    assert.equal(p.node, "host-a");
  });
});

describe("drains that do not go to the end (in-process)", () => {
  const agg = new Aggregator({
    store: new MemoryStore(),
    replica: "agg-2",
    leaseTtlMs: 5000,
    auctionWindowMs: 2000,
    provisionTimeoutMs: 2000,
    fencer: new FakeFencer(),
  });
  const bidders = new Map<string, FakeBidder>();
  const bidder = (id: string) => bidders.get(id) as FakeBidder;
  const deploy = async (name: string) =>
    (
      await agg.deploy(
        create(DeployRequestSchema, { spec: { name, kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } } }),
      )
    ).placement;
  const placementOf = async (name: string) => (await agg.getPlacement(create(GetPlacementRequestSchema, { workload: name }))).placement;
  const lifecycleOf = async (id: string) => (await agg.listNodes(create(ListNodesRequestSchema))).nodes.find((n) => n.id === id)?.lifecycle;

  async function drain(node: string, maxMoves = 0): Promise<{ progress: DrainProgress[]; error?: ConnectError }> {
    const progress: DrainProgress[] = [];
    try {
      for await (const p of agg.drainNode(create(DrainNodeRequestSchema, { node, maxMoves }))) progress.push(p);
      return { progress };
    } catch (err) {
      return { progress, error: err as ConnectError };
    }
  }

  after(async () => {
    await agg.stop();
    for (const b of bidders.values()) await b.close();
  });

  it("a workload whose move fails on two nodes stops the drain and keeps running where it was", async () => {
    agg.start();
    await agg.whenLeading();
    for (const [id, score] of [
      ["fx", 900],
      ["fy", 800],
      ["fz", 700],
    ] as const) {
      const b = await startFakeBidder(id, { score });
      bidders.set(id, b);
      await agg.registerNode(create(RegisterNodeRequestSchema, { nodeId: id, name: id, address: b.address }));
    }
    assert.equal((await deploy("m-1"))?.node, "fx");
    bidder("fy").behaviour = { score: 800, provision: { fail: "disk full" } };
    bidder("fz").behaviour = { score: 700, provision: { fail: "no bridge br0" } };
    const { error } = await drain("fx");
    assert.equal(error?.code, Code.FailedPrecondition);
    assert.match(
      error?.rawMessage ?? "",
      /workload m-1 could not be moved off node fx \(on fy: .*disk full; on fz: .*no bridge br0\); it stays running on fx/,
    );
    const p = await placementOf("m-1");
    assert.equal(p?.state, PlacementState.PLACED);
    assert.equal(p?.node, "fx");
    assert.equal(bidder("fx").released.length, 0, "the old copy was never released");
    assert.ok(
      bidder("fy").released.some((r) => r.workloadId === p?.workloadId),
      "whatever fy may have started was released",
    );
    assert.equal(await lifecycleOf("fx"), NodeLifecycle.CORDONED);
  });

  it("with max_moves 2 the drain never has more than two moves under way and empties the node", async () => {
    bidder("fy").behaviour = { score: 800 };
    bidder("fz").behaviour = { score: 700 };
    await agg.uncordonNode(create(UncordonNodeRequestSchema, { node: "fx" }));
    for (const name of ["m-2", "m-3", "m-4"]) assert.equal((await deploy(name))?.node, "fx");
    const { progress, error } = await drain("fx", 2);
    assert.equal(error, undefined);
    assert.ok(progress.every((p) => p.maxMoves === 2 && p.movesInProgress <= 2));
    assert.equal(progress.at(-1)?.workloadsMoved, 4);
    assert.equal(progress.at(-1)?.lifecycle, NodeLifecycle.DRAINED);
  });

  it("uncordon during a drain stops it after the move under way; the node is on duty again", async () => {
    await agg.uncordonNode(create(UncordonNodeRequestSchema, { node: "fx" }));
    await agg.cordonNode(create(CordonNodeRequestSchema, { node: "fz" }));
    bidder("fy").behaviour = { score: 500 };
    const p = await deploy("u-1");
    assert.equal(p?.node, "fx");
    bidder("fy").behaviour = { score: 800, provision: "hang" };
    const running = drain("fx");
    const moving = await eventually(
      async () => ((await placementOf("u-1"))?.state === PlacementState.MOVING ? true : undefined),
      5000,
      "u-1 MOVING",
    );
    assert.ok(moving);
    const { node } = await agg.uncordonNode(create(UncordonNodeRequestSchema, { node: "fx" }));
    assert.equal(node.lifecycle, NodeLifecycle.ON_DUTY);
    const { progress, error } = await running;
    assert.equal(error, undefined, "an uncordoned drain ends cleanly");
    assert.equal(progress.at(-1)?.done, true);
    assert.equal(progress.at(-1)?.lifecycle, NodeLifecycle.ON_DUTY);
    assert.ok(progress.some((m) => m.event?.kind === ClusterEventKind.NODE_UNCORDONED));
    const after = await placementOf("u-1");
    assert.equal(after?.state, PlacementState.PLACED);
    assert.equal(after?.node, "fx", "the move under way did not finish (its target hung), so it stays");
  });
});

describe("a shutdown across a change of leader (in-process)", () => {
  it("the replica that takes over powers a SHUTTING_DOWN node off and marks it DECOMMISSIONED", async () => {
    const store = new MemoryStore();
    const hanging = new FakeFencer();
    hanging.shutdown = () => new Promise<never>(() => {});
    const options = { store, leaseTtlMs: 5000, auctionWindowMs: 2000, provisionTimeoutMs: 1000 };
    const first = new Aggregator({ ...options, replica: "agg-a", fencer: hanging });
    first.start();
    await first.whenLeading();
    const b = await startFakeBidder("sd", { score: 500 });
    try {
      await first.registerNode(create(RegisterNodeRequestSchema, { nodeId: "sd", name: "sd", address: b.address }));
      const stream = (async () => {
        try {
          for await (const _ of first.shutdownNode(create(ShutdownNodeRequestSchema, { node: "sd" })));
          return undefined;
        } catch (err) {
          return err as ConnectError;
        }
      })();
      await eventually(
        async () =>
          (await first.listNodes(create(ListNodesRequestSchema))).nodes[0]?.lifecycle === NodeLifecycle.SHUTTING_DOWN ? true : undefined,
        5000,
        "sd SHUTTING_DOWN",
      );
      await first.stop();
      assert.equal((await stream)?.code, Code.Unavailable, "the stream ends when its replica stops leading");

      const confirming = new FakeFencer();
      const second = new Aggregator({ ...options, replica: "agg-b", fencer: confirming });
      second.start();
      await second.whenLeading();
      try {
        const sd = await eventually(
          async () => {
            const n = (await second.listNodes(create(ListNodesRequestSchema))).nodes[0];
            return n?.lifecycle === NodeLifecycle.DECOMMISSIONED ? n : undefined;
          },
          5000,
          "sd DECOMMISSIONED on the new leader",
        );
        assert.match(sd.lifecycleReason, /powered off through its BMC \(graceful shutdown\)/);
      } finally {
        await second.stop();
      }
    } finally {
      await b.close();
    }
  });
});

describe("redfishShutdown", () => {
  /** A Redfish client whose power state goes Off `offAfterReads` reads after GracefulShutdown (never: undefined). */
  function client(options: { offAfterReads?: number; allowed?: string[]; initial?: string }) {
    let state = options.initial ?? "On";
    let readsSinceGraceful: number | undefined;
    const calls: string[] = [];
    const c: RedfishFenceClient = {
      async powerStatus() {
        calls.push("status");
        if (readsSinceGraceful !== undefined && options.offAfterReads !== undefined && ++readsSinceGraceful >= options.offAfterReads)
          state = "Off";
        return { powerState: state, allowableResetTypes: options.allowed ?? ["On", "ForceOff", "GracefulShutdown"] };
      },
      async reset(type: string) {
        calls.push(type);
        readsSinceGraceful = 0;
      },
      async fence() {
        calls.push("ForceOff");
        state = "Off";
        return { confirmed: true, reason: 'PowerState "Off" read back after ForceOff.' };
      },
    };
    return { c, calls };
  }
  const options = { gracefulTimeoutMs: 200, timeoutMs: 1000, pollIntervalMs: 20 };

  it("graceful when the system reaches Off in time", async () => {
    const { c, calls } = client({ offAfterReads: 2 });
    const out = await redfishShutdown(c, options);
    assert.equal(out.confirmed, true);
    assert.equal(out.graceful, true);
    assert.ok(calls.includes("GracefulShutdown") && !calls.includes("ForceOff"));
  });

  it("forced once the graceful timeout has passed", async () => {
    const { c, calls } = client({});
    const out = await redfishShutdown(c, options);
    assert.equal(out.confirmed, true);
    assert.equal(out.graceful, false);
    assert.match(out.reason, /GracefulShutdown did not reach "Off" within 200 ms; ForceOff: /);
    assert.deepEqual([calls[1], calls.at(-1)], ["GracefulShutdown", "ForceOff"]);
  });

  it("forced at once when the BMC offers no GracefulShutdown; nothing sent when already Off", async () => {
    const forced = client({ allowed: ["On", "ForceOff"] });
    assert.match((await redfishShutdown(forced.c, options)).reason, /offers no GracefulShutdown/);
    assert.ok(!forced.calls.includes("GracefulShutdown"));
    const off = client({ initial: "Off" });
    const out = await redfishShutdown(off.c, options);
    assert.equal(out.alreadyOff, true);
    assert.deepEqual(off.calls, ["status"]);
  });
});
