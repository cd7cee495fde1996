// aether vm migrate VM --to NODE|ADDRESS: live migration of a running VM, with its disks, to another
// aetherd; a progress line on a terminal (phase, bytes, dirty rate, throttle), then one line or --json.
// A node's name (or id) is looked up in the aggregator, as operators name hosts, not addresses.
import type { Command } from "commander";
import { Code, ConnectError, connect, vm as vmApi } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { durationOption, toDuration, uint32 } from "../numbers.js";
import { bytes, forPrograms, outputOptions, printOne, type OutputFlags } from "../output.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { startProgress } from "../progress.js";
import { parseBytes } from "../units.js";

interface MigrateOptions {
  to: string;
  aggregator?: string;
  bandwidth?: bigint;
  maxDowntime: number;
  autoConverge: boolean;
  throttleInitial?: number;
  throttleStep?: number;
  timeout: number;
  tenant: string;
}

/** A percentage, "60" or "60%"; aetherd checks its range (1..99). */
const percent = (value: string) => uint32(value.trim().replace(/%$/, ""));

const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6) : 0);

/** One line of progress: the phase and what it is moving. */
export function describeProgress(m: vmApi.Migration): string {
  const phase = vmApi.MigrationPhase[m.phase]?.toLowerCase() ?? "starting";
  const disk = m.diskTransferredBytes + m.diskRemainingBytes;
  const parts = [`${m.vmName} → ${m.target}: ${phase}`];
  if (disk > 0n) parts.push(`disks ${bytes(m.diskTransferredBytes)}/${bytes(disk)}`);
  if (m.memoryTransferredBytes > 0n) parts.push(`memory ${bytes(m.memoryTransferredBytes)} sent, ${bytes(m.memoryRemainingBytes)} left`);
  if (m.dirtyRateBytesPerSecond > 0n) parts.push(`dirtied ${bytes(m.dirtyRateBytesPerSecond)}/s`);
  if (m.cpuThrottlePercent > 0) parts.push(`throttle ${m.cpuThrottlePercent}%`);
  if (ms(m.expectedDowntime) > 0) parts.push(`expected downtime ${ms(m.expectedDowntime)} ms`);
  return parts.join(" · ");
}

/**
 * The target aetherd's address: --to itself when it is one, else the address of the node the
 * aggregator knows by that name or id.
 */
async function targetAddress(to: string, aggregator: string | undefined): Promise<string> {
  if (/^(unix:\/\/\/|https:\/\/|http:\/\/)/.test(to)) return to;
  if (aggregator === undefined) {
    throw new ConnectError(
      `--to ${to} is not an address (unix:///path.sock or https://host:port), so it names a node: give the aggregator that knows it with --aggregator or AETHER_AGGREGATOR, or give the target aetherd's address.`,
      Code.InvalidArgument,
    );
  }
  const cluster = await connect({ address: aggregator, peer: "aether-aggregator" });
  try {
    const { nodes } = await cluster.aggregator.listNodes({});
    const node = nodes.find((n) => n.name === to) ?? nodes.find((n) => n.id === to);
    if (node === undefined) {
      const names = nodes.map((n) => n.name).sort();
      throw new ConnectError(
        `the aggregator at ${aggregator} knows no node ${to}${names.length > 0 ? ` (its nodes: ${names.slice(0, 10).join(", ")}${names.length > 10 ? ", ..." : ""})` : ""}.`,
        Code.NotFound,
      );
    }
    return node.address;
  } finally {
    cluster.close();
  }
}

