// aether cell allocate|update|free|list|get|stats: cgroup slices on a node.
import type { Command } from "commander";
import { cells } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { age, bytes, printFields, printJson, printTable } from "../output.js";
import { uint32, uint64 } from "../numbers.js";
import { parseBytes, parseCpuMax } from "../units.js";

interface LimitFlags {
  cpuWeight?: number;
  cpuMax?: { quotaUsec: bigint; periodUsec: bigint };
  cpus?: string;
  mems?: string;
  memory?: bigint;
  memoryHigh?: bigint;
  pids?: bigint;
}

const ISOLATIONS = ["pid", "mount", "network", "uts", "ipc"] as const;

function withLimitOptions(cmd: Command): Command {
  return cmd
    .option("--cpu-weight <n>", "share among siblings, 1..10000 (default 100)", uint32)
    .option("--cpu-max <limit>", "CPU limit: 20% of one CPU, 1.5 CPUs, or quota/period in µs", parseCpuMax)
    .option("--cpus <list>", "CPUs it may run on, e.g. 0-1")
    .option("--mems <list>", "memory nodes it may use, e.g. 0")
    .option("--memory <size>", "memory limit, e.g. 512M", parseBytes)
    .option("--memory-high <size>", "memory throttling threshold (cgroup v2)", parseBytes)
    .option("--pids <n>", "most tasks at once", uint64);
}

function limitsFrom(o: LimitFlags, base?: cells.CellLimits) {
  return {
    cpuWeight: o.cpuWeight ?? base?.cpuWeight,
    cpuMax: o.cpuMax ?? base?.cpuMax,
    cpusetCpus: o.cpus ?? base?.cpusetCpus ?? "",
    cpusetMems: o.mems ?? base?.cpusetMems ?? "",
    memoryMaxBytes: o.memory ?? base?.memoryMaxBytes ?? 0n,
    memoryHighBytes: o.memoryHigh ?? base?.memoryHighBytes ?? 0n,
    pidsMax: o.pids ?? base?.pidsMax ?? 0n,
  };
}

function limitText(c: cells.Cell): { cpu: string; memory: string; pids: string } {
  const l = c.limits;
  const quota = Number(l?.cpuMax?.quotaUsec ?? 0n);
  const period = Number(l?.cpuMax?.periodUsec ?? 100_000n) || 100_000;
  return {
    cpu: `${quota === 0 ? "unlimited" : `${Math.round((quota / period) * 100)}%`} w${l?.cpuWeight ?? 100}${l?.cpusetCpus ? ` cpus ${l.cpusetCpus}` : ""}`,
    memory: l?.memoryMaxBytes ? bytes(l.memoryMaxBytes) : "unlimited",
    pids: l?.pidsMax ? String(l.pidsMax) : "unlimited",
  };
}

const isolationText = (c: cells.Cell) => ISOLATIONS.filter((k) => c.isolation?.[k]).join(",") || "-";

