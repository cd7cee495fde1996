// The package arrows and the absence of import cycles, checked on the source so that neither can
// erode one convenient import at a time. Which workspace may import which:
//
//   sdk         nothing of Aether (clients of every kind build on it)
//   server      the SDK at most: what aetherd and aether-aggregator serve with, no program package
//   fence       the SDK at most: the Redfish client and BMC profiles, no program package
//   daemon      sdk, server, fence (never the aggregator, the CLI or aetherscript)
//   aggregator  sdk, server, fence (never daemon code)
//   cli         sdk, ui (aether ui serves the web console's built files)
//   runtime     sdk (aetherscript)
//   ui          sdk (the web console runs the SDK's generated clients in the browser)
//
// An import counts whether it names the package (@aether/daemon, @aether/daemon/x) or reaches into
// its folder by a relative path (../../daemon/src/x.js); type-only and dynamic imports count too.
// A package also declares in its package.json each workspace it imports, and no other.
// Cycles are found by madge over every package's sources (tests and generated code aside).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const ALLOWED: Record<string, string[]> = {
  sdk: [],
  server: ["sdk"],
  fence: ["sdk"],
  daemon: ["sdk", "server", "fence"],
  aggregator: ["sdk", "server", "fence"],
  cli: ["sdk", "ui"],
  runtime: ["sdk"],
  ui: ["sdk"],
};

const workspaces = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { workspaces: string[] }).workspaces;
const packageJson = (dir: string) =>
  JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8")) as { name: string; dependencies?: Record<string, string> };
/** "@aether/daemon" -> "daemon" (the workspace folder). */
const folderOf = new Map(workspaces.map((dir) => [packageJson(dir).name, dir]));

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name === "dist" || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) sourceFiles(path, out);
    else if (/\.(ts|mts|mjs|js)$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

/** The workspaces a file imports, each with the specifier that reaches it. */
function workspaceImports(file: string): Array<{ workspace: string; specifier: string }> {
  const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
  const found: Array<{ workspace: string; specifier: string }> = [];
  for (const { fileName: specifier } of info.importedFiles) {
    let workspace: string | undefined;
    if (specifier.startsWith(".")) {
      const target = relative(root, resolve(dirname(file), specifier));
      workspace = workspaces.find((dir) => target === dir || target.startsWith(dir + sep));
    } else {
      const name = /^(@aether\/[^/]+)/.exec(specifier)?.[1];
      if (name !== undefined) workspace = folderOf.get(name) ?? name;
    }
    if (workspace !== undefined) found.push({ workspace, specifier });
  }
  return found;
}

describe("architecture", () => {
  it("every workspace has its arrows written down here", () => {
    assert.deepEqual([...workspaces].sort(), Object.keys(ALLOWED).sort());
  });

  for (const dir of workspaces) {
    it(`${dir} imports ${ALLOWED[dir]?.length ? `only ${ALLOWED[dir]?.join(", ")}` : "no other workspace"}`, () => {
      const allowed = new Set([dir, ...(ALLOWED[dir] ?? [])]);
      const wrong: string[] = [];
      const used = new Set<string>();
      const files = ["src", "bin"]
        .filter((d) => statSync(join(root, dir, d), { throwIfNoEntry: false })?.isDirectory())
        .flatMap((d) => sourceFiles(join(root, dir, d)));
      assert.ok(files.length > 0, `no sources found under ${dir}`);
      for (const file of files) {
        for (const { workspace, specifier } of workspaceImports(file)) {
          if (workspace !== dir) used.add(workspace);
          if (!allowed.has(workspace)) wrong.push(`${relative(root, file)} imports ${JSON.stringify(specifier)} (${workspace})`);
        }
      }
      assert.deepEqual(wrong, [], `${dir} may import only ${[...allowed].join(", ")}`);
      // What it imports by name is declared, and it declares no workspace it may not import.
      const declared = Object.keys(packageJson(dir).dependencies ?? {})
        .map((name) => folderOf.get(name))
        .filter((w): w is string => w !== undefined);
      for (const w of declared) assert.ok(allowed.has(w), `${dir}/package.json depends on ${w}, which ${dir} may not import`);
      for (const w of used)
        assert.ok(declared.includes(w), `${dir} imports ${w} but its package.json does not list @aether/${w} in dependencies`);
    });
  }

  it("no import cycles (madge --circular)", () => {
    const dirs = workspaces.map((dir) => join(dir, "src"));
    const out = execFileSync(
      process.execPath,
      [
        join(root, "node_modules", "madge", "bin", "cli.js"),
        "--circular",
        "--json",
        "--no-spinner",
        "--extensions",
        "ts",
        "--ts-config",
        "tsconfig.base.json",
        "--exclude",
        "/gen/|node_modules|/dist/|\\.test\\.ts$",
        ...dirs,
      ],
      { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    const cycles = JSON.parse(out) as string[][];
    assert.deepEqual(
      cycles.map((c) => c.join(" -> ")),
      [],
      "import cycles: break each by moving what both sides need into a module of its own",
    );
  });
});
