#!/usr/bin/env node
// aetherd's entry point: runs the compiled daemon (npm run build). Compiled, not through a
// TypeScript loader, because every process aetherd starts is forked from it and fork costs grow
// with the parent's memory.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write("aetherd is not built: run `npm run build` in the Aether repository first.\n");
  process.exit(2);
}
await import(main.href);
