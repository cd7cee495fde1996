// aether cluster nodes|deploy|placements|release|auctions|auction|events: the aggregator's view of
// the cluster (cordon|drain|uncordon|shutdown are in cluster-maintenance.ts). The aggregator is found by --aggregator, else AETHER_AGGREGATOR, else the node
// address every other command uses (an aggregator answers there too when it is the same endpoint).
import { readFileSync } from "node:fs";
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, type Command } from "commander";
import { auction, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import {
  age,
  bytes,
  forPrograms,
  labelsText,
  outputOptions,
  printEach,
  printFields,
  printList,
  printOne,
  printTable,
  shortId,
  type ListView,
  type OutputFlags,
} from "../output.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { uint32 } from "../numbers.js";
import { parseBytes } from "../units.js";
import { maintenanceCommands } from "./cluster-maintenance.js";
import { clusterEvents, watch, watchOption, type WatchFlags } from "../watch.js";

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

/** Node ids to names, for tables (JSON keeps the ids); an unknown id shows as its short form. */
export async function nodeNames(aether: AetherClient): Promise<(id: string) => string> {
  const { nodes } = await aether.aggregator.listNodes({ pageSize: 1000 }).catch(() => ({ nodes: [] as auction.Node[] }));
  const names = new Map(nodes.map((n) => [n.id, n.name]));
  return (id) => (id === "" ? "-" : (names.get(id) ?? shortId(id)));
}

const NODES: ListView<auction.Node> = {
  json: auction.NodeSchema,
  name: (n) => n.name,
  columns: [
    { header: "NAME", cell: (n) => n.name },
    { header: "STATE", cell: (n) => nodeState(n.state) + (n.stateReason ? ` (${n.stateReason})` : ""), clip: true },
    { header: "LIFECYCLE", cell: (n) => nodeLifecycle(n.lifecycle) },
    { header: "ADDRESS", cell: (n) => n.address, clip: true },
    { header: "CPUS", cell: (n) => String(n.capabilities?.cpuCount ?? "-") },
    { header: "MEMORY", cell: (n) => (n.capabilities ? bytes(n.capabilities.memoryTotalBytes) : "-") },
    { header: "PLACEMENTS", cell: (n) => String(n.placementCount) },
    { header: "HEARTBEAT", cell: (n) => age(n.heartbeatTime) },
    { header: "ID", cell: (n) => shortId(n.id), whole: (n) => n.id },
    { header: "LABELS", cell: (n) => labelsText(n.labels), wideOnly: true },
  ],
};

function placementsView(node: (id: string) => string): ListView<auction.WorkloadPlacement> {
  return {
    json: auction.WorkloadPlacementSchema,
    name: (p) => p.name,
    columns: [
      { header: "NAME", cell: (p) => p.name },
      { header: "TENANT", cell: (p) => p.tenant },
      { header: "STATE", cell: (p) => placementState(p.state) + (p.stateReason ? ` (${p.stateReason})` : ""), clip: true },
      { header: "NODE", cell: (p) => node(p.node) },
      { header: "DEPLOYMENT", cell: (p) => (p.deployment ? `${p.deployment}@${p.deploymentRevision}` : "-") },
      { header: "PLACED", cell: (p) => age(p.placeTime) },
      { header: "WORKLOAD", cell: (p) => shortId(p.workloadId), whole: (p) => p.workloadId },
      { header: "LABELS", cell: (p) => labelsText(p.labels), wideOnly: true },
    ],
  };
}

function auctionsView(node: (id: string) => string): ListView<auction.AuctionRecord> {
  return {
    json: auction.AuctionRecordSchema,
    name: (a) => a.id,
    columns: [
      { header: "AUCTION", cell: (a) => shortId(a.id), whole: (a) => a.id },
      { header: "WORKLOAD", cell: (a) => shortId(a.workloadId), whole: (a) => a.workloadId },
      { header: "STATE", cell: (a) => auctionState(a.state) },
      { header: "WINNER", cell: (a) => node(a.winner) },
      { header: "SCORE", cell: (a) => (a.winner ? String(a.winningScore) : "-") },
      { header: "BIDS", cell: (a) => String(a.bids.length) },
      { header: "TOTAL", cell: (a) => millis(a.totalDuration) },
      { header: "WHEN", cell: (a) => age(a.createTime) },
      { header: "REASON", cell: (a) => a.stateReason || "-", wideOnly: true },
    ],
  };
}

const EVENTS = { json: auction.ClusterEventSchema, name: (e: auction.ClusterEvent) => enumName(auction.ClusterEventKind, e.kind) };

function showAuction(a: auction.AuctionRecord, node: (id: string) => string): void {
  printFields([
    ["auction", a.id],
    ["workload", a.workloadId],
    ["winner node", node(a.winner)],
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
      node(b.node),
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
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster nodes\n  aether cluster deploy web --memory 256M -- /usr/bin/python3 -m http.server 8080\n  aether cluster placements -o wide\n  aether cluster drain node-2",
    );
  const globals = (): GlobalOptions => {
    const address =
      cluster.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    // An https address, however given, uses the client config's ca, cert and key (connect() reads them).
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  const nodes = cluster
    .command("nodes")
    .description("registered nodes with their state (lease), lifecycle (on duty, cordoned, draining, drained, ...) and placements")
    .option(
      "--lifecycle <lifecycle>",
      "only nodes in this lifecycle (joining, on-duty, cordoned, draining, drained, shutting-down, decommissioned)",
      lifecycleOf,
    )
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster nodes\n  aether cluster nodes --lifecycle drained\n  aether cluster nodes -l zone=a -o wide\n  aether cluster --aggregator unix:///run/aether/aggregator.sock nodes --json\n  aether cluster nodes -w",
    )
    .action(async (o: { lifecycle?: auction.NodeLifecycle } & SelectorFlags & OutputFlags & WatchFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const read = async () => {
          const { nodes: all } = await aether.aggregator.listNodes({
            pageSize: 1000,
            filter: serverFilter(selector),
            lifecycle: o.lifecycle ?? auction.NodeLifecycle.UNSPECIFIED,
          });
          return all.filter((n) => selects(selector, n.labels));
        };
        if (o.watch) {
          const changes = clusterEvents(aether);
          return watch({ what: `nodes on ${aether.address}`, list: read, view: NODES, output: o, key: (n) => n.id, changes });
        }
        printList(o, NODES, await read());
      }),
    );
  watchOption(selectorOptions(outputOptions(nodes, "list")));

  dryRunOption(outputOptions(cluster.command("deploy")))
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
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster deploy web --memory 256M -- /usr/bin/python3 -m http.server 8080\n  aether cluster deploy db --spec db-vm.json --selector tier=ssd\n  aether cluster deploy web --selector zone=a --dry-run -- /bin/sleep 600",
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
        } & OutputFlags &
          DryRunFlags,
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
          if (o.dryRun) {
            // No auction is held: the nodes that could bid are those on duty whose labels match.
            const { nodes } = await aether.aggregator.listNodes({ pageSize: 1000 });
            const excluded = new Set(requirements.excludeNodes);
            const candidates = nodes.filter(
              (n) =>
                n.state === auction.NodeState.READY &&
                n.lifecycle === auction.NodeLifecycle.ON_DUTY &&
                !excluded.has(n.id) &&
                Object.entries(requirements.nodeSelector).every(([k, v]) => n.labels[k] === v),
            );
            if (candidates.length === 0)
              return sayWould(
                `deploy ${name}, but no node could bid: none is ready, on duty and matches ${labelsText(requirements.nodeSelector)}`,
              );
            return sayWould(`deploy ${name} by an auction among ${candidates.length} node(s): ${candidates.map((n) => n.name).join(", ")}`);
          }
          const { placement, auction: record } = await aether.aggregator.deploy({
            spec: { name, tenant: o.tenant, labels: fromFile?.labels ?? {}, requirements, kind },
            requestId: o.requestId ?? "",
          });
          if (forPrograms(o)) {
            const json = {
              placement: placement ? toJson(auction.WorkloadPlacementSchema, placement) : null,
              auction: record ? toJson(auction.AuctionRecordSchema, record) : null,
            };
            return printOne(o, { json: () => json, name: () => name }, json);
          }
          process.stdout.write(
            `${name} placed on ${placement?.node} (score ${record?.winningScore}, auction ${record?.id}, ${millis(record?.totalDuration)})\n`,
          );
        });
      },
    );

  const placements = cluster
    .command("placements")
    .description("where workloads run")
    .option("--node <id>", "only this node's")
    .option("--tenant <tenant>", "only this tenant's", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster placements\n  aether cluster placements -l team=a -o wide\n  aether cluster placements --node 3f2a... --json\n  aether cluster placements -w",
    )
    .action(async (o: { node?: string; tenant: string } & SelectorFlags & OutputFlags & WatchFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const read = async () => {
          const { placements: all } = await aether.aggregator.listPlacements({
            pageSize: 1000,
            node: o.node ?? "",
            tenant: o.tenant,
            filter: serverFilter(selector),
          });
          return all.filter((p) => selects(selector, p.labels));
        };
        const view = placementsView(forPrograms(o) ? shortId : await nodeNames(aether));
        if (o.watch) {
          const changes = clusterEvents(aether, o.tenant);
          return watch({ what: `placements on ${aether.address}`, list: read, view, output: o, key: (p) => p.workloadId, changes });
        }
        printList(o, view, await read());
      }),
    );
  watchOption(selectorOptions(outputOptions(placements, "list")));

  dryRunOption(cluster.command("release"))
    .description("stop a placed workload on its node and mark the placement released")
    .argument("<workload>", "workload id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether cluster release web\n  aether cluster release web --dry-run")
    .action(async (workload: string, o: { tenant: string } & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const { placement: p } = await aether.aggregator.getPlacement({ workload, tenant: o.tenant });
          if (!p) throw new Error("the aggregator returned no placement");
          return sayWould(`release ${p.name} (${placementState(p.state)}) and stop it on node ${(await nodeNames(aether))(p.node)}`);
        }
        await aether.aggregator.releasePlacement({ workload, tenant: o.tenant });
      }),
    );

  const auctions = cluster
    .command("auctions")
    .description("auction records, newest first: every bid, the winner and the timings")
    .option("--workload <id>", "only this workload's auctions")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster auctions\n  aether cluster auctions -l team=a -o wide\n  aether cluster auction <id>      one auction with every bid",
    )
    .action(async (o: { workload?: string } & SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        // The request's filter is on the workload's labels; the records do not carry them, so a
        // selector beyond key=value terms cannot be applied here.
        if (selector?.terms.some((t) => t.op !== "="))
          throw new InvalidArgumentError("auctions are selected by key=value terms only (the records do not carry the labels)");
        const { auctions: all } = await aether.aggregator.listAuctions({
          pageSize: 1000,
          workloadId: o.workload ?? "",
          filter: serverFilter(selector),
        });
        printList(o, auctionsView(forPrograms(o) ? shortId : await nodeNames(aether)), all);
      }),
    );
  selectorOptions(outputOptions(auctions, "list"), "workload label");

  outputOptions(cluster.command("auction"))
    .description("one auction with every bid")
    .argument("<id>", "auction id")
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster auction 7c9e6679-7425-40de-944b-e07fc1f90ae7\n  aether cluster auction 7c9e6679 -o yaml",
    )
    .action(async (id: string, o: OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { auction: a } = await aether.aggregator.getAuction({ auction: id });
        if (!a) throw new Error("the aggregator returned no auction");
        if (forPrograms(o)) return printOne(o, auctionsView(shortId), a);
        showAuction(a, await nodeNames(aether));
      }),
    );

  maintenanceCommands(cluster, globals);

  outputOptions(cluster.command("events"))
    .description("cluster events: nodes joining, suspected and fenced; workloads placed and re-placed")
    .option("-f, --follow", "keep streaming new events")
    .option("--tail <n>", "start with the last n events", uint32, 100)
    .addHelpText(
      "after",
      "\nExamples:\n  aether cluster events --tail 20\n  aether cluster events -f --json      one JSON object per line\n  aether cluster events -o yaml",
    )
    .action(async (o: { follow?: boolean; tail: number } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const stream = aether.aggregator.streamClusterEvents({ start: { case: "tailEvents", value: o.tail }, follow: o.follow ?? false });
        for await (const { event } of stream) {
          if (!event) continue;
          const when = event.time ? new Date(timestampMs(event.time)).toISOString() : "-";
          printEach(o, EVENTS, event, `${when}  ${enumName(auction.ClusterEventKind, event.kind)}  ${event.node || "-"}  ${event.message}`);
        }
      }),
    );
}
