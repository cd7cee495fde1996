#!/usr/bin/env node
// aetherd's entry point: runs the compiled daemon (npm run build). Compiled, not through a
// TypeScript loader, because every process aetherd starts is forked from it and fork costs grow
// with the parent's memory.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";

// V8's young generation stays at its first size (1 MiB semi-spaces) instead of doubling up to 16 MiB
// while aetherd starts: start-up allocates a lot that lives (modules, records), V8 grows the young
// generation for it, and an idle aetherd then kept some 10 MiB of it resident until V8's memory
// reducer ran, tens of seconds later (issue 18). aetherd's calls are small, so a small young
// generation costs them little (bench: npm run bench -- --only runtime,cells,memory).
// Set here, at the entry point, because this is the one place every way of starting aetherd goes
// through (the bin, npm run aetherd, the tests); V8 reads this flag each time it would grow the young
// generation, so setting it this early has the effect of --max-semi-space-size=1 on the command line.
setFlagsFromString("--semi-space-growth-factor=1");

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write("aetherd is not built: run `npm run build` in the Aether repository first.\n");
  process.exit(2);
}
await import(main.href);
