// aether apply|diff|delete -f FILE|DIR: manifests as kubectl users work with them, on the SDK's
// planManifest, applyManifest and deleteManifest (the same code as aetherscript plan|apply|delete).
//
// A manifest is TypeScript, and only an engine can evaluate it: the CLI runs `aetherscript export`
// (the same loader and least-privilege Deno sandbox as `aetherscript plan`; the script reaches no
// daemon there) and reads the manifests it prints as JSON; a .json manifest is read here. The CLI
// then plans and applies itself, node manifests against --address (aetherd), cluster manifests
// against --aggregator (aether-aggregator).
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Option, type Command } from "commander";
import { Code, connect, ConnectError, type AetherClient } from "@aether/sdk/client";
import type * as Sdk from "@aether/sdk";
import type { Manifest, Plan, PlannedAction } from "@aether/sdk";
import type { GlobalOptions } from "../client.js";
import { EXIT, fail } from "../exit-codes.js";
import { dryRunOption, type DryRunFlags } from "../mutations.js";
import { forPrograms, outputOptions, printOne, type OutputFlags } from "../output.js";

/** The SDK's manifest layer (zod and all), loaded when a manifest command runs rather than at every start of aether. */
let sdk: typeof Sdk;

/** A usage-level problem with the files: no such file, not a manifest, invalid. Exits 2. */
class ManifestFileError extends Error {}

/** aether diff's exit code when the diff could not be made (aetherd refused or failed a request); 1 means "differs". */
const DIFF_FAILED = 6;

interface ManifestOptions extends OutputFlags, DryRunFlags {
  filename: string[];
  engine?: "deno" | "node";
  aggregator?: string;
}

interface Loaded {
  file: string;
  manifest: Manifest;
}

/** The files -f names: a file, or the manifest files directly in a folder (as aetherscript export reads them). */
function filesOf(path: string): string[] {
  const full = resolve(path);
  if (!existsSync(full)) throw new ManifestFileError(`${path}: no such file or folder`);
  if (!statSync(full).isDirectory()) return [full];
  const files = readdirSync(full)
    .filter((n) => sdk.isManifestFileName(n) && statSync(join(full, n)).isFile())
    .sort()
    .map((n) => join(full, n));
  if (files.length === 0) throw new ManifestFileError(`${path} holds no manifest (.ts, .mts, .js, .mjs or .json files)`);
  return files;
}

/**
 * aetherscript: AETHERSCRIPT, else the one next to this aether (the same node_modules/.bin), else
 * one in a node_modules/.bin above the CLI's files (as npx looks), else PATH.
 */
function aetherscriptCommand(): string {
  if (process.env.AETHERSCRIPT) return process.env.AETHERSCRIPT;
  const sibling = join(dirname(process.argv[1] ?? ""), "aetherscript");
  if (existsSync(sibling)) return sibling;
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const bin = join(dir, "node_modules", ".bin", "aetherscript");
    if (existsSync(bin)) return bin;
  }
  return "aetherscript";
}

/** Evaluates TypeScript manifests with `aetherscript export`. */
function evaluateScripts(files: string[], engine: string | undefined): Promise<Loaded[]> {
  const command = aetherscriptCommand();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, ["export", ...(engine ? ["--engine", engine] : []), ...files], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (err) =>
      reject(
        new Error(
          `cannot run aetherscript (${err.message}), which evaluates TypeScript manifests: install @aether/runtime next to the CLI, put aetherscript on PATH or name it in AETHERSCRIPT, or give the manifest as .json`,
        ),
      ),
    );
    child.on("close", (code) => {
      if (code === 0) return resolvePromise(JSON.parse(stdout) as Loaded[]);
      const message = stderr.trim().replace(/^aetherscript: /, "") || `aetherscript export exited with ${code}`;
      reject(code === 2 ? new ManifestFileError(message) : new Error(message));
    });
  });
}

