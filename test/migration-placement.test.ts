// A VM's placement follows a live migration that no drain started (issue 14, items 4 and 6): a real
// aggregator and two aetherd in its cluster (unix sockets), a guest placed by the aggregator on
// node-a under TCG. `aether vm migrate web --to node-b` (the source aetherd's MigrateVm) moves it;
// the node it lands on reports the migration (AggregatorService.ReportMigration), so the placement
// names node-b and a WORKLOAD_MOVED event carries the migration's duration and the guest's
// downtime. The report survives kill -9 of either aetherd mid-way: a target killed right after it
// committed to the guest reports once restarted, a source killed right after the commit does not
// matter (the target reports on its own). Both aetherd run on this one machine: each keeps the
// VM's cloud-init seed in a folder of its own, so the source removing its copy leaves the target's.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { ClusterEventKind, NodeLifecycle, NodeState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { MiB, sh, vmsNamed } from "./helpers/migration.js";
import { runCommand } from "./helpers/run.js";

const NAMES = ["node-a", "node-b"] as const;
const SEEDS = "/dev/shm/aether-seeds";
type Name = (typeof NAMES)[number];

describe("a plain live migration moves the VM's placement in the aggregator", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-migration-placement-"));
  let agg: TestAggregator;
  const daemons = new Map<Name, TestDaemon>();
  const ids = new Map<Name, string>();
  let vmId = "";
  let bootId = "";
  const client = (name: Name) => daemons.get(name)?.client() as Promise<AetherClient>;
  const config = (name: Name) => join(dir, `${name}.toml`);

  async function start(name: Name, env?: NodeJS.ProcessEnv): Promise<void> {
    const old = daemons.get(name);
    const d = await startDaemon({ dir: join(dir, name), args: ["--config", config(name)], env, cgroupRoot: old?.cgroupRoot });
    daemons.set(name, d);
  }

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "5000", "--auction-window-ms", "1000"] });
    for (const [i, name] of NAMES.entries()) {
      mkdirSync(join(dir, name), { recursive: true });
      writeFileSync(config(name), `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\nslot = ${i + 1}\n`);
      await start(name);
      const c = await client(name);
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
      "two nodes on duty",
    );
    // node-b cordoned while the guest is placed, so it lands on node-a.
    await agg.client.aggregator.cordonNode({ node: "node-b" });
    const g = guestImage();
    const { placement } = await agg.client.aggregator.deploy({
      spec: {
        name: "web",
        kind: {
          case: "vm",
          value: {
            acceleration: vmApi.Acceleration.TCG,
            memoryBytes: 128n * MiB,
            vcpus: 1,
            guestAgent: true,
            // A cloud-init seed: each aetherd builds the VM's own in a folder of its state's (seed.ts).
            cloudInit: { userData: "#cloud-config\n" },
            boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
            start: true,
          },
        },
      },
    });
    assert.equal(placement?.node, ids.get("node-a"));
    vmId = placement?.resourceId ?? "";
    await agg.client.aggregator.uncordonNode({ node: "node-b" });
    const a = await client("node-a");
    let ready: vmApi.Vm | undefined;
    for await (const r of a.vm.waitVmReady({ vm: vmId, timeout: { seconds: 120n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    bootId = await sh(a, vmId, "cat /proc/sys/kernel/random/boot_id");
  });

  after(async () => {
    for (const [, d] of daemons) {
      try {
        await stopWorkloads(await d.client()).catch(() => undefined);
        await d.stop();
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  async function events(): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const e of agg.client.aggregator.streamClusterEvents({})) if (e.event) out.push(e.event);
    return out;
  }

  /** The placement names `to`, one WORKLOAD_MOVED event names the migration, and the guest runs there only. */
  async function followed(migrationId: string, from: Name, to: Name, downtimeMs?: number): Promise<ClusterEvent> {
    const p = await eventually(
      async () => {
        const { placement } = await agg.client.aggregator.getPlacement({ workload: "web" });
        return placement?.node === ids.get(to) ? placement : undefined;
      },
      90_000,
      `the placement to name ${to}`,
    );
    assert.equal(p.resourceId, vmId, "the VM keeps its id");
    assert.match(p.stateReason, new RegExp(`live-migrated from node ${ids.get(from)} to ${ids.get(to)} \\(migration ${migrationId}\\)`));
    const moved = (await events()).filter((e) => e.kind === ClusterEventKind.WORKLOAD_MOVED && e.attributes["migration"] === migrationId);
    assert.equal(moved.length, 1, "one event for the migration");
    const e = moved[0] as ClusterEvent;
    assert.equal(e.node, ids.get(to));
    assert.equal(e.workloadId, p.workloadId);
    assert.equal(e.attributes["from_node"], ids.get(from));
    assert.equal(e.attributes["to_node"], ids.get(to));
    assert.equal(e.attributes["how"], "live_migration");
    // The figures the target kept from the source's FinishIncoming, through its restart too.
    assert.ok(Number(e.attributes["migration_ms"]) > 0, `the migration's duration: ${e.message}`);
    assert.match(e.attributes["downtime_ms"] ?? "", /^\d+$/, `the guest's downtime: ${e.message}`);
    if (downtimeMs !== undefined)
      assert.equal(Number(e.attributes["downtime_ms"]), downtimeMs, "QEMU's downtime, as MigrateVm reported it");
    assert.match(e.message, /was live-migrated from .* to .* in \d+ ms \(live migration, \d+ ms downtime\)\./);
    const there = await client(to);
    const running = await eventually(
      async () => {
        const v = (await there.vm.getVm({ vm: vmId }).catch(() => undefined))?.vm;
        return v?.state === vmApi.VmState.RUNNING && v.agentReady ? v : undefined;
      },
      90_000,
      `the guest running on ${to}`,
    );
    assert.equal(running.id, vmId);
    assert.equal(await sh(there, vmId, "cat /proc/sys/kernel/random/boot_id"), bootId, "the same guest, never rebooted");
    await eventually(
      async () => ((await vmsNamed(await client(from), "web")).length === 0 ? true : undefined),
      60_000,
      `nothing on ${from}`,
    );
    // One seed of the VM on this machine, the one the target's record names: the source removed its
    // own, not the target's (both aetherd are on one host and the VM keeps its id).
    const seeds = readdirSync(SEEDS, { recursive: true }).map(String);
    assert.equal(seeds.filter((f) => basename(f) === `${vmId}.iso`).length, 1, `one seed of the VM: ${seeds.join(", ")}`);
    const record = JSON.parse(readFileSync(join(daemons.get(to)?.stateDir ?? "", "vms", vmId, "vm.json"), "utf8")) as {
      runtime: { seedPath: string };
    };
    assert.ok(existsSync(record.runtime.seedPath), `the target's seed ${record.runtime.seedPath} is there`);
    return e;
  }

  it("aether vm migrate web --to node-b: the placement names node-b, an event has the duration and downtime", async () => {
    const env = { AETHER_HOST: daemons.get("node-a")?.address, AETHER_AGGREGATOR: `unix://${agg.socket}` };
    const r = await runCommand("aether", ["vm", "migrate", vmId, "--to", "node-b", "--json"], { env, timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    const migration = JSON.parse(r.stdout) as { id: string; state: string; downtime: string };
    assert.equal(migration.state, "MIGRATION_STATE_SUCCEEDED");
    const e = await followed(migration.id, "node-a", "node-b", Math.round(Number.parseFloat(migration.downtime) * 1000));
    console.log(e.message);
  });

  it("kill -9 of the target right after it committed: restarted, it reports the migration with its figures", async () => {
    // node-a is the target now, with a crash point right after its commit (before it resumes the guest).
    assert.equal(await daemons.get("node-a")?.stop(), 0);
    await start("node-a", { AETHERD_CRASH_AT: "migration.incoming-committed" });
    const source = await client("node-b");
    const { migration } = await source.vm.migrateVm({ vm: vmId, target: daemons.get("node-a")?.address });
    const id = migration?.id ?? "";
    const target = daemons.get("node-a") as TestDaemon;
    await eventually(
      async () => (target.process.exitCode !== null || target.process.signalCode !== null ? true : undefined),
      120_000,
      "the target's crash point",
    );
    await target.kill9();
    await start("node-a");
    // The source found the target gone at the switchover (in doubt), and learns from it, restarted, that the guest moved.
    await followed(id, "node-b", "node-a");
  });

  it("kill -9 of the source right after the commit: the target's report moves the placement all the same", async () => {
    assert.equal(await daemons.get("node-a")?.stop(), 0);
    await start("node-a", { AETHERD_CRASH_AT: "migration.committed" });
    const source = await client("node-a");
    const { migration } = await source.vm.migrateVm({ vm: vmId, target: daemons.get("node-b")?.address });
    const id = migration?.id ?? "";
    const killed = daemons.get("node-a") as TestDaemon;
    await eventually(
      async () => (killed.process.exitCode !== null || killed.process.signalCode !== null ? true : undefined),
      120_000,
      "the source's crash point",
    );
    await killed.kill9();
    // The placement moves while the source is still dead: the target reported it.
    const { placement } = await eventually(
      async () => {
        const got = await agg.client.aggregator.getPlacement({ workload: "web" });
        return got.placement?.node === ids.get("node-b") ? got : undefined;
      },
      60_000,
      "the target's report while the source is dead",
    );
    assert.equal(placement?.resourceId, vmId);
    await start("node-a");
    await followed(id, "node-a", "node-b");
  });
});