export function vmMigrateCommand(vm: Command, globals: () => GlobalOptions): void {
  dryRunOption(outputOptions(vm.command("migrate")))
    .description("live-migrate a running VM, with its disks, to another aetherd; the guest keeps running")
    .argument("<vm>", "id or name")
    .requiredOption(
      "--to <node>",
      "the target: a node's name (looked up in the aggregator) or its aetherd's address (unix:///path.sock, https://host:port)",
    )
    .option("--aggregator <address>", "aether-aggregator that knows the node --to names (default: AETHER_AGGREGATOR)")
    .option("--bandwidth <size>", "cap memory and disk copies at this many bytes per second, e.g. 100M (default: no cap)", parseBytes)
    .addOption(durationOption("--max-downtime <duration>", "longest pause of the guest at the switchover", 300))
    .option("--no-auto-converge", "never slow the guest's vCPUs down to let the memory copy catch up")
    .option("--throttle-initial <percent>", "auto-converge's first slow-down of the vCPUs, 1..99 (default: 20)", percent)
    .option("--throttle-step <percent>", "what auto-converge adds each time the copy still falls behind, 1..99 (default: 10)", percent)
    .addOption(durationOption("-t, --timeout <duration>", "cancel the migration (the guest stays here) after this long", 600_000))
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText(
      "after",
      `
Examples:
  aether vm migrate web --to node-b                        # its address from AETHER_AGGREGATOR
  aether vm migrate web --to node-b --aggregator https://10.0.0.5:7450
  aether vm migrate web --to unix:///run/aether/node-b.sock
  aether vm migrate web --to https://node-b:7443 --bandwidth 200M --max-downtime 100ms
  aether vm migrate web --to https://node-b:7443 --no-auto-converge --timeout 2m --json
  aether vm migrate busy --to node-b --throttle-initial 60 --throttle-step 20   # a guest that dirties memory fast
  aether vm migrate web --to node-b --dry-run                # finds the VM and the target, moves nothing

A migration that fails before the switchover is cancelled: the guest keeps running here, the target
is cleaned up, and the command exits 1 with the reason (also the VM's state reason).`,
    )
    .action(async (ref: string, o: MigrateOptions & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        const json = forPrograms(o);
        const target = await targetAddress(o.to, o.aggregator ?? process.env.AETHER_AGGREGATOR);
        if (o.dryRun) {
          const { vm: v } = await aether.vm.getVm({ vm: ref, tenant: o.tenant });
          if (!v) throw new Error("aetherd returned no VM");
          const state = vmApi.VmState[v.state].toLowerCase();
          const refusal = v.state === vmApi.VmState.RUNNING ? "" : `, but aetherd would refuse: ${v.name} is ${state}, not running`;
          return sayWould(`live-migrate vm ${v.name} (${state}) with its disks to ${target}${refusal}`);
        }
        const { migration } = await aether.vm.migrateVm({
          vm: ref,
          tenant: o.tenant,
          target,
          options: {
            maxBandwidthBytesPerSecond: o.bandwidth ?? 0n,
            maxDowntime: toDuration(o.maxDowntime),
            autoConverge: o.autoConverge,
            cpuThrottleInitialPercent: o.throttleInitial,
            cpuThrottleIncrementPercent: o.throttleStep,
            timeout: toDuration(o.timeout),
          },
        });
        if (!migration) throw new Error("aetherd answered MigrateVm without a migration");
        const progress = startProgress(describeProgress(migration), json);
        let last = migration;
        try {
          for await (const r of aether.vm.watchMigration({ migration: migration.id, tenant: o.tenant })) {
            if (!r.migration) continue;
            last = r.migration;
            progress?.update(describeProgress(last));
          }
        } catch (err) {
          progress?.stop();
          throw err;
        }
        const ok = last.state === vmApi.MigrationState.SUCCEEDED;
        const summary = ok
          ? `${last.vmName} runs on ${last.target}: moved in ${(ms(last.totalTime) / 1000).toFixed(1)} s, guest paused ${ms(last.downtime)} ms`
          : `${last.vmName} was not migrated: ${last.stateReason}`;
        if (ok) progress?.succeed(summary);
        else progress?.fail(summary);
        if (json) printOne(o, { json: vmApi.MigrationSchema, name: (m: vmApi.Migration) => m.vmName }, last);
        else if (!progress) (ok ? process.stdout : process.stderr).write(`${ok ? "" : "aether: "}${summary}\n`);
        if (!ok) process.exitCode = EXIT.failed;
      }),
    );
}
