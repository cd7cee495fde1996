// aether node info; aether node log-level [LEVEL] [--for DURATION] (aetherd's, or the aggregator's with --aggregator)
import { InvalidArgumentError, type Command } from "commander";
import { node as nodeApi, vm as vmApi } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { durationOption, toDuration } from "../numbers.js";
import { bytes, forPrograms, outputOptions, printFields, printOne, type OutputFlags } from "../output.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function nodeCommands(program: Command): void {
  const node = program
    .command("node")
    .description("the host aetherd runs on")
    .addHelpText("after", "\nExamples:\n  aether node info\n  aether node log-level debug --for 10m");
  outputOptions(node.command("info"))
    .description("identity, version and what the host can do (the capability probe), and what its VMs run under")
    .option("--refresh", "probe the host again instead of showing the start-up probe")
    .addHelpText("after", "\nExamples:\n  aether node info\n  aether node info --json | jq .capabilities.kvm\n  aether node info -o yaml")
    .action(async (o: { refresh?: boolean } & OutputFlags) =>
      withClient(program.opts<GlobalOptions>(), async (aether) => {
        const { node: info } = await aether.node.getNodeInfo({ refresh: o.refresh ?? false });
        if (!info) throw new Error("aetherd returned no node information");
        if (forPrograms(o)) return printOne(o, { json: nodeApi.NodeInfoSchema, name: (i: nodeApi.NodeInfo) => i.hostname }, info);
        const caps = info.capabilities;
        const cgroup = caps?.cgroup;
        const version = (v: nodeApi.CgroupVersion | undefined) => (v ? nodeApi.CgroupVersion[v].toLowerCase() : "none");
        // /dev/kvm opening is not KVM working: with acceleration auto, aetherd trusts KVM only once a
        // probe guest boots under it (nested KVM can hang guests), so say what the VMs really run under.
        const { vms } = await aether.vm.listVms({ pageSize: 1000 });
        const running = vms.filter((v) => v.effectiveAcceleration !== vmApi.Acceleration.UNSPECIFIED && v.pid);
        const under = (a: vmApi.Acceleration) => running.filter((v) => v.effectiveAcceleration === a).length;
        const kvm = caps?.kvm?.deviceUsable
          ? "/dev/kvm opens; VMs with acceleration auto use KVM only once a probe guest boots under it"
          : `not usable: ${caps?.kvm?.reason ?? "unknown"}`;
        const tool = (t: nodeApi.ToolProbe | undefined) =>
          t?.available ? `${t.path} (${t.version})` : `missing: ${t?.reason ?? "unknown"}`;
        printFields([
          ["node id", info.id],
          ["hostname", info.hostname],
          ["aetherd", info.version],
          ["kernel", `${info.kernelRelease} (${info.architecture})`],
          ["cpus / memory", `${info.cpuCount} / ${bytes(info.memoryTotalBytes)}`],
          ["cgroups", `${version(cgroup?.version)} at ${cgroup?.mountPath || "-"} [${cgroup?.controllers.join(", ") ?? ""}]`],
          [
            "cells use",
            cgroup?.cellsVersion ? `cgroup ${version(cgroup.cellsVersion)}` : `nothing: ${cgroup?.cellsReason || "no cgroup hierarchy"}`,
          ],
          ["kvm", kvm],
          [
            "running VMs",
            running.length === 0
              ? "none"
              : `${under(vmApi.Acceleration.KVM)} under KVM, ${under(vmApi.Acceleration.TCG)} under TCG (software emulation)`,
          ],
          ["qemu-system", tool(caps?.qemuSystem)],
          ["qemu-img", tool(caps?.qemuImg)],
          ["firecracker", tool(caps?.firecracker)],
          ["zfs", tool(caps?.zfs)],
          ["state dir", info.stateDir],
        ]);
      }),
    );
  dryRunOption(outputOptions(node.command("log-level")))
    .description(
      "show or change the server's log level at once, without a restart; with --for it reverts to the configured level by itself",
    )
    .argument("[level]", `one of ${LEVELS.join(", ")}; none: show the level`, (v: string) => {
      if (!LEVELS.includes(v)) throw new InvalidArgumentError(`It must be one of ${LEVELS.join(", ")}.`);
      return v;
    })
    .addOption(durationOption("--for <duration>", "how long the level holds before the configured one is back (e.g. 10m; at most 7d)"))
    .option("--aggregator [address]", "change aether-aggregator's level instead (default: AETHER_AGGREGATOR)")
    .addHelpText(
      "after",
      `
The change is audited (aetherd's audit log; both servers' logs say who changed it, from what, for how long).

Examples:
  aether node log-level                          the level now, the configured one, when it reverts
  aether node log-level debug --for 10m          debug for ten minutes, then back to the configured level
  aether node log-level info                     back now (until changed again)
  aether node log-level debug --for 5m --aggregator unix:///run/aether/aggregator.sock`,
    )
    .action(
      async (level: string | undefined, o: { for?: number; aggregator?: string | true } & OutputFlags & DryRunFlags, cmd: Command) => {
        if (level === undefined && o.for !== undefined) cmd.error("error: --for needs a level to hold for that long");
        const aggregator = o.aggregator === true ? process.env.AETHER_AGGREGATOR : o.aggregator;
        if (o.aggregator === true && aggregator === undefined)
          cmd.error("error: --aggregator needs an address (or AETHER_AGGREGATOR), e.g. unix:///run/aether/aggregator.sock");
        const globals: GlobalOptions =
          aggregator === undefined ? program.opts<GlobalOptions>() : { address: aggregator, peer: "aether-aggregator" };
        await withClient(globals, async (aether) => {
          if (o.dryRun && level !== undefined) {
            // An empty level only reads the level: nothing changes.
            const now = await aether.node.setLogLevel({ level: "" });
            return sayWould(
              `set the log level from ${now.level} to ${level}${o.for !== undefined ? ` for ${o.for / 1000}s, then back to ${now.configuredLevel}` : ""}`,
            );
          }
          const r = await aether.node.setLogLevel({
            level: level ?? "",
            ...(o.for !== undefined && { duration: toDuration(o.for) }),
          });
          if (forPrograms(o)) return printOne(o, { json: nodeApi.SetLogLevelResponseSchema, name: () => r.level }, r);
          const revert = r.revertTime ? new Date(Number(r.revertTime.seconds) * 1000).toISOString() : "";
          printFields([
            ["level", r.level],
            ...(level !== undefined ? ([["was", r.previousLevel]] as Array<[string, string]>) : []),
            ["configured", r.configuredLevel],
            ["reverts", revert === "" ? (r.level === r.configuredLevel ? "-" : "not by itself (set it back, or restart)") : `at ${revert}`],
          ]);
        });
      },
    );
}
