// Issue 23, "The README must be true": walks aether's whole command tree as cli/src/program.ts builds
// it (so a command added later is walked too) and holds every command to what the README promises:
//
// - its --help shows examples, and at least one of them runs that very command;
// - a list or a get takes -o table|wide|json|yaml|name and --json, a list --no-headers, and a list
//   of labelled things -l/--selector;
// - a command that takes --json takes -o too;
// - a usage error (an unknown option, a missing or an extra argument) exits 2 with one line of usage,
//   not the whole --help.
//
// The commands are parsed in this process (no aetherd is needed): process.exit is caught, and a
// preAction hook stops a command line that parsed before its action would connect anywhere. One
// run of the real binary checks that the exit code seen here is the one a shell sees.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Argument, Command, Option } from "commander";
import { buildProgram } from "../cli/src/program.ts";
import { runCommand } from "./helpers/run.js";

/** Lists of things without labels, where a selector would have nothing to select on. */
const UNLABELLED_LISTS = new Set([
  "aether alerts list", // alerts: node, metric, severity; no labels
  "aether alerts thresholds list", // the thresholds: fixed names
  "aether backup list", // git commits
  "aether pki list", // certificates: the identity is the SPIFFE ID
  "aether health", // the checks of one answer
  "aether config get-contexts", // the client config's contexts
  "aether audit", // audit records: who did what
  "aether vm snapshot list", // a VM's snapshots: a name per snapshot of all its disks
  "aether storage replication list", // replication policies: one per volume, no labels
  "aether storage replication replicas", // replicas: by volume and target
  "aether rollout list", // rollouts: by deployment (--deployment), no labels of their own
  "aether traffic list", // a node's service endpoints: by name, no labels
]);

class Exited extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
class ReachedAction extends Error {}

function* walk(cmd: Command, path: string[] = []): Generator<{ cmd: Command; path: string[] }> {
  const here = [...path, cmd.name()];
  yield { cmd, path: here };
  for (const sub of cmd.commands) yield* walk(sub, here);
}

/** Every command of a fresh tree (groups and leaves), by its path as typed: "aether vm list". */
function commands(): Array<{ cmd: Command; path: string[]; key: string }> {
  return [...walk(buildProgram())].map((c) => ({ ...c, key: c.path.join(" ") }));
}

const long = (cmd: Command, flag: string): Option | undefined => cmd.options.find((o) => o.long === flag);

/** A value an argument or option parser accepts (choices first, then a few shapes). */
function sample(parser: { argChoices?: string[]; parseArg?: (value: string, previous: unknown) => unknown }): string {
  if (parser.argChoices?.length) return parser.argChoices[0] as string;
  for (const candidate of ["x", "1", "1G", "on", "a=b", "2030-01-01T00:00:00Z"]) {
    try {
      parser.parseArg?.(candidate, undefined);
      return candidate;
    } catch {
      // not this shape
    }
  }
  return "x";
}

/** The words that make a valid call of a leaf: its path, its required arguments and mandatory options. */
function validCall(cmd: Command, path: string[]): string[] {
  const args = cmd.registeredArguments.filter((a: Argument) => a.required).map((a) => sample(a));
  const options = cmd.options.filter((o) => o.mandatory).flatMap((o) => [o.long ?? o.short ?? "", sample(o)]);
  return [...path.slice(1), ...args, ...options];
}

interface Outcome {
  code: number | "action";
  stdout: string;
  stderr: string;
}

