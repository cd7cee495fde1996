// aether cluster nodes|deploy|placements|release|auctions|auction|events: the aggregator's view of
// the cluster (cordon|drain|uncordon|shutdown are in cluster-maintenance.ts). The aggregator is found by --aggregator, else AETHER_AGGREGATOR, else the node
// address every other command uses (an aggregator answers there too when it is the same endpoint).
import { readFileSync } from "node:fs";
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, type Command } from "commander";
import { auction } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { age, bytes, printFields, printJson, printTable } from "../output.js";
import { uint32 } from "../numbers.js";
import { parseBytes } from "../units.js";
import { maintenanceCommands } from "./cluster-maintenance.js";

// protobuf-es enums map numbers back to names without the enum's prefix ("READY").
const enumName = (names: Record<number, string>, value: number) => (names[value] ?? String(value)).toLowerCase().replace(/_/g, " ");
const nodeState = (s: auction.NodeState) => enumName(auction.NodeState, s);
const nodeLifecycle = (l: auction.NodeLifecycle) => enumName(auction.NodeLifecycle, l);
const placementState = (s: auction.PlacementState) => enumName(auction.PlacementState, s);
const auctionState = (s: auction.AuctionState) => enumName(auction.AuctionState, s);
const outcome = (o: auction.BidOutcome) => enumName(auction.BidOutcome, o);
const millis = (d: { seconds: bigint; nanos: number } | undefined) =>
  d ? `${(Number(d.seconds) * 1000 + d.nanos / 1e6).toFixed(1)} ms` : "-";

/** "drained", "on-duty", "ON_DUTY" → the NodeLifecycle. */
function lifecycleOf(value: string): auction.NodeLifecycle {
  const name = value.trim().toUpperCase().replace(/[- ]/g, "_");
  const found = (auction.NodeLifecycle as unknown as Record<string, number>)[name];
  if (found === undefined || found === auction.NodeLifecycle.UNSPECIFIED)
    throw new InvalidArgumentError("It must be joining, on-duty, cordoned, draining, drained, shutting-down or decommissioned.");
  return found as auction.NodeLifecycle;
}

function keyValue(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = v.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`${JSON.stringify(v)} is not KEY=VALUE`);
  return { ...prev, [v.slice(0, eq)]: v.slice(eq + 1) };
}

function showAuction(a: auction.AuctionRecord): void {
  printFields([
    ["auction", a.id],
    ["workload", a.workloadId],
    ["state", `${auctionState(a.state)}${a.stateReason ? `: ${a.stateReason}` : ""}`],
    ["winner", a.winner ? `${a.winner} (score ${a.winningScore})` : "-"],
    ["tie break", a.tieBreakReason || "-"],
    [
      "bidding / decision / provisioning / total",
      `${millis(a.biddingDuration)} / ${millis(a.decisionDuration)} / ${millis(a.provisioningDuration)} / ${millis(a.totalDuration)}`,
    ],
  ]);
  printTable(
    ["NODE", "OUTCOME", "SCORE", "LATENCY", "WHY"],
    a.bids.map((b) => [
      b.node,
      outcome(b.outcome),
      b.outcome === auction.BidOutcome.BID ? String(b.score) : "-",
      millis(b.latency),
      b.error || b.breakdown?.declineReason || "",
    ]),
  );
}

