#!/usr/bin/env aetherscript
// What is this host, and what can it run? The capability probe and live telemetry, as a report.
import { connect, node } from "@aether/sdk";

const aether = await connect();
const { node: info } = await aether.node.getNodeInfo({});
const { telemetry } = await aether.observe.getTelemetry({});
const caps = info?.capabilities;
const gib = (b: bigint | undefined) => (Number(b ?? 0n) / 2 ** 30).toFixed(1);
console.log(`node ${info?.hostname} (${info?.id}), kernel ${info?.kernelRelease}`);
console.log(`cgroups: ${node.CgroupVersion[caps?.cgroup?.version ?? 0]} with ${caps?.cgroup?.controllers.length} controllers`);
for (const [name, tool] of Object.entries({
  qemu: caps?.qemuSystem,
  "qemu-img": caps?.qemuImg,
  firecracker: caps?.firecracker,
  zfs: caps?.zfs,
})) {
  console.log(`${name}: ${tool?.available ? `yes (${tool.path})` : "no"}`);
}
console.log(
  `memory: ${gib(telemetry?.memoryAvailableBytes)} of ${gib(telemetry?.memoryTotalBytes)} GiB available, load ${telemetry?.loadAverage1m.toFixed(2)}`,
);
aether.close();
