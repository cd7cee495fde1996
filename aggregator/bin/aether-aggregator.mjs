#!/usr/bin/env node
// aether-aggregator's entry point: runs the compiled server (npm run build).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write("aether-aggregator is not built: run `npm run build` in the Aether repository first.\n");
  process.exit(2);
}
await import(main.href);
