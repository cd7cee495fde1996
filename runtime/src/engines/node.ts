// The Node engine: the script runs in node with tsx compiling TypeScript. Node has no permission
// sandbox that is stable on Node 20, so the --allow-* flags do not apply: the script runs with the
// caller's full privileges.
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { distDir, tsxLoaderUrl } from "../locate.js";
import type { EngineCommand, RunRequest } from "./engine.js";

export function nodeCommand(req: RunRequest): EngineCommand {
  const preload = pathToFileURL(join(distDir, "engines", "node-preload.js")).href;
  return {
    file: process.execPath,
    args: ["--enable-source-maps", "--import", tsxLoaderUrl(), "--import", preload, req.script, ...req.args],
    env: { ...process.env, AETHERSCRIPT_ENTRY: req.script },
  };
}
