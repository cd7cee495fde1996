// Auctions: decision latency (broadcast of RequestBid to winner chosen, as the aggregator records it)
// with 3, 16 and 100 bidders on loopback, when all answer and when one hangs, and placement
// throughput with 16 bidders. The bidders are fake nodes (test/helpers/fake-bidder.ts) answering at
// once, so the figures are the aggregator's own cost plus the loopback round trips. The bidders run
// in this process; the CPU time of the aggregator process and of this one (the deploying client and
// every bidder) per auction are reported apart, so the bidders' own cost is not taken for the
// aggregator's.
import { readFileSync } from "node:fs";
import type { AetherClient } from "@aether/sdk";
import { Code, ConnectError } from "@connectrpc/connect";
import { startAggregator } from "../test/helpers/aggregator.js";
import { startFakeBidder, type FakeBidder } from "../test/helpers/fake-bidder.js";
import { ms, percentile } from "./stats.js";

export interface AuctionBenchResult {
  rows: string[][];
  throughputPerSecond: number;
  p99With16Ms: number;
  p50With16Ms: number;
  p99With100Ms: number;
  windowMs: number;
}

const durationMs = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : Number.NaN);

async function withBidders<T>(client: AetherClient, count: number, hang: boolean, work: () => Promise<T>): Promise<T> {
  const bidders: FakeBidder[] = [];
  const leases = new Map<string, string>();
  let heartbeats: NodeJS.Timeout | undefined;
  try {
    for (let i = 0; i < count; i++) {
      const id = `bench-${String(i).padStart(3, "0")}`;
      // Scores spread out so there is a winner without tie-breaking; the last one hangs if asked.
      const bidder = await startFakeBidder(id, hang && i === count - 1 ? { hang: true } : { score: 100 + ((i * 37) % 900) });
      bidders.push(bidder);
      const { lease } = await client.aggregator.registerNode({ nodeId: id, name: id, address: bidder.address });
      leases.set(id, lease?.id ?? "");
    }
    // The fake nodes heartbeat as real ones do, or a long run (100 bidders under load) outlives their
    // leases and the auctions find no node.
    heartbeats = setInterval(() => {
      for (const [nodeId, leaseId] of leases) void client.aggregator.heartbeat({ nodeId, leaseId }).catch(() => undefined);
    }, 3000);
    return await work();
  } finally {
    clearInterval(heartbeats);
    for (const b of bidders) await client.aggregator.deregisterNode({ nodeId: b.nodeId }).catch(() => undefined);
    for (const b of bidders) await b.close();
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

/** CPU time (user + system) of a process so far, in ms, from /proc/<pid>/stat (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const ownCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

export async function benchAuctions(runs: number): Promise<AuctionBenchResult> {
  const windowMs = 250;
  const agg = await startAggregator({ args: ["--auction-window-ms", String(windowMs), "--log-level", "error"] });
  try {
    const rows: string[][] = [];
    let p99With16Ms = Number.NaN;
    let p50With16Ms = Number.NaN;
    let p99With100Ms = Number.NaN;
    const aggregatorPid = agg.process.pid ?? 0;
    for (const count of [3, 16, 100]) {
      for (const hang of [false, true]) {
        let aggregatorCpu = 0;
        let benchCpu = 0;
        const { samples, failed } = await withBidders(agg.client, count, hang, async () => {
          const [a0, b0] = [cpuMs(aggregatorPid), ownCpuMs()];
          const out = await decisions(
            agg.client,
            hang ? Math.max(5, Math.floor(runs / 10)) : runs,
            `d${count}${hang ? "h" : ""}`,
            windowMs,
          );
          [aggregatorCpu, benchCpu] = [cpuMs(aggregatorPid) - a0, ownCpuMs() - b0];
          return out;
        });
        rows.push([
          `${count} bidders${hang ? ", one hangs" : ", all answer"}`,
          failed ? `${samples.length} (${failed} found no bidder in time)` : String(samples.length),
          ms(percentile(samples, 50)),
          ms(percentile(samples, 99)),
          ms(aggregatorCpu / samples.length),
          ms(benchCpu / samples.length),
        ]);
        if (count === 16 && !hang) [p99With16Ms, p50With16Ms] = [percentile(samples, 99), percentile(samples, 50)];
        if (count === 100 && !hang) p99With100Ms = percentile(samples, 99);
      }
    }
    // Throughput: deploys from 8 clients at once against 16 bidders.
    const throughputPerSecond = await withBidders(agg.client, 16, false, async () => {
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
    return { rows, throughputPerSecond, p99With16Ms, p50With16Ms, p99With100Ms, windowMs };
  } finally {
    await agg.stop();
  }
}
