// aether exec start|stop|list|get|wait|logs|delete: executables (host processes) on a node.
import type { Command } from "commander";
import { observe, runtime } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { durationOption, toDuration, uint32, uint64 } from "../numbers.js";
import { age, printFields, printJson, printTable } from "../output.js";
import { startProgress } from "../progress.js";

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

function describe(e: runtime.Executable): string {
  return e.state === runtime.ExecutableState.RUNNING
    ? `${e.name} (${e.id}) running as pid ${e.pid}`
    : `${e.name} (${e.id}) ${e.stateReason}`;
}

export function execCommands(program: Command): void {
  const exec = program.command("exec").description("processes on the node: start, stop, list, logs");
  const globals = () => program.opts<GlobalOptions>();

  exec
    .command("start")
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
    .option("--json", "print the executable as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether exec start --name web -e PORT=8080 -- /usr/bin/python3 -m http.server 8080\n  id=$(aether exec start -- /bin/sleep 60)",
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
          json?: boolean;
        },
      ) =>
        withClient(globals(), async (aether) => {
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
          if (o.json) printJson(runtime.ExecutableSchema, executable);
          else process.stdout.write(`${executable.id}\n`);
          if (!o.json && process.stderr.isTTY) process.stderr.write(`started ${describe(executable)}\n`);
        }),
    );

  exec
    .command("stop")
    .description("send a signal, wait the grace period, then SIGKILL")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-s, --signal <signal>", "first signal", "SIGTERM")
    .addOption(durationOption("-g, --grace <duration>", "time before SIGKILL (seconds, or 500ms, 2m...)", 10_000))
    .option("--json", "print the stopped executable as JSON")
    .addHelpText("after", "\nExamples:\n  aether exec stop web\n  aether exec stop web --signal SIGINT --grace 30")
    .action(async (ref: string, o: { tenant: string; signal: string; grace: number; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const spinner = startProgress(`stopping ${ref} (${o.signal}, ${o.grace / 1000}s grace)`, o.json === true);
        try {
          const { executable } = await aether.runtime.stopExecutable({
            executable: ref,
            tenant: o.tenant,
            signal: o.signal,
            gracePeriod: toDuration(o.grace),
          });
          spinner?.succeed(executable ? describe(executable) : ref);
          if (o.json && executable) printJson(runtime.ExecutableSchema, executable);
          else if (!spinner && executable) process.stdout.write(`${describe(executable)}\n`);
        } catch (err) {
          spinner?.stop();
          throw err;
        }
      }),
    );

  exec
    .command("list")
    .alias("ls")
    .description("executables on the node, newest first")
    .option("--tenant <tenant>", "only this tenant", "")
    .option("--filter <k=v,...>", "only those with these labels", "")
    .option("--state <state>", "running, exited or lost")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether exec list\n  aether exec list --state running --filter team=a --json")
    .action(async (o: { tenant: string; filter: string; state?: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const state = o.state === undefined ? runtime.ExecutableState.UNSPECIFIED : STATE_NAMES[o.state];
        if (state === undefined) throw new Error(`--state ${o.state} is not one of running, exited, lost`);
        const all: runtime.Executable[] = [];
        let pageToken = "";
        do {
          const page = await aether.runtime.listExecutables({ tenant: o.tenant, filter: o.filter, state, pageSize: 1000, pageToken });
          all.push(...page.executables);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (o.json) return printJson(runtime.ExecutableSchema, all);
        printTable(
          ["NAME", "TENANT", "STATE", "PID", "EXIT", "AGE", "ID", "COMMAND"],
          all.map((e) => [
            e.name,
            e.tenant,
            stateWord(e),
            e.pid ? String(e.pid) : "-",
            outcome(e),
            age(e.createTime),
            e.id.slice(0, 8),
            e.argv.join(" ").slice(0, 60),
          ]),
        );
      }),
    );

  exec
    .command("get")
    .description("one executable in detail")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print as JSON")
    .action(async (ref: string, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { executable: e } = await aether.runtime.getExecutable({ executable: ref, tenant: o.tenant });
        if (!e) throw new Error("aetherd returned no executable");
        if (o.json) return printJson(runtime.ExecutableSchema, e);
        printFields([
          ["id", e.id],
          ["name", e.name],
          ["tenant", e.tenant],
          ["state", `${stateWord(e)}${e.stateReason ? `: ${e.stateReason}` : ""}`],
          ["pid", e.pid ? String(e.pid) : "-"],
          ["exit", outcome(e)],
          ["argv", e.argv.join(" ")],
          ["cwd", e.cwd],
          ["uid:gid", `${e.uid}:${e.gid}`],
          [
            "labels",
            Object.entries(e.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(", ") || "-",
          ],
          ["output", `stdout ${e.stdoutBytes} B, stderr ${e.stderrBytes} B, dropped ${e.droppedBytes} B (cap ${e.logLimitBytes} B each)`],
        ]);
      }),
    );

  exec
    .command("wait")
    .description("wait until it exits; exits with its exit code")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addOption(durationOption("-t, --timeout <duration>", "give up after this long (seconds, or 500ms, 2m...)"))
    .option("--json", "print the exited executable as JSON")
    .action(async (ref: string, o: { tenant: string; timeout?: number; json?: boolean }) => {
      let code: number = EXIT.ok;
      await withClient(globals(), async (aether) => {
        const { executable: e } = await aether.runtime.waitExecutable({
          executable: ref,
          tenant: o.tenant,
          timeout: o.timeout === undefined || o.timeout === 0 ? undefined : toDuration(o.timeout),
        });
        if (!e) throw new Error("aetherd returned no executable");
        if (o.json) printJson(runtime.ExecutableSchema, e);
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

  exec
    .command("delete")
    .alias("rm")
    .description("forget an exited executable and delete its logs")
    .argument("<executable>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .action(async (ref: string, o: { tenant: string }) =>
      withClient(globals(), async (aether) => {
        await aether.runtime.deleteExecutable({ executable: ref, tenant: o.tenant });
      }),
    );
}