export function cellCommands(program: Command): void {
  const cell = program.command("cell").description("cells: cgroup slices with limits and optional isolation");
  const globals = () => program.opts<GlobalOptions>();

  withLimitOptions(
    cell
      .command("allocate")
      .description("allocate a cell (its parent must exist: team-a before team-a/build)")
      .argument("<name>", "name path, e.g. team-a/build")
      .option("--tenant <tenant>", "owning tenant", "")
      .option("-l, --label <key=value>", "label to attach (repeatable)", (v: string, prev: Record<string, string> = {}) => ({
        ...prev,
        [v.split("=")[0] ?? ""]: v.split("=").slice(1).join("="),
      }))
      .option("--isolate <namespaces>", `namespaces of its own: ${ISOLATIONS.join(",")}`, (v) => v.split(",")),
  )
    .option("--json", "print the cell as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cell allocate team-a --memory 2G --cpu-max 150%\n  aether cell allocate team-a/build --pids 256 --isolate pid,network",
    )
    .action(async (name: string, o: LimitFlags & { tenant: string; label?: Record<string, string>; isolate?: string[]; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const unknown = (o.isolate ?? []).filter((n) => !(ISOLATIONS as readonly string[]).includes(n));
        if (unknown.length > 0) throw new Error(`--isolate ${unknown.join(",")}: not one of ${ISOLATIONS.join(", ")}`);
        const isolation = Object.fromEntries(ISOLATIONS.map((k) => [k, (o.isolate ?? []).includes(k)]));
        const { cell: c } = await aether.cells.allocateCell({
          name,
          tenant: o.tenant,
          labels: o.label ?? {},
          limits: limitsFrom(o),
          isolation,
        });
        if (!c) throw new Error("aetherd returned no cell");
        if (o.json) printJson(cells.CellSchema, c);
        else process.stdout.write(`${c.id}\n`);
      }),
    );

  withLimitOptions(
    cell
      .command("update")
      .description("change a cell's limits in place (the flags given; the rest stay)")
      .argument("<cell>", "id or name path")
      .option("--tenant <tenant>", "tenant to resolve a name in", ""),
  )
    .option("--json", "print the cell as JSON")
    .addHelpText("after", "\nExamples:\n  aether cell update team-a --memory 4G")
    .action(async (ref: string, o: LimitFlags & { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { cell: current } = await aether.cells.getCell({ cell: ref, tenant: o.tenant });
        const { cell: c } = await aether.cells.updateCell({ cell: ref, tenant: o.tenant, limits: limitsFrom(o, current?.limits) });
        if (o.json && c) printJson(cells.CellSchema, c);
      }),
    );

  cell
    .command("free")
    .description("free a cell (refused while processes run in it, unless --stop)")
    .argument("<cell>", "id or name path")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--stop", "stop the executables in it first")
    .action(async (ref: string, o: { tenant: string; stop?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { stoppedExecutables } = await aether.cells.freeCell({ cell: ref, tenant: o.tenant, stopExecutables: o.stop ?? false });
        if (stoppedExecutables.length > 0) process.stderr.write(`stopped ${stoppedExecutables.join(", ")}\n`);
      }),
    );

  cell
    .command("list")
    .alias("ls")
    .description("cells as a tree")
    .option("--tenant <tenant>", "only this tenant", "")
    .option("--root <name>", "only this cell and its descendants", "")
    .option("--json", "print as JSON")
    .action(async (o: { tenant: string; root: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { cells: all } = await aether.cells.listCells({ tenant: o.tenant, root: o.root, pageSize: 1000 });
        if (o.json) return printJson(cells.CellSchema, all);
        printTable(
          ["CELL", "TENANT", "CPU", "MEMORY", "PIDS", "ISOLATION", "PROCS", "AGE"],
          all.map((c) => {
            const t = limitText(c);
            const depth = c.name.split("/").length - 1;
            return [
              `${"  ".repeat(depth)}${c.name.split("/").pop() ?? c.name}`,
              c.tenant,
              t.cpu,
              t.memory,
              t.pids,
              isolationText(c),
              String(c.processCount),
              age(c.createTime),
            ];
          }),
        );
      }),
    );

  cell
    .command("get")
    .description("one cell in detail")
    .argument("<cell>", "id or name path")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print as JSON")
    .action(async (ref: string, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { cell: c } = await aether.cells.getCell({ cell: ref, tenant: o.tenant });
        if (!c) throw new Error("aetherd returned no cell");
        if (o.json) return printJson(cells.CellSchema, c);
        const t = limitText(c);
        printFields([
          ["id", c.id],
          ["name", c.name],
          ["tenant", c.tenant],
          ["parent", c.parent || "-"],
          ["children", c.children.join(", ") || "-"],
          ["cpu", t.cpu],
          ["memory", t.memory],
          ["pids", t.pids],
          ["isolation", isolationText(c)],
          ["backend", cells.CellBackend[c.backend]],
          ["processes", String(c.processCount)],
          ["note", c.stateReason || "-"],
          ...Object.entries(c.cgroupPaths).map(([k, v]): [string, string] => [`cgroup ${k}`, v]),
        ]);
      }),
    );

  cell
    .command("stats")
    .description("resource usage from the cell's cgroup (children included)")
    .argument("<cell>", "id or name path")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print as JSON")
    .action(async (ref: string, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { stats: s } = await aether.cells.getCellStats({ cell: ref, tenant: o.tenant });
        if (!s) throw new Error("aetherd returned no stats");
        if (o.json) return printJson(cells.CellStatsSchema, s);
        printFields([
          [
            "cpu time",
            `${(Number(s.cpuUsageUsec) / 1e6).toFixed(2)} s (user ${(Number(s.cpuUserUsec) / 1e6).toFixed(2)} s, system ${(Number(s.cpuSystemUsec) / 1e6).toFixed(2)} s)`,
          ],
          ["throttled", `${s.cpuThrottledPeriods} of ${s.cpuPeriods} periods, ${(Number(s.cpuThrottledUsec) / 1e6).toFixed(2)} s`],
          ["memory", `${bytes(s.memoryCurrentBytes)} now, ${bytes(s.memoryPeakBytes)} peak`],
          ["oom kills", String(s.oomKillCount)],
          ["tasks", String(s.pidsCurrent)],
        ]);
      }),
    );
}
