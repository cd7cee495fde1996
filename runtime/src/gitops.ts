// `aetherscript apply --watch DIR`: GitOps from a git checkout. Every interval it (optionally) pulls
// the checkout, and when the commit or the files under DIR changed since the last applied state, it
// evaluates the manifests of DIR, applies each (deleting what a manifest removed from DIR had
// created) and reports the commit that state came from. git is the git CLI, run in the checkout.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import {
  applyManifest,
  connect,
  deleteManifest,
  describeAction,
  describePlacement,
  describePlanSummary,
  type AetherClient,
  type Manifest,
  type PlannedAction,
} from "@aether/sdk";
import type { Permissions } from "./engines/engine.js";
import { checkDistinct, evaluateManifests, manifestFiles } from "./evaluate.js";

const run = promisify(execFile);

export interface WatchOptions {
  /** The folder of manifests, inside a git checkout. */
  dir: string;
  /** How often to look for a change (and pull). */
  intervalMs: number;
  /** Run `git pull --ff-only` in the checkout before each look. */
  pull: boolean;
  /** Apply again this often even when nothing changed, to undo drift; 0: only on a change. */
  resyncMs: number;
  /** One JSON object per line for each applied (or failed) state, instead of text. */
  json: boolean;
  engine: "deno" | "node";
  permissions: Permissions;
  /** Where cluster manifests go; undefined: the same place as node manifests (AETHER_HOST). */
  aggregator?: string;
}

/** The state of the checkout a round applies. */
interface CheckoutState {
  commit: string;
  subject: string;
  /** Whether DIR has changes not committed (they are applied too, and the report says so). */
  dirty: boolean;
  /** A digest of every file under DIR: a change to a manifest or to code it imports. */
  digest: string;
}

async function git(dir: string, ...args: string[]): Promise<string> {
  try {
    return (await run("git", ["-C", dir, ...args], { maxBuffer: 16 * 2 ** 20 })).stdout.trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string; code?: string };
    if (e.code === "ENOENT") throw new Error("git is not installed: aetherscript apply --watch runs the git CLI in the checkout");
    throw new Error(`git ${args.join(" ")} in ${dir}: ${(e.stderr ?? e.message).trim()}`);
  }
}

function digestOf(dir: string): string {
  const hash = createHash("sha256");
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      if (name === ".git" || name === "node_modules") continue;
      const path = join(d, name);
      const stat = statSync(path);
      if (stat.isDirectory()) walk(path);
      else if (stat.isFile()) hash.update(`${relative(dir, path)}\0${stat.size}\0`).update(readFileSync(path));
    }
  };
  walk(dir);
  return hash.digest("hex");
}

async function checkoutState(dir: string): Promise<CheckoutState> {
  const [commit, subject, status] = await Promise.all([
    git(dir, "rev-parse", "HEAD"),
    git(dir, "log", "-1", "--format=%s"),
    git(dir, "status", "--porcelain", "--", "."),
  ]);
  return { commit, subject, dirty: status !== "", digest: digestOf(dir) };
}

const keyOf = (m: Manifest) => `${m.target}/${m.tenant}/${m.name}`;
const step = (a: PlannedAction) => ({
  kind: a.kind,
  resource: a.resource,
  name: a.name,
  reason: a.reason,
  ...(a.placed && { placed: a.placed }),
});

