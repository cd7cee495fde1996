// aetherscript: runs a TypeScript script against Aether, plans and applies manifests, or opens a REPL.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { Command, Option } from "commander";
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

for (const mode of ["plan", "apply"] as const) {
  withEngineOptions(program.command(mode))
    .description(
      mode === "plan"
        ? "show what applying a manifest would change, without changing anything"
        : "make the node (or, with target: cluster, the cluster) match a manifest; running it again changes nothing",
    )
    .argument("<manifest>", "a script whose default export is defineManifest({...})")
    .option("--json", "print the result as JSON")
    .action((file: string, raw: RawOptions) => {
      const o = runOptions(program.opts<RawOptions>(), raw);
      const path = scriptPath(file);
      const driver = resolve(distDir, "manifest-driver.js");
      const args = [mode, path, ...(o.json ? ["--json"] : [])];
      runToExit(command(o.engine, { script: driver, args, permissions: permissions(o, [path, resolve(path, "..")]) }));
    });
}

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`${describeFailure(err)}\n`);
  process.exit(1);
});
