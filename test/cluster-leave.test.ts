// Issue 23, item 6: a graceful SIGTERM of aetherd deregisters its node from the aggregator before it
// exits (its workloads keep running; a restarted aetherd registers again), so a node stopped on
// purpose is not left to run out its lease, be suspected and fenced. A node an operator took off
// duty (cordoned, drained, ...) stays registered: deregistering would forget that. An aggregator
// that cannot be reached delays the exit by a bounded time only. A real aether-aggregator and real
// aetherd.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ClusterEventKind, NodeLifecycle, NodeState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";

// Long enough that a node missing from the list can only have deregistered, not lost its lease.
const LEASE_TTL_MS = 60_000;

describe("aetherd leaves the cluster on a graceful SIGTERM", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-cluster-leave-"));
  let agg: TestAggregator;
  const started: TestDaemon[] = [];

  /** Starts an aetherd that is a member of `aggregatorSocket`'s cluster as node `name`. */
  const member = async (name: string, aggregatorSocket: string, cgroupRoot?: string) => {
    const config = join(dir, `${name}.toml`);
    writeFileSync(config, `[cluster]\naggregator = "unix://${aggregatorSocket}"\nname = "${name}"\n`);
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    const d = await startDaemon({ dir: nodeDir, args: ["--config", config], ...(cgroupRoot !== undefined && { cgroupRoot }) });
    started.push(d);
    return d;
  };
  const listed = async (name: string) => (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === name);

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", String(LEASE_TTL_MS)] });
  });

  after(async () => {
    for (const d of started) {
      await d.stop();
      d.cleanup();
    }
    assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("SIGTERM: the node is deregistered before aetherd exits, and registers again when it starts", async () => {
    const d = await member("leaving", agg.socket);
    const node = await eventually(async () => {
      const n = await listed("leaving");
      return n?.state === NodeState.READY ? n : undefined;
    }, 20_000);
    const nodeInfo = (await (await d.client()).node.getNodeInfo({})).node;
    assert.equal(node.id, nodeInfo?.id);

    assert.equal(await d.stop(), 0, d.log());
    // At once, not after the lease (a minute): aetherd deregistered on its way out.
    assert.equal(await listed("leaving"), undefined, "the node is gone from ListNodes");
    assert.match(d.log(), /"msg":"deregistered from the aggregator"/);
    const events = [];
    for await (const e of agg.client.aggregator.streamClusterEvents({ follow: false })) events.push(e.event);
    assert.ok(
      events.some((e) => e?.kind === ClusterEventKind.NODE_DEREGISTERED && e.node === node.id),
      "the cluster's event log says the node was deregistered",
    );

    // Restarted on the same state directory: the same node id registers again.
    const again = await startDaemon({ dir: join(dir, "leaving"), args: ["--config", join(dir, "leaving.toml")], cgroupRoot: d.cgroupRoot });
    started.push(again);
    const back = await eventually(async () => {
      const n = await listed("leaving");
      return n?.state === NodeState.READY ? n : undefined;
    }, 20_000);
    assert.equal(back.id, node.id);
    assert.equal(await again.stop(), 0);
    assert.equal(await listed("leaving"), undefined);
  });

  it("a cordoned node stays registered (and cordoned) when its aetherd stops", async () => {
    const d = await member("cordoned", agg.socket);
    const node = await eventually(async () => {
      const n = await listed("cordoned");
      return n?.state === NodeState.READY && n.lifecycle === NodeLifecycle.ON_DUTY ? n : undefined;
    }, 20_000);
    await agg.client.aggregator.cordonNode({ node: node.id });
    assert.equal(await d.stop(), 0, d.log());
    const kept = await listed("cordoned");
    assert.equal(kept?.id, node.id, "still registered");
    assert.equal(kept?.lifecycle, NodeLifecycle.CORDONED, "still cordoned");
    assert.match(d.log(), /"lifecycle":"CORDONED".*"msg":"stays registered with the aggregator: an operator took it off duty/);
    await agg.client.aggregator.deregisterNode({ nodeId: node.id });
  });

  it("with the aggregator gone, aetherd still exits at once (0), saying it could not deregister", async () => {
    const other = await startAggregator({ dir: join(dir, "agg-gone") });
    const d = await member("orphan", other.socket);
    await eventually(async () => {
      const n = (await other.client.aggregator.listNodes({})).nodes.find((x) => x.name === "orphan");
      return n?.state === NodeState.READY ? n : undefined;
    }, 20_000);
    await other.kill9();
    rmSync(other.socket, { force: true });
    const start = Date.now();
    assert.equal(await d.stop(), 0, d.log());
    const ms = Date.now() - start;
    assert.ok(ms < 4000, `aetherd exited within its bound (took ${ms} ms)`);
    assert.match(d.log(), /"msg":"could not deregister from the aggregator; its lease will run out there"/);
    rmSync(other.dir, { recursive: true, force: true });
  });
});
