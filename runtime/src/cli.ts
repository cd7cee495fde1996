// aetherscript: runs a TypeScript script against Aether, plans and applies manifests, or opens a REPL.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { denoCommand } from "./engines/deno.js";
import type { EngineCommand, Permissions, RunRequest } from "./engines/engine.js";
import { nodeCommand } from "./engines/node.js";
import { distDir } from "./locate.js";
import { describeFailure } from "./report-error.js";

type EngineName = "deno" | "node";

interface RunOptions {
  engine: EngineName;
  allowRead: string[];
  allowWrite: string[];
  allowNet: string[];
  allowEnv: string[];
  allowRun: string[];
  allowAll: boolean;
  json?: boolean;
}

const list = (value: string, previous: string[] = []) => [...previous, ...value.split(",").filter(Boolean)];

function command(engine: EngineName, req: RunRequest): EngineCommand {
  return engine === "deno" ? denoCommand(req) : nodeCommand(req);
}

/** Runs the engine with inherited stdio and exits with its exit code (or 128+signal). */
function runToExit(cmd: EngineCommand): void {
  const child = spawn(cmd.file, cmd.args, { stdio: "inherit", env: cmd.env });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => child.kill(sig));
  child.on("error", (err) => {
    process.stderr.write(`aetherscript: cannot start the ${cmd.file} engine: ${err.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? (signalNumber(signal) ?? 1) : 1)));
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal as string];
}

function permissions(o: RunOptions, extraRead: string[] = []): Permissions {
  return {
    read: [...o.allowRead, ...extraRead].map((p) => resolve(p)),
    write: o.allowWrite.map((p) => resolve(p)),
    net: o.allowNet,
    env: o.allowEnv,
    run: o.allowRun,
    all: o.allowAll,
  };
}

function scriptPath(file: string): string {
  const path = resolve(file);
  if (!existsSync(path)) {
    process.stderr.write(`aetherscript: ${file}: no such file\n`);
    process.exit(2);
  }
  return path;
}

/** Engine and permission options; given before or after `plan`/`apply`, they mean the same. */
function withEngineOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("-e, --engine <engine>", "deno (least privilege, default) or node (tsx, full privileges)").choices(["deno", "node"]),
    )
    .option("--allow-read <paths>", "Deno: also allow reading these paths (comma-separated)", list)
    .option("--allow-write <paths>", "Deno: allow writing these paths", list)
    .option("--allow-net <hosts>", "Deno: also allow reaching these hosts (host:port)", list)
    .option("--allow-env <vars>", "Deno: also allow reading these environment variables", list)
    .option("--allow-run <programs>", "Deno: allow running these programs", list)
    .option("-A, --allow-all", "Deno: allow everything");
}

type RawOptions = Partial<RunOptions>;

/** Merges the options given to aetherscript itself with those given to a subcommand. */
function runOptions(...sources: RawOptions[]): RunOptions {
  const merged = (key: "allowRead" | "allowWrite" | "allowNet" | "allowEnv" | "allowRun") => sources.flatMap((s) => s[key] ?? []);
  return {
    engine: sources.map((s) => s.engine).findLast((e) => e !== undefined) ?? "deno",
    allowRead: merged("allowRead"),
    allowWrite: merged("allowWrite"),
    allowNet: merged("allowNet"),
    allowEnv: merged("allowEnv"),
    allowRun: merged("allowRun"),
    allowAll: sources.some((s) => s.allowAll === true),
    json: sources.some((s) => s.json === true),
  };
}

const program = withEngineOptions(new Command("aetherscript"))
  .description("Run TypeScript against Aether: scripts, manifests as code, and a REPL.")
  .argument("[script]", "the script to run (.ts or extensionless); no script starts the REPL")
  .argument("[args...]", "arguments passed to the script")
  .passThroughOptions()
  .enablePositionalOptions()
  .addHelpText(
    "after",
    `
The daemon is found like the SDK finds it: AETHER_HOST (unix:///path.sock or https://host:port),
~/.config/aether/config.toml, or the default socket.

Examples:
  aetherscript deploy.ts --replicas 3       run a script; arguments after it are the script's
  ./deploy.ts                               the same, by its #!/usr/bin/env aetherscript line
  aetherscript --engine node deploy.ts      run under Node + tsx instead of Deno
  aetherscript --allow-read=/etc/app x.ts   let a Deno script read more than its own folder
  aetherscript plan web.manifest.ts         show what would change on the node
  aetherscript apply web.manifest.ts        make the node match the manifest (idempotent)
  aetherscript delete web.manifest.ts       delete everything the manifest created
  aetherscript apply --watch ./manifests    GitOps: apply each commit of a git checkout
  aetherscript                              REPL: await aether.node.getNodeInfo({})`,
  )
  .action(async (script: string | undefined, args: string[], raw: RawOptions) => {
    if (script === undefined) {
      // Loaded only for the REPL: it pulls in every client, which a script run does not need here.
      const { defaultHistoryFile, startRepl } = await import("./repl.js");
      await startRepl(defaultHistoryFile());
      return;
    }
    const o = runOptions(raw);
    const path = scriptPath(script);
    runToExit(command(o.engine, { script: path, args, permissions: permissions(o) }));
  });

/** "5s", "2m", "500ms" or a number of seconds, in milliseconds. */
function duration(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('It must be a duration like "5s", "2m" or a number of seconds.');
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"]);
}

interface ManifestCommandOptions extends RawOptions {
  watch?: boolean;
  interval?: number;
  pull?: boolean;
  resync?: number;
  aggregator?: string;
}

const DESCRIPTIONS = {
  plan: "show what applying a manifest would change, without changing anything",
  apply: "make the node (or, with target: cluster, the cluster) match a manifest; running it again changes nothing",
  delete: "delete everything the manifest created (what carries its aether.io/manifest label), and nothing else",
} as const;

for (const mode of ["plan", "apply", "delete"] as const) {
  const cmd = withEngineOptions(program.command(mode))
    .description(DESCRIPTIONS[mode])
    .argument(
      "<manifest>",
      mode === "apply"
        ? "a script whose default export is defineManifest({...}); with --watch, a folder of them"
        : "a script whose default export is defineManifest({...})",
    )
    .option("--json", "print the result as JSON");
  if (mode === "apply")
    cmd
      .option(
        "--watch",
        "GitOps: keep applying the manifests of <manifest> (a folder in a git checkout) whenever its commit or files change, and report the commit of each applied state",
      )
      .option("--interval <duration>", "with --watch: how often to look for a change", duration, 5000)
      .option("--pull", "with --watch: run git pull --ff-only in the checkout before each look")
      .option(
        "--resync <duration>",
        "with --watch: also apply this often when nothing changed, undoing drift (default: only on a change)",
        duration,
        0,
      )
      .option("--aggregator <address>", "with --watch: where cluster manifests go (default: AETHER_AGGREGATOR, else AETHER_HOST)")
      .addHelpText(
        "after",
        `
Examples:
  aetherscript apply web.manifest.ts
  aetherscript apply --engine node web.manifest.ts --json
  aetherscript apply --watch ./manifests                     re-apply on every commit (or edit) there
  aetherscript apply --watch /srv/gitops/prod --pull --interval 30s --resync 5m`,
      );
  else
    cmd.addHelpText(
      "after",
      `
Examples:
  aetherscript ${mode} web.manifest.ts
  aetherscript ${mode} web.manifest.ts --json`,
    );
  cmd.action(async (file: string, raw: ManifestCommandOptions) => {
    const o = runOptions(program.opts<RawOptions>(), raw);
    if (raw.watch) {
      const { watchAndApply } = await import("./gitops.js");
      await watchAndApply({
        dir: resolve(file),
        intervalMs: raw.interval ?? 5000,
        pull: raw.pull === true,
        resyncMs: raw.resync ?? 0,
        json: o.json === true,
        engine: o.engine,
        permissions: permissions(o),
        aggregator: raw.aggregator ?? process.env.AETHER_AGGREGATOR,
      });
      return;
    }
    for (const flag of ["pull", "aggregator"] as const) if (raw[flag] !== undefined) cmd.error(`error: --${flag} goes with --watch`);
    const path = scriptPath(file);
    const driver = resolve(distDir, "manifest-driver.js");
    const args = [mode, path, ...(o.json ? ["--json"] : [])];
    runToExit(command(o.engine, { script: driver, args, permissions: permissions(o, [path, resolve(path, "..")]) }));
  });
}

withEngineOptions(program.command("export"))
  .description("evaluate manifests and print them as JSON, without connecting to anything (what aether apply -f reads)")
  .argument("<paths...>", "manifest files, or folders whose .ts, .mts, .js, .mjs and .json files are manifests")
  .addHelpText("after", "\nExamples:\n  aetherscript export web.manifest.ts\n  aetherscript export ./manifests | jq '.[].manifest.name'")
  .action(async (paths: string[], raw: RawOptions) => {
    const o = runOptions(program.opts<RawOptions>(), raw);
    const { checkDistinct, evaluateManifests, manifestFiles, EvaluationError } = await import("./evaluate.js");
    try {
      const manifests = await evaluateManifests(paths.flatMap(manifestFiles), o.engine, permissions(o));
      checkDistinct(manifests);
      process.stdout.write(`${JSON.stringify(manifests, null, 2)}\n`);
    } catch (err) {
      if (!(err instanceof EvaluationError)) throw err;
      process.stderr.write(`aetherscript: ${err.message}\n`);
      process.exit(2);
    }
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`${describeFailure(err)}\n`);
  process.exit(1);
});
