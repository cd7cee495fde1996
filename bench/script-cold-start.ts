// Cold start of a script that connects and calls NodeService.GetNodeInfo: aetherscript's Deno
// engine, its Node engine (tsx), and a plain Node program using the compiled SDK, interleaved.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ms, percentile } from "./stats.js";

export interface ColdStartResult {
  rows: string[][];
  denoVsPlain: number;
  nodeVsPlain: number;
}

export function benchColdStart(repoRoot: string, address: string, runs: number): ColdStartResult {
  const dir = mkdtempSync(join(tmpdir(), "aether-bench-script-"));
  const script = join(dir, "info.ts");
  writeFileSync(
    script,
    'import { connect } from "@aether/sdk";\nconst a = await connect();\nconst { node } = await a.node.getNodeInfo({});\nif (!node?.hostname) throw new Error("no node");\na.close();\n',
  );
  // The plain program imports the SDK's compiled entry directly: what any npm program would run.
  const plain = join(dir, "plain.mjs");
  writeFileSync(
    plain,
    `import { connect } from ${JSON.stringify(join(repoRoot, "sdk", "dist", "index.js"))};\nconst a = await connect();\nconst { node } = await a.node.getNodeInfo({});\nif (!node?.hostname) throw new Error("no node");\na.close();\n`,
  );
  const aetherscript = join(repoRoot, "node_modules", ".bin", "aetherscript");
  const variants: Array<[string, string, string[]]> = [
    ["aetherscript (Deno engine)", aetherscript, [script]],
    ["aetherscript --engine node (tsx)", aetherscript, ["--engine", "node", script]],
    ["plain Node program + SDK", process.execPath, [plain]],
  ];
  const samples = variants.map(() => [] as number[]);
  const env = { ...process.env, AETHER_HOST: address };
  // One unmeasured round first: Deno compiles and caches the script and the SDK on first use.
  for (const [, file, args] of variants) spawnSync(file, args, { env, stdio: "ignore" });
  for (let i = 0; i < runs; i++) {
    variants.forEach(([name, file, args], v) => {
      const t = performance.now();
      const r = spawnSync(file, args, { env, stdio: ["ignore", "ignore", "pipe"] });
      if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr.toString()}`);
      samples[v]?.push(performance.now() - t);
    });
  }
  const p50 = samples.map((s) => percentile(s, 50));
  return {
    rows: variants.map(([name], v) => [name, ms(p50[v] ?? 0), ms(percentile(samples[v] ?? [], 99))]),
    denoVsPlain: (p50[0] ?? 0) / (p50[2] ?? 1),
    nodeVsPlain: (p50[1] ?? 0) / (p50[2] ?? 1),
  };
}
