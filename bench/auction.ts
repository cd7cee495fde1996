// Auctions: decision latency (broadcast of RequestBid to winner chosen, as the aggregator records it)
// with 3, 16 and 100 bidders on loopback, when all answer and when one hangs, and placement
// throughput with 16 bidders. The bidders are fake nodes answering at once in the Connect protocol
// over HTTP/2, in a process of their own (bench/bidders.ts: lean responders by default, the test
// helper's Connect servers with BENCH_BIDDERS=connect), so the figures are the aggregator's own cost
// plus the loopback round trips and the bidders' turns on the same 2 cores.
// The CPU time per auction of the aggregator, of the bidders' process and of this one (the
// deploying client) are reported apart, so the bidders' own cost is not taken for the aggregator's.
//   BENCH_AUCTION_BIDDERS=16          only that size (to profile one case alone)
//   BENCH_BIDDERS=connect             the bidders are Connect servers (test/helpers/fake-bidder.ts)
//   BENCH_PROFILE_DIR=/tmp/x          the aggregator and the bidders' process write CPU profiles there (node --cpu-prof)
//   BENCH_AGGREGATOR=<path>           another build's bin/aether-aggregator.mjs (a baseline side by side)
import { rmSync } from "node:fs";
import type { AetherClient } from "@aether/sdk";
import { Code, ConnectError } from "@connectrpc/connect";
import { startAggregator } from "../test/helpers/aggregator.js";
import { BIDDER_KIND, BidderProcess, cpuMs } from "./bidders.js";
import { ms, percentile } from "./stats.js";

export interface AuctionBenchResult {
  bidderKind: string;
  rows: string[][];
  throughputPerSecond: number;
  p99With16Ms: number;
  p50With16Ms: number;
  p99With100Ms: number;
  /** CPU per auction with all bidders answering, by bidder count: the aggregator's and the bidders' process's, in ms. */
  cpuPerAuction: Array<{ bidders: number; aggregatorMs: number; biddersMs: number }>;
  windowMs: number;
}

const durationMs = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : Number.NaN);

async function withBidders<T>(
  client: AetherClient,
  bidders: BidderProcess,
  count: number,
  hang: boolean,
  work: () => Promise<T>,
): Promise<T> {
  const leases = new Map<string, string>();
  let heartbeats: NodeJS.Timeout | undefined;
  try {
    // Scores spread out so there is a winner without tie-breaking; the last one hangs if asked.
    const nodes = Array.from({ length: count }, (_, i) => ({
      nodeId: `bench-${String(i).padStart(3, "0")}`,
      behaviour: hang && i === count - 1 ? { hang: true } : { score: 100 + ((i * 37) % 900) },
    }));
    const addresses = await bidders.startBidders(nodes);
    for (const [i, { nodeId }] of nodes.entries()) {
      const { lease } = await client.aggregator.registerNode({ nodeId, name: nodeId, address: addresses[i] ?? "" });
      leases.set(nodeId, lease?.id ?? "");
    }
    // The fake nodes heartbeat as real ones do, or a long run (100 bidders under load) outlives their
    // leases and the auctions find no node.
    heartbeats = setInterval(() => {
      for (const [nodeId, leaseId] of leases) void client.aggregator.heartbeat({ nodeId, leaseId }).catch(() => undefined);
    }, 3000);
    return await work();
  } finally {
    clearInterval(heartbeats);
    for (const nodeId of leases.keys()) await client.aggregator.deregisterNode({ nodeId }).catch(() => undefined);
    await bidders.closeBidders();
  }
}

/**
 * Decision latency of `runs` auctions: bidding + decision as recorded in each auction. A few
 * auctions first, not counted, open the aggregator's connections to the bidders (steady state is
 * what is measured). An auction no bidder answered in time (a loaded host) counts as the whole
 * window, and is counted in `failed`.
 */