/** Applies (or, for manifests gone from DIR, deletes) each manifest; returns the report of the round. */
async function applyRound(
  options: WatchOptions,
  manifests: Array<{ file: string; manifest: Manifest }>,
  gone: Manifest[],
  say: (line: string) => void,
): Promise<object[]> {
  const clients = new Map<string, AetherClient>();
  const clientFor = async (m: Manifest) => {
    const address = m.target === "cluster" ? options.aggregator : undefined;
    const key = address ?? "";
    if (!clients.has(key)) clients.set(key, await connect(address === undefined ? {} : { address }));
    return clients.get(key) as AetherClient;
  };
  const report: object[] = [];
  try {
    const hooks = {
      onStep: (a: PlannedAction) => say(describeAction(a)),
      onApplied: (a: PlannedAction) => {
        const placed = describePlacement(a);
        if (placed) say(placed);
      },
    };
    for (const { file, manifest } of manifests) {
      const aether = await clientFor(manifest);
      say(`  manifest ${manifest.name} (tenant ${manifest.tenant}) from ${relative(options.dir, file)} on ${aether.address}:`);
      const result = await applyManifest(aether, manifest, hooks);
      say(`  ${result.changes === 0 ? "unchanged" : `applied: ${describePlanSummary(result)}`}.`);
      report.push({
        file,
        manifest: manifest.name,
        tenant: manifest.tenant,
        target: manifest.target,
        changes: result.changes,
        applied: result.applied.map(step),
      });
    }
    for (const manifest of gone) {
      const aether = await clientFor(manifest);
      say(
        `  manifest ${manifest.name} (tenant ${manifest.tenant}) is no longer in ${options.dir}: deleting what it created on ${aether.address}:`,
      );
      const result = await deleteManifest(aether, manifest, hooks);
      report.push({
        deleted: true,
        manifest: manifest.name,
        tenant: manifest.tenant,
        target: manifest.target,
        changes: result.changes,
        applied: result.applied.map(step),
      });
    }
  } finally {
    for (const c of clients.values()) c.close();
  }
  return report;
}

/** Runs until SIGINT or SIGTERM; a failed round is reported and tried again at the next change or resync (at least a minute later). */
export async function watchAndApply(options: WatchOptions): Promise<void> {
  await git(options.dir, "rev-parse", "--show-toplevel").catch((err: Error) => {
    throw new Error(
      `${options.dir} is not in a git checkout (${err.message.replace(/^git [^:]*: /, "")}); --watch applies the manifests of a git checkout and reports their commit`,
    );
  });
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const text = (line: string) => options.json || console.log(line);
  let appliedKey = "";
  let lastRound = 0;
  let failedKey = "";
  let previous = new Map<string, Manifest>();
  text(`watching ${options.dir} (every ${options.intervalMs / 1000} s${options.pull ? ", pulling first" : ""}); Ctrl-C stops`);
  while (!stopped) {
    const now = Date.now();
    try {
      if (options.pull) await git(options.dir, "pull", "--ff-only", "--quiet");
      const state = await checkoutState(options.dir);
      const key = `${state.commit}/${state.digest}`;
      const resync = options.resyncMs > 0 && now - lastRound >= options.resyncMs;
      const retry = key === failedKey && now - lastRound >= Math.max(options.resyncMs, 60_000);
      if ((key !== appliedKey && key !== failedKey) || resync || retry) {
        lastRound = now;
        const where = `commit ${state.commit.slice(0, 12)} (${state.subject})${state.dirty ? " with uncommitted changes" : ""}`;
        text(`${new Date(now).toISOString()} applying ${where}`);
        try {
          const manifests = await evaluateManifests(manifestFiles(options.dir), options.engine, options.permissions);
          checkDistinct(manifests);
          const current = new Map(manifests.map(({ manifest }) => [keyOf(manifest), manifest]));
          const gone = [...previous].filter(([k]) => !current.has(k)).map(([, m]) => m);
          const report = await applyRound(options, manifests, gone, text);
          const changes = report.reduce((n, r) => n + (r as { changes: number }).changes, 0);
          text(`applied ${where}: ${manifests.length} manifest(s), ${changes} change(s)`);
          if (options.json)
            console.log(
              JSON.stringify({
                time: new Date(now).toISOString(),
                status: "applied",
                commit: state.commit,
                subject: state.subject,
                dirty: state.dirty,
                changes,
                manifests: report,
              }),
            );
          appliedKey = key;
          failedKey = "";
          previous = current;
        } catch (err) {
          failedKey = key;
          const message = (err as { rawMessage?: string }).rawMessage ?? (err as Error).message;
          process.stderr.write(`aetherscript: ${where} was not applied: ${message}\n`);
          if (options.json)
            console.log(
              JSON.stringify({
                time: new Date(now).toISOString(),
                status: "failed",
                commit: state.commit,
                subject: state.subject,
                dirty: state.dirty,
                error: message,
              }),
            );
        }
      }
    } catch (err) {
      process.stderr.write(`aetherscript: ${(err as Error).message}\n`);
    }
    if (stopped) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, options.intervalMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
