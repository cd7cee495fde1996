// The default engine: Deno from the pinned npm package, with least privilege. A script may read
// itself, its folder and the client config and certificates, and reach only the daemon's address;
// --allow-* flags widen that explicitly.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join } from "node:path";
import { defaultClientConfigPath, resolveTarget } from "@aether/sdk/target";
import { denoBinary, distDir, sdkDependencyRoot, sdkEntry, sdkImportMap } from "../locate.js";
import type { EngineCommand, RunRequest } from "./engine.js";

/** Environment variables the SDK reads to find the daemon. */
const SDK_ENV = ["AETHER_HOST", "AETHER_CONTEXT", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "HOME"];

/** Writes the import map once per SDK location and content; returns its path. */
function importMapFile(): string {
  const content = JSON.stringify({ imports: sdkImportMap() }, null, 2);
  const digest = createHash("sha256").update(content).digest("hex").slice(0, 16);
  const dir = join(tmpdir(), `aetherscript-${process.getuid?.() ?? "user"}`);
  const file = join(dir, `import-map-${digest}.json`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, content);
  }
  return file;
}

/** What the daemon's address requires: the socket or host, plus the TLS files named for it. */
function daemonAccess(): { read: string[]; write: string[]; net: string[] } {
  const target = resolveTarget();
  const config = defaultClientConfigPath();
  const read = existsSync(config) ? [config] : [];
  if (target.kind === "unix") return { read: [...read, target.path], write: [target.path], net: [`unix:${target.path}`] };
  const url = new URL(target.url);
  const files = [target.tls.ca, target.tls.cert, target.tls.key].filter((f): f is string => f !== undefined && !f.includes("-----BEGIN"));
  return { read: [...read, ...files], write: [], net: [`${url.hostname}:${url.port || "443"}`] };
}

export function denoCommand(req: RunRequest): EngineCommand {
  const p = req.permissions;
  const args = [
    "run",
    "--no-prompt",
    "--no-config",
    "--no-lock",
    "--node-modules-dir=manual",
    `--import-map=${importMapFile()}`,
    `--preload=${join(distDir, "engines", "deno-preload.js")}`,
  ];
  if (p.all) {
    args.push("--allow-all");
  } else {
    const access = daemonAccess();
    const sdkDir = dirname(dirname(sdkEntry()));
    const read = [req.script, dirname(req.script), sdkDir, sdkDependencyRoot(), distDir, ...access.read, ...p.read];
    args.push(`--allow-read=${read.join(",")}`);
    const write = [...access.write, ...p.write];
    if (write.length > 0) args.push(`--allow-write=${write.join(",")}`);
    args.push(`--allow-net=${[...access.net, ...p.net].join(",")}`);
    args.push(`--allow-env=${[...SDK_ENV, ...p.env].join(",")}`);
    args.push("--allow-sys=uid,gid,homedir");
    if (p.run.length > 0) args.push(`--allow-run=${p.run.join(",")}`);
  }
  // A script run by its shebang often has no extension; it is TypeScript all the same.
  if (extname(req.script) === "") args.push("--ext=ts");
  args.push(req.script, ...req.args);
  return { file: denoBinary(), args, env: { ...process.env, NO_COLOR: process.stderr.isTTY ? process.env.NO_COLOR : "1" } };
}
