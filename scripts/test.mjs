#!/usr/bin/env node
// npm test: the contract and the code first (codegen drift, buf lint, type check and build), then
// every test file through node's test runner, and last a check that the tests left nothing behind
// (scripts/leftovers.mjs). aetherd in the tests is the compiled one users run.
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { MARKER, preexisting, settledLeftovers, snapshot } from "./leftovers.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const step = (title, file, args) => {
  console.log(`\n== ${title}`);
  execFileSync(file, args, { cwd: root, stdio: "inherit" });
};

step("generated code matches proto/", process.execPath, [join(root, "scripts", "gen.mjs"), "--check"]);
step("buf lint", bin("buf"), ["lint"]);
step("code is formatted (npm run format)", bin("prettier"), ["--check", "--log-level", "warn", "."]);
step("type check and build", bin("tsc"), ["-b"]);
step("web console type checks and builds (npm run build -w @aether/ui)", bin("tsc"), ["-p", "ui"]);
execFileSync(process.execPath, [join(root, "ui", "build.mjs")], { cwd: root, stdio: "inherit" });
step("type check tests, bench and examples", bin("tsc"), ["-p", "tsconfig.test.json"]);
step("SDK reference builds with every symbol documented (npm run docs)", bin("typedoc"), ["--logLevel", "Warn"]);

function findTests(dir, out = []) {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name === "dist" || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) findTests(path, out);
    else if (name.endsWith(".test.ts")) out.push(relative(root, path));
  }
  return out;
}
const only = process.argv.slice(2);
const files =
  only.length > 0 ? only : ["sdk", "server", "fence", "daemon", "aggregator", "test"].flatMap((d) => findTests(join(root, d))).sort();
console.log(`\n== node --test (${files.length} files)`);
// Every process the tests start inherits this run's marker, so the last step can tell ours apart.
const runId = randomBytes(6).toString("hex");
const before = snapshot();
const result = spawnSync(process.execPath, ["--conditions=source", "--import", "tsx", "--test", ...files], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, [MARKER]: runId },
});

console.log("\n== the tests left nothing behind (processes, TAPs and bridges, mounts, pools, cgroups)");
const left = await settledLeftovers(before, runId);
const earlier = preexisting(before);
if (earlier.length > 0)
  console.log(`(not counted, there before this run: ${earlier.join(", ")}; \`node scripts/leftovers.mjs\` lists them)`);
if (left.length > 0) console.error(`the tests left this behind:\n${left.join("\n")}`);
else console.log("nothing left");
process.exit(left.length > 0 ? 1 : (result.status ?? 1));
