// Drain: the time `aether cluster drain` takes to empty a node of N small VMs (QEMU under TCG, live
// migration, one move at a time), against the baseline of the same run: the migrations themselves,
// from the aggregator's MigrateVm call to WatchMigration's report of the end (and, beside it, the
// source aetherd's own measure of each). What is left is the aggregator's share per move: the
// auction for each VM, the records and the events (goal < 200 ms per move). Also each guest's
// downtime at the switchover (QEMU's figure). Two real aetherd on this machine and one aggregator.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { ClusterEventKind, NodeLifecycle, NodeState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "../test/helpers/daemon.js";
import { startAggregator, type TestAggregator } from "../test/helpers/aggregator.js";
import { guestImage } from "../test/helpers/guest.js";
import { ms, percentile } from "./stats.js";

const MiB = 1024n * 1024n;

export interface DrainBenchResult {
  rows: string[][];
  vms: number;
  drainMs: number;
  migrationsMs: number;
  overheadPerMoveMs: number;
}

export async function benchDrain(vms: number): Promise<DrainBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), "aether-bench-drain-"));
  let agg: TestAggregator | undefined;
  const daemons: TestDaemon[] = [];
  const clients: AetherClient[] = [];
  try {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "5000"] });
    for (const [i, name] of ["node-a", "node-b"].entries()) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      writeFileSync(join(dir, `${name}.toml`), `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\nslot = ${i + 1}\n`);
      const d = await startDaemon({ dir: nodeDir, args: ["--config", join(dir, `${name}.toml`)] });
      daemons.push(d);
      clients.push(await d.client());
    }
    const a = agg;
    await eventually(
      async () =>
        (await a.client.aggregator.listNodes({})).nodes.filter((n) => n.state === NodeState.READY && n.lifecycle === NodeLifecycle.ON_DUTY)
          .length === 2
          ? true
          : undefined,
      20_000,
      "two nodes on duty",
    );
    const g = guestImage();
    await a.client.aggregator.cordonNode({ node: "node-b" });
    for (let i = 0; i < vms; i++) {
      const { placement } = await a.client.aggregator.deploy({
        spec: {
          name: `vm-${i}`,
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
      for await (const r of (clients[0] as AetherClient).vm.waitVmReady({ vm: placement?.resourceId ?? "", timeout: { seconds: 120n } })) {
        if (r.vm?.state === vmApi.VmState.FAILED) throw new Error(`vm-${i} failed: ${r.vm.stateReason}`);
      }
    }
    await a.client.aggregator.uncordonNode({ node: "node-b" });
    const last = async () => {
      const out: ClusterEvent[] = [];
      for await (const r of a.client.aggregator.streamClusterEvents({})) if (r.event) out.push(r.event);
      return out;
    };
    const before = (await last()).at(-1)?.sequence ?? 0n;

    const t0 = performance.now();
    for await (const r of a.client.aggregator.drainNode({ node: "node-a" })) {
      if (r.progress?.done && r.progress.lifecycle !== NodeLifecycle.DRAINED) throw new Error("the drain did not end DRAINED");
    }
    const drainMs = performance.now() - t0;

    const moved = (await last()).filter((e) => e.sequence > before && e.kind === ClusterEventKind.WORKLOAD_MOVED);
    if (moved.length !== vms) throw new Error(`${moved.length} of ${vms} VMs moved`);
    const figure = (e: ClusterEvent, key: string) => Number(e.attributes[key] ?? Number.NaN);
    const migrations = moved.map((e) => figure(e, "migration_ms"));
    const observed = moved.map((e) => figure(e, "migration_observed_ms"));
    const moves = moved.map((e) => figure(e, "move_ms"));
    const downtimes = moved.map((e) => figure(e, "downtime_ms"));
    const migrationsMs = observed.reduce((x, y) => x + y, 0);
    const overheadPerMoveMs = (drainMs - migrationsMs) / vms;
    return {
      vms,
      drainMs,
      migrationsMs,
      overheadPerMoveMs,
      rows: [
        ["drain (DrainNode call to DRAINED)", ms(drainMs), "-", "-"],
        ["live migrations, MigrateVm call to its reported end", ms(migrationsMs), ms(percentile(observed, 50)), ms(Math.max(...observed))],
        [
          "live migrations, as the source aetherd measured them",
          ms(migrations.reduce((x, y) => x + y, 0)),
          ms(percentile(migrations, 50)),
          ms(Math.max(...migrations)),
        ],
        ["moves (auction + migration + records)", ms(moves.reduce((x, y) => x + y, 0)), ms(percentile(moves, 50)), ms(Math.max(...moves))],
        ["guest downtime at the switchover", "-", ms(percentile(downtimes, 50)), ms(Math.max(...downtimes))],
      ],
    };
  } finally {
    for (const [i, d] of daemons.entries()) {
      await stopWorkloads(clients[i] as AetherClient).catch(() => undefined);
      clients[i]?.close();
      await d.stop();
      d.cleanup();
    }
    await agg?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
