// Changing things with care (issue 23, item 14): --dry-run on mutations, and delete by name, by
// selector (-l) or --all with a confirmation.
//
// No aetherd RPC has a validate-only mode (only the aggregator's RestoreBackup has dry_run, which
// `aether backup restore --dry-run` uses), so a dry run is done here: the command line is checked as
// for real, the objects it names are looked up (a name that does not exist fails as it would), the
// refusals the CLI can foresee are said, and nothing that changes anything is sent.
//
// A delete of many (-l, --all) lists what it selected and asks on a terminal; with stdin not a
// terminal it needs --yes, and without it exits 2 saying so, before deleting anything.
import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { EXIT } from "./exit-codes.js";
import { Code, ConnectError } from "@aether/sdk/client";
import { cliWords } from "./api-words.js";
import { selectorOf, selectorOptions, selects, type Selector, type SelectorFlags } from "./selectors.js";
import { shortId } from "./output.js";

export interface DryRunFlags {
  dryRun?: boolean;
}

/** Adds --dry-run to a mutation. */
export function dryRunOption(cmd: Command): Command {
  return cmd.option("--dry-run", "check the command and look up what it names, say what would happen, and change nothing");
}

/** A dry run's sentence, on stdout: "would delete vm web (1a2b3c4d)". */
export function sayWould(sentence: string): void {
  process.stdout.write(`would ${sentence}\n`);
}

export interface DeleteFlags extends SelectorFlags, DryRunFlags {
  all?: boolean;
  yes?: boolean;
}

/**
 * Adds --all, -l/--selector (--filter), --yes and --dry-run to a delete whose operands are
 * optional and variadic, and checks how they are combined before the action connects anywhere.
 */
export function deleteManyOptions(cmd: Command, kind: string): Command {
  selectorOptions(cmd);
  dryRunOption(
    cmd
      .option("--all", `every ${kind} (in the tenant, with --tenant)`)
      .option("-y, --yes", "do not ask for confirmation (needed when stdin is not a terminal)"),
  );
  return cmd.hook("preAction", (_cmd, action) => {
    const o = action.opts<DeleteFlags>();
    const refs = (action.processedArgs[0] as string[] | undefined) ?? [];
    const selector = selectorOf(o);
    const selecting = o.all === true || selector !== undefined;
    if (refs.length === 0 && !selecting) action.error(`error: name the ${kind}s to delete, or select them with -l/--selector or --all`);
    if (refs.length > 0 && selecting) action.error(`error: give ${kind} names or -l/--all, not both`);
    if (o.all === true && selector !== undefined) action.error("error: give -l/--selector or --all, not both");
    if (selecting && o.yes !== true && o.dryRun !== true && !process.stdin.isTTY)
      action.error(
        `error: refusing to delete ${kind}s ${selector ? `selected by -l ${selector.text}` : "(--all)"} without confirmation: stdin is not a terminal to ask on, so add --yes (see what would go with --dry-run)`,
      );
  });
}

/** One object a delete would act on. */
export interface Target {
  name: string;
  id: string;
  /** A refusal aetherd would answer with, foreseen here ("web is running: add --force"). */
  refusal?: string;
  /** What else the delete does, said after the name in a dry run ("and release its 3 instances"). */
  detail?: string;
}

export interface DeleteMany<T> {
  /** "VM", "volume"... */
  kind: string;
  /** Everything of this kind in scope (the server's filter applied where the request has one). */
  list: (selector: Selector | undefined) => Promise<T[]>;
  labels: (item: T) => Readonly<Record<string, string>>;
  target: (item: T) => Target;
  /** Looks one up by what was typed (a name or an id prefix), for --dry-run. */
  get: (ref: string) => Promise<T>;
  remove: (ref: string) => Promise<void>;
  /** remove says itself what it did (e.g. "is being deleted" vs "deleted" with --wait). */
  removeSays?: boolean;
}

const plural = (n: number, kind: string) => `${n} ${kind}${n === 1 ? "" : "s"}`;

const sayWouldDelete = (kind: string, t: Target) =>
  sayWould(
    `delete ${kind} ${t.name} (${shortId(t.id)})${t.detail ? ` ${t.detail}` : ""}${t.refusal ? `, but aetherd would refuse: ${t.refusal}` : ""}`,
  );

/** Asks on the terminal; true only for y or yes. */
async function ask(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^(y|yes)$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

/**
 * Deletes what the command line names: operands, or what -l/--all selects (listed, confirmed on
 * the terminal unless --yes). deleteManyOptions checked the command line. Failures of single
 * deletes are reported and make the exit code 1.
 */
export async function deleteMany<T>(refs: string[], o: DeleteFlags, how: DeleteMany<T>): Promise<void> {
  const selector = selectorOf(o);
  const selecting = o.all === true || selector !== undefined;

  if (!selecting) {
    for (const ref of refs) {
      if (o.dryRun) sayWouldDelete(how.kind, how.target(await how.get(ref)));
      else await how.remove(ref);
    }
    return;
  }

  const chosen = (await how.list(selector)).filter((item) => selects(selector, how.labels(item))).map(how.target);
  const what = selector ? `selected by -l ${selector.text}` : "(--all)";
  if (chosen.length === 0) {
    process.stderr.write(`aether: no ${how.kind} ${selector ? `matches -l ${selector.text}` : "to delete"}; nothing deleted\n`);
    return;
  }
  if (o.dryRun) {
    for (const t of chosen) sayWouldDelete(how.kind, t);
    return;
  }
  const names = chosen.map((t) => t.name).join(", ");
  if (o.yes !== true) {
    // (stdin is a terminal: deleteManyOptions refused the command line otherwise)
    if (!(await ask(`delete ${plural(chosen.length, how.kind)} ${what}: ${names}? [y/N] `))) {
      process.stderr.write("aether: nothing deleted\n");
      return;
    }
  }
  let failed = 0;
  for (const t of chosen) {
    try {
      await how.remove(t.id);
      if (how.removeSays !== true) process.stdout.write(`deleted ${how.kind} ${t.name}\n`);
    } catch (err) {
      failed++;
      process.stderr.write(`aether: ${t.name}: ${err instanceof ConnectError ? cliWords(err.rawMessage) : (err as Error).message}\n`);
    }
  }
  if (failed > 0) {
    process.stderr.write(`aether: ${failed} of ${plural(chosen.length, how.kind)} not deleted\n`);
    process.exitCode = EXIT.failed;
  }
}

/** For a dry run's checks: whether a lookup finds its object (NOT_FOUND: false; other errors are thrown). */
export async function exists(lookup: () => Promise<unknown>): Promise<boolean> {
  try {
    await lookup();
    return true;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return false;
    throw err;
  }
}
