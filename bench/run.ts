// npm run bench: every benchmark, each a ratio against a baseline measured in the same run.
//   npm run bench -- --only auctions,cells   just those sections (names: see SECTIONS below)
//   npm run bench -- --json                  the figures as JSON on stdout (tables go to stderr)
// The goals table (issue 18) is printed at the end of every run.
import { parseArgs } from "node:util";
import { startDaemon, type TestDaemon } from "../test/helpers/daemon.js";
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
import { benchTraffic } from "./traffic.js";
import { benchAuthz } from "./authz.js";
import { benchInterceptor, benchMetricsCost, benchScrapeRender } from "./metrics.js";
import { repoRoot } from "../test/helpers/daemon.js";
import { mib, rssBytes, statusBytes } from "./stats.js";
import { BenchReport } from "./report.js";

const SECTIONS = [
  "runtime",
  "memory",
  "cells",
  "vms",
  "storage",
  "auctions",
  "authz",
  "metrics",
  "fencing",
  "drain",
  "deployments",
  "migration",
  "replication",
  "traffic",
  "script",
] as const;
type Section = (typeof SECTIONS)[number];
/** The sections that measure the one shared aetherd started here; the others start their own. */
const NEED_DAEMON: Section[] = ["runtime", "memory", "cells", "vms", "script"];

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: npm run bench -- [--only <section>[,<section>...]] [--json]\nsections: ${SECTIONS.join(", ")}\n`,
  );
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    options: { only: { type: "string" }, json: { type: "boolean", default: false }, help: { type: "boolean", short: "h" } },
  });
} catch (err) {
  usage((err as Error).message);
}
if (parsed.values.help) {
  process.stdout.write(
    `usage: npm run bench -- [--only <section>[,<section>...]] [--json]\nsections: ${SECTIONS.join(", ")}\nexamples:\n  npm run bench -- --only auctions\n  npm run bench -- --only cells,vms --json > after.json\n`,
  );
  process.exit(0);
}
const wanted = parsed.values.only
  ?.split(",")
  .map((s) => s.trim())
  .filter(Boolean) ?? [...SECTIONS];
for (const s of wanted) if (!(SECTIONS as readonly string[]).includes(s)) usage(`unknown section "${s}"`);
const runs = (s: Section) => wanted.includes(s);
const report = new BenchReport(parsed.values.json);
report.sections.push(...SECTIONS.filter(runs));
// Some section modules print on their own (console.log); with --json stdout is the JSON alone.
if (report.json) console.log = (...args: unknown[]) => console.error(...args);
const table = report.table.bind(report);

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 300);

/** RSS with its two parts: anonymous (aetherd's own: heap, JavaScript heap, stacks) and file-backed (mostly the node binary's pages, shared with every node process). */
const rssParts = (pid: number) =>
  `${mib(rssBytes(pid))} (anon ${mib(statusBytes(pid, "RssAnon"))}, file ${mib(statusBytes(pid, "RssFile"))})`;
/** How long the memory section lets aetherd idle before its settled figure: V8's memory reducer gives start-up's garbage back some 20 s after the last activity. */
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 30_000);

async function sharedDaemonSections(): Promise<void> {
  // Info level: the VM bench reads aetherd's own timing of each start from its log.
  const daemon: TestDaemon = await startDaemon({ args: ["--log-level", "info"] });
  try {
    const aether = await daemon.client();
    const pid = daemon.process.pid ?? 0;
    await new Promise((r) => setTimeout(r, 500));
    const idle = rssBytes(pid);
    const idleParts = rssParts(pid);
    report.figure("memory.aetherd_idle_mib", idle / 1024 / 1024, "MiB");
    // The same daemon after it idled on: what a node that serves nothing keeps resident for good.
    let settledParts = "";
    if (runs("memory")) {
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      settledParts = rssParts(pid);
      report.figure("memory.aetherd_settled_mib", rssBytes(pid) / 1024 / 1024, "MiB");
    }

    if (runs("runtime")) {
      const start = await benchStart(aether, ITERATIONS);
      table(`runtime: start-to-exit of /bin/true (${ITERATIONS} runs each, interleaved)`, ["path", "p50", "p99"], start.rows);
      report.note(
        `ratio aetherd/spawn at p50: ${start.ratioP50.toFixed(2)}x (goal < 3x); p50 overhead ${start.overheadP50Ms.toFixed(2)} ms (goal < 5 ms)`,
      );
      report.figure("runtime.ratio_p50", start.ratioP50, "x");
      report.figure("runtime.overhead_p50_ms", start.overheadP50Ms, "ms");
    }

    if (runs("memory")) {
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
          ["idle, nothing tracked (0.5 s after it answers)", idleParts],
          [`idle, after ${SETTLE_MS / 1000} s more`, settledParts],
          ["200 exited executables tracked", mib(with200)],
          ["400 exited executables tracked", mib(with400)],
          // The first hundreds of calls also grow the JavaScript heap to its working size; the second
          // two hundred show what one more tracked executable costs.
          ["per executable, 200 -> 400", `${((with400 - with200) / 200 / 1024).toFixed(1)} KiB`],
        ],
      );
      report.figure("memory.per_executable_kib", (with400 - with200) / 200 / 1024, "KiB");
      for (const id of ids) await aether.runtime.deleteExecutable({ executable: id });
    }

    if (runs("cells")) {
      const CELL_RUNS = Number(process.env.BENCH_CELL_ITERATIONS ?? 100);
      const cells = await benchCells(aether, CELL_RUNS);
      table(`cells (${CELL_RUNS} runs each, interleaved)`, ["operation", "p50", "p99"], cells.rows);
      report.note(
        `ratios at p50: allocate+free vs bare cgroup mkdir/rmdir ${cells.allocateFreeRatio.toFixed(2)}x (goal < 3x); vs two trivial RPCs ${cells.allocateFreeVsTwoCalls.toFixed(2)}x; start in a cell vs outside ${cells.startInCellRatio.toFixed(2)}x`,
      );
      report.figure("cells.allocate_free_vs_two_calls", cells.allocateFreeVsTwoCalls, "x");
      report.figure("cells.allocate_free_ratio", cells.allocateFreeRatio, "x");
      report.figure("cells.start_in_cell_ratio", cells.startInCellRatio, "x");
    }

    if (runs("vms")) {
      const VM_RUNS = Number(process.env.BENCH_VM_RUNS ?? 5);
      const vms = await benchVms(daemon, aether, VM_RUNS);
      table(
        `VMs under TCG: create to guest ready (agent answers), ${VM_RUNS} runs each, interleaved`,
        ["how", "p50", "min", "max"],
        vms.rows,
      );
      report.note(
        `ratio to libvirt at p50: microVM ${vms.ratioMicro.toFixed(2)}x, persistent ${vms.ratioPersistent.toFixed(2)}x (goal < 0.85x); aetherd's own part, start request to QMP answering: p50 ${vms.launchP50Ms.toFixed(1)} ms (goal < 50 ms, next mark 25 ms)`,
      );
      table("VM memory", ["what", "size"], vms.memoryRows);
      report.figure("vms.libvirt_ratio_micro", vms.ratioMicro, "x");
      report.figure("vms.libvirt_ratio_persistent", vms.ratioPersistent, "x");
      report.figure("vms.aetherd_launch_p50_ms", vms.launchP50Ms, "ms");
      report.figure("vms.qemu_rss_mib", vms.qemuRssBytes / 1024 / 1024, "MiB");
      report.figure("vms.qemu_guest_touched_mib", vms.qemuGuestBytes / 1024 / 1024, "MiB");
      report.figure("vms.qemu_own_mib", (vms.qemuRssBytes - vms.qemuGuestBytes) / 1024 / 1024, "MiB");
      report.figure("vms.qemu_own_private_mib", vms.qemuOwnPrivateBytes / 1024 / 1024, "MiB");
    }

    if (runs("script")) {
      const COLD_RUNS = Number(process.env.BENCH_COLD_RUNS ?? 15);
      const cold = benchColdStart(repoRoot, daemon.address, COLD_RUNS);
      table(
        `aetherscript: cold start of a script that connects and calls GetNodeInfo (${COLD_RUNS} runs each, interleaved)`,
        ["how", "p50", "p99"],
        cold.rows,
      );
      report.note(
        `ratio to the plain Node program at p50: Deno engine ${cold.denoVsPlain.toFixed(2)}x (goal < 1.5x), Node engine ${cold.nodeVsPlain.toFixed(2)}x`,
      );
      report.figure("script.deno_vs_plain", cold.denoVsPlain, "x");
      report.figure("script.node_vs_plain", cold.nodeVsPlain, "x");
    }
    aether.close();
  } finally {
    await daemon.stop();
    daemon.cleanup();
  }
}

