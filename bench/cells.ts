// Cells: Allocate+Free through aetherd against creating and removing the same cgroup directories
// directly (the kernel's own cost), and Start+Wait of /bin/true inside a cell against outside one.
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AetherClient } from "@aether/sdk";
import { ms, percentile } from "./stats.js";

export interface CellsBenchResult {
  rows: string[][];
  allocateFreeRatio: number;
  /** AllocateCell + FreeCell against two trivial RPCs, at p50. */
  allocateFreeVsTwoCalls: number;
  startInCellRatio: number;
}

export async function benchCells(aether: AetherClient, iterations: number): Promise<CellsBenchResult> {
  const viaAetherd: number[] = [];
  const direct: number[] = [];
  // Two trivial calls (GetNodeInfo) interleaved: the floor of any two RPCs on this host at this
  // load, so what aetherd's cells add beyond the transport can be told from the transport itself.
  const twoCalls: number[] = [];
  // The cgroup directories aetherd makes for a cell, to create and remove them by hand alongside.
  // The anchor keeps the tenant's folder in place for both (it goes with a tenant's last cell).
  const { cell: probe } = await aether.cells.allocateCell({ name: "bench-anchor" });
  const parents = [...new Set(Object.values(probe?.cgroupPaths ?? {}).map((p) => join(p, "..")))];
  const v1 = Object.keys(probe?.cgroupPaths ?? {}).length > 1;

  for (let i = 0; i < iterations; i++) {
    let t = performance.now();
    await aether.cells.allocateCell({ name: `bench-${i}`, limits: { memoryMaxBytes: 256n << 20n, pidsMax: 100n } });
    await aether.cells.freeCell({ cell: `bench-${i}` });
    viaAetherd.push(performance.now() - t);

    t = performance.now();
    const dirs = parents.map((p) => join(p, `bare-${i}`));
    for (const d of dirs) mkdirSync(d);
    // The same limit files aetherd writes, so the baseline does the same kernel work.
    for (const d of dirs) for (const [file, value] of limitFiles(d, v1)) writeFileSync(join(d, file), value);
    for (const d of dirs) rmdirSync(d);
    direct.push(performance.now() - t);

    t = performance.now();
    await aether.node.getNodeInfo({});
    await aether.node.getNodeInfo({});
    twoCalls.push(performance.now() - t);
  }

  await aether.cells.allocateCell({ name: "bench-run" });
  const inCell: number[] = [];
  const outside: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < iterations; i++) {
    let t = performance.now();
    const a = (await aether.runtime.startExecutable({ cell: "bench-run", argv: ["/bin/true"] })).executable;
    await aether.runtime.waitExecutable({ executable: a?.id ?? "" });
    inCell.push(performance.now() - t);
    t = performance.now();
    const b = (await aether.runtime.startExecutable({ argv: ["/bin/true"] })).executable;
    await aether.runtime.waitExecutable({ executable: b?.id ?? "" });
    outside.push(performance.now() - t);
    ids.push(a?.id ?? "", b?.id ?? "");
  }
  for (const id of ids) await aether.runtime.deleteExecutable({ executable: id });
  await aether.cells.freeCell({ cell: "bench-run" });
  await aether.cells.freeCell({ cell: "bench-anchor" });

  return {
    rows: [
      ["AllocateCell + FreeCell through aetherd", ms(percentile(viaAetherd, 50)), ms(percentile(viaAetherd, 99))],
      ["mkdir + limits + rmdir of the same cgroups", ms(percentile(direct, 50)), ms(percentile(direct, 99))],
      ["two GetNodeInfo calls (the RPC floor of two calls)", ms(percentile(twoCalls, 50)), ms(percentile(twoCalls, 99))],
      ["start+wait /bin/true inside a cell", ms(percentile(inCell, 50)), ms(percentile(inCell, 99))],
      ["start+wait /bin/true outside cells", ms(percentile(outside, 50)), ms(percentile(outside, 99))],
    ],
    allocateFreeRatio: percentile(viaAetherd, 50) / percentile(direct, 50),
    allocateFreeVsTwoCalls: percentile(viaAetherd, 50) / percentile(twoCalls, 50),
    startInCellRatio: percentile(inCell, 50) / percentile(outside, 50),
  };
}

/** The control files and values the backends write for a cell with 256 MiB and 100 tasks. */
function limitFiles(dir: string, v1: boolean): Array<[string, string]> {
  const memory = String(256 << 20);
  if (!v1) {
    return [
      ["cpu.weight", "100"],
      ["cpu.max", "max 100000"],
      ["cpuset.cpus", ""],
      ["cpuset.mems", ""],
      ["memory.max", memory],
      ["memory.high", "max"],
      ["pids.max", "100"],
    ];
  }
  if (dir.includes("/cpu/") || dir.includes("/cpu,"))
    return [
      ["cpu.shares", "1024"],
      ["cpu.cfs_period_us", "100000"],
      ["cpu.cfs_quota_us", "-1"],
    ];
  if (dir.includes("/cpuset/"))
    return [
      ["cpuset.cpus", readFileSync(join(dir, "..", "cpuset.cpus"), "utf8").trim()],
      ["cpuset.mems", readFileSync(join(dir, "..", "cpuset.mems"), "utf8").trim()],
    ];
  // Lowering from unlimited: memory first, then memory+swap (which may never be below it).
  if (dir.includes("/memory/"))
    return [
      ["memory.limit_in_bytes", memory],
      ["memory.memsw.limit_in_bytes", memory],
    ];
  if (dir.includes("/pids/")) return [["pids.max", "100"]];
  return [];
}
