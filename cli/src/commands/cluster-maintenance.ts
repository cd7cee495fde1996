// aether cluster cordon|drain|uncordon|shutdown NODE: maintenance mode through aether-aggregator.
// drain and shutdown stream the aggregator's progress (one line per step, or one JSON object per
// line with --json) until the drain ends; a drain that stops (a workload that cannot move) exits 1
// with the aggregator's sentence. Ctrl-C stops watching, not the drain: it runs in the aggregator.
import type { Command } from "commander";
import { Code, ConnectError, auction, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { forPrograms, outputOptions, printEach, printOne, type OutputFlags } from "../output.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { durationOption, toDuration, uint32 } from "../numbers.js";

const lifecycle = (l: auction.NodeLifecycle) => (auction.NodeLifecycle[l] ?? String(l)).toLowerCase().replace(/_/g, " ");
const kind = (k: auction.ClusterEventKind) => (auction.ClusterEventKind[k] ?? String(k)).toLowerCase().replace(/_/g, " ");

const NODE = { json: auction.NodeSchema, name: (n: auction.Node) => n.name };
const PROGRESS = { json: auction.DrainProgressSchema, name: (p: auction.DrainProgress) => p.nodeName || p.node };

/** Prints one progress message: a line per step (or JSON, YAML); the first says where the drain stands. */
function printProgress(p: auction.DrainProgress, o: OutputFlags, first: boolean): void {
  if (forPrograms(o)) return printEach(o, PROGRESS, p, "");
  const counts = `[${p.workloadsMoved}/${p.workloadsTotal} moved, ${p.workloadsRemaining} left, ${p.movesInProgress}/${p.maxMoves} moving]`;
  if (p.event) process.stdout.write(`${counts} ${kind(p.event.kind)}: ${p.event.message}\n`);
  else if (first)
    process.stdout.write(`node ${p.nodeName || p.node} is ${lifecycle(p.lifecycle)}; ${p.workloadsRemaining} workload(s) on it.\n`);
  if (p.done) process.stdout.write(`node ${p.nodeName || p.node} is ${lifecycle(p.lifecycle)}.\n`);
}

async function follow(stream: AsyncIterable<{ progress?: auction.DrainProgress }>, o: OutputFlags): Promise<void> {
  let first = true;
  for await (const { progress } of stream) {
    if (!progress) continue;
    printProgress(progress, o, first);
    first = false;
  }
}

/** A dry run of a maintenance step: finds the node (by id, id prefix or name) and says what would happen. */
async function wouldMaintain(aether: AetherClient, ref: string, step: string): Promise<void> {
  const { nodes } = await aether.aggregator.listNodes({ pageSize: 1000 });
  const n = nodes.find((x) => x.id === ref || x.name === ref) ?? nodes.find((x) => x.id.startsWith(ref));
  if (!n) throw new ConnectError(`no node ${ref} is registered (see aether cluster nodes)`, Code.NotFound);
  const what =
    step === "cordon" || step === "uncordon"
      ? `${step} node ${n.name} (now ${lifecycle(n.lifecycle)})`
      : `${step} node ${n.name} (now ${lifecycle(n.lifecycle)}), moving its ${n.placementCount} workload(s) to other nodes by auction`;
  sayWould(what);
}

export function maintenanceCommands(cluster: Command, globals: () => GlobalOptions): void {
  dryRunOption(outputOptions(cluster.command("cordon")))
    .description("stop placing new workloads on a node; those on it stay")
    .argument("<node>", "node id or name")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster cordon node-2\n  aether cluster cordon node-2 --dry-run\n  aether cluster uncordon node-2",
    )
    .action(async (node: string, o: OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldMaintain(aether, node, "cordon");
        const { node: n } = await aether.aggregator.cordonNode({ node });
        if (!n) return;
        if (forPrograms(o)) return printOne(o, NODE, n);
        process.stdout.write(`node ${n.name} is ${lifecycle(n.lifecycle)}: ${n.lifecycleReason}\n`);
      }),
    );

  dryRunOption(outputOptions(cluster.command("drain")))
    .description("move every workload off a node (maintenance mode), at most --max-moves at a time; the node is then DRAINED")
    .argument("<node>", "node id or name")
    .option("--max-moves <n>", "disruption budget: the most workloads moved at once (1..64)", uint32, 1)
    .addHelpText(
      "after",
      "\nThe drain runs in aether-aggregator: Ctrl-C stops watching, not the drain; run the same command again to follow it.\n" +
        "A workload that cannot move (no other node bids, its move failed twice, a VM that cannot be live-migrated) stops the\n" +
        "drain: it stays where it is, the node stays cordoned, and the command exits 1 with the reason.\n" +
        "\nExamples:\n  aether cluster drain node-2\n  aether cluster drain node-2 --max-moves 3 --json      one JSON object (DrainProgress) per line\n  aether cluster drain node-2 --dry-run\n  aether cluster uncordon node-2",
    )
    .action(async (node: string, o: { maxMoves: number } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) =>
        o.dryRun ? wouldMaintain(aether, node, "drain") : follow(aether.aggregator.drainNode({ node, maxMoves: o.maxMoves }), o),
      ),
    );

  dryRunOption(outputOptions(cluster.command("uncordon")))
    .description("put a cordoned or drained node back on duty: it takes part in auctions again")
    .argument("<node>", "node id or name")
    .addHelpText("after", "\nExamples:\n  aether cluster uncordon node-2\n  aether cluster uncordon node-2 -o json")
    .action(async (node: string, o: OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldMaintain(aether, node, "uncordon");
        const { node: n } = await aether.aggregator.uncordonNode({ node });
        if (!n) return;
        if (forPrograms(o)) return printOne(o, NODE, n);
        process.stdout.write(`node ${n.name} is ${lifecycle(n.lifecycle)}: ${n.lifecycleReason}\n`);
      }),
    );

  dryRunOption(outputOptions(cluster.command("shutdown")))
    .description("drain a node, then power it off through its BMC (graceful, then forced); it ends DECOMMISSIONED")
    .argument("<node>", "node id or name")
    .option("--max-moves <n>", "disruption budget of the drain (1..64)", uint32, 1)
    .addOption(durationOption("--graceful-timeout <duration>", "how long GracefulShutdown may take before ForceOff", 120_000))
    .addHelpText(
      "after",
      "\nThe node's BMC is the one aether-aggregator fences it with ([[bmcs]] in its configuration).\n" +
        "\nExamples:\n  aether cluster shutdown node-2\n  aether cluster shutdown node-2 --graceful-timeout 5m --json\n  aether cluster shutdown node-2 --dry-run",
    )
    .action(async (node: string, o: { maxMoves: number; gracefulTimeout: number } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) =>
        o.dryRun
          ? wouldMaintain(aether, node, "shut down (drain, then power off through its BMC)")
          : follow(aether.aggregator.shutdownNode({ node, maxMoves: o.maxMoves, gracefulTimeout: toDuration(o.gracefulTimeout) }), o),
      ),
    );
}