/** Parses words with a fresh tree in this process: the exit code it would exit with, or "action". */
async function parse(words: string[]): Promise<Outcome> {
  const program = buildProgram();
  program.hook("preAction", () => {
    throw new ReachedAction();
  });
  let stdout = "";
  let stderr = "";
  const write = { out: process.stdout.write, err: process.stderr.write, exit: process.exit };
  process.stdout.write = ((s: string) => ((stdout += s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => ((stderr += s), true)) as typeof process.stderr.write;
  process.exit = ((code?: number) => {
    throw new Exited(code ?? 0);
  }) as typeof process.exit;
  try {
    await program.parseAsync(["node", "aether", ...words]);
    return { code: "action", stdout, stderr };
  } catch (err) {
    if (err instanceof ReachedAction) return { code: "action", stdout, stderr };
    if (err instanceof Exited) return { code: err.code, stdout, stderr };
    throw err;
  } finally {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
    process.exit = write.exit;
  }
}

/** The help of one command as --help prints it (with the text added after the options). */
function helpOf(cmd: Command): string {
  let text = "";
  cmd.configureOutput({ writeOut: (s) => (text += s) });
  cmd.outputHelp();
  return text;
}

/** Whether an example line runs the command at `path` (its words in order, names or aliases). */
function runs(line: string, path: string[]): boolean {
  const at = line.indexOf("aether ");
  if (at < 0) return false;
  const words = line.slice(at).split(/\s+/);
  let i = 0;
  for (const word of words.slice(1)) if (i < path.length && word === path[i]) i++;
  return i === path.length;
}

function examplesRun(cmd: Command, path: string[]): boolean {
  const help = helpOf(cmd);
  const at = help.indexOf("Examples:");
  if (at < 0) return false;
  const lines = help.slice(at).split("\n").slice(1);
  // The command's own words, or an alias in its place; a default subcommand may be left out.
  const paths = [path.slice(1)];
  for (const alias of cmd.aliases()) paths.push([...path.slice(1, -1), alias]);
  const parent = cmd.parent as (Command & { _defaultCommandName?: string }) | null;
  if (parent?._defaultCommandName === cmd.name()) paths.push(path.slice(1, -1));
  return lines.some((line) => paths.some((p) => runs(line, p)));
}

const isList = (cmd: Command) => cmd.name() === "list" || cmd.aliases().includes("ls") || long(cmd, "--no-headers") !== undefined;
const isGet = (cmd: Command) => cmd.name() === "get";

describe("aether's command tree keeps the README's promises", () => {
  const all = commands();
  const leaves = all.filter((c) => c.cmd.commands.length === 0);

  // Parsing in this process leaves commander's and the hooks' state alone between runs (a fresh
  // tree each time), but AETHER_* variables could make a context resolve differently: none are used.
  const saved = { ...process.env };
  before(() => {
    for (const k of Object.keys(process.env)) if (k.startsWith("AETHER_")) delete process.env[k];
  });
  after(() => {
    Object.assign(process.env, saved);
  });

  it("finds every command, those of every file", () => {
    const keys = new Set(all.map((c) => c.key));
    for (const k of [
      "aether vm list",
      "aether exec get",
      "aether cluster nodes",
      "aether storage snapshots",
      "aether fence off",
      "aether pki list",
    ])
      assert.ok(keys.has(k), `${k} is in the tree`);
    assert.ok(leaves.length >= 80, `${leaves.length} commands`);
  });

  it("every command's --help shows examples, one of them running that command", () => {
    const missing = all.filter((c) => !examplesRun(c.cmd, c.path)).map((c) => c.key);
    assert.deepEqual(missing, [], `commands whose --help has no example of themselves:\n  ${missing.join("\n  ")}`);
  });

  it("every list and get takes -o table|wide|json|yaml|name and --json; lists take --no-headers and, for labelled things, -l", () => {
    const wrong: string[] = [];
    for (const { cmd, key } of leaves) {
      if (!isList(cmd) && !isGet(cmd)) continue;
      const output = long(cmd, "--output");
      if (output?.short !== "-o") wrong.push(`${key}: no -o, --output`);
      for (const format of ["table", "wide", "json", "yaml", "name"])
        if (!output?.argChoices?.includes(format)) wrong.push(`${key}: -o does not offer ${format}`);
      if (!long(cmd, "--json")) wrong.push(`${key}: no --json`);
      if (isList(cmd) && !long(cmd, "--no-headers")) wrong.push(`${key}: no --no-headers`);
      if (isList(cmd) && !UNLABELLED_LISTS.has(key) && long(cmd, "--selector")?.short !== "-l") wrong.push(`${key}: no -l, --selector`);
    }
    assert.deepEqual(wrong, [], `use outputOptions() and selectorOptions() (cli/src/output.ts, selectors.ts):\n  ${wrong.join("\n  ")}`);
  });

  it("every command that takes --json takes -o json too, and both parse", async () => {
    const wrong: string[] = [];
    for (const { cmd, path, key } of leaves) {
      if (!long(cmd, "--json") && !long(cmd, "--output")) continue;
      if (!long(cmd, "--json") || !long(cmd, "--output")) {
        wrong.push(`${key}: ${long(cmd, "--json") ? "--json without -o" : "-o without --json"}`);
        continue;
      }
      for (const flags of [["-o", "json"], ["--json"], ["-o", "yaml"]]) {
        const r = await parse([...validCall(cmd, path), ...flags]);
        if (r.code !== "action") wrong.push(`${key} ${flags.join(" ")}: exit ${r.code}: ${r.stderr.trim()}`);
      }
    }
    assert.deepEqual(wrong, [], wrong.join("\n"));
  });

  it("a usage error exits 2 with one line of usage, never the whole --help: unknown options, missing and extra arguments", async () => {
    const wrong: string[] = [];
    const check = async (key: string, words: string[], what: string) => {
      const r = await parse(words);
      if (r.code !== 2) wrong.push(`${key} (${what}): exit ${r.code}, not 2 ${r.stderr.trim()}`);
      else if (!/^usage: aether /m.test(r.stderr) || r.stderr.includes("Options:") || r.stdout.includes("Options:"))
        wrong.push(`${key} (${what}): not one line of usage:\n${r.stderr}`);
    };
    for (const { cmd, path, key } of leaves) {
      const valid = validCall(cmd, path);
      // The valid call itself must parse, or the probes below would prove nothing.
      const ok = await parse(valid);
      if (ok.code !== "action") {
        wrong.push(`${key}: the call ${valid.join(" ")} did not parse: ${ok.stderr.trim()}`);
        continue;
      }
      // Right after the command's words: after them, a program's argv (exec start) takes it literally.
      await check(key, [...path.slice(1), "--no-such-option-anywhere", ...valid.slice(path.length - 1)], "unknown option");
      const required = cmd.registeredArguments.filter((a) => a.required).length;
      if (required > 0) await check(key, path.slice(1), "missing argument");
      const variadic = cmd.registeredArguments.some((a) => a.variadic);
      if (!variadic) {
        // An extra operand: after the valid call's arguments, before its options.
        const extra = [...path.slice(1), ...cmd.registeredArguments.map((a) => sample(a)), "extra-operand"];
        await check(key, [...extra, ...valid.slice(path.length - 1 + required)], "extra argument");
      }
    }
    assert.deepEqual(wrong, [], wrong.join("\n"));
  });

  it("the real binary exits 2 on a usage error too", async () => {
    const r = await runCommand("aether", ["vm", "list", "--no-such-option-anywhere"], { env: { AETHER_HOST: "unix:///nonexistent.sock" } });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 3, r.stderr);
    const selector = await runCommand("aether", ["exec", "list", "-l", "=x"], { env: { AETHER_HOST: "unix:///nonexistent.sock" } });
    assert.equal(selector.code, 2, selector.stderr);
    assert.match(selector.stderr, /does not name a label key/);
  });
});
