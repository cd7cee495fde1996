// aether exec start|stop|list|get|wait|logs|delete: executables (host processes) on a node.
import { Option, type Command } from "commander";
import { observe, runtime, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { durationOption, toDuration, uint32, uint64 } from "../numbers.js";
import { age, forPrograms, labelsText, outputOptions, printList, printOne, shortId, type ListView, type OutputFlags } from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, exists, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { startProgress } from "../progress.js";
import { nodeEvents, watch, watchOption, type WatchFlags } from "../watch.js";

const keyValue =
  (what: string) =>
  (value: string, previous: Record<string, string> = {}) => {
    const eq = value.indexOf("=");
    if (eq <= 0) throw new Error(`${what} ${JSON.stringify(value)} is not KEY=VALUE`);
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };

const STATE_NAMES: Record<string, runtime.ExecutableState> = {
  running: runtime.ExecutableState.RUNNING,
  exited: runtime.ExecutableState.EXITED,
  lost: runtime.ExecutableState.LOST,
};

function stateWord(e: runtime.Executable): string {
  return runtime.ExecutableState[e.state].toLowerCase();
}

function outcome(e: runtime.Executable): string {
  if (e.state === runtime.ExecutableState.RUNNING) return "-";
  if (e.exitCode !== undefined) return String(e.exitCode);
  return e.signal || "?";
}

const EXECUTABLES: ListView<runtime.Executable> = {
  json: runtime.ExecutableSchema,
  name: (e) => e.name,
  columns: [
    { header: "NAME", cell: (e) => e.name },
    { header: "TENANT", cell: (e) => e.tenant },
    { header: "STATE", cell: stateWord },
    { header: "PID", cell: (e) => (e.pid ? String(e.pid) : "-") },
    { header: "EXIT", cell: outcome },
    { header: "AGE", cell: (e) => age(e.createTime) },
    { header: "ID", cell: (e) => shortId(e.id), whole: (e) => e.id },
    { header: "CELL", cell: (e) => e.cell || "-", wideOnly: true },
    { header: "LABELS", cell: (e) => labelsText(e.labels), wideOnly: true },
    { header: "COMMAND", cell: (e) => e.argv.join(" "), clip: true },
  ],
};

function fields(e: runtime.Executable): Array<[string, string]> {
  return [
    ["id", e.id],
    ["name", e.name],
    ["tenant", e.tenant],
    ["state", `${stateWord(e)}${e.stateReason ? `: ${e.stateReason}` : ""}`],
    ["pid", e.pid ? String(e.pid) : "-"],
    ["exit", outcome(e)],
    ["argv", e.argv.join(" ")],
    ["cwd", e.cwd],
    ["uid:gid", `${e.uid}:${e.gid}`],
    ["labels", labelsText(e.labels)],
    ["output", `stdout ${e.stdoutBytes} B, stderr ${e.stderrBytes} B, dropped ${e.droppedBytes} B (cap ${e.logLimitBytes} B each)`],
  ];
}

function describe(e: runtime.Executable): string {
  return e.state === runtime.ExecutableState.RUNNING
    ? `${e.name} (${e.id}) running as pid ${e.pid}`
    : `${e.name} (${e.id}) ${e.stateReason}`;
}

export function execCommands(program: Command): void {
  const exec = program
    .command("exec")
    .description("processes on the node: start, stop, list, logs")
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec start --name web -- /usr/bin/python3 -m http.server 8080\n  aether exec list -l team=a\n  aether exec logs web -f\n  aether exec stop web",
    );
  const globals = () => program.opts<GlobalOptions>();

  dryRunOption(outputOptions(exec.command("start")))
    .description("start a process from an argv (no shell); prints its id")
    .argument("<argv...>", "absolute program path, then its arguments (everything from it on is the program's; -- optional)")
    .option("--name <name>", "a name unique in the tenant (default: derived from the program)")
    .option("--cell <cell>", "run inside this cell (id or name path)", "")
    .option("--tenant <tenant>", "owning tenant", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable); nothing is inherited", keyValue("env"))
    .option("--cwd <dir>", "absolute working directory", "/")
    .option("--uid <uid>", "run as this user id", uint32)
    .option("--gid <gid>", "run as this group id", uint32)
    .option("--log-limit-bytes <n>", "cap on captured bytes per stream", uint64)
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec start --name web -e PORT=8080 -- /usr/bin/python3 -m http.server 8080\n  id=$(aether exec start -- /bin/sleep 60)\n  aether exec start --name job --dry-run -- /bin/true",
    )
    .action(
      async (
        argv: string[],
        o: {
          name?: string;
          cell: string;
          tenant: string;
          label?: Record<string, string>;
          env?: Record<string, string>;
          cwd: string;
          uid?: number;
          gid?: number;
          logLimitBytes?: bigint;
        } & OutputFlags &
          DryRunFlags,
      ) =>
        withClient(globals(), async (aether) => {
          if (o.dryRun) {
            if (o.name !== undefined && (await exists(() => aether.runtime.getExecutable({ executable: o.name ?? "", tenant: o.tenant }))))
              return sayWould(`start ${argv.join(" ")}, but aetherd would refuse: an executable named ${o.name} exists`);
            if (o.cell !== "") await aether.cells.getCell({ cell: o.cell, tenant: o.tenant });
            return sayWould(`start ${argv.join(" ")}${o.name ? ` as ${o.name}` : ""}${o.cell ? ` in cell ${o.cell}` : ""}`);
          }
          const { executable } = await aether.runtime.startExecutable({
            argv,
            name: o.name ?? "",
            cell: o.cell,
            tenant: o.tenant,
            labels: o.label ?? {},
            env: o.env ?? {},
            cwd: o.cwd,
            uid: o.uid,
            gid: o.gid,
            logLimitBytes: o.logLimitBytes ?? 0n,
          });
          if (!executable) throw new Error("aetherd returned no executable");
          if (forPrograms(o)) printOne(o, EXECUTABLES, executable);
          else process.stdout.write(`${executable.id}\n`);
          if (!forPrograms(o) && process.stderr.isTTY) process.stderr.write(`started ${describe(executable)}\n`);
        }),
    );

  dryRunOption(outputOptions(exec.command("stop")))
    .description("send a signal, wait the grace period, then SIGKILL")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-s, --signal <signal>", "first signal", "SIGTERM")
    .addOption(durationOption("-g, --grace <duration>", "time before SIGKILL (seconds, or 500ms, 2m...)", 10_000))
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec stop web\n  aether exec stop web --signal SIGINT --grace 30\n  aether exec stop web --dry-run",
    )
    .action(async (ref: string, o: { tenant: string; signal: string; grace: number } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const { executable: e } = await aether.runtime.getExecutable({ executable: ref, tenant: o.tenant });
          if (!e) throw new Error("aetherd returned no executable");
          if (e.state !== runtime.ExecutableState.RUNNING)
            return sayWould(`stop ${e.name}, but aetherd would refuse: executable ${e.name} is not running (${stateWord(e)})`);
          return sayWould(`stop ${e.name} (pid ${e.pid}): ${o.signal}, then SIGKILL after ${o.grace / 1000}s if it still runs`);
        }
        const spinner = startProgress(`stopping ${ref} (${o.signal}, ${o.grace / 1000}s grace)`, forPrograms(o));
        try {
          const { executable } = await aether.runtime.stopExecutable({
            executable: ref,
            tenant: o.tenant,
            signal: o.signal,
            gracePeriod: toDuration(o.grace),
          });
          spinner?.succeed(executable ? describe(executable) : ref);
          if (forPrograms(o) && executable) printOne(o, EXECUTABLES, executable);
          else if (!spinner && executable) process.stdout.write(`${describe(executable)}\n`);
        } catch (err) {
          spinner?.stop();
          throw err;
        }
      }),
    );

  const list = exec
    .command("list")
    .alias("ls")
    .description("executables on the node, newest first")
    .option("--tenant <tenant>", "only this tenant", "")
    .addOption(new Option("--state <state>", "only those in this state").choices(Object.keys(STATE_NAMES)))
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec list\n  aether exec list --state running -l team=a -o wide\n  aether exec list -l 'team=a,env!=prod' -o name\n  aether exec list --json\n  aether exec list -w",
    )
    .action(async (o: { tenant: string; state?: string } & SelectorFlags & OutputFlags & WatchFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const read = async () =>
          (await listExecutables(aether, o.tenant, serverFilter(selector), o.state)).filter((e) => selects(selector, e.labels));
        if (o.watch) {
          const changes = nodeEvents(aether, o.tenant, "executable.");
          return watch({ what: `executables on ${aether.address}`, list: read, view: EXECUTABLES, output: o, key: (e) => e.id, changes });
        }
        printList(o, EXECUTABLES, await read());
      }),
    );
  watchOption(selectorOptions(outputOptions(list, "list")));

  outputOptions(exec.command("get"))
    .description("one executable in detail")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether exec get web\n  aether exec get web -o yaml\n  aether exec get 53abc070 --json | jq .pid")
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { executable: e } = await aether.runtime.getExecutable({ executable: ref, tenant: o.tenant });
        if (!e) throw new Error("aetherd returned no executable");
        printOne(o, EXECUTABLES, e, fields);
      }),
    );

  outputOptions(exec.command("wait"))
    .description("wait until it exits; exits with its exit code")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addOption(durationOption("-t, --timeout <duration>", "give up after this long (seconds, or 500ms, 2m...)"))
    .addHelpText("after", '\nExamples:\n  aether exec wait job; echo "job exited $?"\n  aether exec wait job --timeout 5m --json')
    .action(async (ref: string, o: { tenant: string; timeout?: number } & OutputFlags) => {
      let code: number = EXIT.ok;
      await withClient(globals(), async (aether) => {
        const { executable: e } = await aether.runtime.waitExecutable({
          executable: ref,
          tenant: o.tenant,
          timeout: o.timeout === undefined || o.timeout === 0 ? undefined : toDuration(o.timeout),
        });
        if (!e) throw new Error("aetherd returned no executable");
        if (forPrograms(o)) printOne(o, EXECUTABLES, e);
        else process.stderr.write(`${describe(e)}\n`);
        const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGTERM: 15 };
        code = e.exitCode ?? 128 + (signals[e.signal] ?? 0);
      });
      process.exit(code);
    });

  exec
    .command("logs")
    .description("its stdout (to stdout) and stderr (to stderr)")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-f, --follow", "keep streaming until it exits (Ctrl-C to stop)")
    .option("-n, --tail <lines>", "start with the last N lines", uint32)
    .option("--stdout", "only stdout")
    .option("--stderr", "only stderr")
    .addHelpText("after", "\nExamples:\n  aether exec logs web -f\n  aether exec logs web --tail 100 --stderr")
    .action(async (ref: string, o: { tenant: string; follow?: boolean; tail?: number; stdout?: boolean; stderr?: boolean }) =>
      withClient(globals(), async (aether) => {
        const channels = [...(o.stdout ? [observe.LogChannel.STDOUT] : []), ...(o.stderr ? [observe.LogChannel.STDERR] : [])];
        const abort = new AbortController();
        process.once("SIGINT", () => abort.abort());
        try {
          for await (const chunk of aether.observe.streamLogs(
            { source: observe.LogSource.EXECUTABLE, target: ref, tenant: o.tenant, channels, follow: o.follow ?? false, tailLines: o.tail },
            { signal: abort.signal },
          )) {
            (chunk.channel === observe.LogChannel.STDERR ? process.stderr : process.stdout).write(chunk.data);
          }
        } catch (err) {
          if (!abort.signal.aborted) throw err;
        }
      }),
    );

  const remove = exec
    .command("delete")
    .alias("rm")
    .description("forget exited executables and delete their logs: by name, by label selector, or all")
    .argument("[executable...]", "ids or names")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec delete job\n  aether exec delete -l team=a --state exited --dry-run\n  aether exec delete --all --state exited --yes",
    )
    .addOption(new Option("--state <state>", "with -l or --all: only those in this state").choices(Object.keys(STATE_NAMES)))
    .action(async (refs: string[], o: { tenant: string; state?: string } & DeleteFlags) =>
      withClient(globals(), async (aether) =>
        deleteMany(refs, o, {
          kind: "executable",
          list: (selector) => listExecutables(aether, o.tenant, serverFilter(selector), o.state),
          labels: (e) => e.labels,
          target: (e) => ({
            name: e.name,
            id: e.id,
            ...(e.state === runtime.ExecutableState.RUNNING && { refusal: `${e.name} is running; stop it first (aether exec stop)` }),
          }),
          get: async (ref) => {
            const { executable } = await aether.runtime.getExecutable({ executable: ref, tenant: o.tenant });
            if (!executable) throw new Error("aetherd returned no executable");
            return executable;
          },
          remove: async (ref) => {
            await aether.runtime.deleteExecutable({ executable: ref, tenant: o.tenant });
          },
        }),
      ),
    );
  deleteManyOptions(remove, "executable");
}

/** Every page of ListExecutables. */
async function listExecutables(aether: AetherClient, tenant: string, filter: string, state?: string): Promise<runtime.Executable[]> {
  const all: runtime.Executable[] = [];
  let pageToken = "";
  do {
    const page = await aether.runtime.listExecutables({
      tenant,
      filter,
      state: state === undefined ? runtime.ExecutableState.UNSPECIFIED : STATE_NAMES[state],
      pageSize: 1000,
      pageToken,
    });
    all.push(...page.executables);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}
