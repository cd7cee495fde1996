// aether top: the node at a glance (issue 23, item 12): its telemetry (load, memory, pressure, disk
// wear), its cells with their CPU, memory and processes, its VMs and how many executables run.
// Refreshed every --interval on a terminal (the figures are snapshots the daemon reads from the
// kernel when asked: there is no stream of them to follow, so this one command reads on a timer);
// one snapshot and done when stdout is not a terminal, with --once, or with -o json|yaml.
// A cell's CPU % is its CPU time over the time between two readings, so a single snapshot reads
// twice, CPU_SAMPLE_MS apart.
import type { Command } from "commander";
import { toJson } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { cells, observe, vm, runtime, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { durationOption } from "../numbers.js";
import { bytes, formatOf, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";
import { canRedraw } from "../progress.js";
import { captured, inPlace, watchParent } from "../watch.js";

const CPU_SAMPLE_MS = 500;

interface CellRow {
  cell: cells.Cell;
  stats?: cells.CellStats;
  /** Percent of one CPU since the previous reading; undefined on the first. */
  cpuPercent?: number;
}

interface Snapshot {
  hostname: string;
  address: string;
  telemetry: observe.Telemetry;
  cells: CellRow[];
  vms: vm.Vm[];
  executablesRunning: number;
}

const cellJson = (r: CellRow) => ({
  cell: toJson(cells.CellSchema, r.cell),
  stats: r.stats && toJson(cells.CellStatsSchema, r.stats),
  cpuPercent: r.cpuPercent,
});

const CELLS: ListView<CellRow> = {
  json: cellJson,
  name: (r) => r.cell.name,
  columns: [
    { header: "CELL", cell: (r) => r.cell.name },
    { header: "TENANT", cell: (r) => r.cell.tenant },
    { header: "CPU%", cell: (r) => (r.cpuPercent === undefined ? "-" : r.cpuPercent.toFixed(1)) },
    { header: "MEMORY", cell: (r) => (r.stats ? bytes(r.stats.memoryCurrentBytes) : "-") },
    { header: "MEM MAX", cell: (r) => (r.cell.limits?.memoryMaxBytes ? bytes(r.cell.limits.memoryMaxBytes) : "-") },
    { header: "PIDS", cell: (r) => (r.stats ? String(r.stats.pidsCurrent) : "-") },
    { header: "OOM KILLS", cell: (r) => (r.stats ? String(r.stats.oomKillCount) : "-") },
  ],
};

const VMS: ListView<vm.Vm> = {
  json: vm.VmSchema,
  name: (v) => v.name,
  columns: [
    { header: "VM", cell: (v) => v.name },
    { header: "TENANT", cell: (v) => v.tenant },
    { header: "STATE", cell: (v) => vm.VmState[v.state].toLowerCase() },
    { header: "VCPUS", cell: (v) => String(v.vcpus) },
    { header: "MEMORY", cell: (v) => bytes(v.memoryBytes) },
    { header: "CELL", cell: (v) => v.cell || "-" },
  ],
};

async function readCells(aether: AetherClient, tenant: string): Promise<CellRow[]> {
  const { cells: list } = await aether.cells.listCells({ tenant, pageSize: 1000 });
  return Promise.all(
    list.map(async (cell) => {
      // A cell freed between the list and this read is shown without figures.
      const stats = await aether.cells.getCellStats({ cell: cell.id, tenant: cell.tenant }).then(
        (r) => r.stats,
        () => undefined,
      );
      return { cell, ...(stats && { stats }) };
    }),
  );
}

/** CPU % of each cell from its CPU time now and at the previous reading. */
function withCpu(now: CellRow[], before: CellRow[] | undefined): CellRow[] {
  const previous = new Map((before ?? []).map((r) => [r.cell.id, r.stats]));
  return now.map((r) => {
    const then = previous.get(r.cell.id);
    if (!r.stats?.readTime || !then?.readTime) return r;
    const wallUs = (timestampMs(r.stats.readTime) - timestampMs(then.readTime)) * 1000;
    if (wallUs <= 0) return r;
    return { ...r, cpuPercent: (Number(r.stats.cpuUsageUsec - then.cpuUsageUsec) / wallUs) * 100 };
  });
}

async function snapshot(aether: AetherClient, tenant: string, before: CellRow[] | undefined): Promise<Snapshot> {
  const [{ node }, { telemetry }, cellRows, { vms }, { executables }] = await Promise.all([
    aether.node.getNodeInfo({}),
    aether.observe.getTelemetry({}),
    readCells(aether, tenant),
    aether.vm.listVms({ tenant, pageSize: 1000 }),
    aether.runtime.listExecutables({ tenant, state: runtime.ExecutableState.RUNNING, pageSize: 1000 }),
  ]);
  if (!telemetry) throw new Error("aetherd returned no telemetry");
  return {
    hostname: node?.hostname ?? "?",
    address: aether.address,
    telemetry,
    cells: withCpu(cellRows, before),
    vms,
    executablesRunning: executables.length,
  };
}

/** The lines above the tables: load, memory, pressure, disks. */
function summary(s: Snapshot): string {
  const t = s.telemetry;
  const pressure = t.pressure.filter((p) => p.available).map((p) => `${p.resource} ${p.someAvg10Percent.toFixed(1)}%`);
  const disks = t.disks.filter((d) => d.known).map((d) => `${d.device} ${d.percentageUsed ?? "?"}% worn`);
  return [
    `load ${t.loadAverage1m.toFixed(2)} ${t.loadAverage5m.toFixed(2)} ${t.loadAverage15m.toFixed(2)}   ${t.cpuCount} CPUs, ${t.runnableTasks} runnable`,
    `memory ${bytes(t.memoryAvailableBytes)} available of ${bytes(t.memoryTotalBytes)}, ${bytes(t.memoryCommittedBytes)} promised to workloads`,
    `pressure (some, 10 s) ${pressure.length > 0 ? pressure.join("  ") : "not exposed by this kernel"}`,
    ...(disks.length > 0 ? [`disks ${disks.join("  ")}`] : []),
    `executables running ${s.executablesRunning}   cells ${s.cells.length}   VMs ${s.vms.length}`,
  ].join("\n");
}

/** The whole screen for people: summary, cells, VMs. */
function render(o: OutputFlags, s: Snapshot): string {
  return captured(() => {
    process.stdout.write(`${summary(s)}\n\n`);
    if (s.cells.length > 0) printList(o, CELLS, s.cells);
    else process.stdout.write("no cells\n");
    process.stdout.write("\n");
    if (s.vms.length > 0) printList(o, VMS, s.vms);
    else process.stdout.write("no VMs\n");
  });
}

const SNAPSHOT = {
  json: (s: Snapshot) => ({
    hostname: s.hostname,
    address: s.address,
    telemetry: toJson(observe.TelemetrySchema, s.telemetry),
    cells: s.cells.map(cellJson),
    vms: s.vms.map((v) => toJson(vm.VmSchema, v)),
    executablesRunning: s.executablesRunning,
  }),
  name: (s: Snapshot) => s.hostname,
};

export function topCommand(program: Command): void {
  outputOptions(
    program
      .command("top")
      .description("the node at a glance: load, memory, pressure, cells (CPU, memory, processes), VMs; refreshed on a terminal")
      .option("--tenant <tenant>", "only this tenant's cells, VMs and executables (default: every tenant you may see)", "")
      .addOption(durationOption("-i, --interval <duration>", "time between refreshes (seconds, or 500ms, 1m...)", 2000))
      .option("--once", "one snapshot, then exit (the default when stdout is not a terminal)")
      .addHelpText(
        "after",
        `
Examples:
  aether top
  aether top --interval 5s --tenant team-a
  aether top --once
  aether top -o json | jq .telemetry.loadAverage1m`,
      ),
  ).action(async (o: { tenant: string; interval: number; once?: boolean } & OutputFlags, cmd: Command) => {
    if (o.interval < 100) cmd.error("error: --interval must be at least 100ms.", { exitCode: 2 });
    return withClient(program.opts<GlobalOptions>(), async (aether) => {
      const format = formatOf(o);
      const refreshing = !o.once && (format === "table" || format === "wide") && canRedraw(process.stdout);
      if (!refreshing) {
        const first = await readCells(aether, o.tenant);
        await new Promise((resolve) => setTimeout(resolve, CPU_SAMPLE_MS));
        const s = await snapshot(aether, o.tenant, first);
        if (format === "table" || format === "wide") process.stdout.write(render(o, s));
        else printOne(o, SNAPSHOT, s);
        return;
      }
      // Ends on Ctrl-C, SIGTERM, SIGHUP (their default), its reader or its parent going (watch.ts).
      watchParent();
      let last: { header: string; s: Snapshot } | undefined;
      // A resized terminal gets the last snapshot again, fitted to its new width.
      const screen = inPlace(() => ({ header: last?.header ?? "", text: last ? render(o, last.s) : "" }));
      let before: CellRow[] | undefined;
      for (;;) {
        const s = await snapshot(aether, o.tenant, before);
        before = s.cells;
        last = {
          header: `aether top: ${s.hostname} at ${s.address}, ${new Date().toLocaleTimeString()} (every ${o.interval / 1000}s, Ctrl-C to stop)`,
          s,
        };
        screen(last.header, render(o, s));
        await new Promise((resolve) => setTimeout(resolve, o.interval));
      }
    });
  });
}
