// Two aggregator replicas on etcd: one leads (an etcd election), the standby answers UNAVAILABLE
// naming it; kill -9 the leader and the standby takes over within seconds with every placement,
// none lost and none provisioned twice. With etcd gone, writes are refused with a sentence.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@aether/sdk";
import { PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { eventually } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { startFakeBidder, type FakeBidder } from "./helpers/fake-bidder.js";

const WORKLOADS = 20;

describe("aggregator replicas on etcd", () => {
  let etcd: TestEtcd;
  let first: TestAggregator;
  let second: TestAggregator;
  const bidders: FakeBidder[] = [];

  before(async () => {
    etcd = await startEtcd();
    const args = (replica: string) => [
      "--store",
      "etcd",
      "--etcd-endpoints",
      etcd.endpoint,
      "--replica",
      replica,
      "--lease-ttl-ms",
      "60000",
    ];
    first = await startAggregator({ args: args("agg-1") });
    second = await startAggregator({ args: args("agg-2"), standby: true });
    for (const id of ["n1", "n2", "n3"]) {
      const b = await startFakeBidder(id, { score: id === "n1" ? 700 : 400 });
      bidders.push(b);
      await first.client.aggregator.registerNode({ nodeId: id, name: id, address: b.address });
    }
  });
  after(async () => {
    await first?.kill9();
    await second?.stop();
    for (const b of bidders) await b.close();
    await etcd?.stop();
  });

  it("one replica leads; the standby refuses with the leader's name", async () => {
    assert.equal((await first.client.node.checkHealth({})).status, HealthStatus.SERVING);
    assert.notEqual((await second.client.node.checkHealth({})).status, HealthStatus.SERVING);
    await assert.rejects(second.client.aggregator.listNodes({}), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, /standby; the leader is agg-1/);
      return true;
    });
  });

  it("kill -9 of the leader: the standby leads within seconds with every placement, none duplicated", async () => {
    for (let i = 0; i < WORKLOADS; i++) {
      const { placement } = await first.client.aggregator.deploy({
        spec: { name: `w-${i}`, kind: { case: "executable", value: { argv: ["/bin/true"] } } },
      });
      assert.equal(placement?.state, PlacementState.PLACED);
    }
    const killedAt = Date.now();
    await first.kill9();
    await eventually(
      async () => ((await second.client.node.checkHealth({}).catch(() => undefined))?.status === HealthStatus.SERVING ? true : undefined),
      15_000,
      "the standby to lead",
    );
    const tookOverMs = Date.now() - killedAt;
    console.log(`standby took over ${tookOverMs} ms after the leader was killed`);
    assert.ok(tookOverMs < 10_000, `took over in ${tookOverMs} ms`);

    const { placements } = await second.client.aggregator.listPlacements({ pageSize: 1000 });
    const names = placements.map((p) => p.name).sort();
    assert.equal(placements.length, WORKLOADS, "no placement lost");
    assert.equal(new Set(names).size, WORKLOADS, "none duplicated");
    assert.ok(placements.every((p) => p.state === PlacementState.PLACED));
    const provisioned = bidders.flatMap((b) => b.provisioned.map((r) => r.spec?.workloadId ?? ""));
    assert.equal(new Set(provisioned).size, provisioned.length, "no workload was provisioned twice");
    assert.equal(provisioned.length, WORKLOADS);

    const { nodes } = await second.client.aggregator.listNodes({});
    assert.equal(nodes.length, 3, "the registry came over too");
    const more = await second.client.aggregator.deploy({
      spec: { name: "after-failover", kind: { case: "executable", value: { argv: ["/bin/true"] } } },
    });
    assert.equal(more.placement?.state, PlacementState.PLACED);
  });

  it("with etcd gone the aggregator refuses writes with a sentence instead of losing them", async () => {
    await etcd.kill9();
    const started = Date.now();
    await assert.rejects(
      second.client.aggregator.deploy({ spec: { name: "no-etcd", kind: { case: "executable", value: { argv: ["/bin/true"] } } } }),
      (err: unknown) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unavailable, err.rawMessage);
        assert.match(err.rawMessage, /etcd/);
        return true;
      },
    );
    assert.ok(Date.now() - started < 15_000, "refused in bounded time");
  });
});
