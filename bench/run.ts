// npm run bench: every benchmark, each a ratio against a baseline measured in the same run.
import { readFileSync } from "node:fs";
import { startDaemon } from "../test/helpers/daemon.js";
import { benchStart } from "./runtime-start.js";
import { benchColdStart } from "./script-cold-start.js";
import { benchCells } from "./cells.js";
import { benchVms } from "./vm.js";
import { benchStorage } from "./storage.js";
import { benchAuctions } from "./auction.js";
import { benchFencing, FENCING_HEADER } from "./fencing.js";
import { benchDrain } from "./drain.js";
import { benchDeployments } from "./deployments.js";
import { printMigrationBench } from "./migration.js";
import { benchReplication } from "./replication.js";
import { benchAuthz } from "./authz.js";
import { benchInterceptor, benchMetricsCost, benchScrapeRender } from "./metrics.js";
import { repoRoot } from "../test/helpers/daemon.js";
import { mib } from "./stats.js";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 300);

function rssBytes(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) * 1024;
}

function table(title: string, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
  console.log(`\n${title}\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}`);
  for (const r of rows) console.log(line(r));
}

// Info level: the VM bench reads aetherd's own timing of each start from its log.
const daemon = await startDaemon({ args: ["--log-level", "info"] });
try {
  const aether = await daemon.client();
  const pid = daemon.process.pid ?? 0;
  await new Promise((r) => setTimeout(r, 500));
  const idle = rssBytes(pid);

  const start = await benchStart(aether, ITERATIONS);
  table(`runtime: start-to-exit of /bin/true (${ITERATIONS} runs each, interleaved)`, ["path", "p50", "p99"], start.rows);
  console.log(
    `ratio aetherd/spawn at p50: ${start.ratioP50.toFixed(2)}x (goal < 3x); p50 overhead ${start.overheadP50Ms.toFixed(2)} ms (goal < 5 ms)`,
  );

  const ids: string[] = [];
  const track = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const { executable } = await aether.runtime.startExecutable({ argv: ["/bin/true"] });
      await aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
      ids.push(executable?.id ?? "");
    }
    await new Promise((r) => setTimeout(r, 500));
    return rssBytes(pid);
  };
  const with200 = await track(200);
  const with400 = await track(200);
  table(
    "aetherd resident memory",
    ["state", "RSS"],
    [
      ["idle, nothing tracked", mib(idle)],
      ["200 exited executables tracked", mib(with200)],
      ["400 exited executables tracked", mib(with400)],
      // The first hundreds of calls also grow the JavaScript heap to its working size; the second
      // two hundred show what one more tracked executable costs.
      ["per executable, 200 -> 400", `${((with400 - with200) / 200 / 1024).toFixed(1)} KiB`],
    ],
  );
  for (const id of ids) await aether.runtime.deleteExecutable({ executable: id });

  const CELL_RUNS = Number(process.env.BENCH_CELL_ITERATIONS ?? 100);
  const cells = await benchCells(aether, CELL_RUNS);
  table(`cells (${CELL_RUNS} runs each, interleaved)`, ["operation", "p50", "p99"], cells.rows);
  console.log(
    `ratios at p50: allocate+free vs bare cgroup mkdir/rmdir ${cells.allocateFreeRatio.toFixed(2)}x; start in a cell vs outside ${cells.startInCellRatio.toFixed(2)}x`,
  );

  const VM_RUNS = Number(process.env.BENCH_VM_RUNS ?? 5);
  const vms = await benchVms(daemon, aether, VM_RUNS);
  table(`VMs under TCG: create to guest ready (agent answers), ${VM_RUNS} runs each, interleaved`, ["how", "p50", "min", "max"], vms.rows);
  console.log(
    `ratio to libvirt at p50: microVM ${vms.ratioMicro.toFixed(2)}x, persistent ${vms.ratioPersistent.toFixed(2)}x (goal: below 1x); aetherd's own part, start request to QMP answering: p50 ${vms.launchP50Ms.toFixed(1)} ms (goal < 50 ms)`,
  );
  table("VM memory", ["what", "size"], vms.memoryRows);

  const CLONES = Number(process.env.BENCH_CLONES ?? 100);
  const storage = await benchStorage(CLONES);
  table(
    `storage: thin clone of a 10 GiB image, ${CLONES} clones in a row each, interleaved`,
    ["how", "p50", "p99", `total for ${CLONES}`],
    storage.rows,
  );
  console.log(
    `ratio aetherd/bare tool at p50: dir ${storage.dirRatio.toFixed(2)}x, zfs ${storage.zfsRatio.toFixed(2)}x (goal < 2x); dir clone through aetherd p50 ${storage.dirP50Ms.toFixed(1)} ms (goal < 50 ms)`,
  );
  table("storage: space on disk", ["what", "size"], storage.spaceRows);

  const AUCTIONS = Number(process.env.BENCH_AUCTIONS ?? 200);
  const auctions = await benchAuctions(AUCTIONS);
  table(
    "auctions: decision latency, broadcast of RequestBid to winner chosen (fake bidders on loopback)",
    ["bidders", "auctions", "p50", "p99"],
    auctions.rows,
  );
  console.log(
    `p99 with 16 responsive bidders ${auctions.p99With16Ms.toFixed(2)} ms (goal < 10 ms); with a hanging bidder the auction closes at the ${auctions.windowMs} ms window; placement throughput with 16 bidders: ${auctions.throughputPerSecond.toFixed(0)} auctions/s (8 clients)`,
  );

  const AUTHZ_RUNS = Number(process.env.BENCH_AUTHZ_ITERATIONS ?? 200);
  const authz = await benchAuthz(AUTHZ_RUNS);
  table(`identity and authorization: start+wait of /bin/true (${AUTHZ_RUNS} runs each, interleaved)`, ["path", "p50", "p99"], authz.rows);
  console.log(
    `mTLS + authorization + tenant scoping vs the unix socket at p50: ${authz.overheadRatio.toFixed(3)}x (goal < 1.10x); policy and tenant scoping alone (both mTLS): ${authz.policyRatio.toFixed(3)}x; one policy decision in-process: ${authz.decideMicros.toFixed(2)} µs`,
  );

  const METRICS_RUNS = Number(process.env.BENCH_METRICS_ITERATIONS ?? 300);
  const metricsCost = await benchMetricsCost(METRICS_RUNS);
  table(`metrics: start+wait of /bin/true (${METRICS_RUNS} runs each, interleaved)`, ["aetherd", "p50", "p99"], metricsCost.rows);
  const render = await benchScrapeRender(Number(process.env.BENCH_SCRAPE_RENDERS ?? 30));
  table("metrics: rendering one scrape of aetherd's registry (in-process)", ["tracked", "p50", "p99", "size"], render.rows);
  const counting = await benchInterceptor(200_000);
  console.log(
    `metrics on vs off at p50: ${(metricsCost.overheadP50 * 100).toFixed(1)} % (goal < 3 %; two identical aetherd differ by ${(metricsCost.noiseP50 * 100).toFixed(1)} % here); counting one RPC costs ${counting.perCallMicros.toFixed(2)} µs in-process (two per start+wait: ${(((2 * counting.perCallMicros) / 1000 / metricsCost.offP50Ms) * 100).toFixed(3)} % of the round trip); one scrape with 100 VMs and 1,000 executables renders in ${render.p50Ms.toFixed(1)} ms`,
  );

  const FENCE_RUNS = Number(process.env.BENCH_FENCE_RUNS ?? 3);
  const fencing = await benchFencing(FENCE_RUNS, Number(process.env.BENCH_FENCE_TTL_MS ?? 3000));
  table(
    `fencing: a node's last heartbeat to its workloads running elsewhere (3 aetherd, test BMC, lease TTL ${fencing.ttlMs} ms)`,
    FENCING_HEADER,
    fencing.rows,
  );
  console.log(
    `overhead beyond TTL + BMC delay, worst: ${Object.entries(fencing.worstOverheadMs)
      .map(([d, v]) => `${Number(d) / 1000} s delay ${v.toFixed(0)} ms`)
      .join(", ")} (goal < 1000 ms)`,
  );

  const DRAIN_VMS = Number(process.env.BENCH_DRAIN_VMS ?? 3);
  const drain = await benchDrain(DRAIN_VMS);
  table(
    `drain: a node of ${DRAIN_VMS} small VMs emptied by live migration, one move at a time (2 aetherd, TCG)`,
    ["what", "total", "p50", "max"],
    drain.rows,
  );
  console.log(
    `the aggregator's share per move (drain − the migrations' own time, per VM): ${drain.overheadPerMoveMs.toFixed(0)} ms (goal < 200 ms)`,
  );

  const deployments = await benchDeployments([10, 100], Number(process.env.BENCH_REPLACE_RUNS ?? 5));
  table(
    "deployments: N small executables running, one CreateDeployment vs N Deploy calls in a row (3 aetherd, one aggregator)",
    ["N", "N Deploy calls", "deployment", "ratio"],
    deployments.rows,
  );
  table("deployments: healing", ["what", "p50", "min", "max"], deployments.replaceRows);
  console.log(
    `deployment vs sequential Deploy calls: ${deployments.ratios.map((r) => `N=${r.n} ${r.ratio.toFixed(2)}x`).join(", ")} (goal < 1x); a killed instance is replaced in ${deployments.replaceP50Ms.toFixed(0)} ms at p50 (the reconcile loop asks the nodes every second)`,
  );

  await printMigrationBench(table);

  const REPLICATION_RUNS = Number(process.env.BENCH_REPLICATION_RUNS ?? 5);
  const replication = await benchReplication(REPLICATION_RUNS);
  table(
    `replication: incremental run of a ZFS volume with 64 MiB changed, ${REPLICATION_RUNS} runs each, interleaved (2 aetherd, zfs-fuse)`,
    ["how", "p50", "min", "max", "bytes per run"],
    replication.rows,
  );
  console.log(
    `ratio aetherd/bare at p50: ${replication.ratioP50.toFixed(2)}x (goal < 1.2x); the bare pipe copied by a node process: ${replication.copyRatioP50.toFixed(2)}x; bytes sent through aetherd / bare stream: ${replication.bytesRatio.toFixed(3)}`,
  );

  const COLD_RUNS = Number(process.env.BENCH_COLD_RUNS ?? 15);
  const cold = benchColdStart(repoRoot, daemon.address, COLD_RUNS);
  table(
    `aetherscript: cold start of a script that connects and calls GetNodeInfo (${COLD_RUNS} runs each, interleaved)`,
    ["how", "p50", "p99"],
    cold.rows,
  );
  console.log(
    `ratio to the plain Node program at p50: Deno engine ${cold.denoVsPlain.toFixed(2)}x (goal < 1.5x), Node engine ${cold.nodeVsPlain.toFixed(2)}x`,
  );
  aether.close();
} finally {
  await daemon.stop();
  daemon.cleanup();
}
