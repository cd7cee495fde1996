// aether cluster cordon|drain|uncordon|shutdown NODE: maintenance mode through aether-aggregator.
// drain and shutdown stream the aggregator's progress (one line per step, or one JSON object per
// line with --json) until the drain ends; a drain that stops (a workload that cannot move) exits 1
// with the aggregator's sentence. Ctrl-C stops watching, not the drain: it runs in the aggregator.
import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { auction } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { printJson } from "../output.js";
import { durationOption, toDuration, uint32 } from "../numbers.js";

const lifecycle = (l: auction.NodeLifecycle) => (auction.NodeLifecycle[l] ?? String(l)).toLowerCase().replace(/_/g, " ");
const kind = (k: auction.ClusterEventKind) => (auction.ClusterEventKind[k] ?? String(k)).toLowerCase().replace(/_/g, " ");

/** Prints one progress message: a line per step (or JSON); the first says where the drain stands. */
function printProgress(p: auction.DrainProgress, json: boolean, first: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(toJson(auction.DrainProgressSchema, p))}\n`);
    return;
  }
  const counts = `[${p.workloadsMoved}/${p.workloadsTotal} moved, ${p.workloadsRemaining} left, ${p.movesInProgress}/${p.maxMoves} moving]`;
  if (p.event) process.stdout.write(`${counts} ${kind(p.event.kind)}: ${p.event.message}\n`);
  else if (first)
    process.stdout.write(`node ${p.nodeName || p.node} is ${lifecycle(p.lifecycle)}; ${p.workloadsRemaining} workload(s) on it.\n`);
  if (p.done) process.stdout.write(`node ${p.nodeName || p.node} is ${lifecycle(p.lifecycle)}.\n`);
}

async function follow(stream: AsyncIterable<{ progress?: auction.DrainProgress }>, json: boolean): Promise<void> {
  let first = true;
  for await (const { progress } of stream) {
    if (!progress) continue;
    printProgress(progress, json, first);
    first = false;
  }
}

export function maintenanceCommands(cluster: Command, globals: () => GlobalOptions): void {
  cluster
    .command("cordon")
    .description("stop placing new workloads on a node; those on it stay")
    .argument("<node>", "node id or name")
    .option("--json", "print the node as JSON")
    .addHelpText("after", "\nExamples:\n  aether cluster cordon node-2\n  aether cluster uncordon node-2")
    .action(async (node: string, o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { node: n } = await aether.aggregator.cordonNode({ node });
        if (!n) return;
        if (o.json) return printJson(auction.NodeSchema, n);
        process.stdout.write(`node ${n.name} is ${lifecycle(n.lifecycle)}: ${n.lifecycleReason}\n`);
      }),
    );

  cluster
    .command("drain")
    .description("move every workload off a node (maintenance mode), at most --max-moves at a time; the node is then DRAINED")
    .argument("<node>", "node id or name")
    .option("--max-moves <n>", "disruption budget: the most workloads moved at once (1..64)", uint32, 1)
    .option("--json", "one JSON object (DrainProgress) per line")
    .addHelpText(
      "after",
      "\nThe drain runs in aether-aggregator: Ctrl-C stops watching, not the drain; run the same command again to follow it.\n" +
        "A workload that cannot move (no other node bids, its move failed twice, a VM that cannot be live-migrated) stops the\n" +
        "drain: it stays where it is, the node stays cordoned, and the command exits 1 with the reason.\n" +
        "\nExamples:\n  aether cluster drain node-2\n  aether cluster drain node-2 --max-moves 3 --json\n  aether cluster uncordon node-2",
    )
    .action(async (node: string, o: { maxMoves: number; json?: boolean }) =>
      withClient(globals(), async (aether) => follow(aether.aggregator.drainNode({ node, maxMoves: o.maxMoves }), o.json === true)),
    );

  cluster
    .command("uncordon")
    .description("put a cordoned or drained node back on duty: it takes part in auctions again")
    .argument("<node>", "node id or name")
    .option("--json", "print the node as JSON")
    .addHelpText("after", "\nExamples:\n  aether cluster uncordon node-2")
    .action(async (node: string, o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { node: n } = await aether.aggregator.uncordonNode({ node });
        if (!n) return;
        if (o.json) return printJson(auction.NodeSchema, n);
        process.stdout.write(`node ${n.name} is ${lifecycle(n.lifecycle)}: ${n.lifecycleReason}\n`);
      }),
    );

  cluster
    .command("shutdown")
    .description("drain a node, then power it off through its BMC (graceful, then forced); it ends DECOMMISSIONED")
    .argument("<node>", "node id or name")
    .option("--max-moves <n>", "disruption budget of the drain (1..64)", uint32, 1)
    .addOption(durationOption("--graceful-timeout <duration>", "how long GracefulShutdown may take before ForceOff", 120_000))
    .option("--json", "one JSON object (DrainProgress) per line")
    .addHelpText(
      "after",
      "\nThe node's BMC is the one aether-aggregator fences it with ([[bmcs]] in its configuration).\n" +
        "\nExamples:\n  aether cluster shutdown node-2\n  aether cluster shutdown node-2 --graceful-timeout 5m --json",
    )
    .action(async (node: string, o: { maxMoves: number; gracefulTimeout: number; json?: boolean }) =>
      withClient(globals(), async (aether) =>
        follow(
          aether.aggregator.shutdownNode({ node, maxMoves: o.maxMoves, gracefulTimeout: toDuration(o.gracefulTimeout) }),
          o.json === true,
        ),
      ),
    );
}
