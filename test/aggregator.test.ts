// aether-aggregator: the decision rules as a pure function, the embedded store, and the compiled
// server (the same entry users run) against fake bidders on loopback: who wins, how ties break, what
// a hanging, lying or failing node does to an auction, leases, and state across a restart.
// Past 1,000 lines because its suites share the helpers at its top (spec, bidOf, ms and the fake
// bidders' set-up); the EmbeddedStore and standby-replica suites are the next to move to files of their own.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import {
  AuctionState,
  AuctionTrigger,
  BidOutcome,
  ClusterEventKind,
  DeployRequestSchema,
  ListNodesRequestSchema,
  NodeState,
  PlacementState,
  RequestBidResponseSchema,
  type ClusterEvent,
  type DeployResponse,
  type WorkloadSpecSchema,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import {
  Aggregator,
  classifyAnswer,
  decide,
  EmbeddedStore,
  NotLeaderError,
  StoreUnavailableError,
  type ClusterStore,
  type Contender,
  type Leadership,
  type StoreEntry,
} from "@aether/aggregator";
import { repoRoot, eventually } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startFakeBidder, type BidBehaviour, type FakeBidder } from "./helpers/fake-bidder.js";

const MAIN = join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs");

const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : Number.NaN);

/** One aggregator for a describe block; stopped (exit 0 checked) and removed after it. */
function useAggregator(args: string[] = []): { agg: TestAggregator; readonly client: AetherClient } {
  const fixture = {} as { agg: TestAggregator };
  before(async () => {
    fixture.agg = await startAggregator({ args });
  });
  after(async () => {
    const code = await fixture.agg.stop();
    assert.equal(code, 0, `aether-aggregator exits 0 on SIGTERM:\n${fixture.agg.log()}`);
    rmSync(fixture.agg.dir, { recursive: true, force: true });
  });
  return {
    get agg() {
      return fixture.agg;
    },
    get client() {
      return fixture.agg.client;
    },
  };
}

type SpecInit = MessageInitShape<typeof WorkloadSpecSchema>;

/** A workload that runs /bin/sleep. */
function spec(
  name: string,
  extra: { labels?: Record<string, string>; requirements?: { nodeSelector?: Record<string, string>; excludeNodes?: string[] } } = {},
): SpecInit {
  return { name, kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } }, ...extra };
}

/** Fake bidders registered with the aggregator for one test; deregistered and closed afterwards. */
async function withNodes(
  client: AetherClient,
  nodes: Record<string, BidBehaviour & { thermal?: { cpuCelsius?: number; inletCelsius?: number }; labels?: Record<string, string> }>,
  work: (bidders: Record<string, FakeBidder>) => Promise<void>,
): Promise<void> {
  const bidders: Record<string, FakeBidder> = {};
  try {
    for (const [id, b] of Object.entries(nodes)) {
      const { thermal, labels, ...behaviour } = b;
      const bidder = await startFakeBidder(id, behaviour);
      bidders[id] = bidder;
      await client.aggregator.registerNode({ nodeId: id, name: id, address: bidder.address, thermal, labels: labels ?? {} });
    }
    await work(bidders);
  } finally {
    for (const id of Object.keys(bidders)) await client.aggregator.deregisterNode({ nodeId: id }).catch(() => undefined);
    for (const bidder of Object.values(bidders)) await bidder.close();
  }
}

async function deployError(client: AetherClient, request: Parameters<AetherClient["aggregator"]["deploy"]>[0]): Promise<ConnectError> {
  try {
    await client.aggregator.deploy(request);
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return err;
  }
  assert.fail("Deploy should have failed");
}

const bidOf = (r: DeployResponse, node: string) => {
  const bid = r.auction?.bids.find((b) => b.node === node);
  assert.ok(bid, `a bid of ${node} is recorded`);
  return bid;
};

// ------------------------------------------------------------------------------------------------
// Pure parts

describe("decide(): who wins and how a tie breaks (pure)", () => {
  const c = (node: string, score: number, extra: Partial<Contender> = {}): Contender => ({ node, score, placements: 0, ...extra });
  const permutations = <T>(xs: T[]): T[][] =>
    xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
  /** Same winner and order for every input order. */
  const decideAll = (contenders: Contender[]) => {
    const results = permutations(contenders).map((p) => decide(p));
    const first = results[0] as ReturnType<typeof decide>;
    for (const r of results) {
      assert.deepEqual(
        r.order.map((x) => x.node),
        first.order.map((x) => x.node),
        "the order does not depend on the input order",
      );
      assert.equal(r.decidedBy, first.decidedBy);
      assert.equal(r.tieBreakReason, first.tieBreakReason);
    }
    return first;
  };

  it("the highest score wins; no tie, no tie-break reason", () => {
    const d = decideAll([c("a", 300), c("b", 800), c("c", 500)]);
    assert.deepEqual(
      d.order.map((x) => x.node),
      ["b", "c", "a"],
    );
    assert.equal(d.decidedBy, undefined);
    assert.equal(d.tieBreakReason, "");
    assert.deepEqual(decide([]).order, []);
  });

  it("rule 1: fewer placements", () => {
    const d = decideAll([c("a", 700, { placements: 2, cpuCelsius: 30 }), c("b", 700, { placements: 1, cpuCelsius: 90 }), c("c", 100)]);
    assert.equal(d.order[0]?.node, "b");
    assert.equal(d.decidedBy, "placements");
    assert.match(d.tieBreakReason, /2 nodes bid 700 \(a, b\); fewest placements decided: b has 1 \(a 2\)/);
    assert.deepEqual(
      d.order.map((x) => x.node),
      ["b", "a", "c"],
    );
  });

  it("rule 2: cooler CPU, then cooler inlet, only where every tied node knows it", () => {
    const cpu = decideAll([c("a", 700, { cpuCelsius: 61 }), c("b", 700, { cpuCelsius: 45.5 }), c("c", 700, { cpuCelsius: 70 })]);
    assert.equal(cpu.order[0]?.node, "b");
    assert.equal(cpu.decidedBy, "thermal");
    assert.match(cpu.tieBreakReason, /cooler decided: b at 45\.5 °C CPU/);
    assert.deepEqual(
      cpu.order.map((x) => x.node),
      ["b", "a", "c"],
      "the fallback order is cooler first too",
    );

    const inlet = decideAll([c("a", 700, { cpuCelsius: 50, inletCelsius: 24 }), c("b", 700, { cpuCelsius: 50, inletCelsius: 19 })]);
    assert.equal(inlet.order[0]?.node, "b");
    assert.equal(inlet.decidedBy, "thermal");
    assert.match(inlet.tieBreakReason, /same CPU temperature; cooler decided: b at 19 °C inlet/);

    // One node cannot read its temperature: the rule does not guess; disk wear decides.
    const unknown = decideAll([c("a", 700, { cpuCelsius: 30, diskWear: 0.2 }), c("b", 700, { diskWear: 0.8 })]);
    assert.equal(unknown.order[0]?.node, "b");
    assert.equal(unknown.decidedBy, "disk_wear");
    assert.match(unknown.tieBreakReason, /CPU temperature not known for every tied node/);
  });

  it("rule 3: less disk wear (the higher disk_wear factor)", () => {
    const d = decideAll([c("a", 900, { diskWear: 0.3 }), c("b", 900, { diskWear: 0.95 }), c("c", 900, { diskWear: 0.6 })]);
    assert.equal(d.order[0]?.node, "b");
    assert.equal(d.decidedBy, "disk_wear");
    assert.match(d.tieBreakReason, /less disk wear decided: b with disk_wear 0\.95/);
  });

  it("rule 4: the lowest node id, when nothing else separates them", () => {
    const d = decideAll([c("node-c", 500), c("node-a", 500), c("node-b", 500)]);
    assert.deepEqual(
      d.order.map((x) => x.node),
      ["node-a", "node-b", "node-c"],
    );
    assert.equal(d.decidedBy, "node_id");
    assert.match(d.tieBreakReason, /lowest node id decided: node-a \(before node-b, node-c\)/);
  });

  it("rules narrow step by step: placements, then thermal among those left", () => {
    const d = decideAll([
      c("a", 800, { placements: 0, cpuCelsius: 70 }),
      c("b", 800, { placements: 0, cpuCelsius: 50 }),
      c("c", 800, { placements: 3, cpuCelsius: 20 }),
    ]);
    assert.equal(d.order[0]?.node, "b");
    assert.equal(d.decidedBy, "thermal");
    assert.match(d.tieBreakReason, /fewest placements \(0\) left a, b; cooler decided: b at 50 °C CPU \(a 70 °C\)/);
  });
});