async function decisions(
  client: AetherClient,
  runs: number,
  tag: string,
  windowMs: number,
): Promise<{ samples: number[]; failed: number }> {
  const deploy = (name: string) =>
    client.aggregator.deploy({ spec: { name, kind: { case: "executable", value: { argv: ["/bin/true"] } } } });
  for (let i = 0; i < 3; i++) await deploy(`${tag}-warm-${i}`).catch(() => undefined);
  const samples: number[] = [];
  let failed = 0;
  for (let i = 0; i < runs; i++) {
    try {
      const { auction } = await deploy(`${tag}-${i}`);
      samples.push(durationMs(auction?.biddingDuration) + durationMs(auction?.decisionDuration));
    } catch (err) {
      if (!(err instanceof ConnectError) || err.code !== Code.ResourceExhausted) throw err;
      samples.push(windowMs);
      failed++;
    }
  }
  return { samples, failed };
}

const ownCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

export async function benchAuctions(runs: number): Promise<AuctionBenchResult> {
  const windowMs = 250;
  const profileDir = process.env.BENCH_PROFILE_DIR;
  const agg = await startAggregator({
    args: ["--auction-window-ms", String(windowMs), "--log-level", "error"],
    nodeArgs: profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
    main: process.env.BENCH_AGGREGATOR,
  });
  const bidders = await BidderProcess.start();
  try {
    const rows: string[][] = [];
    let p99With16Ms = Number.NaN;
    let p50With16Ms = Number.NaN;
    let p99With100Ms = Number.NaN;
    const cpuPerAuction: AuctionBenchResult["cpuPerAuction"] = [];
    const aggregatorPid = agg.process.pid ?? 0;
    const counts = process.env.BENCH_AUCTION_BIDDERS?.split(",").map(Number) ?? [3, 16, 100];
    for (const count of counts) {
      for (const hang of [false, true]) {
        let [aggregatorCpu, biddersCpu, clientCpu] = [0, 0, 0];
        const { samples, failed } = await withBidders(agg.client, bidders, count, hang, async () => {
          const [a0, b0, c0] = [cpuMs(aggregatorPid), cpuMs(bidders.pid), ownCpuMs()];
          const out = await decisions(
            agg.client,
            hang ? Math.max(5, Math.floor(runs / 10)) : runs,
            `d${count}${hang ? "h" : ""}`,
            windowMs,
          );
          [aggregatorCpu, biddersCpu, clientCpu] = [cpuMs(aggregatorPid) - a0, cpuMs(bidders.pid) - b0, ownCpuMs() - c0];
          return out;
        });
        rows.push([
          `${count} bidders${hang ? ", one hangs" : ", all answer"}`,
          failed ? `${samples.length} (${failed} found no bidder in time)` : String(samples.length),
          ms(percentile(samples, 50)),
          ms(percentile(samples, 99)),
          ms(aggregatorCpu / samples.length),
          ms(biddersCpu / samples.length),
          ms(clientCpu / samples.length),
        ]);
        if (count === 16 && !hang) [p99With16Ms, p50With16Ms] = [percentile(samples, 99), percentile(samples, 50)];
        if (count === 100 && !hang) p99With100Ms = percentile(samples, 99);
        if (!hang)
          cpuPerAuction.push({ bidders: count, aggregatorMs: aggregatorCpu / samples.length, biddersMs: biddersCpu / samples.length });
      }
    }
    // Throughput: deploys from 8 clients at once against 16 bidders.
    const throughputPerSecond = await withBidders(agg.client, bidders, 16, false, async () => {
      const total = runs * 2;
      const deploy = (name: string) =>
        agg.client.aggregator.deploy({ spec: { name, kind: { case: "executable", value: { argv: ["/bin/true"] } } } });
      for (let i = 0; i < 3; i++) await deploy(`t-warm-${i}`).catch(() => undefined);
      let next = 0;
      let placed = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < total) {
            const i = next++;
            // Only placements count; an auction no bidder answered in time (a loaded host) does not.
            await deploy(`t-${i}`).then(
              () => placed++,
              (err: unknown) => {
                if (!(err instanceof ConnectError) || err.code !== Code.ResourceExhausted) throw err;
              },
            );
          }
        }),
      );
      return placed / ((performance.now() - started) / 1000);
    });
    return { bidderKind: BIDDER_KIND, rows, throughputPerSecond, p99With16Ms, p50With16Ms, p99With100Ms, cpuPerAuction, windowMs };
  } finally {
    await agg.stop();
    // Its state folder holds a file per auction, placement and event (thousands, ~25 MB a run).
    rmSync(agg.dir, { recursive: true, force: true });
    await bidders.stop();
  }
}
