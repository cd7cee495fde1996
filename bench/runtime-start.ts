// Start-to-exit of /bin/true through aetherd (StartExecutable + WaitExecutable) against a plain
// child_process.spawn of the same program, interleaved in one run so both see the same machine.
import { spawn } from "node:child_process";
import type { AetherClient } from "@aether/sdk";
import { ms, percentile } from "./stats.js";

export interface StartBenchResult {
  rows: string[][];
  ratioP50: number;
  overheadP50Ms: number;
}

function spawnTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/true", [], { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", () => resolve());
  });
}

export async function benchStart(aether: AetherClient, iterations: number): Promise<StartBenchResult> {
  const viaAetherd: number[] = [];
  const viaSpawn: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) await spawnTrue(); // warm-up
  for (let i = 0; i < iterations; i++) {
    let t = performance.now();
    await spawnTrue();
    viaSpawn.push(performance.now() - t);

    t = performance.now();
    const { executable } = await aether.runtime.startExecutable({ argv: ["/bin/true"] });
    await aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    viaAetherd.push(performance.now() - t);
    ids.push(executable?.id ?? "");
  }
  for (const id of ids) await aether.runtime.deleteExecutable({ executable: id });
  const p50a = percentile(viaAetherd, 50);
  const p50s = percentile(viaSpawn, 50);
  return {
    rows: [
      ["aetherd start+wait /bin/true", ms(p50a), ms(percentile(viaAetherd, 99))],
      ["child_process.spawn /bin/true", ms(p50s), ms(percentile(viaSpawn, 99))],
    ],
    ratioP50: p50a / p50s,
    overheadP50Ms: p50a - p50s,
  };
}
