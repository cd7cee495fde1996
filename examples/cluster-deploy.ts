#!/usr/bin/env aetherscript
// Place a workload on the cluster by reverse auction: every READY node scores it, the best bid wins
// and provisions it. Run against the aggregator, not a node:
//   AETHER_HOST=unix:///run/aether/aggregator.sock aetherscript examples/cluster-deploy.ts
import { auction, connect } from "@aether/sdk";

const aether = await connect();
const { nodes } = await aether.aggregator.listNodes({ state: auction.NodeState.READY });
console.log(`${nodes.length} node(s) ready: ${nodes.map((n) => n.name).join(", ")}`);

const name = `example-${Date.now().toString(36)}`;
const { placement, auction: record } = await aether.aggregator.deploy({
  spec: {
    name,
    labels: { example: "cluster-deploy" },
    requirements: { cpuMillis: 50, memoryBytes: 16n * 1024n * 1024n },
    kind: { case: "executable", value: { argv: ["/bin/sleep", "300"] } },
  },
});
for (const bid of record?.bids ?? []) {
  const answer =
    bid.outcome === auction.BidOutcome.BID
      ? `bid ${bid.score}`
      : bid.breakdown?.declineReason || bid.error || auction.BidOutcome[bid.outcome];
  console.log(`  ${bid.node}: ${answer}`);
}
const winner = nodes.find((n) => n.id === placement?.node);
console.log(`${name} placed on ${winner?.name ?? placement?.node} (score ${record?.winningScore}) as ${placement?.resourceId}`);

await aether.aggregator.releasePlacement({ workload: name, gracePeriod: { seconds: 1n } });
console.log(`released ${name}`);
aether.close();
