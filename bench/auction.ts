// Auctions: decision latency (broadcast of RequestBid to winner chosen, as the aggregator records it)
// with 3, 16 and 100 bidders on loopback, when all answer and when one hangs, and placement
// throughput with 16 bidders. The bidders are fake nodes (test/helpers/fake-bidder.ts) answering at
// once, so the figures are the aggregator's own cost plus the loopback round trips.
import type { AetherClient } from "@aether/sdk";
import { startAggregator } from "../test/helpers/aggregator.js";
import { startFakeBidder, type FakeBidder } from "../test/helpers/fake-bidder.js";
import { ms, percentile } from "./stats.js";

export interface AuctionBenchResult {
  rows: string[][];
  throughputPerSecond: number;
  p99With16Ms: number;
  windowMs: number;
}

const durationMs = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : Number.NaN);

async function withBidders<T>(client: AetherClient, count: number, hang: boolean, work: () => Promise<T>): Promise<T> {
  const bidders: FakeBidder[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const id = `bench-${String(i).padStart(3, "0")}`;
      // Scores spread out so there is a winner without tie-breaking; the last one hangs if asked.
      const bidder = await startFakeBidder(id, hang && i === count - 1 ? { hang: true } : { score: 100 + ((i * 37) % 900) });
      bidders.push(bidder);
      await client.aggregator.registerNode({ nodeId: id, name: id, address: bidder.address });
    }
    return await work();
  } finally {
    for (const b of bidders) await client.aggregator.deregisterNode({ nodeId: b.nodeId }).catch(() => undefined);
    for (const b of bidders) await b.close();
  }
}

/** Decision latency of `runs` auctions: bidding + decision as recorded in each auction. */
async function decisions(client: AetherClient, runs: number, tag: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const { auction } = await client.aggregator.deploy({
      spec: { name: `${tag}-${i}`, kind: { case: "executable", value: { argv: ["/bin/true"] } } },
    });
    out.push(durationMs(auction?.biddingDuration) + durationMs(auction?.decisionDuration));
  }
  return out;
}

export async function benchAuctions(runs: number): Promise<AuctionBenchResult> {
  const windowMs = 250;
  const agg = await startAggregator({ args: ["--auction-window-ms", String(windowMs), "--log-level", "error"] });
  try {
    const rows: string[][] = [];
    let p99With16Ms = Number.NaN;
    for (const count of [3, 16, 100]) {
      for (const hang of [false, true]) {
        const samples = await withBidders(agg.client, count, hang, () =>
          decisions(agg.client, hang ? Math.max(5, Math.floor(runs / 10)) : runs, `d${count}${hang ? "h" : ""}`),
        );
        rows.push([
          `${count} bidders${hang ? ", one hangs" : ", all answer"}`,
          String(samples.length),
          ms(percentile(samples, 50)),
          ms(percentile(samples, 99)),
        ]);
        if (count === 16 && !hang) p99With16Ms = percentile(samples, 99);
      }
    }
    // Throughput: deploys from 8 clients at once against 16 bidders.
    const throughputPerSecond = await withBidders(agg.client, 16, false, async () => {
      const total = runs * 2;
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < total) {
            const i = next++;
            await agg.client.aggregator.deploy({ spec: { name: `t-${i}`, kind: { case: "executable", value: { argv: ["/bin/true"] } } } });
          }
        }),
      );
      return total / ((performance.now() - started) / 1000);
    });
    return { rows, throughputPerSecond, p99With16Ms, windowMs };
  } finally {
    await agg.stop();
  }
}