if (NEED_DAEMON.some(runs)) await sharedDaemonSections();

if (runs("storage")) {
  const CLONES = Number(process.env.BENCH_CLONES ?? 100);
  const storage = await benchStorage(CLONES);
  table(
    `storage: thin clone of a 10 GiB image, ${CLONES} clones in a row each, interleaved`,
    ["how", "p50", "p99", `total for ${CLONES}`],
    storage.rows,
  );
  report.note(
    `ratio aetherd/bare tool at p50: dir ${storage.dirRatio.toFixed(2)}x, zfs ${storage.zfsRatio.toFixed(2)}x (goal < 1.5x; the bare zfs clone takes the same host ZFS lock); dir clone through aetherd p50 ${storage.dirP50Ms.toFixed(1)} ms (goal < 50 ms)`,
  );
  table("storage: space on disk", ["what", "size"], storage.spaceRows);
  report.figure("storage.dir_ratio", storage.dirRatio, "x");
  report.figure("storage.zfs_ratio", storage.zfsRatio, "x");
  report.figure("storage.dir_p50_ms", storage.dirP50Ms, "ms");
}

if (runs("auctions")) {
  const AUCTIONS = Number(process.env.BENCH_AUCTIONS ?? 200);
  const auctions = await benchAuctions(AUCTIONS);
  table(
    `auctions: decision latency, broadcast of RequestBid to winner chosen (fake bidders on loopback in a process of their own: ${auctions.bidderKind === "lean" ? "lean Connect responders" : "Connect servers"})`,
    ["bidders", "auctions", "p50", "p99", "CPU per auction: aggregator", "bidders' process", "deploying client"],
    auctions.rows,
  );
  report.note(
    `p99 with 16 responsive bidders ${auctions.p99With16Ms.toFixed(2)} ms (goal < 10 ms), with 100 ${auctions.p99With100Ms.toFixed(2)} ms (goal < 40 ms); with a hanging bidder the auction closes at the ${auctions.windowMs} ms window; placement throughput with 16 bidders: ${auctions.throughputPerSecond.toFixed(0)} auctions/s (8 clients)`,
  );
  report.figure("auctions.p99_16_ms", auctions.p99With16Ms, "ms");
  report.figure("auctions.p99_100_ms", auctions.p99With100Ms, "ms");
  report.figure("auctions.p50_16_ms", auctions.p50With16Ms, "ms");
  for (const c of auctions.cpuPerAuction) {
    report.figure(`auctions.aggregator_cpu_per_auction_${c.bidders}_ms`, c.aggregatorMs, "ms");
    report.figure(`auctions.bidders_cpu_per_auction_${c.bidders}_ms`, c.biddersMs, "ms");
  }
  report.figure("auctions.throughput_per_s", auctions.throughputPerSecond, "1/s");
}

