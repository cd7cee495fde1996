// Deployments (issue 15): the time from CreateDeployment of N small executables (/bin/sleep) to all
// N running, against the baseline of the same run on the same cluster: N Deploy calls one after the
// other (what a script did before deployments). And the time from kill -9 of an instance's process
// to a new instance running (the reconcile loop asks the nodes every second), beside one Deploy
// call's own time. Three real aetherd on this machine and one aggregator; the instances' end is
// read from WatchDeployment's stream, not by polling.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AetherClient } from "@aether/sdk";
import { DeploymentState, NodeState, PlacementState, type WatchDeploymentResponse } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "../test/helpers/daemon.js";
import { startAggregator, type TestAggregator } from "../test/helpers/aggregator.js";
import { ms, percentile } from "./stats.js";

const sleeper = (name: string) => ({
  name,
  requirements: { cpuMillis: 1, memoryBytes: 1n << 20n },
  kind: { case: "executable" as const, value: { argv: ["/bin/sleep", "3600"] } },
});

export interface DeploymentsBenchResult {
  rows: string[][];
  replaceRows: string[][];
  /** Deployment time / sequential Deploy time, per N. */
  ratios: Array<{ n: number; ratio: number }>;
  replaceP50Ms: number;
}

/** Resolves with the time (performance.now()) at which the watched deployment first satisfies `done`. */
async function until(aether: AetherClient, name: string, done: (r: WatchDeploymentResponse) => boolean): Promise<number> {
  const abort = new AbortController();
  try {
    for await (const r of aether.aggregator.watchDeployment({ deployment: name }, { signal: abort.signal, timeoutMs: 300_000 }))
      if (done(r)) return performance.now();
  } finally {
    abort.abort();
  }
  throw new Error(`the watch of ${name} ended before the condition held`);
}

export async function benchDeployments(sizes: number[], replaceRuns: number): Promise<DeploymentsBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), "aether-bench-deployments-"));
  let agg: TestAggregator | undefined;
  const daemons: TestDaemon[] = [];
  const clients = new Map<string, AetherClient>();
  try {
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "10000"] });
    for (const name of ["node-a", "node-b", "node-c"]) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      writeFileSync(join(dir, `${name}.toml`), `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n`);
      daemons.push(await startDaemon({ dir: nodeDir, args: ["--config", join(dir, `${name}.toml`)] }));
    }
    const a = agg.client;
    const nodes = await eventually(
      async () => {
        const { nodes: n } = await a.aggregator.listNodes({ state: NodeState.READY });
        return n.length === 3 ? n : undefined;
      },
      20_000,
      "three READY nodes",
    );
    for (const n of nodes) clients.set(n.id, await (daemons.find((d) => `unix://${d.socket}` === n.address) as TestDaemon).client());

    const rows: string[][] = [];
    const ratios: Array<{ n: number; ratio: number }> = [];
    const deployMs: number[] = [];
    for (const n of sizes) {
      // Baseline: N Deploy calls in a row, each returning once its workload is provisioned.
      const t0 = performance.now();
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        const { placement } = await a.aggregator.deploy({ spec: sleeper(`seq-${n}-${i}`) });
        deployMs.push(performance.now() - t);
        ids.push(placement?.workloadId ?? "");
      }
      const sequentialMs = performance.now() - t0;
      for (const id of ids) await a.aggregator.releasePlacement({ workload: id, gracePeriod: { seconds: 1n } });

      // A deployment of N: Create, then WatchDeployment until N run.
      const name = `fleet-${n}`;
      const t1 = performance.now();
      await a.aggregator.createDeployment({
        deployment: { name, instances: n, template: { requirements: sleeper("x").requirements, kind: sleeper("x").kind } },
      });
      const allRunning = await until(a, name, (r) => r.deployment?.runningInstances === n);
      const deploymentMs = allRunning - t1;
      await a.aggregator.deleteDeployment({ deployment: name, gracePeriod: { seconds: 1n } });
      await until(a, name, (r) => r.deployment?.state === DeploymentState.DELETED);
      const ratio = deploymentMs / sequentialMs;
      ratios.push({ n, ratio });
      rows.push([String(n), ms(sequentialMs), ms(deploymentMs), `${ratio.toFixed(2)}x`]);
    }

    // Replacing a killed instance.
    await a.aggregator.createDeployment({
      deployment: { name: "heal", instances: 3, template: { requirements: sleeper("x").requirements, kind: sleeper("x").kind } },
    });
    await until(a, "heal", (r) => r.deployment?.state === DeploymentState.AVAILABLE);
    const replaceMs: number[] = [];
    for (let run = 0; run < replaceRuns; run++) {
      const { instances } = await a.aggregator.getDeployment({ deployment: "heal" });
      const victim = instances.find((i) => i.state === PlacementState.PLACED);
      if (!victim) throw new Error("no running instance to kill");
      const { executable } = await (clients.get(victim.node) as AetherClient).runtime.getExecutable({ executable: victim.resourceId });
      const watching = until(
        a,
        "heal",
        (r) => r.instances.filter((i) => i.state === PlacementState.PLACED && i.workloadId !== victim.workloadId).length === 3,
      );
      const t = performance.now();
      process.kill(executable?.pid ?? 0, "SIGKILL");
      replaceMs.push((await watching) - t);
    }
    await a.aggregator.deleteDeployment({ deployment: "heal", gracePeriod: { seconds: 1n } });
    await until(a, "heal", (r) => r.deployment?.state === DeploymentState.DELETED);
    const sorted = [...replaceMs].sort((x, y) => x - y);
    const deploySorted = [...deployMs].sort((x, y) => x - y);
    const replaceRows = [
      [
        `kill -9 of an instance → a new one running (${replaceRuns} runs)`,
        ms(percentile(sorted, 50)),
        ms(sorted[0] ?? 0),
        ms(sorted.at(-1) ?? 0),
      ],
      [
        `one Deploy call, for scale (${deployMs.length} calls)`,
        ms(percentile(deploySorted, 50)),
        ms(deploySorted[0] ?? 0),
        ms(deploySorted.at(-1) ?? 0),
      ],
    ];
    return { rows, replaceRows, ratios, replaceP50Ms: percentile(sorted, 50) };
  } finally {
    for (const c of clients.values()) c.close();
    for (const d of daemons) {
      await stopWorkloads(await d.client()).catch(() => undefined);
      await d.stop();
      d.cleanup();
    }
    await agg?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the bench alone: `node --conditions=source --import tsx bench/deployments.ts`. */
if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchDeployments([10, 100], Number(process.env.BENCH_REPLACE_RUNS ?? 5));
  console.table(result.rows);
  console.table(result.replaceRows);
}
