// Evaluating manifests without applying them: which files of a path are manifests, and what each
// declares, by running the scripts under the chosen engine (the manifest driver's `export` mode,
// with the same least privilege as `aetherscript plan`). `.json` files are manifests as data and
// need no engine. Used by `aetherscript export` (what `aether apply -f` reads) and by
// `aetherscript apply --watch`.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { defineManifest, isManifestFileName, ManifestError, type Manifest } from "@aether/sdk";
import { denoCommand } from "./engines/deno.js";
import type { EngineCommand, Permissions } from "./engines/engine.js";
import { nodeCommand } from "./engines/node.js";
import { distDir } from "./locate.js";

/** A manifest and the file it came from. */
export interface EvaluatedManifest {
  file: string;
  manifest: Manifest;
}

/** Raised when a path holds no manifest, or a manifest cannot be evaluated; the message says which and why. */
export class EvaluationError extends Error {
  override name = "EvaluationError";
}

/**
 * The manifest files of a path: the file itself, or every .ts, .mts, .js, .mjs and .json file
 * directly in a folder (not in its subfolders, where shared code may live), sorted by name.
 */
export function manifestFiles(path: string): string[] {
  const full = resolve(path);
  let stat;
  try {
    stat = statSync(full);
  } catch {
    throw new EvaluationError(`${path}: no such file or folder`);
  }
  if (!stat.isDirectory()) return [full];
  const files = readdirSync(full)
    .filter((n) => isManifestFileName(n) && statSync(join(full, n)).isFile())
    .sort()
    .map((n) => join(full, n));
  if (files.length === 0) throw new EvaluationError(`${path} holds no manifest (.ts, .mts, .js, .mjs or .json files)`);
  return files;
}

/** A JSON manifest: the object defineManifest takes. */
function jsonManifest(file: string): Manifest {
  let input: unknown;
  try {
    input = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new EvaluationError(`${file}: not valid JSON: ${(err as Error).message}`);
  }
  try {
    return defineManifest(input as Parameters<typeof defineManifest>[0]);
  } catch (err) {
    if (err instanceof ManifestError) throw new EvaluationError(`${file}: ${err.message}`);
    throw err;
  }
}

/** Runs the engine and collects its output; rejects with its stderr when it fails. */
function capture(cmd: EngineCommand): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd.file, cmd.args, { env: cmd.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (err) => reject(new EvaluationError(`cannot start the ${cmd.file} engine: ${err.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolvePromise(stdout);
      else reject(new EvaluationError(stderr.trim().replace(/^aetherscript: /, "") || `the engine exited with ${code}`));
    });
  });
}

/**
 * Evaluates the manifests of these files (see {@link manifestFiles}) in one run of the engine.
 * Every script must export a manifest; the first that does not, or that fails, is the error.
 */
export async function evaluateManifests(files: string[], engine: "deno" | "node", permissions: Permissions): Promise<EvaluatedManifest[]> {
  const scripts = files.filter((f) => extname(f) !== ".json");
  const evaluated = new Map<string, Manifest>();
  if (scripts.length > 0) {
    const req = {
      script: resolve(distDir, "manifest-driver.js"),
      args: ["export", ...scripts],
      permissions: { ...permissions, read: [...permissions.read, ...scripts, ...scripts.map((s) => dirname(s))] },
    };
    const out = await capture(engine === "deno" ? denoCommand(req) : nodeCommand(req));
    const lines = out.trim().split("\n");
    for (const { file, manifest } of JSON.parse(lines[lines.length - 1] ?? "[]") as EvaluatedManifest[]) evaluated.set(file, manifest);
  }
  return files.map((file) => ({ file, manifest: evaluated.get(file) ?? jsonManifest(file) }));
}

/**
 * Refuses two files declaring the same manifest (name, tenant and target): each would delete what
 * the other creates.
 */
export function checkDistinct(manifests: EvaluatedManifest[]): void {
  const seen = new Map<string, string>();
  for (const { file, manifest: m } of manifests) {
    const key = `${m.target}/${m.tenant}/${m.name}`;
    const other = seen.get(key);
    if (other !== undefined)
      throw new EvaluationError(
        `${file} and ${other} both declare manifest ${m.name} (tenant ${m.tenant}, target ${m.target}); each would delete what the other creates: rename one`,
      );
    seen.set(key, file);
  }
}