if (runs("authz")) {
  const AUTHZ_RUNS = Number(process.env.BENCH_AUTHZ_ITERATIONS ?? 200);
  const authz = await benchAuthz(AUTHZ_RUNS);
  table(`identity and authorization: start+wait of /bin/true (${AUTHZ_RUNS} runs each, interleaved)`, ["path", "p50", "p99"], authz.rows);
  report.note(
    `mTLS + authorization + tenant scoping vs the unix socket at p50: ${authz.overheadRatio.toFixed(3)}x (goal < 1.10x); policy and tenant scoping alone (both mTLS): ${authz.policyRatio.toFixed(3)}x; one policy decision in-process: ${authz.decideMicros.toFixed(2)} µs`,
  );
  report.figure("authz.overhead_ratio", authz.overheadRatio, "x");
  report.figure("authz.policy_ratio", authz.policyRatio, "x");
}

if (runs("metrics")) {
  const METRICS_RUNS = Number(process.env.BENCH_METRICS_ITERATIONS ?? 300);
  const metricsCost = await benchMetricsCost(METRICS_RUNS);
  table(`metrics: start+wait of /bin/true (${METRICS_RUNS} runs each, interleaved)`, ["aetherd", "p50", "p99"], metricsCost.rows);
  const render = await benchScrapeRender(Number(process.env.BENCH_SCRAPE_RENDERS ?? 30));
  table("metrics: rendering one scrape of aetherd's registry (in-process)", ["tracked", "p50", "p99", "size"], render.rows);
  const counting = await benchInterceptor(200_000);
  report.note(
    `metrics on vs off at p50: ${(metricsCost.overheadP50 * 100).toFixed(1)} % (goal < 3 %; two identical aetherd differ by ${(metricsCost.noiseP50 * 100).toFixed(1)} % here); counting one RPC costs ${counting.perCallMicros.toFixed(2)} µs in-process (two per start+wait: ${(((2 * counting.perCallMicros) / 1000 / metricsCost.offP50Ms) * 100).toFixed(3)} % of the round trip); one scrape with 100 VMs and 1,000 executables renders in ${render.p50Ms.toFixed(1)} ms`,
  );
  report.figure("metrics.overhead_p50", metricsCost.overheadP50, "fraction");
}

