// The cluster across hosts, simulated by network namespaces (issue 21): two aether-aggregator
// replicas on etcd, etcd itself, two aetherd and the BMCs' management network each in their own
// namespace, joined by a bridge, with certificates issued for their 10.x addresses. Nothing but TCP +
// mutual TLS between them (no unix socket is shared; etcd requires client certificates too), and
// this test reaches each of them the same way, from the root namespace, with a user certificate.
// In that cluster: nodes register, workloads are placed by auction, identities are checked both
// ways, a hung node is fenced through its BMC and its workload replaced, and the leader is killed.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { randomUUID } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "@aether/sdk";
import {
  BidOutcome,
  ClusterEventKind,
  NodeState,
  PlacementState,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, powerOffHost } from "./helpers/daemon.js";
import { createNetnsCluster, type NetnsAggregator, type NetnsCluster, type NetnsNode } from "./helpers/netns-cluster.js";
import type { TestBmc } from "./helpers/test-bmc.js";

const TTL_MS = 4000;

describe("a cluster across network namespaces, over mutual TLS only", () => {
  let cluster: NetnsCluster;
  let agg: NetnsAggregator; // replica agg-1, the leader until it is killed
  let standby: NetnsAggregator; // replica agg-2
  const nodes: NetnsNode[] = [];
  let admin: AetherClient; // a user certificate (spiffe://test/user/admin) on the leader's TCP address
  const nodeClients = new Map<string, AetherClient>(); // by node id, over each node's TCP address
  /** Each node's BMC, by node name. */
  const bmcs = new Map<string, TestBmc>();
  /** The fenced node's workload processes, which its BMC's power-off kills with its aetherd. */
  let hungPids: number[] = [];

  before(async () => {
    cluster = createNetnsCluster(2);
    const etcd = await cluster.startEtcd();
    // A BMC per node, on the management network: its power-off is the node's aetherd and workloads dying at once.
    const entries: string[] = [];
    for (const [i, h] of cluster.nodeHosts.entries()) {
      const bmc = await cluster.startBmc({ profile: "ilo5", onPowerOff: () => powerOffHost((nodes[i] as NetnsNode).daemon, hungPids) });
      bmcs.set(h.name, bmc);
      writeFileSync(join(cluster.dir, `${h.name}.password`), `${bmc.password}\n`);
      chmodSync(join(cluster.dir, `${h.name}.password`), 0o600);
      writeFileSync(join(cluster.dir, `${h.name}-bmc-ca.pem`), bmc.caPem);
      entries.push(
        `[[bmcs]]\nnode = "${h.name}"\nendpoint = "${bmc.url}"\nusername = "${bmc.username}"\npassword_file = "${h.name}.password"\nca_file = "${h.name}-bmc-ca.pem"\nprofile = "ilo5"\nrequest_timeout_ms = 1500\nretries = 0\n`,
      );
    }
    writeFileSync(join(cluster.dir, "bmcs.toml"), entries.join("\n"));
    const replica = (name: string) => [
      ...etcd.args,
      "--replica",
      name,
      "--lease-ttl-ms",
      String(TTL_MS),
      "--bmcs",
      join(cluster.dir, "bmcs.toml"),
      "--fence-timeout-ms",
      "3000",
      "--fence-poll-interval-ms",
      "50",
    ];
    agg = await cluster.startAggregator(replica("agg-1"));
    standby = await cluster.startAggregator(replica("agg-2"), { host: cluster.standbyHost, standby: true });
    admin = await cluster.client(agg.url, cluster.user("admin"));
    for (const h of cluster.nodeHosts) nodes.push(await cluster.startNode(h, { aggregators: [agg.url, standby.url] }));
  });

  after(async () => {
    admin?.close();
    for (const c of nodeClients.values()) c.close();
    for (const n of nodes) {
      const pid = n.daemon.process.pid;
      if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGCONT");
    }
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

  it("the standby replica refuses with the leader's name, over mTLS", async () => {
    const c = await cluster.client(standby.url, cluster.user("operator"));
    try {
      assert.notEqual((await c.node.checkHealth({})).status, HealthStatus.SERVING);
      await assert.rejects(
        c.aggregator.listNodes({}),
        (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /standby; the leader is agg-1/.test(e.rawMessage),
      );
    } finally {
      c.close();
    }
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

  it("a node that stops answering is fenced through its BMC on the management network, and its workload runs on the other node", async () => {
    const { placement: placed } = await admin.aggregator.deploy({
      spec: {
        name: "fenced-0",
        requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
        kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
      },
    });
    assert.equal(placed?.state, PlacementState.PLACED, placed?.stateReason);
    const registered = (await admin.aggregator.listNodes({})).nodes;
    const hungName = registered.find((n) => n.id === placed?.node)?.name ?? "";
    const hung = nodes.find((n) => n.host.name === hungName) as NetnsNode;
    const other = nodes.find((n) => n !== hung) as NetnsNode;
    const hungId = placed?.node ?? "";
    const { executables } = await (nodeClients.get(hungId) as AetherClient).runtime.listExecutables({ pageSize: 1000 });
    hungPids = executables.filter((e) => e.state === ExecutableState.RUNNING && e.pid > 0).map((e) => e.pid);
    assert.ok(hungPids.length >= 1);
    // The winner hangs: no heartbeats, no answers; its workload keeps running until its BMC powers it off.
    process.kill(hung.daemon.process.pid as number, "SIGSTOP");

    const moved = await eventually(
      async () => {
        const p = (await admin.aggregator.listPlacements({ pageSize: 1000 })).placements.find((x) => x.workloadId === placed?.workloadId);
        return p?.state === PlacementState.PLACED && p.node !== hungId ? p : undefined;
      },
      TTL_MS + 20_000,
      `${hungName}'s workload placed on ${other.host.name}`,
    );
    assert.equal(bmcs.get(hungName)?.powerOffCount, 1, `${hungName}'s BMC powered it off once`);
    assert.equal(bmcs.get(hungName)?.powerState, "Off");
    assert.equal(bmcs.get(other.host.name)?.powerOffCount, 0, "the other node was not fenced");
    assert.equal(moved.node, registered.find((n) => n.name === other.host.name)?.id);
    for (const pid of hungPids) assert.ok(!isRunning(pid), `${hungName}'s process ${pid} died with it`);
    const { executable } = await (nodeClients.get(moved.node) as AetherClient).runtime.getExecutable({ executable: moved.resourceId });
    assert.equal(executable?.state, ExecutableState.RUNNING, `it runs on ${other.host.name}, reached over mTLS`);
    const hungNow = (await admin.aggregator.listNodes({})).nodes.find((n) => n.id === hungId);
    assert.equal(hungNow?.state, NodeState.FENCED);
    const events: ClusterEventKind[] = [];
    for await (const r of admin.aggregator.streamClusterEvents({})) if (r.event && r.event.node === hungId) events.push(r.event.kind);
    assert.ok(events.includes(ClusterEventKind.NODE_FENCED), events.map((k) => ClusterEventKind[k]).join(" "));
  });

  it("kill -9 of the leader: the standby leads from etcd over TLS, the surviving node heartbeats to it and new work is placed", async (t) => {
    const killedAt = Date.now();
    await agg.kill9();
    const operator = await cluster.client(standby.url, cluster.user("admin"));
    try {
      await eventually(
        async () => ((await operator.node.checkHealth({}).catch(() => undefined))?.status === HealthStatus.SERVING ? true : undefined),
        20_000,
        "agg-2 to lead",
      );
      t.diagnostic(`agg-2 leads ${Date.now() - killedAt} ms after agg-1 was killed`);
      const placements = (await operator.aggregator.listPlacements({ pageSize: 1000 })).placements;
      assert.ok(
        placements.some((p) => p.name.startsWith("fenced-") && p.state === PlacementState.PLACED),
        "the placements came over",
      );
      // The surviving node keeps its lease with agg-2: still READY well after a TTL, its heartbeats renewing it there.
      const survivor = async () => (await operator.aggregator.listNodes({})).nodes.find((n) => n.state !== NodeState.FENCED);
      const before = (await survivor())?.lease?.expireTime?.seconds ?? 0n;
      await new Promise((r) => setTimeout(r, TTL_MS + 1000));
      const now = await survivor();
      assert.equal(now?.state, NodeState.READY, `the surviving node is ${now ? NodeState[now.state] : "gone"}`);
      assert.ok((now?.lease?.expireTime?.seconds ?? 0n) > before, "its heartbeats reach the new leader");
      const { placement } = await operator.aggregator.deploy({
        spec: {
          name: "after-failover",
          requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      });
      assert.equal(placement?.state, PlacementState.PLACED, placement?.stateReason);
      assert.equal(placement?.node, now?.id, "placed on the only live node");
      const { executable } = await (nodeClients.get(now?.id ?? "") as AetherClient).runtime.getExecutable({
        executable: placement?.resourceId ?? "",
      });
      assert.equal(executable?.state, ExecutableState.RUNNING);
    } finally {
      operator.close();
    }
  });
});
