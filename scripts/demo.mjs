#!/usr/bin/env node
// npm run demo: starts aetherd on a socket of its own under .aether/demo, runs an example script
// against it with aetherscript, and stops aetherd again (its state stays in .aether/demo for a look afterwards).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, ".aether", "demo");
const socket = join(dir, "aetherd.sock");
const example = process.argv[2] ?? join(root, "examples", "hello-process.ts");
mkdirSync(dir, { recursive: true });

console.log(`starting aetherd on unix://${socket} (state in ${join(dir, "state")})`);
const daemon = spawn(
  process.execPath,
  [join(root, "daemon", "bin", "aetherd.mjs"), "--socket", socket, "--state-dir", join(dir, "state"), "--log-level", "warn"],
  {
    stdio: ["ignore", "inherit", "inherit"],
  },
);
const deadline = Date.now() + 20_000;
while (!existsSync(socket)) {
  if (daemon.exitCode !== null) process.exit(daemon.exitCode);
  if (Date.now() > deadline) {
    console.error("aetherd did not create its socket within 20 s");
    daemon.kill("SIGKILL");
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 50));
}

console.log(`running ${example}\n`);
const script = spawn(process.execPath, [join(root, "runtime", "bin", "aetherscript.mjs"), example], {
  stdio: "inherit",
  env: { ...process.env, AETHER_HOST: `unix://${socket}` },
});
const code = await new Promise((r) => script.once("exit", (c) => r(c ?? 1)));
daemon.kill("SIGTERM");
await new Promise((r) => daemon.once("exit", r));
process.exit(code);