/** Every manifest -f names, in order. */
async function load(o: ManifestOptions): Promise<Loaded[]> {
  const files = o.filename.flatMap(filesOf);
  // Anything but JSON is a script (an extensionless one, run by its shebang, is TypeScript).
  const scripts = files.filter((f) => extname(f) !== ".json");
  const evaluated = new Map((scripts.length > 0 ? await evaluateScripts(scripts, o.engine) : []).map((l) => [l.file, l.manifest]));
  const loaded = files.map((file) => {
    const manifest = evaluated.get(file);
    if (manifest) return { file, manifest };
    let input: unknown;
    try {
      input = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new ManifestFileError(`${file}: not valid JSON: ${(err as Error).message}`);
    }
    try {
      return { file, manifest: sdk.defineManifest(input as Parameters<typeof Sdk.defineManifest>[0]) };
    } catch (err) {
      if (err instanceof sdk.ManifestError) throw new ManifestFileError(`${file}: ${err.message}`);
      throw err;
    }
  });
  const seen = new Map<string, string>();
  for (const { file, manifest: m } of loaded) {
    const key = `${m.target}/${m.tenant}/${m.name}`;
    if (seen.has(key))
      throw new ManifestFileError(
        `${file} and ${seen.get(key)} both declare manifest ${m.name} (tenant ${m.tenant}, target ${m.target}); each would delete what the other creates: rename one`,
      );
    seen.set(key, file);
  }
  return loaded;
}

/** The result of one manifest, as -o json and -o yaml print it. */
interface ManifestResult {
  file: string;
  manifest: string;
  tenant: string;
  target: string;
  address: string;
  changes: number;
  conflicts: number;
  actions: PlannedAction[];
}

const resultView = { json: (r: ManifestResult[]) => r, name: (r: ManifestResult[]) => r.map((m) => `manifest/${m.manifest}`).join("\n") };

type Verb = "apply" | "diff" | "delete";

/** The SDK's advice names AETHER_HOST, as aetherscript takes it; the CLI has a flag for each side. */
function inCliWords(err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const message = err.rawMessage
    .replace("point AETHER_HOST at the aggregator", "give the aggregator with --aggregator (or AETHER_AGGREGATOR)")
    .replace("point AETHER_HOST at a node's aetherd", "give a node's aetherd with --address (or AETHER_HOST)");
  return message === err.rawMessage ? err : new ConnectError(message, err.code);
}

async function run(verb: Verb, program: Command, o: ManifestOptions): Promise<void> {
  sdk ??= await import("@aether/sdk");
  const quiet = forPrograms(o);
  const say = (line: string) => quiet || process.stdout.write(`${line}\n`);
  let loaded: Loaded[];
  try {
    loaded = await load(o);
  } catch (err) {
    process.stderr.write(`aether: ${(err as Error).message}\n`);
    process.exit(err instanceof ManifestFileError ? EXIT.usage : EXIT.failed);
  }
  const globals = program.opts<GlobalOptions>();
  const aggregator = o.aggregator ?? process.env.AETHER_AGGREGATOR ?? globals.address;
  const clients = new Map<string, AetherClient>();
  const results: ManifestResult[] = [];
  let differs = false;
  try {
    for (const { file, manifest } of loaded) {
      const cluster = manifest.target === "cluster";
      const address = cluster ? aggregator : globals.address;
      const key = `${cluster}/${address ?? ""}`;
      if (!clients.has(key))
        clients.set(key, await connect({ ...(address !== undefined && { address }), ...(cluster && { peer: "aether-aggregator" }) }));
      const aether = clients.get(key) as AetherClient;
      const where = cluster ? `the cluster at ${aether.address}` : aether.address;
      let result: Plan;
      if (verb === "diff" || o.dryRun) {
        result = await sdk.planManifest(aether, verb === "delete" ? sdk.withoutResources(manifest) : manifest);
        say(`${o.dryRun ? "would change" : "diff of"} manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`);
        result.actions.filter((a) => a.kind !== "unchanged").forEach((a) => say(sdk.describeAction(a)));
        say(`${sdk.describePlanSummary(result)}.`);
      } else {
        say(
          `${verb === "apply" ? "applying" : "deleting everything of"} manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`,
        );
        const hooks = {
          onStep: (a: PlannedAction) => say(sdk.describeAction(a)),
          onApplied: (a: PlannedAction) => {
            const placed = sdk.describePlacement(a);
            if (placed) say(placed);
          },
        };
        result = verb === "apply" ? await sdk.applyManifest(aether, manifest, hooks) : await sdk.deleteManifest(aether, manifest, hooks);
        say(
          result.changes === 0
            ? verb === "apply"
              ? "unchanged: it already matches the manifest."
              : `nothing to delete: nothing of manifest ${manifest.name} is left.`
            : `${verb === "apply" ? "applied" : "deleted"}: ${sdk.describePlanSummary(result)}.`,
        );
      }
      if (result.changes > 0 || result.conflicts.length > 0) differs = true;
      results.push({
        file,
        manifest: manifest.name,
        tenant: manifest.tenant,
        target: manifest.target,
        address: aether.address,
        changes: result.changes,
        conflicts: result.conflicts.length,
        actions: "applied" in result && !o.dryRun ? (result.applied as PlannedAction[]) : result.actions,
      });
    }
  } catch (caught) {
    for (const c of clients.values()) c.close();
    const err = inCliWords(caught);
    if (
      verb === "diff" &&
      !(err instanceof ConnectError && [Code.NotFound, Code.Unavailable, Code.Unauthenticated, Code.PermissionDenied].includes(err.code))
    ) {
      process.stderr.write(`aether: ${err instanceof ConnectError ? err.rawMessage : (err as Error).message}\n`);
      process.exit(DIFF_FAILED);
    }
    fail(err);
  }
  for (const c of clients.values()) c.close();
  if (quiet) printOne(o, resultView, results);
  if (verb === "diff") process.exitCode = differs ? 1 : 0;
}

