// Maintenance mode across a change of leader (issue 14, item 5): two aggregator replicas on etcd and
// three fake nodes. The leader is killed with kill -9 while a drain has a workload MOVING (its new
// copy's provisioning hangs); the replica that takes over settles the move (the target holds the
// copy, the source releases it), continues the drain, and the node ends DRAINED; no workload is
// left on two nodes, and the drained node takes part in no later auction.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@aether/sdk";
import { ClusterEventKind, NodeLifecycle, PlacementState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { eventually } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { startFakeBidder, type FakeBidder } from "./helpers/fake-bidder.js";

describe("a drain across a change of leader (etcd)", () => {
  let etcd: TestEtcd;
  let first: TestAggregator;
  let second: TestAggregator;
  const bidders = new Map<string, FakeBidder>();
  const bidder = (id: string) => bidders.get(id) as FakeBidder;

  before(async () => {
    etcd = await startEtcd();
    const args = (replica: string) => [
      "--store",
      "etcd",
      "--etcd-endpoints",
      etcd.endpoint,
      "--replica",
      replica,
      "--auction-window-ms",
      "2000",
      "--lease-ttl-ms",
      "60000",
    ];
    first = await startAggregator({ args: args("agg-1") });
    second = await startAggregator({ args: args("agg-2"), standby: true });
    for (const [id, score] of [
      ["m1", 900],
      ["m2", 500],
      ["m3", -1],
    ] as const) {
      const b = await startFakeBidder(id, { score, declineReason: "full" });
      bidders.set(id, b);
      await first.client.aggregator.registerNode({ nodeId: id, name: id, address: b.address });
    }
  });

  after(async () => {
    await first?.kill9();
    await second?.stop();
    for (const b of bidders.values()) await b.close();
    await etcd?.stop();
  });

  it("the replica that takes over settles the MOVING workload, finishes the drain, and the node stays out of auctions", async () => {
    const ids: string[] = [];
    for (const name of ["h-0", "h-1"]) {
      const { placement } = await first.client.aggregator.deploy({
        spec: { name, kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
      });
      assert.equal(placement?.node, "m1");
      ids.push(placement?.workloadId ?? "");
    }
    // m2 is the only other bidder; its provisioning hangs, so the first move stays MOVING.
    bidder("m2").behaviour = { score: 500, provision: "hang" };
    const stream = (async () => {
      try {
        for await (const _ of first.client.aggregator.drainNode({ node: "m1" }));
      } catch {
        // The leader is killed under it.
      }
    })();
    const moving = await eventually(
      async () => (await first.client.aggregator.listPlacements({ state: PlacementState.MOVING })).placements[0],
      10_000,
      "a MOVING placement",
    );
    assert.equal(moving.node, "m1", "it still runs on its node while moving");
    assert.equal(moving.targetNode, "m2");
    assert.equal((await first.client.aggregator.listNodes({})).nodes.find((n) => n.id === "m1")?.lifecycle, NodeLifecycle.DRAINING);

    bidder("m2").behaviour = { score: 500 };
    await first.kill9();
    await stream;
    await eventually(
      async () => ((await second.client.node.checkHealth({}).catch(() => undefined))?.status === HealthStatus.SERVING ? true : undefined),
      15_000,
      "the standby to lead",
    );
    const m1 = await eventually(
      async () => {
        const n = (await second.client.aggregator.listNodes({})).nodes.find((x) => x.id === "m1");
        return n?.lifecycle === NodeLifecycle.DRAINED ? n : undefined;
      },
      15_000,
      "m1 DRAINED on the new leader",
    );
    assert.equal(m1.placementCount, 0);
    const { placements } = await second.client.aggregator.listPlacements({});
    for (const id of ids) {
      const p = placements.find((x) => x.workloadId === id);
      assert.equal(p?.state, PlacementState.PLACED, p?.stateReason);
      assert.equal(p?.node, "m2");
      assert.ok(
        bidder("m1").released.some((r) => r.workloadId === id),
        `${p?.name} was released on m1`,
      );
    }
    const events: ClusterEvent[] = [];
    for await (const r of second.client.aggregator.streamClusterEvents({})) if (r.event) events.push(r.event);
    assert.ok(events.some((e) => e.kind === ClusterEventKind.NODE_DRAINING && e.attributes["resumed"] === "true"));
    assert.ok(events.some((e) => e.kind === ClusterEventKind.NODE_DRAINED && e.node === "m1"));

    // DrainNode on a drained node answers at once; the drained node is asked for nothing.
    const progress = [];
    for await (const r of second.client.aggregator.drainNode({ node: "m1" })) progress.push(r.progress);
    assert.equal(progress.length, 1);
    assert.equal(progress[0]?.done, true);
    assert.equal(progress[0]?.lifecycle, NodeLifecycle.DRAINED);
    const before = bidder("m1").bidRequests.length;
    const { auction } = await second.client.aggregator.deploy({
      spec: { name: "h-2", kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
    });
    assert.equal(auction?.winner, "m2");
    assert.equal(bidder("m1").bidRequests.length, before, "m1 was not asked to bid");
    await assert.rejects(second.client.aggregator.uncordonNode({ node: "nope" }), (err: ConnectError) => err.code === Code.NotFound);
    const { node } = await second.client.aggregator.uncordonNode({ node: "m1" });
    assert.equal(node?.lifecycle, NodeLifecycle.ON_DUTY);
  });
});
