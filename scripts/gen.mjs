#!/usr/bin/env node
// Generates the SDK's TypeScript from proto/ with buf + protoc-gen-es into sdk/src/gen.
// `--check` generates into a temporary folder instead and fails when the committed code differs,
// so nobody can change a .proto without committing the code that comes from it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(root, "node_modules", ".bin");
const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
const committed = join(root, "sdk", "src", "gen");

function generate(outDir) {
  execFileSync(join(bin, "buf"), ["generate", "--clean", "-o", outDir], { cwd: root, env, stdio: "inherit" });
}

function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

if (process.argv.includes("--check")) {
  const tmp = mkdtempSync(join(tmpdir(), "aether-gen-"));
  try {
    generate(tmp);
    const fresh = join(tmp, "sdk", "src", "gen");
    const a = listFiles(fresh);
    const b = listFiles(committed);
    const drift = [...new Set([...a, ...b])].filter(
      (f) => !a.includes(f) || !b.includes(f) || !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f))),
    );
    if (drift.length > 0) {
      console.error(`Generated code in sdk/src/gen drifted from proto/ (${drift.join(", ")}). Run \`npm run gen\` and commit.`);
      process.exit(1);
    }
    console.log(`sdk/src/gen matches proto/ (${a.length} files).`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  generate(".");
}
