// A drain of a node running two VMs and two executables across three real aetherd (issue 14, item 5):
// the guests (QEMU under TCG) move by live migration through VmService.MigrateVm on node-a, the
// executables by a new copy first; afterwards all four run elsewhere, the guests with the same boot
// id and nothing of them left on node-a, at most one move was under way at a time (the events), the
// moves' events carry the migrations' downtime, node-a is DRAINED and asked for no bid, and uncordon
// puts it back.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import {
  ClusterEventKind,
  NodeLifecycle,
  NodeState,
  PlacementState,
  type ClusterEvent,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;
const NAMES = ["node-a", "node-b", "node-c"];
const GUESTS = ["guest-1", "guest-2"];
const EXECUTABLES = ["exe-1", "exe-2"];
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

describe("a drain of a node with two VMs and two executables", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-maintenance-vm-"));
  let agg: TestAggregator;
  const daemons = new Map<string, TestDaemon>();
  const clients = new Map<string, AetherClient>();
  const ids = new Map<string, string>();
  const client = (name: string) => clients.get(name) as AetherClient;
  const nameOf = (id: string) => NAMES.find((n) => ids.get(n) === id) ?? id;

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "5000", "--auction-window-ms", "2000"] });
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
        return nodes.filter((n) => n.state === NodeState.READY && n.lifecycle === NodeLifecycle.ON_DUTY).length === NAMES.length
          ? true
          : undefined;
      },
      20_000,
      "three nodes on duty",
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

  it("all four run elsewhere, one move at a time, the guests never rebooted; node-a is DRAINED, then back on duty", async () => {
    const g = guestImage();
    // The other nodes cordoned, so everything is placed on node-a.
    for (const n of ["node-b", "node-c"]) await agg.client.aggregator.cordonNode({ node: n });
    const vmIds = new Map<string, string>();
    for (const name of GUESTS) {
      const { placement } = await agg.client.aggregator.deploy({
        spec: {
          name,
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
      vmIds.set(name, placement?.resourceId ?? "");
    }
    for (const name of EXECUTABLES) {
      const { placement } = await agg.client.aggregator.deploy({
        spec: {
          name,
          requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      });
      assert.equal(placement?.node, ids.get("node-a"));
    }
    const bootId = async (node: string, vm: string) =>
      text((await client(node).vm.execVm({ vm, argv: ["/bin/cat", "/proc/sys/kernel/random/boot_id"], timeout: { seconds: 30n } })).stdout);
    const bootIds = new Map<string, string>();
    for (const [name, vm] of vmIds) {
      let ready: vmApi.Vm | undefined;
      for await (const r of client("node-a").vm.waitVmReady({ vm, timeout: { seconds: 120n } })) ready = r.vm;
      assert.equal(ready?.state, vmApi.VmState.RUNNING, `${name}: ${ready?.stateReason}`);
      bootIds.set(name, await bootId("node-a", vm));
    }
    for (const n of ["node-b", "node-c"]) await agg.client.aggregator.uncordonNode({ node: n });
    const before = (await events()).at(-1)?.sequence ?? 0n;

    const env = { AETHER_AGGREGATOR: `unix://${agg.socket}` };
    const r = await runCommand("aether", ["cluster", "drain", "node-a"], { env, timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /node node-a is drained/);

    for (const name of GUESTS) {
      const p = (await agg.client.aggregator.getPlacement({ workload: name })).placement;
      assert.equal(p?.state, PlacementState.PLACED);
      assert.notEqual(p?.node, ids.get("node-a"));
      const vm = vmIds.get(name) as string;
      assert.equal(p?.resourceId, vm, "a VM keeps its id on the target");
      const there = (await client(nameOf(p?.node ?? "")).vm.getVm({ vm })).vm;
      assert.equal(there?.state, vmApi.VmState.RUNNING);
      assert.equal(await bootId(nameOf(p?.node ?? ""), vm), bootIds.get(name), `${name}: the same guest, never rebooted`);
    }
    for (const name of EXECUTABLES) {
      const p = (await agg.client.aggregator.getPlacement({ workload: name })).placement;
      assert.notEqual(p?.node, ids.get("node-a"));
      const e = (await client(nameOf(p?.node ?? "")).runtime.getExecutable({ executable: p?.resourceId ?? "" })).executable;
      assert.equal(e?.state, ExecutableState.RUNNING, `${name} runs on ${nameOf(p?.node ?? "")}`);
    }
    assert.equal((await client("node-a").vm.listVms({})).vms.length, 0, "nothing of the guests is left on node-a");
    const running = (await client("node-a").runtime.listExecutables({})).executables.filter((e) => e.state === ExecutableState.RUNNING);
    assert.equal(running.length, 0, "no executable runs on node-a");

    // One move at a time: moving and moved alternate; the guests' moves carry their downtime.
    const drain = (await events()).filter((e) => e.sequence > before);
    const moves = drain.filter((e) => e.kind === ClusterEventKind.WORKLOAD_MOVING || e.kind === ClusterEventKind.WORKLOAD_MOVED);
    assert.equal(moves.length, 8);
    moves.forEach((e, i) =>
      assert.equal(e.kind, i % 2 === 0 ? ClusterEventKind.WORKLOAD_MOVING : ClusterEventKind.WORKLOAD_MOVED, `event ${i}: ${e.message}`),
    );
    const migrated = drain.filter((e) => e.kind === ClusterEventKind.WORKLOAD_MOVED && e.attributes["how"] === "live_migration");
    assert.equal(migrated.length, 2);
    for (const e of migrated)
      console.log(`${e.message} downtime ${e.attributes["downtime_ms"]} ms, migration ${e.attributes["migration_ms"]} ms`);
    assert.equal(
      (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.id === ids.get("node-a"))?.lifecycle,
      NodeLifecycle.DRAINED,
    );

    // Drained: asked for no bid; uncordoned: bids again.
    const later = await agg.client.aggregator.deploy({
      spec: { name: "later", requirements: { cpuMillis: 10 }, kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
    });
    assert.ok(!later.auction?.bids.some((b) => b.node === ids.get("node-a")));
    const u = await runCommand("aether", ["cluster", "uncordon", "node-a"], { env });
    assert.equal(u.code, 0, u.stderr);
    const again = await agg.client.aggregator.deploy({
      spec: { name: "again", requirements: { cpuMillis: 10 }, kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
    });
    assert.ok(again.auction?.bids.some((b) => b.node === ids.get("node-a")));
  });

  async function events(): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const e of agg.client.aggregator.streamClusterEvents({})) if (e.event) out.push(e.event);
    return out;
  }
});