describe("classifyAnswer(): what each answer counts as (pure)", () => {
  const answer = (score: number, node = "n1", declineReason = "") =>
    classifyAnswer(
      "n1",
      {
        kind: "answer",
        response: create(RequestBidResponseSchema, { node, score, breakdown: { declineReason, factors: [] } }),
        latencyMs: 3,
      },
      250,
    );

  it("1..1000 is a bid, -1 a decline with its reason", () => {
    assert.equal(answer(1).outcome, BidOutcome.BID);
    assert.equal(answer(1000).outcome, BidOutcome.BID);
    const declined = answer(-1, "n1", "needs KVM; this node has none");
    assert.equal(declined.outcome, BidOutcome.DECLINED);
    assert.equal(declined.breakdown?.declineReason, "needs KVM; this node has none");
  });

  it("out of range, another node's name, errors and timeouts are recorded as such", () => {
    for (const bad of [0, 1001, 5000, -2]) {
      const b = answer(bad);
      assert.equal(b.outcome, BidOutcome.ERROR);
      assert.equal(b.score, bad, "the garbage score is kept in the record");
      assert.match(b.error, /out of range .*ignored/);
    }
    assert.match(answer(700, "n2").error, /names node "n2", not n1/);
    const failed = classifyAnswer("n1", { kind: "error", error: new ConnectError("disk on fire", Code.Internal), latencyMs: 1 }, 250);
    assert.equal(failed.outcome, BidOutcome.ERROR);
    assert.match(failed.error, /disk on fire/);
    const late = classifyAnswer("n1", { kind: "timeout", latencyMs: 250 }, 250);
    assert.equal(late.outcome, BidOutcome.TIMED_OUT);
    assert.match(late.error, /no answer within the 250 ms bid window/);
  });
});

