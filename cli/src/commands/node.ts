// aether node info
import type { Command } from "commander";
import { node as nodeApi } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { bytes, printFields, printJson } from "../output.js";

export function nodeCommands(program: Command): void {
  const node = program.command("node").description("the host aetherd runs on");
  node
    .command("info")
    .description("identity, version and what the host can do (the capability probe)")
    .option("--json", "print as JSON")
    .option("--refresh", "probe the host again instead of showing the start-up probe")
    .addHelpText("after", "\nExamples:\n  aether node info\n  aether node info --json | jq .capabilities.kvm")
    .action(async (o: { json?: boolean; refresh?: boolean }) =>
      withClient(program.opts<GlobalOptions>(), async (aether) => {
        const { node: info } = await aether.node.getNodeInfo({ refresh: o.refresh ?? false });
        if (!info) throw new Error("aetherd returned no node information");
        if (o.json) return printJson(nodeApi.NodeInfoSchema, info);
        const caps = info.capabilities;
        const tool = (t: nodeApi.ToolProbe | undefined) =>
          t?.available ? `${t.path} (${t.version})` : `missing: ${t?.reason ?? "unknown"}`;
        printFields([
          ["node id", info.id],
          ["hostname", info.hostname],
          ["aetherd", info.version],
          ["kernel", `${info.kernelRelease} (${info.architecture})`],
          ["cpus / memory", `${info.cpuCount} / ${bytes(info.memoryTotalBytes)}`],
          ["cgroups", `${nodeApi.CgroupVersion[caps?.cgroup?.version ?? 0]} [${caps?.cgroup?.controllers.join(", ") ?? ""}]`],
          ["kvm", caps?.kvm?.deviceUsable ? "device usable" : `unusable: ${caps?.kvm?.reason ?? ""}`],
          ["qemu-system", tool(caps?.qemuSystem)],
          ["qemu-img", tool(caps?.qemuImg)],
          ["firecracker", tool(caps?.firecracker)],
          ["zfs", tool(caps?.zfs)],
          ["state dir", info.stateDir],
        ]);
      }),
    );
}