export function clusterCommands(program: Command): void {
  const cluster = program
    .command("cluster")
    .description("the cluster through aether-aggregator: nodes, maintenance (drain, uncordon, shutdown), auctions, placements and events")
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)");
  const globals = (): GlobalOptions => {
    const address =
      cluster.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    // An https address, however given, uses the client config's ca, cert and key (connect() reads them).
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  cluster
    .command("nodes")
    .description("registered nodes with their state (lease), lifecycle (on duty, cordoned, draining, drained, ...) and placements")
    .option("--json", "print the nodes as JSON")
    .option(
      "--lifecycle <lifecycle>",
      "only nodes in this lifecycle (joining, on-duty, cordoned, draining, drained, shutting-down, decommissioned)",
      lifecycleOf,
    )
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster nodes\n  aether cluster nodes --lifecycle drained\n  aether cluster --aggregator unix:///run/aether/aggregator.sock nodes --json",
    )
    .action(async (o: { json?: boolean; lifecycle?: auction.NodeLifecycle }) =>
      withClient(globals(), async (aether) => {
        const { nodes } = await aether.aggregator.listNodes({
          pageSize: 1000,
          lifecycle: o.lifecycle ?? auction.NodeLifecycle.UNSPECIFIED,
        });
        if (o.json) return printJson(auction.NodeSchema, nodes);
        printTable(
          ["ID", "NAME", "STATE", "LIFECYCLE", "ADDRESS", "CPUS", "MEMORY", "PLACEMENTS", "HEARTBEAT"],
          nodes.map((n) => [
            n.id,
            n.name,
            nodeState(n.state) + (n.stateReason ? ` (${n.stateReason})` : ""),
            nodeLifecycle(n.lifecycle),
            n.address,
            String(n.capabilities?.cpuCount ?? "-"),
            n.capabilities ? bytes(n.capabilities.memoryTotalBytes) : "-",
            String(n.placementCount),
            age(n.heartbeatTime),
          ]),
        );
      }),
    );

  cluster
    .command("deploy")
    .description("place a workload on the node that bids best (an executable; or a VM or cell from a JSON spec)")
    .argument("<name>", "workload name, unique in the tenant")
    .argument("[argv...]", "the program and its arguments (after --)")
    .option("--spec <file>", "a WorkloadSpec as JSON (proto3 JSON mapping) instead of argv, e.g. for a VM")
    .option("--tenant <tenant>", "owning tenant", "")
    .option("--cpu <millis>", "CPU needed, in thousandths of a CPU", uint32)
    .option("--memory <size>", "memory needed, e.g. 512M", parseBytes)
    .option("--selector <key=value>", "node label that must match (repeatable)", keyValue)
    .option("--exclude <node>", "node id that must not host it (repeatable)", (v: string, p: string[] = []) => [...p, v])
    .option("--request-id <id>", "idempotency key: a retry returns the first placement")
    .option("--json", "print the placement and its auction as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster deploy web --memory 256M -- /usr/bin/python3 -m http.server 8080\n  aether cluster deploy db --spec db-vm.json --selector tier=ssd",
    )
    .action(
      async (
        name: string,
        argv: string[],
        o: {
          spec?: string;
          tenant: string;
          cpu?: number;
          memory?: bigint;
          selector?: Record<string, string>;
          exclude?: string[];
          requestId?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        if ((o.spec === undefined) === (argv.length === 0)) cmd.error("error: give the program after -- or a --spec file, not both");
        return withClient(globals(), async (aether) => {
          // A spec file is a WorkloadSpec in the proto3 JSON mapping; the name, tenant and the
          // requirement flags given here override what it says.
          const fromFile = o.spec ? fromJson(auction.WorkloadSpecSchema, JSON.parse(readFileSync(o.spec, "utf8")) as JsonValue) : undefined;
          const kind = fromFile ? fromFile.kind : { case: "executable" as const, value: { argv } };
          const base = fromFile?.requirements;
          const requirements = {
            cpuMillis: o.cpu ?? base?.cpuMillis ?? 0,
            memoryBytes: o.memory ?? base?.memoryBytes ?? 0n,
            diskBytes: base?.diskBytes ?? 0n,
            requireKvm: base?.requireKvm ?? false,
            nodeSelector: { ...base?.nodeSelector, ...o.selector },
            excludeNodes: [...(base?.excludeNodes ?? []), ...(o.exclude ?? [])],
          };
          const { placement, auction: record } = await aether.aggregator.deploy({
            spec: { name, tenant: o.tenant, labels: fromFile?.labels ?? {}, requirements, kind },
            requestId: o.requestId ?? "",
          });
          if (o.json) {
            const json = {
              placement: placement ? toJson(auction.WorkloadPlacementSchema, placement) : null,
              auction: record ? toJson(auction.AuctionRecordSchema, record) : null,
            };
            process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
            return;
          }
          process.stdout.write(
            `${name} placed on ${placement?.node} (score ${record?.winningScore}, auction ${record?.id}, ${millis(record?.totalDuration)})\n`,
          );
        });
      },
    );

  cluster
    .command("placements")
    .description("where workloads run")
    .option("--node <id>", "only this node's")
    .option("--tenant <tenant>", "only this tenant's", "")
    .option("--json", "print the placements as JSON")
    .addHelpText("after", "\nExamples:\n  aether cluster placements\n  aether cluster placements --node 3f2a... --json")
    .action(async (o: { node?: string; tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { placements } = await aether.aggregator.listPlacements({ pageSize: 1000, node: o.node ?? "", tenant: o.tenant });
        if (o.json) return printJson(auction.WorkloadPlacementSchema, placements);
        printTable(
          ["WORKLOAD", "NAME", "TENANT", "STATE", "NODE", "PLACED"],
          placements.map((p) => [
            p.workloadId,
            p.name,
            p.tenant,
            placementState(p.state) + (p.stateReason ? ` (${p.stateReason})` : ""),
            p.node || "-",
            age(p.placeTime),
          ]),
        );
      }),
    );

  cluster
    .command("release")
    .description("stop a placed workload on its node and mark the placement released")
    .argument("<workload>", "workload id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether cluster release web")
    .action(async (workload: string, o: { tenant: string }) =>
      withClient(globals(), async (aether) => {
        await aether.aggregator.releasePlacement({ workload, tenant: o.tenant });
      }),
    );

  cluster
    .command("auctions")
    .description("auction records, newest first: every bid, the winner and the timings")
    .option("--workload <id>", "only this workload's auctions")
    .option("--json", "print the auctions as JSON")
    .addHelpText("after", "\nExamples:\n  aether cluster auctions\n  aether cluster auction <id>      one auction with every bid")
    .action(async (o: { workload?: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { auctions } = await aether.aggregator.listAuctions({ pageSize: 1000, workloadId: o.workload ?? "" });
        if (o.json) return printJson(auction.AuctionRecordSchema, auctions);
        printTable(
          ["AUCTION", "WORKLOAD", "STATE", "WINNER", "SCORE", "BIDS", "TOTAL", "WHEN"],
          auctions.map((a) => [
            a.id,
            a.workloadId,
            auctionState(a.state),
            a.winner || "-",
            a.winner ? String(a.winningScore) : "-",
            String(a.bids.length),
            millis(a.totalDuration),
            age(a.createTime),
          ]),
        );
      }),
    );

  cluster
    .command("auction")
    .description("one auction with every bid")
    .argument("<id>", "auction id")
    .option("--json", "print the auction as JSON")
    .addHelpText("after", "\nExamples:\n  aether cluster auction 7c9e6679-7425-40de-944b-e07fc1f90ae7")
    .action(async (id: string, o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { auction: a } = await aether.aggregator.getAuction({ auction: id });
        if (!a) throw new Error("the aggregator returned no auction");
        if (o.json) return printJson(auction.AuctionRecordSchema, a);
        showAuction(a);
      }),
    );

  maintenanceCommands(cluster, globals);

  cluster
    .command("events")
    .description("cluster events: nodes joining, suspected and fenced; workloads placed and re-placed")
    .option("-f, --follow", "keep streaming new events")
    .option("--tail <n>", "start with the last n events", uint32, 100)
    .option("--json", "one JSON object per line")
    .addHelpText("after", "\nExamples:\n  aether cluster events --tail 20\n  aether cluster events -f --json")
    .action(async (o: { follow?: boolean; tail: number; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const stream = aether.aggregator.streamClusterEvents({ start: { case: "tailEvents", value: o.tail }, follow: o.follow ?? false });
        for await (const { event } of stream) {
          if (!event) continue;
          if (o.json) process.stdout.write(`${JSON.stringify(toJson(auction.ClusterEventSchema, event))}\n`);
          else {
            const when = event.time ? new Date(timestampMs(event.time)).toISOString() : "-";
            process.stdout.write(`${when}  ${enumName(auction.ClusterEventKind, event.kind)}  ${event.node || "-"}  ${event.message}\n`);
          }
        }
      }),
    );
}
