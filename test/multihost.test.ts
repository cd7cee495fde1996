// The cluster across hosts, simulated by network namespaces (issue 21): aether-aggregator and two
// aetherd each run in their own namespace, joined by a bridge, with certificates issued for their
// 10.x addresses. Nothing but TCP + mutual TLS between them (no unix socket is shared), and this test
// reaches each of them the same way, from the root namespace, with a user certificate.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "@aether/sdk";
import { BidOutcome, NodeState, PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually } from "./helpers/daemon.js";
import { createNetnsCluster, type NetnsAggregator, type NetnsCluster, type NetnsNode } from "./helpers/netns-cluster.js";

describe("a cluster across network namespaces, over mutual TLS only", () => {
  let cluster: NetnsCluster;
  let agg: NetnsAggregator;
  const nodes: NetnsNode[] = [];
  let admin: AetherClient; // a user certificate (spiffe://test/user/admin) on the aggregator's TCP address
  const nodeClients = new Map<string, AetherClient>(); // by node id, over each node's TCP address

  before(async () => {
    cluster = createNetnsCluster(2);
    agg = await cluster.startAggregator(["--lease-ttl-ms", "6000"]);
    admin = await cluster.client(agg.url, cluster.user("admin"));
    for (const h of cluster.nodeHosts) nodes.push(await cluster.startNode(h));
  });

  after(async () => {
    admin?.close();
    for (const c of nodeClients.values()) c.close();
    await cluster?.teardown();
  });

  it("each node answers over mTLS on its own 10.x address, from another namespace", async () => {
    const me = cluster.user("operator");
    const ids = new Set<string>();
    for (const n of nodes) {
      const c = await cluster.client(n.url, me);
      const info = (await c.node.getNodeInfo({})).node;
      assert.ok(info?.id, `${n.host.name} answers GetNodeInfo at ${n.url}`);
      ids.add(info.id);
      nodeClients.set(info.id, c);
    }
    assert.equal(ids.size, nodes.length, "two distinct nodes");
  });

  it("both nodes register with the aggregator over mTLS and are READY, at their https addresses", async () => {
    const listed = await eventually(
      async () => {
        const { nodes: n } = await admin.aggregator.listNodes({});
        return n.filter((x) => x.state === NodeState.READY).length === nodes.length ? n : undefined;
      },
      30_000,
      "two READY nodes",
    );
    for (const n of nodes) {
      const entry = listed.find((x) => x.name === n.host.name);
      assert.ok(entry, `${n.host.name} is registered`);
      assert.equal(entry.address, n.url, "the aggregator calls it back on its https address");
      assert.ok(nodeClients.has(entry.id), `${n.host.name} registered with its own node id`);
    }
  });

  it("a workload deployed by auction through the aggregator's TCP address runs on the winner", async () => {
    const { placement, auction } = await admin.aggregator.deploy({
      spec: {
        name: "across-hosts",
        requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
        kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
      },
    });
    assert.equal(placement?.state, PlacementState.PLACED, placement?.stateReason);
    assert.equal(auction?.bids.length, nodes.length, "both nodes were asked for a bid over https");
    assert.equal(auction?.winner, placement?.node);
    const winner = nodeClients.get(placement?.node ?? "");
    assert.ok(winner, `the winner ${placement?.node} is one of the nodes`);
    const { executable } = await winner.runtime.getExecutable({ executable: placement?.resourceId ?? "" });
    assert.equal(executable?.state, ExecutableState.RUNNING, "it runs on the node that won");
    assert.equal(executable?.labels["aether.io/workload"], placement?.workloadId);
    // Released through the aggregator, it stops on the node.
    await admin.aggregator.releasePlacement({ workload: placement?.workloadId ?? "" });
    await eventually(
      async () => {
        const e = (await winner.runtime.getExecutable({ executable: placement?.resourceId ?? "" }).catch(() => undefined))?.executable;
        return e === undefined || e.state !== ExecutableState.RUNNING ? true : undefined;
      },
      15_000,
      "the released workload to stop on its node",
    );
  });

  it("a node certificate cannot register as another node, nor take over its id; a user certificate registers no node", async () => {
    const [n1, n2] = nodes as [NetnsNode, NetnsNode];
    const before = (await admin.aggregator.listNodes({})).nodes;
    const n1Id = before.find((x) => x.name === n1.host.name)?.id ?? "";
    const asN2 = await cluster.client(agg.url, n2.cert);
    const asUser = await cluster.client(agg.url, cluster.user("mallory"));
    try {
      const register = (c: AetherClient, nodeId: string, name: string) =>
        c.aggregator.registerNode({ nodeId, name, address: n2.url, capabilities: { cpuCount: 1, memoryTotalBytes: 1n << 30n } });
      const refused = (who: RegExp) => (e: unknown) =>
        e instanceof ConnectError && e.code === Code.PermissionDenied && who.test(e.rawMessage) && e.rawMessage.length > 20;
      // n2's certificate, under n1's name (a new id, and n1's own id).
      await assert.rejects(register(asN2, randomUUID(), n1.host.name), refused(/node\/n2\b/));
      await assert.rejects(register(asN2, n1Id, n1.host.name), refused(/node\/n2\b/));
      // n2's certificate under its own name but n1's id.
      await assert.rejects(register(asN2, n1Id, n2.host.name), refused(/node\/n2\b/));
      // A user certificate, as any node.
      await assert.rejects(register(asUser, randomUUID(), "n3"), refused(/user\/mallory/));
      await assert.rejects(asUser.aggregator.heartbeat({ nodeId: n1Id, leaseId: "x" }), refused(/user\/mallory/));
    } finally {
      asN2.close();
      asUser.close();
    }
    // Nothing was registered or changed.
    const after = (await admin.aggregator.listNodes({})).nodes;
    assert.deepEqual(after.map((x) => `${x.id} ${x.name} ${x.address}`).sort(), before.map((x) => `${x.id} ${x.name} ${x.address}`).sort());
  });

  it("the aggregator calls back only the node a certificate names: a node registered at another node's address is never asked", async () => {
    const [n1] = nodes as [NetnsNode];
    // n3's own certificate registers n3 (allowed: it speaks for itself), but at n1's address.
    const n3 = cluster.ca.issue("n3", { server: true, client: true });
    const asN3 = await cluster.client(agg.url, n3);
    const n3Id = randomUUID();
    try {
      await asN3.aggregator.registerNode({
        nodeId: n3Id,
        name: "n3",
        address: n1.url,
        capabilities: { cpuCount: 64, memoryTotalBytes: 1n << 40n },
      });
      const { placement, auction } = await admin.aggregator.deploy({
        spec: {
          name: "not-at-n3",
          requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      });
      assert.equal(placement?.state, PlacementState.PLACED, placement?.stateReason);
      assert.notEqual(placement?.node, n3Id, "the impostor address never wins");
      const bid = auction?.bids.find((b) => b.node === n3Id);
      assert.equal(bid?.outcome, BidOutcome.ERROR, `n3 was not asked: ${bid?.error}`);
      assert.match(bid?.error ?? "", /names spiffe:\/\/test\/node\/n1, not the registered node n3/);
      await admin.aggregator.releasePlacement({ workload: placement?.workloadId ?? "" });
    } finally {
      await asN3.aggregator.deregisterNode({ nodeId: n3Id }).catch(() => undefined);
      asN3.close();
    }
  });
});
