// Fencing: time from a node's last heartbeat to its workloads running on other nodes, split into
// detection (last heartbeat → SUSPECT), fence (SUSPECT → FENCED: the deadman's bookkeeping plus the
// BMC's login, ForceOff and "Off" read back) and re-placement (FENCED → the last workload provisioned
// elsewhere), with the test BMC's power-off delay at 0 s and at 5 s. Three real aetherd on this
// machine and one aether-aggregator; node-b's aetherd is stopped (SIGSTOP) and its BMC's "power off"
// kills it with its workloads; then it is started again, rejoins, and the next run begins.
//
// The figure that matters is the overhead: total − lease TTL (the configured timeout) − the BMC's
// power-off delay (goal < 1 s). It includes the BMC's own protocol round trips (a few HTTPS
// requests on loopback), the store writes and events, and the auctions and provisioning.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AetherClient } from "@aether/sdk";
import { ClusterEventKind, NodeState, PlacementState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, powerOffHost, startDaemon, type TestDaemon } from "../test/helpers/daemon.js";
import { startAggregator, type TestAggregator } from "../test/helpers/aggregator.js";
import { startTestBmc, type TestBmc } from "../test/helpers/test-bmc.js";
import { ms, percentile } from "./stats.js";

export interface FencingBenchResult {
  rows: string[][];
  ttlMs: number;
  /** Worst overhead beyond TTL + BMC delay over every run, per delay. */
  worstOverheadMs: Record<string, number>;
}

interface Split {
  detectionMs: number;
  fenceMs: number;
  bmcMs: number;
  replacementMs: number;
  totalMs: number;
  overheadMs: number;
}

const at = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : Number.NaN);