describe("EmbeddedStore", () => {
  it("writes durably, lists by prefix in key order, and survives a reopen", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-embedded-"));
    try {
      let store = await EmbeddedStore.open(dir);
      await assert.rejects(store.put("nodes/a", "x"), NotLeaderError, "no writes before leading");
      const leadership = await store.campaign("test");
      await store.put("nodes/b", "2");
      await store.put("nodes/a", "1");
      await store.put("nodes/a", "1b");
      await store.put("placements/../../etc", "tricky");
      await store.put("other", "o");
      await store.delete("other");
      await store.delete("never-there");
      assert.deepEqual(await store.list("nodes/"), [
        { key: "nodes/a", value: "1b" },
        { key: "nodes/b", value: "2" },
      ]);
      assert.equal(await store.get("placements/../../etc"), "tricky");
      assert.ok(readdirSync(join(dir, "store")).every((f) => !f.includes("/")));
      // A second store on the same folder is refused while the first holds it.
      await assert.rejects(EmbeddedStore.open(dir), StoreUnavailableError);
      // A write that never reached its rename leaves a temporary file: ignored and removed on open.
      writeFileSync(join(dir, "store", ".nodes%2Fc.123.1.tmp"), "half");
      await leadership.resign();
      await leadership.lost;
      await assert.rejects(store.put("nodes/c", "3"), NotLeaderError);
      await store.close();

      store = await EmbeddedStore.open(dir);
      const entries: StoreEntry[] = await store.list("");
      assert.deepEqual(
        entries.map((e) => e.key),
        ["nodes/a", "nodes/b", "placements/../../etc"],
      );
      assert.ok(!readdirSync(join(dir, "store")).some((f) => f.endsWith(".tmp")));
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------------------------------------
// The server

describe("aether-aggregator: auctions against fake bidders", () => {
  const fixture = useAggregator(["--auction-window-ms", "300"]);

  it("the highest bid wins; the winner provisions with request_id = workload id; the record is complete and listed", async () => {
    const { client } = fixture;
    await withNodes(client, { "hb-a": { score: 300 }, "hb-b": { score: 800 }, "hb-c": { score: 500 } }, async (bidders) => {
      // A 5 s window: the auction must close as soon as the three have answered, not at the window.
      const started = Date.now();
      const r = await client.aggregator.deploy({ spec: spec("web", { labels: { team: "a" } }), bidTimeout: { seconds: 5n, nanos: 0 } });
      const elapsed = Date.now() - started;
      const placement = r.placement;
      const auction = r.auction;
      assert.ok(placement && auction);
      assert.equal(placement.state, PlacementState.PLACED);
      assert.equal(placement.node, "hb-b");
      assert.equal(placement.tenant, "default");
      assert.equal(placement.resourceId, `hb-b-${placement.workloadId}`);
      assert.equal(auction.state, AuctionState.SUCCEEDED);
      assert.equal(auction.winner, "hb-b");
      assert.equal(auction.winningScore, 800);
      assert.equal(auction.tieBreakReason, "");
      assert.deepEqual(
        auction.bids.map((b) => [b.node, b.outcome, b.score]),
        [
          ["hb-a", BidOutcome.BID, 300],
          ["hb-b", BidOutcome.BID, 800],
          ["hb-c", BidOutcome.BID, 500],
        ],
      );
      for (const b of auction.bids) assert.ok(ms(b.latency) >= 0 && ms(b.latency) <= ms(auction.biddingDuration) + 1);
      for (const d of [auction.biddingDuration, auction.decisionDuration, auction.provisioningDuration, auction.totalDuration])
        assert.ok(ms(d) >= 0, "every timing is set");
      assert.ok(ms(auction.totalDuration) >= ms(auction.biddingDuration) + ms(auction.decisionDuration));
      assert.equal(ms(auction.bidTimeout), 5000);
      assert.ok(
        ms(auction.biddingDuration) < 2500,
        `every node answered, so the auction closed long before the 5 s window (${ms(auction.biddingDuration)} ms)`,
      );
      assert.ok(elapsed < 3000, `Deploy took ${elapsed} ms`);

      // Every node was asked with the workload id; only the winner provisioned, idempotently keyed.
      for (const id of ["hb-a", "hb-b", "hb-c"]) {
        assert.equal(bidders[id]?.bidRequests.at(-1)?.spec?.workloadId, placement.workloadId);
        assert.equal(bidders[id]?.bidRequests.at(-1)?.auctionId, auction.id);
      }
      assert.equal(bidders["hb-a"]?.provisioned.length, 0);
      assert.equal(bidders["hb-c"]?.provisioned.length, 0);
      const provision = bidders["hb-b"]?.provisioned[0];
      assert.equal(provision?.requestId, placement.workloadId);
      assert.equal(provision?.spec?.kind.case, "executable");
      assert.equal(provision?.spec?.kind.value?.name, "web", "the kind takes the workload's name");
      assert.equal(provision?.spec?.kind.value?.requestId, placement.workloadId);

      // Readable afterwards.
      const got = await client.aggregator.getPlacement({ workload: "web" });
      assert.equal(got.placement?.workloadId, placement.workloadId);
      assert.deepEqual(got.placement?.auctionHistory, [auction.id]);
      const rec = await client.aggregator.getAuction({ auction: auction.id });
      assert.equal(rec.auction?.winner, "hb-b");
      const listed = await client.aggregator.listAuctions({ workloadId: placement.workloadId });
      assert.deepEqual(
        listed.auctions.map((a) => a.id),
        [auction.id],
      );
      const byLabel = await client.aggregator.listPlacements({ filter: "team=a" });
      assert.ok(byLabel.placements.some((p) => p.workloadId === placement.workloadId));
      const { nodes } = await client.aggregator.listNodes({});
      assert.equal(nodes.find((n) => n.id === "hb-b")?.placementCount, 1);

      // The name is taken while the placement lives; released, the node is asked to release it.
      await rejectsWith(
        client.aggregator.deploy({ spec: spec("web") }),
        Code.AlreadyExists,
        /workload name web is already used in tenant default/,
      );
      const released = await client.aggregator.releasePlacement({ workload: placement.workloadId });
      assert.equal(released.placement?.state, PlacementState.RELEASED);
      assert.equal(bidders["hb-b"]?.released.at(-1)?.workloadId, placement.workloadId);
      assert.match(released.placement?.stateReason ?? "", /released from node hb-b/);
    });
  });

  it("ties: fewer placements decides, then cooler, then less disk wear, then node id — the same node every time", async () => {
    const { client } = fixture;
    const winners = async (name: string, runs: number, request: { exclude?: string[] } = {}) => {
      const out: Array<{ node: string; reason: string }> = [];
      for (let i = 0; i < runs; i++) {
        const r = await client.aggregator.deploy({ spec: spec(`${name}-${i}`, { requirements: { excludeNodes: request.exclude ?? [] } }) });
        out.push({ node: r.placement?.node ?? "", reason: r.auction?.tieBreakReason ?? "" });
        await client.aggregator.releasePlacement({ workload: r.placement?.workloadId ?? "" });
      }
      return out;
    };

    // 1. Placements: t1-a already hosts a workload, so t1-b wins the tie (and would lose on thermal).
    await withNodes(
      client,
      { "t1-a": { score: 700, thermal: { cpuCelsius: 30 } }, "t1-b": { score: 700, thermal: { cpuCelsius: 80 } } },
      async () => {
        const first = await client.aggregator.deploy({ spec: spec("t1-first", { requirements: { excludeNodes: ["t1-b"] } }) });
        assert.equal(first.placement?.node, "t1-a");
        for (const w of await winners("t1", 3)) {
          assert.equal(w.node, "t1-b");
          assert.match(w.reason, /fewest placements decided: t1-b has 0 \(t1-a 1\)/);
        }
        await client.aggregator.releasePlacement({ workload: "t1-first" });
      },
    );

    // 2. Thermal: the cooler CPU wins; a heartbeat with new figures changes the decision.
    await withNodes(
      client,
      { "t2-a": { score: 600, thermal: { cpuCelsius: 71 } }, "t2-b": { score: 600, thermal: { cpuCelsius: 48 } } },
      async () => {
        for (const w of await winners("t2", 3)) {
          assert.equal(w.node, "t2-b");
          assert.match(w.reason, /cooler decided: t2-b at 48 °C CPU \(t2-a 71 °C\)/);
        }
        const { nodes } = await client.aggregator.listNodes({});
        const b = nodes.find((n) => n.id === "t2-b");
        await client.aggregator.heartbeat({ nodeId: "t2-b", leaseId: b?.lease?.id ?? "", thermal: { cpuCelsius: 90 } });
        const [after] = await winners("t2-hot", 1);
        assert.equal(after?.node, "t2-a", "t2-b reported 90 °C in its heartbeat");
      },
    );

    // 3. Disk wear: no thermal figures; the bid breakdown's disk_wear decides.
    await withNodes(
      client,
      {
        "t3-a": { score: 650, factors: [{ name: "disk_wear", value: 0.4 }] },
        "t3-b": { score: 650, factors: [{ name: "disk_wear", value: 0.9 }] },
      },
      async () => {
        for (const w of await winners("t3", 3)) {
          assert.equal(w.node, "t3-b");
          assert.match(w.reason, /less disk wear decided: t3-b with disk_wear 0\.9/);
        }
      },
    );

    // 4. Node id: nothing else separates them (registered in reverse order on purpose).
    await withNodes(client, { "t4-c": { score: 400 }, "t4-b": { score: 400 }, "t4-a": { score: 400 } }, async () => {
      for (const w of await winners("t4", 4)) {
        assert.equal(w.node, "t4-a");
        assert.match(w.reason, /lowest node id decided: t4-a \(before t4-b, t4-c\)/);
      }
    });
  });

  it("a hanging node does not hold the decision past the window; slow answers count as timed out", async () => {
    const { client } = fixture;
    await withNodes(client, { "hang-a": { score: 400 }, "hang-b": { hang: true }, "hang-c": { score: 900, delayMs: 1500 } }, async () => {
      const started = performance.now();
      const r = await client.aggregator.deploy({ spec: spec("hang-test") });
      const elapsed = performance.now() - started;
      assert.equal(r.placement?.node, "hang-a", "the late 900 does not count");
      // The hanging node would hold it forever and the slow one 1.5 s: it closed at the 300 ms window.
      assert.ok(elapsed < 1400, `the auction closed at the 300 ms window (Deploy took ${elapsed.toFixed(0)} ms)`);
      const bidding = ms(r.auction?.biddingDuration);
      assert.ok(bidding >= 290 && bidding < 800, `bidding lasted the window: ${bidding} ms`);
      assert.equal(ms(r.auction?.bidTimeout), 300);
      assert.equal(bidOf(r, "hang-b").outcome, BidOutcome.TIMED_OUT, `hang-b: ${bidOf(r, "hang-b").error}`);
      assert.match(bidOf(r, "hang-b").error, /no answer within the 300 ms bid window/);
      assert.equal(bidOf(r, "hang-c").outcome, BidOutcome.TIMED_OUT);
      assert.equal(bidOf(r, "hang-c").score, 0);

      // A Deploy may ask for its own window.
      const short = await client.aggregator.deploy({ spec: spec("hang-test-2"), bidTimeout: { seconds: 0n, nanos: 100_000_000 } });
      assert.ok(ms(short.auction?.biddingDuration) < 250, `the 100 ms bid_timeout closed it: ${ms(short.auction?.biddingDuration)} ms`);
      assert.equal(bidOf(short, "hang-b").outcome, BidOutcome.TIMED_OUT, `hang-b: ${bidOf(short, "hang-b").error}`);
      await client.aggregator.releasePlacement({ workload: "hang-test" });
      await client.aggregator.releasePlacement({ workload: "hang-test-2" });
    });
  });

  it("out-of-range, garbage, misrouted and failed answers are recorded with their outcome and ignored", async () => {
    const { client } = fixture;
    await withNodes(
      client,
      {
        "bad-ok": { score: 350 },
        "bad-big": { score: 5000 },
        "bad-zero": { score: 0 },
        "bad-neg": { score: -7 },
        "bad-err": { error: { code: Code.Internal, message: "the bid service crashed" } },
        "bad-dup": { score: 990, answerAs: "bad-ok" },
        "bad-nan": { score: 999, factors: [{ name: "free_memory", value: Number.NaN }] },
      },
      async () => {
        const r = await client.aggregator.deploy({ spec: spec("garbage-test") });
        assert.equal(r.placement?.node, "bad-ok");
        assert.equal(r.auction?.winningScore, 350);
        assert.equal(r.auction?.bids.length, 7);
        for (const [node, pattern] of [
          ["bad-big", /score 5000 is out of range/],
          ["bad-zero", /score 0 is out of range/],
          ["bad-neg", /score -7 is out of range/],
          ["bad-err", /the bid service crashed/],
          ["bad-dup", /names node "bad-ok", not bad-dup/],
          ["bad-nan", /not a finite number/],
        ] as const) {
          const bid = bidOf(r, node);
          assert.equal(bid.outcome, BidOutcome.ERROR, node);
          assert.match(bid.error, pattern);
        }
        assert.equal(bidOf(r, "bad-big").score, 5000, "the garbage score is kept for the record");
        assert.equal(bidOf(r, "bad-ok").outcome, BidOutcome.BID);
        await client.aggregator.releasePlacement({ workload: "garbage-test" });
      },
    );
  });

  it("no capacity: RESOURCE_EXHAUSTED naming why each node declined; the failed auction is recorded", async () => {
    const { client } = fixture;
    await withNodes(
      client,
      {
        "nc-a": { score: -1, declineReason: "needs 4 GiB of memory; 1 GiB is free", labels: { rack: "r1" } },
        "nc-b": { score: -1, declineReason: "needs KVM; this node has none", labels: { rack: "r1" } },
        "nc-c": { hang: true, labels: { rack: "r1" } },
        "nc-d": { score: 900, labels: { rack: "r2" } },
      },
      async (bidders) => {
        const err = await deployError(client, { spec: spec("big", { requirements: { nodeSelector: { rack: "r1" } } }) });
        assert.equal(err.code, Code.ResourceExhausted, err.message);
        assert.match(err.rawMessage, /^no node can host workload big: /);
        assert.match(err.rawMessage, /nc-a: needs 4 GiB of memory; 1 GiB is free/);
        assert.match(err.rawMessage, /nc-b: needs KVM; this node has none/);
        assert.match(err.rawMessage, /nc-c: no answer within the 300 ms bid window/);
        assert.match(err.rawMessage, /nc-d: its labels do not match node_selector \(wants rack=r1; has rack=r2\)/);
        assert.equal(bidders["nc-d"]?.bidRequests.length, 0, "a node the selector rules out is not asked");
        const auctionId = /\(auction ([0-9a-f-]{36})\)/.exec(err.rawMessage)?.[1];
        assert.ok(auctionId, "the sentence names the auction");
        const { auction } = await client.aggregator.getAuction({ auction: auctionId });
        assert.equal(auction?.state, AuctionState.FAILED);
        assert.equal(auction?.winner, "");
        assert.deepEqual(
          auction?.bids.map((b) => [b.node, b.outcome]),
          [
            ["nc-a", BidOutcome.DECLINED],
            ["nc-b", BidOutcome.DECLINED],
            ["nc-c", BidOutcome.TIMED_OUT],
          ],
        );
        assert.match(auction?.stateReason ?? "", /nc-b: needs KVM/);
        const failed = await client.aggregator.listPlacements({ state: PlacementState.FAILED });
        assert.ok(failed.placements.some((p) => p.name === "big" && p.auctionId === auctionId));
        // A failed placement does not hold the name.
        await rejectsWith(
          client.aggregator.deploy({ spec: spec("big", { requirements: { excludeNodes: ["nc-d"] } }) }),
          Code.ResourceExhausted,
          /no node can host workload big/,
        );
      },
    );
  });

  it("the winner's provisioning fails: it is asked to release, and the next bidder provisions", async () => {
    const { client } = fixture;
    await withNodes(
      client,
      { "pf-a": { score: 900, provision: { fail: "qemu-system-x86_64 exited with 1" } }, "pf-b": { score: 800 }, "pf-c": { score: 100 } },
      async (bidders) => {
        const r = await client.aggregator.deploy({ spec: spec("fallback") });
        assert.equal(r.placement?.node, "pf-b");
        assert.equal(r.placement?.state, PlacementState.PLACED);
        assert.equal(r.auction?.winner, "pf-b");
        assert.equal(r.auction?.winningScore, 800);
        assert.match(
          r.auction?.stateReason ?? "",
          /pf-a failed to provision it .*qemu-system-x86_64 exited with 1.*; pf-b, next in order with 800, provisioned it/,
        );
        assert.match(bidOf(r, "pf-a").error, /won, but provisioning failed/);
        assert.equal(bidders["pf-a"]?.provisioned.length, 1);
        await eventually(
          () => (bidders["pf-a"]?.released.some((x) => x.workloadId === r.placement?.workloadId) ? true : undefined),
          5000,
          "pf-a asked to release",
        );
        assert.equal(bidders["pf-b"]?.provisioned.length, 1);
        assert.equal(bidders["pf-c"]?.provisioned.length, 0);
        await client.aggregator.releasePlacement({ workload: "fallback" });

        // Everyone fails: UNAVAILABLE listing each failure; the placement is FAILED.
        bidders["pf-b"]!.behaviour = { score: 800, provision: { fail: "out of disk" } };
        bidders["pf-c"]!.behaviour = { score: 100, provision: { fail: "cgroup refused" } };
        const err = await deployError(client, { spec: spec("doomed") });
        assert.equal(err.code, Code.Unavailable);
        assert.match(
          err.rawMessage,
          /every node that bid failed to provision workload doomed: pf-a .*; pf-b .*out of disk.*; pf-c .*cgroup refused/,
        );
      },
    );
  });

  it("deregistering a node with re_place moves its workloads to another node", async () => {
    const { client } = fixture;
    await withNodes(client, { "mv-a": { score: 900 }, "mv-b": { score: 200 } }, async (bidders) => {
      const r = await client.aggregator.deploy({ spec: spec("mover") });
      assert.equal(r.placement?.node, "mv-a");
      await client.aggregator.deregisterNode({ nodeId: "mv-a", rePlace: true });
      const moved = await eventually(
        async () => {
          const { placement } = await client.aggregator.getPlacement({ workload: "mover" });
          return placement?.state === PlacementState.PLACED && placement.node === "mv-b" ? placement : undefined;
        },
        5000,
        "the workload re-placed on mv-b",
      );
      assert.equal(moved.workloadId, r.placement?.workloadId, "the same workload, moved");
      assert.equal(moved.auctionHistory.length, 2);
      const { auction } = await client.aggregator.getAuction({ auction: moved.auctionId });
      assert.equal(auction?.trigger, AuctionTrigger.REPLACEMENT);
      assert.ok(
        bidders["mv-a"]?.released.some((x) => x.workloadId === moved.workloadId),
        "the node it left was asked to release it",
      );
      assert.equal(bidders["mv-b"]?.provisioned.at(-1)?.requestId, moved.workloadId);
      const events: ClusterEvent[] = [];
      for await (const e of client.aggregator.streamClusterEvents({ kinds: [ClusterEventKind.WORKLOAD_REPLACED] }))
        if (e.event) events.push(e.event);
      assert.deepEqual(events.at(-1)?.attributes, { from_node: "mv-a", to_node: "mv-b", score: "200" });
      await client.aggregator.releasePlacement({ workload: "mover" });
    });
  });

  it("reaches a node on a unix socket (unix:// address), as a local aetherd serves", async () => {
    const { client } = fixture;
    const dir = mkdtempSync(join(tmpdir(), "aether-fake-node-"));
    const local = await startFakeBidder("unix-a", { score: 42 }, { socket: join(dir, "aetherd.sock") });
    try {
      await client.aggregator.registerNode({ nodeId: "unix-a", name: "unix-a", address: local.address });
      const r = await client.aggregator.deploy({ spec: spec("over-unix") });
      assert.equal(r.placement?.node, "unix-a");
      assert.equal(local.provisioned.length, 1);
      await client.aggregator.releasePlacement({ workload: "over-unix" });
      assert.equal(local.released.length, 1);
    } finally {
      await client.aggregator.deregisterNode({ nodeId: "unix-a" }).catch(() => undefined);
      await local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("validates the spec and keeps Deploy idempotent by request_id", async () => {
    const { client } = fixture;
    await withNodes(client, { "v-a": { score: 500 } }, async (bidders) => {
      await rejectsWith(client.aggregator.deploy({}), Code.InvalidArgument, /spec is missing/);
      await rejectsWith(client.aggregator.deploy({ spec: { name: "x" } }), Code.InvalidArgument, /nothing to run/);
      await rejectsWith(
        client.aggregator.deploy({ spec: spec("Bad Name") }),
        Code.InvalidArgument,
        /spec.name "Bad Name" is not a valid name/,
      );
      await rejectsWith(
        client.aggregator.deploy({ spec: { name: "rel", kind: { case: "executable", value: { argv: ["sleep", "1"] } } } }),
        Code.InvalidArgument,
        /not an absolute path/,
      );
      await rejectsWith(
        client.aggregator.deploy({ spec: spec("slow"), bidTimeout: { seconds: 120n, nanos: 0 } }),
        Code.InvalidArgument,
        /bid_timeout 120 s is out of range/,
      );

      const first = await client.aggregator.deploy({ spec: spec("idem"), requestId: "req-1" });
      const again = await client.aggregator.deploy({ spec: spec("idem"), requestId: "req-1" });
      assert.equal(again.placement?.workloadId, first.placement?.workloadId);
      assert.equal(again.auction?.id, first.auction?.id);
      assert.equal(bidders["v-a"]?.provisioned.length, 1, "provisioned once");
      await client.aggregator.releasePlacement({ workload: "idem" });
      await rejectsWith(client.aggregator.getAuction({ auction: "nope" }), Code.NotFound, /auction nope does not exist/);
      await rejectsWith(client.aggregator.getPlacement({ workload: "nope" }), Code.NotFound, /no workload nope in tenant default/);
    });
  });

  it("a node id held by a live node at another address is refused; the same address re-registers", async () => {
    const { client } = fixture;
    const one = await startFakeBidder("dup-node");
    const other = await startFakeBidder("dup-node");
    try {
      const first = await client.aggregator.registerNode({
        nodeId: "dup-node",
        name: "dup-node",
        address: one.address,
        labels: { rack: "r1" },
      });
      assert.equal(first.node?.state, NodeState.READY);
      assert.equal(ms(first.lease?.ttl), 15_000, "the default lease is 15 s");
      assert.equal(ms(first.lease?.heartbeatInterval), 5000, "heartbeat every third of it");
      await rejectsWith(
        client.aggregator.registerNode({ nodeId: "dup-node", name: "dup-node", address: other.address }),
        Code.AlreadyExists,
        new RegExp(
          `node id dup-node is already registered by a live node at ${one.address.replace(/\./g, "\\.")} .*refused.*own state directory`,
        ),
      );
      const again = await client.aggregator.registerNode({
        nodeId: "dup-node",
        name: "dup-node",
        address: one.address,
        labels: { rack: "r9" },
      });
      assert.notEqual(again.lease?.id, first.lease?.id, "a new lease");
      const { nodes } = await client.aggregator.listNodes({ filter: "rack=r9" });
      assert.deepEqual(
        nodes.map((n) => [n.id, n.address]),
        [["dup-node", one.address]],
      );
      // The old lease is gone with the old record.
      await rejectsWith(
        client.aggregator.heartbeat({ nodeId: "dup-node", leaseId: first.lease?.id ?? "" }),
        Code.FailedPrecondition,
        /not node dup-node's current lease.*register again/,
      );
      await rejectsWith(
        client.aggregator.heartbeat({ nodeId: "ghost", leaseId: "x" }),
        Code.FailedPrecondition,
        /node ghost is not registered.*register again/,
      );
      await rejectsWith(
        client.aggregator.registerNode({ nodeId: "n1", name: "n1", address: "http://10.1.2.3:7443" }),
        Code.InvalidArgument,
        /plain HTTP on a non-loopback host/,
      );
      await rejectsWith(
        client.aggregator.registerNode({ nodeId: "n1", name: "n1", address: "tcp://x" }),
        Code.InvalidArgument,
        /not understood/,
      );
    } finally {
      await client.aggregator.deregisterNode({ nodeId: "dup-node" }).catch(() => undefined);
      await one.close();
      await other.close();
    }
  });

  it("streams cluster events: replay, resume after a sequence, follow", async () => {
    const { client } = fixture;
    const all: ClusterEvent[] = [];
    for await (const r of client.aggregator.streamClusterEvents({})) if (r.event) all.push(r.event);
    assert.ok(all.length > 10, "the history of the tests above is retained");
    all.forEach(
      (e, i) => i > 0 && assert.equal(e.sequence, (all[i - 1] as ClusterEvent).sequence + 1n, "sequence numbers increase by one"),
    );
    const kinds = new Set(all.map((e) => e.kind));
    for (const k of [
      ClusterEventKind.NODE_REGISTERED,
      ClusterEventKind.NODE_DEREGISTERED,
      ClusterEventKind.AUCTION_DECIDED,
      ClusterEventKind.AUCTION_FAILED,
      ClusterEventKind.WORKLOAD_PLACED,
      ClusterEventKind.WORKLOAD_RELEASED,
      ClusterEventKind.WORKLOAD_FAILED,
    ]) {
      assert.ok(kinds.has(k), `has ${ClusterEventKind[k]}`);
    }
    const last = all.at(-1) as ClusterEvent;
    const tail: ClusterEvent[] = [];
    for await (const r of client.aggregator.streamClusterEvents({ start: { case: "tailEvents", value: 2 } }))
      if (r.event) tail.push(r.event);
    assert.deepEqual(
      tail.map((e) => e.sequence),
      [last.sequence - 1n, last.sequence],
    );

    const abort = new AbortController();
    const followed: ClusterEvent[] = [];
    const following = (async () => {
      try {
        for await (const r of client.aggregator.streamClusterEvents(
          { start: { case: "afterSequence", value: last.sequence }, follow: true, kinds: [ClusterEventKind.NODE_REGISTERED] },
          { signal: abort.signal },
        )) {
          if (r.event) followed.push(r.event);
        }
      } catch (err) {
        if (!(err instanceof ConnectError && err.code === Code.Canceled)) throw err;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    await withNodes(client, { "ev-a": { score: 1 } }, async () => {
      await eventually(() => (followed.length > 0 ? true : undefined), 5000, "the followed event");
    });
    abort.abort();
    await following;
    assert.equal(followed[0]?.kind, ClusterEventKind.NODE_REGISTERED);
    assert.equal(followed[0]?.node, "ev-a");
    assert.ok((followed[0]?.sequence ?? 0n) > last.sequence);
  });
});

describe("aether-aggregator: leases", () => {
  const fixture = useAggregator(["--lease-ttl-ms", "1000", "--auction-window-ms", "200"]);

  it("a node that stops heartbeating becomes SUSPECT and is left out of auctions until it registers again", async () => {
    const { client } = fixture;
    const alive = await startFakeBidder("lease-alive", { score: 100 });
    const silent = await startFakeBidder("lease-silent", { score: 900 });
    try {
      const a = await client.aggregator.registerNode({ nodeId: "lease-alive", name: "lease-alive", address: alive.address });
      const s = await client.aggregator.registerNode({ nodeId: "lease-silent", name: "lease-silent", address: silent.address });
      assert.equal(ms(a.lease?.ttl), 1000);
      assert.equal(ms(a.lease?.heartbeatInterval), 333);
      const beat = setInterval(
        () => void client.aggregator.heartbeat({ nodeId: "lease-alive", leaseId: a.lease?.id ?? "" }).catch(() => undefined),
        150,
      );
      try {
        const suspect = await eventually(
          async () => (await client.aggregator.listNodes({ state: NodeState.SUSPECT })).nodes.find((n) => n.id === "lease-silent"),
          5000,
          "lease-silent SUSPECT",
        );
        assert.match(suspect.stateReason, /no heartbeat since .*the lease expired at .*TTL 1 s.*no auctions until it registers again/);
        const ready = await client.aggregator.listNodes({ state: NodeState.READY });
        assert.deepEqual(
          ready.nodes.map((n) => n.id),
          ["lease-alive"],
        );

        const asked = silent.bidRequests.length;
        const r = await client.aggregator.deploy({ spec: spec("lease-w") });
        assert.equal(r.placement?.node, "lease-alive", "the suspect node's 900 is not asked for");
        assert.deepEqual(
          r.auction?.bids.map((b) => b.node),
          ["lease-alive"],
        );
        assert.equal(silent.bidRequests.length, asked);

        await rejectsWith(
          client.aggregator.heartbeat({ nodeId: "lease-silent", leaseId: s.lease?.id ?? "" }),
          Code.FailedPrecondition,
          /lease of node lease-silent expired .*SUSPECT.*register again/,
        );

        // With nothing but the suspect node able to host it, the sentence says why.
        const err = await deployError(client, { spec: spec("lease-x", { requirements: { excludeNodes: ["lease-alive"] } }) });
        assert.equal(err.code, Code.ResourceExhausted);
        assert.match(err.rawMessage, /lease-silent: SUSPECT: no heartbeat since/);
        assert.match(err.rawMessage, /lease-alive: excluded by the spec's exclude_nodes/);

        // Registering again brings it back.
        await client.aggregator.registerNode({ nodeId: "lease-silent", name: "lease-silent", address: silent.address });
        const back = await client.aggregator.deploy({ spec: spec("lease-y") });
        assert.equal(back.placement?.node, "lease-silent");
        const events: ClusterEvent[] = [];
        for await (const e of client.aggregator.streamClusterEvents({
          kinds: [ClusterEventKind.NODE_SUSPECT, ClusterEventKind.NODE_RECOVERED],
        }))
          if (e.event) events.push(e.event);
        assert.deepEqual(
          events.map((e) => [e.kind, e.node]),
          [
            [ClusterEventKind.NODE_SUSPECT, "lease-silent"],
            [ClusterEventKind.NODE_RECOVERED, "lease-silent"],
          ],
        );
      } finally {
        clearInterval(beat);
      }

      // Once the holder's lease ran out, its id may register from another address.
      const moved = await startFakeBidder("lease-alive", { score: 100 });
      try {
        await eventually(
          async () => (await client.aggregator.listNodes({ state: NodeState.SUSPECT })).nodes.find((n) => n.id === "lease-alive"),
          5000,
          "lease-alive SUSPECT",
        );
        const re = await client.aggregator.registerNode({ nodeId: "lease-alive", name: "lease-alive", address: moved.address });
        assert.equal(re.node?.address, moved.address);
      } finally {
        await moved.close();
      }
    } finally {
      await alive.close();
      await silent.close();
    }
  });
});

describe("aether-aggregator: state survives a restart (embedded store)", () => {
  it("nodes, placements, auctions and events are there again after SIGTERM and after kill -9", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-aggregator-restart-"));
    const a = await startFakeBidder("rs-a", { score: 700 });
    const b = await startFakeBidder("rs-b", { score: 300 });
    let agg = await startAggregator({ dir });
    try {
      await agg.client.aggregator.registerNode({ nodeId: "rs-a", name: "rs-a", address: a.address, labels: { rack: "r1" } });
      await agg.client.aggregator.registerNode({ nodeId: "rs-b", name: "rs-b", address: b.address });
      const one = await agg.client.aggregator.deploy({ spec: spec("keep-1") });
      const two = await agg.client.aggregator.deploy({ spec: spec("keep-2", { requirements: { excludeNodes: ["rs-a"] } }) });
      await deployError(agg.client, { spec: spec("never", { requirements: { nodeSelector: { rack: "nowhere" } } }) });
      const before = {
        nodes: (await agg.client.aggregator.listNodes({})).nodes,
        placements: (await agg.client.aggregator.listPlacements({})).placements,
        auctions: (await agg.client.aggregator.listAuctions({})).auctions,
        events: [] as ClusterEvent[],
      };
      for await (const e of agg.client.aggregator.streamClusterEvents({})) if (e.event) before.events.push(e.event);
      assert.equal(before.placements.length, 3);
      assert.deepEqual(
        before.auctions.map((x) => x.workloadId).slice(1),
        [two.placement?.workloadId, one.placement?.workloadId],
        "newest first",
      );

      const compare = async (client: AetherClient) => {
        const nodes = (await client.aggregator.listNodes({})).nodes;
        assert.deepEqual(
          nodes.map((n) => [n.id, n.address, n.state, n.placementCount, n.labels]),
          before.nodes.map((n) => [n.id, n.address, n.state, n.placementCount, n.labels]),
        );
        const placements = (await client.aggregator.listPlacements({})).placements;
        assert.deepEqual(
          placements.map((p) => [p.workloadId, p.name, p.state, p.node, p.resourceId, p.auctionId]),
          before.placements.map((p) => [p.workloadId, p.name, p.state, p.node, p.resourceId, p.auctionId]),
        );
        const auctions = (await client.aggregator.listAuctions({})).auctions;
        assert.deepEqual(
          auctions.map((x) => [x.id, x.state, x.winner, x.bids.length, ms(x.totalDuration)]),
          before.auctions.map((x) => [x.id, x.state, x.winner, x.bids.length, ms(x.totalDuration)]),
        );
        const got = await client.aggregator.getAuction({ auction: one.auction?.id ?? "" });
        assert.equal(got.auction?.winner, "rs-a");
        const events: ClusterEvent[] = [];
        for await (const e of client.aggregator.streamClusterEvents({})) if (e.event) events.push(e.event);
        assert.deepEqual(
          events.slice(0, before.events.length).map((e) => [e.sequence, e.kind, e.message]),
          before.events.map((e) => [e.sequence, e.kind, e.message]),
        );
      };

      // SIGTERM with a follow stream open: the stream ends with UNAVAILABLE at once, the process exits 0.
      const watcher = await connect({ address: `unix://${agg.socket}` });
      const streamEnd = (async () => {
        try {
          for await (const e of watcher.aggregator.streamClusterEvents({ follow: true, start: { case: "tailEvents", value: 0 } })) void e;
          return "ended without an error";
        } catch (err) {
          return err instanceof ConnectError ? `${Code[err.code]}: ${err.rawMessage}` : String(err);
        }
      })();
      await new Promise((r) => setTimeout(r, 100));
      const stopping = performance.now();
      assert.equal(await agg.stop(), 0, "exit 0 on SIGTERM");
      assert.ok(performance.now() - stopping < 2500, "the open stream did not hold the shutdown");
      assert.match(await streamEnd, /^Unavailable: this replica .* is shutting down/);
      watcher.close();
      agg = await startAggregator({ dir });
      await compare(agg.client);
      // The leases were extended at takeover: heartbeats with the old lease still work.
      const lease = (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.id === "rs-a")?.lease?.id ?? "";
      await agg.client.aggregator.heartbeat({ nodeId: "rs-a", leaseId: lease });
      // The name of a live placement is still taken; new work continues the sequence.
      await rejectsWith(agg.client.aggregator.deploy({ spec: spec("keep-1") }), Code.AlreadyExists, /already used/);

      await agg.kill9();
      agg = await startAggregator({ dir });
      await compare(agg.client);
      const three = await agg.client.aggregator.deploy({ spec: spec("keep-3") });
      assert.equal(three.placement?.node, "rs-a", "the highest bid wins; placements only break ties");
      assert.equal(three.auction?.bids.length, 2, "both restored nodes were asked");
    } finally {
      await agg.stop();
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("aether-aggregator: flags", () => {
  const run = (args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { cwd: repoRoot, encoding: "utf8", timeout: 30_000 });

  it("refuses plain TCP off loopback, etcd without endpoints, and bad numbers, with exit 2 and a sentence", () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-aggregator-flags-"));
    try {
      const base = ["--socket", join(dir, "a.sock"), "--state-dir", join(dir, "state"), "--log-level", "silent"];
      const offLoopback = run([...base, "--listen", "0.0.0.0:0"]);
      assert.equal(offLoopback.status, 2, offLoopback.stderr);
      assert.match(offLoopback.stderr, /--listen 0\.0\.0\.0:0 without TLS is allowed on loopback only/);
      const etcd = run([...base, "--store", "etcd"]);
      assert.equal(etcd.status, 2);
      assert.match(etcd.stderr, /etcd_endpoints: --store etcd needs at least one endpoint/);
      const window = run([...base, "--auction-window-ms", "0"]);
      assert.equal(window.status, 2);
      assert.match(window.stderr, /auction_window_ms/);
      const notNumber = run([...base, "--lease-ttl-ms", "soon"]);
      assert.notEqual(notNumber.status, 0);
      assert.match(notNumber.stderr, /--lease-ttl-ms takes a whole number, not "soon"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("serves plain HTTP/2 on a loopback TCP port and reads a TOML config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-aggregator-toml-"));
    const config = join(dir, "aggregator.toml");
    writeFileSync(config, `auction_window_ms = 120\nlease_ttl_ms = 9000\nreplica = "agg-toml"\n[tcp]\nlisten = "127.0.0.1:0"\n`);
    const agg = await startAggregator({ dir, args: ["--config", config, "--log-level", "info"] });
    try {
      const port = await eventually(() => /"listen":"127\.0\.0\.1:(\d+)"/.exec(agg.log())?.[1], 5000, "the bound port in the log");
      const bidder = await startFakeBidder("toml-a", { score: 10 });
      try {
        // A Connect client over plain HTTP/2 on the TCP port.
        const { createClient } = await import("@connectrpc/connect");
        const { createConnectTransport } = await import("@connectrpc/connect-node");
        const { AggregatorService } = await import("@aether/sdk/gen/aether/auction/v1/auction_pb");
        const tcp = createClient(AggregatorService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "2" }));
        const reg = await tcp.registerNode({ nodeId: "toml-a", name: "toml-a", address: bidder.address });
        assert.equal(ms(reg.lease?.ttl), 9000, "lease_ttl_ms from the file");
        const r = await tcp.deploy({ spec: spec("toml-w") });
        assert.equal(ms(r.auction?.bidTimeout), 120, "auction_window_ms from the file");
      } finally {
        await bidder.close();
      }
    } finally {
      assert.equal(await agg.stop(), 0);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Leadership, through the library with a store whose election this replica does not win

class StandbyStore implements ClusterStore {
  readonly description = "memory:standby";
  private readonly values = new Map<string, string>([
    ["leader", JSON.stringify({ replica: "agg-1", advertise: "https://10.0.0.5:7450", since: "2026-01-01T00:00:00.000Z" })],
  ]);
  async get(key: string) {
    return this.values.get(key);
  }
  async list(prefix: string) {
    return [...this.values].filter(([k]) => k.startsWith(prefix)).map(([key, value]) => ({ key, value }));
  }
  async put(): Promise<void> {
    throw new NotLeaderError("standby");
  }
  async delete(): Promise<void> {
    throw new NotLeaderError("standby");
  }
  campaign(): Promise<Leadership> {
    return new Promise(() => {});
  }
  async close() {}
}

describe("Aggregator (library): a standby replica", () => {
  it("answers UNAVAILABLE naming the leader until it leads", async () => {
    const aggregator = new Aggregator({ store: new StandbyStore(), replica: "agg-2" });
    aggregator.start();
    assert.equal(aggregator.isLeader, false);
    await rejectsWith(
      aggregator.listNodes(create(ListNodesRequestSchema)),
      Code.Unavailable,
      /this replica \(agg-2\) is a standby; the leader is agg-1 at https:\/\/10\.0\.0\.5:7450/,
    );
    await rejectsWith(aggregator.deploy(create(DeployRequestSchema)), Code.Unavailable, /standby/);
    const health = await aggregator.health();
    assert.equal(health.leading, false);
    assert.match(health.reasons[0] ?? "", /standby/);
    await aggregator.stop();
  });
});