if (runs("fencing")) {
  const FENCE_RUNS = Number(process.env.BENCH_FENCE_RUNS ?? 3);
  const fencing = await benchFencing(FENCE_RUNS, Number(process.env.BENCH_FENCE_TTL_MS ?? 3000));
  table(
    `fencing: a node's last heartbeat to its workloads running elsewhere (3 aetherd, test BMC, lease TTL ${fencing.ttlMs} ms)`,
    FENCING_HEADER,
    fencing.rows,
  );
  report.note(
    `overhead beyond TTL + BMC delay, worst: ${Object.entries(fencing.worstOverheadMs)
      .map(([d, v]) => `${Number(d) / 1000} s delay ${v.toFixed(0)} ms`)
      .join(", ")} (goal < 1000 ms)`,
  );
  for (const [d, v] of Object.entries(fencing.worstOverheadMs)) report.figure(`fencing.worst_overhead_${d}ms_delay_ms`, v, "ms");
}

if (runs("drain")) {
  const DRAIN_VMS = Number(process.env.BENCH_DRAIN_VMS ?? 3);
  const drain = await benchDrain(DRAIN_VMS);
  table(
    `drain: a node of ${DRAIN_VMS} small VMs emptied by live migration, one move at a time (2 aetherd, TCG)`,
    ["what", "total", "p50", "max"],
    drain.rows,
  );
  report.note(
    `the aggregator's share per move (drain − the migrations' own time, per VM): ${drain.overheadPerMoveMs.toFixed(0)} ms (goal < 200 ms)`,
  );
  report.figure("drain.overhead_per_move_ms", drain.overheadPerMoveMs, "ms");
}

if (runs("deployments")) {
  const deployments = await benchDeployments([10, 100], Number(process.env.BENCH_REPLACE_RUNS ?? 5));
  table(
    "deployments: N small executables running, one CreateDeployment vs N Deploy calls in a row (3 aetherd, one aggregator)",
    ["N", "N Deploy calls", "deployment", "ratio"],
    deployments.rows,
  );
  table("deployments: healing", ["what", "p50", "min", "max"], deployments.replaceRows);
  report.note(
    `deployment vs sequential Deploy calls: ${deployments.ratios.map((r) => `N=${r.n} ${r.ratio.toFixed(2)}x`).join(", ")} (goal < 1x); a killed instance is replaced in ${deployments.replaceP50Ms.toFixed(0)} ms at p50 (the reconcile loop asks the nodes every second)`,
  );
  for (const r of deployments.ratios) report.figure(`deployments.ratio_n${r.n}`, r.ratio, "x");
  report.figure("deployments.replace_p50_ms", deployments.replaceP50Ms, "ms");
}

if (runs("migration")) await printMigrationBench(table);

if (runs("replication")) {
  const REPLICATION_RUNS = Number(process.env.BENCH_REPLICATION_RUNS ?? 5);
  const replication = await benchReplication(REPLICATION_RUNS);
  table(
    `replication: incremental run of a ZFS volume with 64 MiB changed, ${REPLICATION_RUNS} runs each, interleaved (2 aetherd, zfs-fuse)`,
    ["how", "p50", "min", "max", "bytes per run"],
    replication.rows,
  );
  report.note(
    `ratio aetherd/bare at p50: ${replication.ratioP50.toFixed(2)}x (goal < 1.2x); the bare pipe copied by a node process: ${replication.copyRatioP50.toFixed(2)}x; bytes sent through aetherd / bare stream: ${replication.bytesRatio.toFixed(3)}`,
  );
  report.figure("replication.ratio_p50", replication.ratioP50, "x");
}

if (runs("traffic")) {
  const SWITCHES = Number(process.env.BENCH_TRAFFIC_SWITCHES ?? 20);
  const traffic = await benchTraffic(SWITCHES, Number(process.env.BENCH_TRAFFIC_SECONDS ?? 6));
  table(
    `traffic: switch of all traffic to the other version (weights 100/0 -> 0/100, ${SWITCHES} each, interleaved; a client sending continuously, 4 connections)`,
    ["how", "p50", "p99", "max"],
    traffic.switchRows,
  );
  table(
    "traffic: requests per second, 8 connections kept alive (python3 http.server backend)",
    ["path", "requests/s"],
    traffic.throughputRows,
  );
  report.note(
    `switch seen by a client at p50: ${traffic.switchP50Ms.toFixed(2)} ms through aetherd (seed's goal ~5 ms), ${traffic.directSwitchP50Ms.toFixed(2)} ms straight to HAProxy's runtime API; throughput through HAProxy / straight: ${traffic.throughputRatio.toFixed(2)}x`,
  );
  report.figure("traffic.switch_p50_ms", traffic.switchP50Ms, "ms");
  report.figure("traffic.switch_direct_p50_ms", traffic.directSwitchP50Ms, "ms");
  report.figure("traffic.throughput_ratio", traffic.throughputRatio, "x");
}

report.printGoals();
if (report.json) report.printJson();