const EXAMPLES: Record<Verb, string> = {
  apply: `
Examples:
  aether apply -f web.manifest.ts              create, update and replace what differs; again: nothing changes
  aether apply -f manifests/                   every .ts, .mts, .js, .mjs and .json file in the folder
  aether apply -f fleet.manifest.ts --aggregator unix:///run/aether/aggregator.sock
  aether apply -f web.manifest.ts --dry-run    what would change (as aether diff, exit 0)
  aether apply -f web.manifest.json -o json`,
  diff: `
Examples:
  aether diff -f web.manifest.ts               + create, * update in place, ~ replace, - delete, ! conflict
  aether diff -f manifests/ && echo "in sync"

Exit codes (as kubectl diff): 0 no differences, 1 differences (or conflicts), 2 usage error or an
invalid manifest, 3 not found, 4 unreachable, 5 refused the caller, 6 the diff could not be made.`,
  delete: `
Examples:
  aether delete -f web.manifest.ts             everything the manifest created (its aether.io/manifest label), nothing else
  aether delete -f manifests/ --dry-run        what would be deleted`,
};

const DESCRIPTIONS: Record<Verb, string> = {
  apply: "make the node (or, for target: cluster, the cluster) match manifests; applying again changes nothing",
  diff: "show what aether apply -f would change; exits 1 when something differs",
  delete: "delete everything manifests created, and nothing else",
};

export function manifestCommands(program: Command): void {
  for (const verb of ["apply", "diff", "delete"] as const) {
    const cmd = program
      .command(verb)
      .description(DESCRIPTIONS[verb])
      .requiredOption(
        "-f, --filename <path>",
        "a manifest (.ts, .mts, .js, .mjs or .json), or a folder of them (repeatable)",
        (v: string, p: string[] = []) => [...p, v],
      )
      .addOption(
        new Option("--engine <engine>", "engine that evaluates TypeScript manifests (aetherscript's; default deno)").choices([
          "deno",
          "node",
        ]),
      )
      .option(
        "--aggregator <address>",
        "aether-aggregator for manifests with target: cluster (default: AETHER_AGGREGATOR, else the node address)",
      );
    outputOptions(cmd);
    if (verb !== "diff") dryRunOption(cmd);
    cmd.addHelpText("after", EXAMPLES[verb]).action((o: ManifestOptions) => run(verb, program, o));
  }
}
