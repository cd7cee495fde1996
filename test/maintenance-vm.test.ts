// A drain live-migrates a VM (issue 14, item 5): two real aetherd and an aggregator; a guest placed
// by the aggregator on node-a (QEMU under TCG) moves to node-b when node-a is drained, through
// VmService.MigrateVm on node-a: the same guest (boot id) answers on node-b, nothing of it is left on
// node-a, and the move's event carries the migration's downtime.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { ClusterEventKind, NodeLifecycle, NodeState, PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

describe("a drain live-migrates a VM", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-maintenance-vm-"));
  let agg: TestAggregator;
  const daemons = new Map<string, TestDaemon>();
  const clients = new Map<string, AetherClient>();
  const ids = new Map<string, string>();
  const client = (name: string) => clients.get(name) as AetherClient;

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "5000"] });
    for (const [i, name] of ["node-a", "node-b"].entries()) {
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
        return nodes.filter((n) => n.state === NodeState.READY && n.lifecycle === NodeLifecycle.ON_DUTY).length === 2 ? true : undefined;
      },
      20_000,
      "two nodes on duty",
    );
  });

  after(async () => {
    for (const [name, d] of daemons) {
      try {
        await stopWorkloads(client(name));
        client(name).close();
        await d.stop();
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("drain node-a: the guest moves to node-b by live migration and keeps its boot id", async () => {
    const g = guestImage();
    // node-b cordoned, so the guest is placed on node-a.
    await agg.client.aggregator.cordonNode({ node: "node-b" });
    const { placement } = await agg.client.aggregator.deploy({
      spec: {
        name: "guest",
        kind: {
          case: "vm",
          value: {
            acceleration: vmApi.Acceleration.TCG,
            memoryBytes: 128n * MiB,
            vcpus: 1,
            guestAgent: true,
            boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
            start: true,
          },
        },
      },
    });
    assert.equal(placement?.node, ids.get("node-a"));
    const vmId = placement?.resourceId ?? "";
    let ready: vmApi.Vm | undefined;
    for await (const r of client("node-a").vm.waitVmReady({ vm: vmId, timeout: { seconds: 120n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    const bootId = async (name: string) =>
      text(
        (await client(name).vm.execVm({ vm: vmId, argv: ["/bin/cat", "/proc/sys/kernel/random/boot_id"], timeout: { seconds: 30n } }))
          .stdout,
      );
    const before = await bootId("node-a");
    assert.match(before, /^[0-9a-f-]{36}$/);
    await agg.client.aggregator.uncordonNode({ node: "node-b" });

    const r = await runCommand("aether", ["cluster", "drain", "node-a"], {
      env: { AETHER_AGGREGATOR: `unix://${agg.socket}` },
      timeoutMs: 180_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /workload moved: workload guest moved from \S+ to \S+/);
    assert.match(r.stdout, /node node-a is drained/);

    const moved = (await agg.client.aggregator.getPlacement({ workload: "guest" })).placement;
    assert.equal(moved?.state, PlacementState.PLACED);
    assert.equal(moved?.node, ids.get("node-b"));
    assert.equal(moved?.resourceId, vmId, "the VM keeps its id on the target");
    const there = (await client("node-b").vm.getVm({ vm: vmId })).vm;
    assert.equal(there?.state, vmApi.VmState.RUNNING);
    assert.equal(await bootId("node-b"), before, "the same guest, never rebooted");
    const { vms } = await client("node-a").vm.listVms({});
    assert.equal(vms.length, 0, "nothing of it is left on node-a");

    const events = [];
    for await (const e of agg.client.aggregator.streamClusterEvents({})) if (e.event) events.push(e.event);
    const event = events.find((e) => e.kind === ClusterEventKind.WORKLOAD_MOVED && e.workloadId === moved?.workloadId);
    assert.equal(event?.attributes["how"], "live_migration");
    assert.ok(Number(event?.attributes["downtime_ms"]) >= 0, JSON.stringify(event?.attributes));
    console.log(
      `guest live-migrated by the drain: downtime ${event?.attributes["downtime_ms"]} ms, migration ${event?.attributes["migration_ms"]} ms`,
    );
  });
});