export async function benchFencing(
  runs: number,
  ttlMs = 3000,
  delaysMs: number[] = [0, 5000],
  workloadsOnB = 2,
): Promise<FencingBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), "aether-bench-fencing-"));
  let agg: TestAggregator | undefined;
  const daemons = new Map<string, { daemon: TestDaemon; client: AetherClient; config: string; dir: string }>();
  let bPids: number[] = [];
  let bmc: TestBmc | undefined;

  const powerOffB = async () => {
    const b = daemons.get("node-b");
    if (b) await powerOffHost(b.daemon, bPids);
  };

  const start = async (name: string, slot: number) => {
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    const config = join(dir, `${name}.toml`);
    writeFileSync(config, `[cluster]\naggregator = "unix://${(agg as TestAggregator).socket}"\nname = "${name}"\nslot = ${slot}\n`);
    const previous = daemons.get(name);
    const daemon = await startDaemon({
      dir: nodeDir,
      args: ["--config", config],
      ...(previous && { cgroupRoot: previous.daemon.cgroupRoot }),
    });
    const client = await daemon.client();
    daemons.set(name, { daemon, client, config, dir: nodeDir });
    return client;
  };

  const events = async (): Promise<ClusterEvent[]> => {
    const out: ClusterEvent[] = [];
    for await (const r of (agg as TestAggregator).client.aggregator.streamClusterEvents({})) if (r.event) out.push(r.event);
    return out;
  };

  try {
    bmc = await startTestBmc({ profile: "ilo5", onPowerOff: powerOffB });
    const password = join(dir, "bmc.password");
    writeFileSync(password, `${bmc.password}\n`);
    chmodSync(password, 0o600);
    writeFileSync(join(dir, "bmc-ca.pem"), bmc.caPem);
    writeFileSync(
      join(dir, "bmcs.toml"),
      `[[bmcs]]\nnode = "node-b"\nendpoint = "${bmc.url}"\nusername = "${bmc.username}"\npassword_file = "bmc.password"\nca_file = "bmc-ca.pem"\nprofile = "ilo5"\n`,
    );
    agg = await startAggregator({
      dir: join(dir, "agg"),
      args: [
        "--lease-ttl-ms",
        String(ttlMs),
        "--bmcs",
        join(dir, "bmcs.toml"),
        "--fence-timeout-ms",
        "30000",
        "--fence-poll-interval-ms",
        "100",
        "--log-level",
        "error",
      ],
    });
    await start("node-a", 1);
    await start("node-b", 2);
    await start("node-c", 3);
    const ready = async (n: number) =>
      eventually(
        async () =>
          (await (agg as TestAggregator).client.aggregator.listNodes({ state: NodeState.READY })).nodes.length === n ? true : undefined,
        30_000,
        `${n} READY nodes`,
      );
    await ready(3);

    const rows: string[][] = [];
    const worstOverheadMs: Record<string, number> = {};
    let serial = 0;
    for (const delayMs of delaysMs) {
      bmc.powerOffDelayMs = delayMs;
      const splits: Split[] = [];
      for (let run = 0; run < runs; run++) {
        const bClient = (daemons.get("node-b") as { client: AetherClient }).client;
        const bId = (await bClient.node.getNodeInfo({})).node?.id ?? "";
        // Enough workloads on node-b (the spread tie-break shares deployments out).
        for (let guard = 0; ; guard++) {
          const { placements } = await agg.client.aggregator.listPlacements({ node: bId, state: PlacementState.PLACED, pageSize: 1000 });
          if (placements.length >= workloadsOnB) break;
          if (guard > 30) throw new Error("node-b never won enough workloads");
          await agg.client.aggregator.deploy({
            spec: {
              name: `f-${serial++}`,
              requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
              kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
            },
          });
        }
        const { placements: onB } = await agg.client.aggregator.listPlacements({ node: bId, state: PlacementState.PLACED, pageSize: 1000 });
        const { executables } = await bClient.runtime.listExecutables({ pageSize: 1000 });
        bPids = executables.filter((e) => e.state === ExecutableState.RUNNING && e.pid > 0).map((e) => e.pid);
        const before = (await events()).at(-1)?.sequence ?? 0n;
        process.kill((daemons.get("node-b") as { daemon: TestDaemon }).daemon.process.pid as number, "SIGSTOP");

        const mine = await eventually(
          async () => {
            const es = (await events()).filter((e) => e.sequence > before && (e.node === bId || e.attributes.fenced_node === bId));
            const replaced = es.filter((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED);
            return replaced.length >= onB.length ? es : undefined;
          },
          ttlMs + delayMs + 60_000,
          "node-b's workloads re-placed",
        );
        const suspect = mine.find((e) => e.kind === ClusterEventKind.NODE_SUSPECT);
        const fenced = mine.find((e) => e.kind === ClusterEventKind.NODE_FENCED);
        if (!suspect || !fenced) throw new Error(`no suspect/fenced events: ${mine.map((e) => ClusterEventKind[e.kind]).join(" ")}`);
        const lastBeat = Date.parse(suspect.attributes.last_heartbeat ?? "");
        const lastReplaced = Math.max(...mine.filter((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED).map((e) => at(e.time)));
        const split: Split = {
          detectionMs: at(suspect.time) - lastBeat,
          fenceMs: at(fenced.time) - at(suspect.time),
          bmcMs: Number(fenced.attributes.fence_duration_ms),
          replacementMs: lastReplaced - at(fenced.time),
          totalMs: lastReplaced - lastBeat,
          overheadMs: lastReplaced - lastBeat - ttlMs - delayMs,
        };
        splits.push(split);

        // node-b comes back (power on, aetherd started again) and rejoins as a new member.
        bmc.powerState = "On";
        await start("node-b", 2);
        await ready(3);
      }
      const p50 = (f: (s: Split) => number) => percentile(splits.map(f), 50);
      const max = (f: (s: Split) => number) => Math.max(...splits.map(f));
      worstOverheadMs[`${delayMs}`] = max((s) => s.overheadMs);
      rows.push([
        `${delayMs / 1000} s`,
        String(splits.length),
        `${ms(p50((s) => s.detectionMs))} (TTL + ${ms(p50((s) => s.detectionMs - ttlMs))})`,
        `${ms(p50((s) => s.fenceMs))} (BMC ${ms(p50((s) => s.bmcMs))})`,
        ms(p50((s) => s.replacementMs)),
        ms(p50((s) => s.totalMs)),
        `${ms(p50((s) => s.overheadMs))} / ${ms(max((s) => s.overheadMs))}`,
      ]);
    }
    return { rows, ttlMs, worstOverheadMs };
  } finally {
    for (const d of daemons.values()) {
      const pid = d.daemon.process.pid;
      if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGCONT");
      if (d.daemon.process.exitCode === null && d.daemon.process.signalCode === null) {
        const { executables } = await d.client.runtime.listExecutables({ pageSize: 1000 }).catch(() => ({ executables: [] }));
        for (const e of executables.filter((x) => x.pid > 0))
          await d.client.runtime.stopExecutable({ executable: e.id, gracePeriod: { seconds: 0n } }).catch(() => undefined);
        d.client.close();
        await d.daemon.stop();
      }
      d.daemon.cleanup();
    }
    await agg?.stop();
    await bmc?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export const FENCING_HEADER = ["BMC delay", "runs", "detection p50", "fence p50", "re-placement p50", "total p50", "overhead p50 / max"];

// Run alone: node --conditions=source --import tsx bench/fencing.ts
if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchFencing(Number(process.env.BENCH_FENCE_RUNS ?? 3), Number(process.env.BENCH_FENCE_TTL_MS ?? 3000));
  console.log(FENCING_HEADER.join(" | "));
  for (const r of result.rows) console.log(r.join(" | "));
  console.log(`overhead beyond TTL (${result.ttlMs} ms) + BMC delay, worst: ${JSON.stringify(result.worstOverheadMs)} ms (goal < 1000 ms)`);
}
