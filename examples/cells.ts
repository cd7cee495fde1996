#!/usr/bin/env aetherscript
// Slice the host: a cell with a memory and task limit and its own network namespace, a process
// inside it, and what the kernel accounted for it. The cell is freed at the end.
import { connect, observe } from "@aether/sdk";

const aether = await connect();
const name = `example-${Date.now().toString(36)}`;
const { cell } = await aether.cells.allocateCell({
  name,
  limits: { memoryMaxBytes: 64n * 1024n * 1024n, pidsMax: 16n, cpuMax: { quotaUsec: 50_000n, periodUsec: 100_000n } },
  isolation: { network: true, pid: true },
});
console.log(`cell ${cell?.name}: 64 MiB, 16 tasks, half a CPU, backend ${cell?.backend === 1 ? "cgroup v1" : "cgroup v2"}`);

const { executable } = await aether.runtime.startExecutable({
  cell: name,
  argv: ["/bin/sh", "-c", "echo \"inside: pid $$, interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\""],
});
for await (const chunk of aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: executable?.id ?? "", follow: true })) {
  process.stdout.write(new TextDecoder().decode(chunk.data));
}
const { stats } = await aether.cells.getCellStats({ cell: name });
console.log(`accounted: ${stats?.cpuUsageUsec} µs of CPU, peak memory ${stats?.memoryPeakBytes} bytes`);
await aether.cells.freeCell({ cell: name, stopExecutables: true });
console.log(`freed ${name}`);
aether.close();
