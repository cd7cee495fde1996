// The shim binary (daemon/shim/aether-shim.c) is built from source on the host the first time aetherd
// needs it, and rebuilt when the source changes; the compiler's own error is reported if it fails.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runHost, which } from "../host/command.js";

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "shim", "aether-shim.c");

/** Returns the path of a shim binary built from the current source, building it if needed. */
export async function ensureShim(buildDir: string): Promise<string> {
  const source = readFileSync(SOURCE);
  const digest = createHash("sha256").update(source).digest("hex").slice(0, 16);
  const binary = join(buildDir, `aether-shim-${digest}`);
  if (existsSync(binary)) return binary;
  const cc = (await which("cc")) ?? (await which("gcc"));
  if (cc === undefined) {
    throw new Error(
      "aetherd needs a C compiler once to build its process shim (daemon/shim/aether-shim.c) and none was found: install one with `apt-get install gcc`.",
    );
  }
  await mkdir(buildDir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  await runHost(cc, ["-O2", "-Wall", "-o", tmp, SOURCE], { timeoutMs: 60_000 });
  await rename(tmp, binary);
  return binary;
}
