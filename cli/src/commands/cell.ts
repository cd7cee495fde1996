// aether cell allocate|update|free|list|get|stats: cgroup slices on a node.
import { InvalidArgumentError, type Command } from "commander";
import { cells, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import {
  age,
  bytes,
  forPrograms,
  labelsText,
  outputOptions,
  printList,
  printOne,
  shortId,
  type ListView,
  type OutputFlags,
} from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, exists, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { uint32, uint64 } from "../numbers.js";
import { parseBytes, parseCpuMax } from "../units.js";
import { nodeEvents, watch, watchOption, type WatchFlags } from "../watch.js";

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

const CELLS: ListView<cells.Cell> = {
  json: cells.CellSchema,
  name: (c) => c.name,
  columns: [
    // The tree: a child is indented under its parent (wide shows the whole name path).
    {
      header: "CELL",
      cell: (c) => `${"  ".repeat(c.name.split("/").length - 1)}${c.name.split("/").pop() ?? c.name}`,
      whole: (c) => c.name,
    },
    { header: "TENANT", cell: (c) => c.tenant },
    { header: "CPU", cell: (c) => limitText(c).cpu },
    { header: "MEMORY", cell: (c) => limitText(c).memory },
    { header: "PIDS", cell: (c) => limitText(c).pids },
    { header: "ISOLATION", cell: isolationText },
    { header: "PROCS", cell: (c) => String(c.processCount) },
    { header: "AGE", cell: (c) => age(c.createTime) },
    { header: "ID", cell: (c) => shortId(c.id), whole: (c) => c.id, wideOnly: true },
    { header: "LABELS", cell: (c) => labelsText(c.labels), wideOnly: true },
    { header: "NOTE", cell: (c) => c.stateReason || "-", wideOnly: true },
  ],
};

function cellFields(c: cells.Cell): Array<[string, string]> {
  const t = limitText(c);
  return [
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
    ["labels", labelsText(c.labels)],
    ["note", c.stateReason || "-"],
    ...Object.entries(c.cgroupPaths).map(([k, v]): [string, string] => [`cgroup ${k}`, v]),
  ];
}

/** Every page of ListCells. */
async function listCells(aether: AetherClient, tenant: string, root: string, filter: string): Promise<cells.Cell[]> {
  const all: cells.Cell[] = [];
  let pageToken = "";
  do {
    const page = await aether.cells.listCells({ tenant, root, filter, pageSize: 1000, pageToken });
    all.push(...page.cells);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

async function getCell(aether: AetherClient, ref: string, tenant: string): Promise<cells.Cell> {
  const { cell: c } = await aether.cells.getCell({ cell: ref, tenant });
  if (!c) throw new Error("aetherd returned no cell");
  return c;
}

function isolations(v: string): string[] {
  const names = v.split(",");
  const unknown = names.filter((n) => !(ISOLATIONS as readonly string[]).includes(n));
  if (unknown.length > 0) throw new InvalidArgumentError(`${unknown.join(",")}: not one of ${ISOLATIONS.join(", ")}`);
  return names;
}

export function cellCommands(program: Command): void {
  const cell = program
    .command("cell")
    .description("cells: cgroup slices with limits and optional isolation")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cell allocate team-a --memory 2G --cpu-max 150%\n  aether cell list\n  aether cell stats team-a",
    );
  const globals = () => program.opts<GlobalOptions>();

  withLimitOptions(
    dryRunOption(outputOptions(cell.command("allocate")))
      .description("allocate a cell (its parent must exist: team-a before team-a/build)")
      .argument("<name>", "name path, e.g. team-a/build")
      .option("--tenant <tenant>", "owning tenant", "")
      .option("-l, --label <key=value>", "label to attach (repeatable)", (v: string, prev: Record<string, string> = {}) => ({
        ...prev,
        [v.split("=")[0] ?? ""]: v.split("=").slice(1).join("="),
      }))
      .option("--isolate <namespaces>", `namespaces of its own: ${ISOLATIONS.join(",")}`, isolations),
  )
    .addHelpText(
      "after",
      "\nExamples:\n  aether cell allocate team-a --memory 2G --cpu-max 150%\n  aether cell allocate team-a/build --pids 256 --isolate pid,network\n  aether cell allocate team-b --dry-run",
    )
    .action(
      async (
        name: string,
        o: LimitFlags & { tenant: string; label?: Record<string, string>; isolate?: string[] } & OutputFlags & DryRunFlags,
      ) =>
        withClient(globals(), async (aether) => {
          if (o.dryRun) {
            if (await exists(() => getCell(aether, name, o.tenant)))
              return sayWould(`allocate cell ${name}, but aetherd would refuse: a cell named ${name} exists`);
            const parent = name.split("/").slice(0, -1).join("/");
            if (parent !== "") await getCell(aether, parent, o.tenant);
            return sayWould(`allocate cell ${name}${parent ? ` under ${parent}` : ""}`);
          }
          const isolation = Object.fromEntries(ISOLATIONS.map((k) => [k, (o.isolate ?? []).includes(k)]));
          const { cell: c } = await aether.cells.allocateCell({
            name,
            tenant: o.tenant,
            labels: o.label ?? {},
            limits: limitsFrom(o),
            isolation,
          });
          if (!c) throw new Error("aetherd returned no cell");
          if (forPrograms(o)) printOne(o, CELLS, c);
          else process.stdout.write(`${c.id}\n`);
        }),
    );

  withLimitOptions(
    dryRunOption(outputOptions(cell.command("update")))
      .description("change a cell's limits in place (the flags given; the rest stay)")
      .argument("<cell>", "id or name path")
      .option("--tenant <tenant>", "tenant to resolve a name in", ""),
  )
    .addHelpText("after", "\nExamples:\n  aether cell update team-a --memory 4G\n  aether cell update team-a --cpu-max 200% --dry-run")
    .action(async (ref: string, o: LimitFlags & { tenant: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        const current = await getCell(aether, ref, o.tenant);
        if (o.dryRun) {
          const before = limitText(current);
          const after = limitText({ ...current, limits: { ...current.limits, ...limitsFrom(o, current.limits) } } as cells.Cell);
          return sayWould(
            `update cell ${current.name}: cpu ${before.cpu} -> ${after.cpu}, memory ${before.memory} -> ${after.memory}, pids ${before.pids} -> ${after.pids}`,
          );
        }
        const { cell: c } = await aether.cells.updateCell({ cell: ref, tenant: o.tenant, limits: limitsFrom(o, current.limits) });
        if (forPrograms(o) && c) printOne(o, CELLS, c);
      }),
    );

  const free = cell
    .command("free")
    .description("free cells (refused while processes run in one, unless --stop): by name, by label selector, or all")
    .argument("[cell...]", "ids or name paths")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .option("--stop", "stop the executables in them first")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cell free team-a/build\n  aether cell free team-a --stop\n  aether cell free -l team=a --dry-run",
    )
    .action(async (refs: string[], o: { tenant: string; stop?: boolean } & DeleteFlags) =>
      withClient(globals(), async (aether) =>
        deleteMany(refs, o, {
          kind: "cell",
          // Children before their parents.
          list: async (selector) =>
            (await listCells(aether, o.tenant, "", serverFilter(selector))).sort(
              (a, b) => b.name.split("/").length - a.name.split("/").length,
            ),
          labels: (c) => c.labels,
          target: (c) => ({
            name: c.name,
            id: c.id,
            ...(c.processCount > 0 && !o.stop && { refusal: `${c.processCount} processes run in ${c.name}; add --stop` }),
          }),
          get: (ref) => getCell(aether, ref, o.tenant),
          remove: async (ref) => {
            const { stoppedExecutables } = await aether.cells.freeCell({ cell: ref, tenant: o.tenant, stopExecutables: o.stop ?? false });
            if (stoppedExecutables.length > 0) process.stderr.write(`stopped ${stoppedExecutables.join(", ")}\n`);
          },
        }),
      ),
    );
  deleteManyOptions(free, "cell");

  const list = cell
    .command("list")
    .alias("ls")
    .description("cells as a tree")
    .option("--tenant <tenant>", "only this tenant", "")
    .option("--root <name>", "only this cell and its descendants", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cell list\n  aether cell list --root team-a -o wide\n  aether cell list -l team=a -o name\n  aether cell list -w",
    )
    .action(async (o: { tenant: string; root: string } & SelectorFlags & OutputFlags & WatchFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const read = async () =>
          (await listCells(aether, o.tenant, o.root, serverFilter(selector))).filter((c) => selects(selector, c.labels));
        if (o.watch) {
          // Executables starting and ending change a cell's process count.
          const changes = nodeEvents(aether, o.tenant, "cell.", "executable.");
          return watch({ what: `cells on ${aether.address}`, list: read, view: CELLS, output: o, key: (c) => c.id, changes });
        }
        printList(o, CELLS, await read());
      }),
    );
  watchOption(selectorOptions(outputOptions(list, "list")));

  outputOptions(cell.command("get"))
    .description("one cell in detail")
    .argument("<cell>", "id or name path")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether cell get team-a\n  aether cell get team-a/build -o yaml")
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => printOne(o, CELLS, await getCell(aether, ref, o.tenant), cellFields)),
    );

  outputOptions(cell.command("stats"))
    .description("resource usage from the cell's cgroup (children included)")
    .argument("<cell>", "id or name path")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether cell stats team-a\n  aether cell stats team-a --json | jq .memoryPeakBytes")
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { stats } = await aether.cells.getCellStats({ cell: ref, tenant: o.tenant });
        if (!stats) throw new Error("aetherd returned no stats");
        printOne(o, { json: cells.CellStatsSchema, name: () => ref }, stats, (s) => [
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
