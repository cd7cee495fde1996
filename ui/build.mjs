#!/usr/bin/env node
// Builds the web console (npm run build -w @aether/ui): one bundled, minified script with its CSS
// (Preact, the SDK's generated code over @connectrpc/connect-web, xterm.js) and index.html in dist/.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  // The SDK's TypeScript sources: the console builds without compiling the workspaces first.
  conditions: ["source"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
