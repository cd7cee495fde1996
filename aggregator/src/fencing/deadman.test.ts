// The deadman switch through the library, with a fake Fencer and fake nodes on loopback: a silent
// node is suspected, fenced, and only then are its restartable workloads re-placed; an unconfirmed
// fence (PoweringOff forever, a refused login, a BMC that hangs), a node without a BMC or a BMC that
// matches two nodes leave the workloads where they are with an alert; a fenced node rejoins as a new
// member without its old workloads; a standby never fences and the replica that takes over
// finishes a fence left under way.
//
// Over 400 lines because the scenarios share one harness (a fake fencer, an in-memory store with an
// election, fake nodes) written at the top, and each scenario needs a fenced cluster of its own.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { CreateVmRequestSchema } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AuctionTrigger,
  ClusterEventKind,
  DeployRequestSchema,
  GetAuctionRequestSchema,
  HeartbeatRequestSchema,
  ListNodesRequestSchema,
  ListPlacementsRequestSchema,
  NodeState,
  PlacementState,
  RegisterNodeRequestSchema,
  StreamClusterEventsRequestSchema,
  WorkloadSpecSchema,
  type ClusterEvent,
  type Node,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startFakeBidder, type FakeBidder } from "../../../test/helpers/fake-bidder.js";
import { Aggregator } from "../aggregator.js";
import { NotLeaderError, type ClusterStore, type Leadership, type StoreEntry } from "../store/store.js";
import {
  BmcRegistry,
  RedfishFencer,
  describeBmc,
  positionOf,
  type FenceOutcome,
  type FenceTarget,
  type Fencer,
  type LocatedBmc,
  type Location,
  type RedfishTarget,
} from "./fencing.js";
import { restartPolicy, vmDataAtRisk } from "./deadman-model.js";

const TTL_MS = 400;

// ------------------------------------------------------------------------------------------------
// Test doubles

type FenceMode =
  | { kind: "confirm"; delayMs?: number }
  | { kind: "unconfirmed"; powerState: string }
  | { kind: "throw"; message: string }
  | { kind: "hang" };

class FakeFencer implements Fencer {
  readonly modes = new Map<string, FenceMode>();
  readonly calls: Array<{ node: string; at: number }> = [];
  /** Called when a fence starts, before it answers (to check nothing moved yet). */
  onFence: ((node: FenceTarget) => void) | undefined;

  locate(node: FenceTarget): Location {
    if (!this.modes.has(node.name)) return { none: `no BMC is registered for node ${node.name} (${node.id}, ${positionOf(node)})` };
    return { found: { key: node.name, description: `the test BMC of ${node.name}`, endpoint: `https://bmc-${node.name}.test` } };
  }

  async fence(node: FenceTarget, _bmc: LocatedBmc): Promise<FenceOutcome> {
    this.calls.push({ node: node.name, at: Date.now() });
    this.onFence?.(node);
    const mode = this.modes.get(node.name) ?? { kind: "hang" };
    switch (mode.kind) {
      case "confirm":
        await sleep(mode.delayMs ?? 0);
        return { confirmed: true, reason: "PowerState Off read back", powerState: "Off" };
      case "unconfirmed":
        return { confirmed: false, reason: `the deadline passed with PowerState ${mode.powerState}`, powerState: mode.powerState };
      case "throw":
        throw new Error(mode.message);
      case "hang":
        return new Promise<never>(() => {});
    }
  }
}

/** One election shared by the replicas of a test: the first to campaign leads until it resigns. */
class Election {
  readonly values = new Map<string, string>();
  leader: string | undefined;
  private lose: (() => void) | undefined;
  private readonly waiting: Array<{ candidate: string; grant: (l: Leadership) => void }> = [];

  campaign(candidate: string): Promise<Leadership> {
    return new Promise((grant) => {
      this.waiting.push({ candidate, grant });
      this.next();
    });
  }

  private next(): void {
    if (this.leader !== undefined) return;
    const w = this.waiting.shift();
    if (!w) return;
    this.leader = w.candidate;
    const lost = new Promise<void>((resolve) => (this.lose = resolve));
    w.grant({
      lost,
      resign: async () => {
        if (this.leader !== w.candidate) return;
        this.leader = undefined;
        this.lose?.();
        this.next();
      },
    });
  }
}

class MemoryStore implements ClusterStore {
  readonly description = "memory";
  constructor(
    private readonly election: Election,
    private readonly replica: string,
  ) {}
  async get(key: string) {
    return this.election.values.get(key);
  }
  async list(prefix: string): Promise<StoreEntry[]> {
    return [...this.election.values]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, value]) => ({ key, value }));
  }
  async put(key: string, value: string) {
    if (this.election.leader !== this.replica) throw new NotLeaderError(`${this.replica} does not lead`);
    this.election.values.set(key, value);
  }
  async delete(key: string) {
    if (this.election.leader !== this.replica) throw new NotLeaderError(`${this.replica} does not lead`);
    this.election.values.delete(key);
  }
  campaign(candidate: string) {
    return this.election.campaign(candidate);
  }
  async close() {}
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A replica, fake nodes and heartbeats for every node not silenced. */
class Harness {
  readonly election = new Election();
  readonly fencer = new FakeFencer();
  readonly bidders = new Map<string, FakeBidder>();
  readonly leases = new Map<string, string>();
  readonly silent = new Set<string>();
  agg!: Aggregator;
  private beat: NodeJS.Timeout | undefined;

  async start(replica = "agg-1", fencer: Fencer = this.fencer): Promise<Aggregator> {
    this.agg = this.replica(replica, fencer);
    this.agg.start();
    await this.agg.whenLeading();
    this.beat ??= setInterval(() => void this.heartbeat(), TTL_MS / 4);
    return this.agg;
  }

  replica(replica: string, fencer: Fencer = this.fencer): Aggregator {
    return new Aggregator({
      store: new MemoryStore(this.election, replica),
      replica,
      leaseTtlMs: TTL_MS,
      auctionWindowMs: 2000, // closes once every node answered; long enough for a first bid on a loaded machine
      provisionTimeoutMs: 2000,
      fencer,
      fenceTimeoutMs: 300,
      fencePollIntervalMs: 10,
      fenceRetryMs: 150,
    });
  }

  private async heartbeat(): Promise<void> {
    for (const [nodeId, leaseId] of this.leases) {
      if (this.silent.has(nodeId)) continue;
      await this.agg.heartbeat(create(HeartbeatRequestSchema, { nodeId, leaseId })).catch(() => undefined);
    }
  }

  async node(id: string, score: number, extra: { slot?: number; bmc?: FenceMode } = {}): Promise<FakeBidder> {
    const bidder = await startFakeBidder(id, { score });
    this.bidders.set(id, bidder);
    if (extra.bmc) this.fencer.modes.set(id, extra.bmc);
    await this.register(id, bidder.address, extra.slot);
    return bidder;
  }

  async register(id: string, address: string, slot = 0): Promise<Node> {
    const { node, lease } = await this.agg.registerNode(
      create(RegisterNodeRequestSchema, { nodeId: id, name: id, address, position: { slot } }),
    );
    this.leases.set(id, lease.id);
    this.silent.delete(id);
    return node;
  }

  async deploy(
    name: string,
    extra: { labels?: Record<string, string>; cell?: boolean; vm?: "image" | "kernel" } = {},
  ): Promise<WorkloadPlacement> {
    const vm = (boot: "image" | "kernel") =>
      ({
        case: "vm",
        value: {
          name,
          boot:
            boot === "image"
              ? { source: { case: "disk" as const, value: { image: "debian-12" } } }
              : { source: { case: "kernel" as const, value: { kernelPath: "/srv/vmlinuz", initrdPath: "/srv/initramfs" } } },
        },
      }) as const;
    const spec = create(WorkloadSpecSchema, {
      name,
      labels: extra.labels ?? {},
      kind: extra.vm
        ? vm(extra.vm)
        : extra.cell
          ? { case: "cell", value: { name } }
          : { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
    });
    const { placement } = await this.agg.deploy(create(DeployRequestSchema, { spec }));
    assert.ok(placement);
    return placement;
  }

  async nodeState(id: string): Promise<Node | undefined> {
    return (await this.agg.listNodes(create(ListNodesRequestSchema, {}))).nodes.find((n) => n.id === id);
  }

  async placements(): Promise<Map<string, WorkloadPlacement>> {
    const { placements } = await this.agg.listPlacements(create(ListPlacementsRequestSchema, { pageSize: 1000 }));
    return new Map(placements.map((p) => [p.name, p]));
  }

  async events(): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const e of this.agg.streamClusterEvents(create(StreamClusterEventsRequestSchema, {}))) out.push(e);
    return out;
  }

  async close(): Promise<void> {
    clearInterval(this.beat);
    await this.agg?.stop();
    for (const b of this.bidders.values()) await b.close();
  }
}

const provisionedIds = (b: FakeBidder | undefined) => (b?.provisioned ?? []).map((r) => r.spec?.workloadId ?? "");

// ------------------------------------------------------------------------------------------------

describe("deadman: a silent node is fenced before its workloads move", () => {
  const h = new Harness();
  after(() => h.close());

  it("SUSPECT → FENCING → FENCED, then restartable workloads are re-placed once; cells and restart=never ones are given up", async () => {
    await h.start();
    await h.node("a", 100, { bmc: { kind: "confirm" } });
    await h.node("b", 900, { bmc: { kind: "confirm", delayMs: 150 } });
    const c = await h.node("c", 200, { bmc: { kind: "confirm" } });
    const w1 = await h.deploy("w-1");
    const w2 = await h.deploy("w-2");
    const cell = await h.deploy("cell-1", { cell: true });
    const keep = await h.deploy("keep-1", { labels: { "aether.io/restart": "never" } });
    // VMs: one whose disk (a clone of an image) lives only on b, a stateless one (kernel + initramfs),
    // and one whose disk is labelled disposable.
    const vmDisk = await h.deploy("vm-disk", { vm: "image" });
    const vmMicro = await h.deploy("vm-micro", { vm: "kernel" });
    const vmEphemeral = await h.deploy("vm-ephemeral", { vm: "image", labels: { "aether.io/disk": "ephemeral" } });
    for (const p of [w1, w2, cell, keep, vmDisk, vmMicro, vmEphemeral]) assert.equal(p.node, "b", "the best bidder got them all");

    // When the BMC is asked, nothing has moved yet.
    let checkedAtFence = false;
    h.fencer.onFence = () => {
      for (const id of [w1, w2].map((p) => p.workloadId))
        assert.ok(
          !provisionedIds(c).includes(id) && !provisionedIds(h.bidders.get("a")).includes(id),
          "nothing is started elsewhere before the fence is confirmed",
        );
      checkedAtFence = true;
    };
    const silencedAt = Date.now();
    h.silent.add("b");
    const moved = await eventually(
      async () => {
        const all = await h.placements();
        const ok = ["w-1", "w-2", "vm-micro", "vm-ephemeral"].every(
          (n) => all.get(n)?.state === PlacementState.PLACED && all.get(n)?.node === "c",
        );
        return ok ? all : undefined;
      },
      5000,
      "w-1, w-2 and the VMs without data at risk re-placed on c",
    );
    assert.ok(checkedAtFence);
    assert.deepEqual(
      h.fencer.calls.map((x) => x.node),
      ["b"],
      "fenced once, only b",
    );
    assert.equal(moved.get("cell-1")?.state, PlacementState.FAILED);
    assert.match(moved.get("cell-1")?.stateReason ?? "", /fenced .*a cell's contents are started by its owner/);
    assert.equal(moved.get("keep-1")?.state, PlacementState.FAILED);
    assert.match(moved.get("keep-1")?.stateReason ?? "", /aether\.io\/restart=never/);
    // Never an empty copy of a VM with data: FAILED, saying why and how to opt in.
    assert.equal(moved.get("vm-disk")?.state, PlacementState.FAILED);
    assert.match(
      moved.get("vm-disk")?.stateReason ?? "",
      /fenced .*its disks \(its boot disk, a clone of image debian-12\) were on that node only and have no replica.*aether\.io\/disk=ephemeral.*Its disks are kept there/,
    );
    assert.ok(!provisionedIds(c).includes(vmDisk.workloadId) && !provisionedIds(h.bidders.get("a")).includes(vmDisk.workloadId));
    assert.equal(vmMicro.workloadId, moved.get("vm-micro")?.workloadId);
    assert.equal(vmEphemeral.workloadId, moved.get("vm-ephemeral")?.workloadId);

    // Each moved workload was provisioned exactly once on c, by a REPLACEMENT auction that did not ask b.
    for (const p of [w1, w2]) {
      assert.equal(provisionedIds(c).filter((id) => id === p.workloadId).length, 1, `${p.name} provisioned once`);
      const now = moved.get(p.name) as WorkloadPlacement;
      assert.equal(now.workloadId, p.workloadId);
      assert.equal(now.auctionHistory.length, 2);
      const { auction } = await h.agg.getAuction(create(GetAuctionRequestSchema, { auction: now.auctionId }));
      assert.equal(auction.trigger, AuctionTrigger.REPLACEMENT);
      assert.ok(!auction.bids.some((bid) => bid.node === "b"), "the fenced node was not asked");
    }
    assert.equal(h.bidders.get("b")?.released.length, 0, "nothing is asked of a fenced node");

    const b = await h.nodeState("b");
    assert.equal(b?.state, NodeState.FENCED);
    assert.match(b?.stateReason ?? "", /powered off through the test BMC of b .*rejoins as a new member/);

    // The audit trail, in order, with times.
    const events = (await h.events()).filter((e) => e.node === "b" || e.attributes.fenced_node === "b");
    const kinds = events.map((e) => ClusterEventKind[e.kind]);
    const at = (k: ClusterEventKind) => events.findIndex((e) => e.kind === k);
    assert.ok(
      at(ClusterEventKind.NODE_SUSPECT) >= 0 && at(ClusterEventKind.NODE_SUSPECT) < at(ClusterEventKind.NODE_FENCING),
      kinds.join(" "),
    );
    assert.ok(at(ClusterEventKind.NODE_FENCING) < at(ClusterEventKind.NODE_FENCED), kinds.join(" "));
    const fencedAt = at(ClusterEventKind.NODE_FENCED);
    const replaced = events.filter((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED);
    assert.equal(replaced.length, 4);
    for (const e of replaced) {
      assert.ok(events.indexOf(e) > fencedAt, "re-placed after fenced");
      assert.equal(e.attributes.from_node, "b");
      assert.equal(e.attributes.to_node, "c");
      assert.equal(e.attributes.fenced_node, "b");
      assert.ok(Number(e.attributes.since_last_heartbeat_ms) >= TTL_MS);
    }
    const fenced = events[fencedAt] as ClusterEvent;
    assert.equal(fenced.attributes.bmc, "https://bmc-b.test");
    assert.ok(Number(fenced.attributes.fence_duration_ms) >= 150);
    const ms = (e: ClusterEvent | undefined) => Number(e?.time?.seconds ?? 0n) * 1000 + (e?.time?.nanos ?? 0) / 1e6;
    const lastBeat = Date.parse(fenced.attributes.last_heartbeat ?? "");
    const suspect = ms(events[at(ClusterEventKind.NODE_SUSPECT)]);
    assert.ok(
      suspect - lastBeat >= TTL_MS - 5 && suspect - lastBeat < TTL_MS + 150,
      `suspected ${suspect - lastBeat} ms after the last heartbeat (TTL ${TTL_MS} ms)`,
    );
    assert.ok(ms(replaced.at(-1)) - silencedAt < 3000);
    assert.equal(events.filter((e) => e.kind === ClusterEventKind.WORKLOAD_FAILED).length, 3);

    // The old lease is dead.
    await assert.rejects(
      h.agg.heartbeat(create(HeartbeatRequestSchema, { nodeId: "b", leaseId: h.leases.get("b") })),
      (err: unknown) => err instanceof ConnectError && err.code === Code.FailedPrecondition,
    );
  });

  it("the fenced node rejoins as a new member: its old workloads are released on it first and none is resumed there", async () => {
    const b = h.bidders.get("b") as FakeBidder;
    // A node that cannot be reached to release them is not let in.
    await assert.rejects(
      h.register("b", "http://127.0.0.1:9"),
      (err: unknown) =>
        err instanceof ConnectError &&
        err.code === Code.Unavailable &&
        /rejoins only once the workloads it had then are released/.test(err.rawMessage),
    );
    assert.equal((await h.nodeState("b"))?.state, NodeState.FENCED);

    const before = await h.placements();
    const node = await h.register("b", b.address);
    assert.equal(node.state, NodeState.READY);
    assert.equal(node.labels["aether.io/incarnation"], "2");
    const stale = ["w-1", "w-2", "cell-1", "keep-1", "vm-micro", "vm-ephemeral"].map((n) => before.get(n)?.workloadId ?? "");
    assert.deepEqual(
      b.released.map((r) => r.workloadId).sort(),
      [...stale].sort(),
      "every workload it had when fenced was released on it, except the VM whose disks are only there",
    );
    const after = await h.placements();
    for (const n of ["w-1", "w-2"]) assert.equal(after.get(n)?.node, "c", `${n} stays on c`);
    const rejoined = (await h.events()).filter((e) => e.kind === ClusterEventKind.NODE_REGISTERED && e.node === "b").at(-1);
    assert.equal(rejoined?.attributes.incarnation, "2");
    assert.equal(rejoined?.attributes.stale_released, "6");
    assert.match(rejoined?.message ?? "", /rejoined .* as a new member \(incarnation 2\) after being fenced/);

    // A second registration of the same member is an ordinary one: nothing more released.
    const count = b.released.length;
    await h.register("b", b.address);
    assert.equal(b.released.length, count);
    // It takes part in auctions again.
    const back = await h.deploy("after-rejoin");
    assert.equal(back.node, "b");
  });
});

describe("deadman: an unconfirmed fence leaves the workloads where they are", () => {
  const h = new Harness();
  after(() => h.close());

  it("PoweringOff forever, a refused login, a hanging BMC: FENCE_FAILED with an alert, retried with backoff; once confirmed the workloads move", async () => {
    await h.start();
    const a = await h.node("a", 100, { bmc: { kind: "confirm" } });
    const b = await h.node("b", 900, { bmc: { kind: "unconfirmed", powerState: "PoweringOff" } });
    const w = await h.deploy("stay-1");
    assert.equal(w.node, "b");
    h.silent.add("b");

    const failed = await eventually(
      async () => {
        const n = await h.nodeState("b");
        return n?.state === NodeState.FENCE_FAILED && h.fencer.calls.length >= 2 ? n : undefined;
      },
      5000,
      "b FENCE_FAILED and retried",
    );
    assert.match(failed.stateReason, /failed \(attempt \d\): the fence was not confirmed .*PoweringOff.*stay where they are/);
    const gaps = h.fencer.calls.slice(1).map((c, i) => c.at - (h.fencer.calls[i]?.at ?? 0));
    assert.ok((gaps[0] ?? 0) >= 140, `retried after a backoff (${gaps.join(", ")} ms)`);

    // Wrong password, then a BMC that never answers.
    h.fencer.modes.set("b", { kind: "throw", message: "the BMC refused the login (401 Unauthorized): check the user and password" });
    await eventually(
      async () => ((await h.nodeState("b"))?.stateReason.includes("401 Unauthorized") ? true : undefined),
      5000,
      "the refused login reported",
    );
    h.fencer.modes.set("b", { kind: "hang" });
    await eventually(
      async () => ((await h.nodeState("b"))?.stateReason.includes("did not answer within 600 ms (the BMC hangs)") ? true : undefined),
      8000,
      "the hanging BMC reported",
    );

    // All that time the workload stayed on b and nothing started it elsewhere.
    const still = (await h.placements()).get("stay-1");
    assert.equal(still?.state, PlacementState.PLACED);
    assert.equal(still?.node, "b");
    assert.ok(!provisionedIds(a).includes(w.workloadId), "no second copy");
    const alerts = (await h.events()).filter((e) => e.kind === ClusterEventKind.NODE_FENCE_FAILED && e.node === "b");
    assert.ok(alerts.length >= 3);
    assert.ok(alerts.every((e) => e.attributes.alert === "true" && e.attributes.workloads_left === "1"));
    assert.ok(alerts.some((e) => e.attributes.cause === "unconfirmed_PoweringOff"));
    assert.ok(!(await h.events()).some((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED));

    // The BMC works again: the next attempt confirms and the workload moves.
    h.fencer.modes.set("b", { kind: "confirm" });
    const moved = await eventually(
      async () => {
        const p = (await h.placements()).get("stay-1");
        return p?.state === PlacementState.PLACED && p.node === "a" ? p : undefined;
      },
      10_000,
      "stay-1 re-placed on a",
    );
    assert.equal(moved.workloadId, w.workloadId);
    assert.equal(b.released.length, 0);
  });

  it("a node with no BMC stays SUSPECT with one alert and keeps its workloads", async () => {
    const d = await h.node("d", 1000);
    const w = await h.deploy("nobmc-1");
    assert.equal(w.node, "d");
    h.silent.add("d");
    const suspect = await eventually(
      async () => {
        const n = await h.nodeState("d");
        return n?.state === NodeState.SUSPECT && /No BMC is registered/.test(n.stateReason) ? n : undefined;
      },
      5000,
      "d SUSPECT with the no-BMC sentence",
    );
    assert.match(
      suspect.stateReason,
      /no heartbeat since .* No BMC is registered for node d \(d, no slot\).*it cannot be fenced, so its workloads stay where they are/,
    );
    await sleep(TTL_MS * 2);
    const alerts = (await h.events()).filter((e) => e.kind === ClusterEventKind.NODE_FENCE_FAILED && e.node === "d");
    assert.equal(alerts.length, 1, "one alert per silence, not one per sweep");
    assert.equal(alerts[0]?.attributes.cause, "no_bmc");
    assert.ok(!h.fencer.calls.some((c) => c.node === "d"));
    const p = (await h.placements()).get("nobmc-1");
    assert.equal(p?.state, PlacementState.PLACED);
    assert.equal(p?.node, "d");
    assert.equal((await h.nodeState("d"))?.state, NodeState.SUSPECT);
    // Heartbeating again (registering again) brings it back with its workloads.
    await h.register("d", (h.bidders.get("d") as FakeBidder).address);
    assert.equal((await h.nodeState("d"))?.state, NodeState.READY);
  });
});

describe("deadman: registration while fencing, BMC matching by slot", () => {
  const h = new Harness();
  after(() => h.close());

  it("a node being fenced cannot register until the fence has ended", async () => {
    await h.start();
    await h.node("a", 100, { bmc: { kind: "confirm" } });
    const b = await h.node("b", 900, { bmc: { kind: "confirm", delayMs: 600 } });
    await h.deploy("f-1");
    h.silent.add("b");
    await eventually(async () => ((await h.nodeState("b"))?.state === NodeState.FENCING ? true : undefined), 5000, "b FENCING");
    await assert.rejects(
      h.register("b", b.address),
      (err: unknown) =>
        err instanceof ConnectError &&
        err.code === Code.FailedPrecondition &&
        /being fenced through its BMC right now/.test(err.rawMessage),
    );
    await eventually(async () => ((await h.placements()).get("f-1")?.node === "a" ? true : undefined), 5000, "f-1 on a");
  });

  it("by slot: two live nodes claiming the BMC's slot are never fenced through it", async () => {
    const calls: RedfishTarget[] = [];
    const bmcs = new BmcRegistry([{ slot: 7, endpoint: "https://bmc-7.test", username: "admin", password: "s3cret-pw" }]);
    const fencer = new RedfishFencer(bmcs, (target) => {
      calls.push(target);
      return { fence: async () => ({ confirmed: true, reason: "Off" }) };
    });
    const h2 = new Harness();
    try {
      await h2.start("agg-slot", fencer);
      const x = await startFakeBidder("x", { score: 900 });
      const y = await startFakeBidder("y", { score: 100 });
      h2.bidders.set("x", x).set("y", y);
      await h2.register("x", x.address, 7);
      await h2.register("y", y.address, 7);
      const p = await h2.deploy("slot-1");
      assert.equal(p.node, "x");
      h2.silent.add("x");
      const failed = await eventually(
        async () => {
          const n = await h2.nodeState("x");
          return n?.state === NodeState.FENCE_FAILED ? n : undefined;
        },
        5000,
        "x FENCE_FAILED",
      );
      assert.match(failed.stateReason, /refused to fence: the BMC at https:\/\/bmc-7\.test .* also matches node y/);
      assert.equal(calls.length, 0, "the BMC was never called");
      assert.equal((await h2.placements()).get("slot-1")?.node, "x");
      assert.ok(
        !(await h2.events()).some(
          (e) => e.message.includes("s3cret-pw") || Object.values(e.attributes).some((v) => v.includes("s3cret-pw")),
        ),
      );
    } finally {
      await h2.close();
    }
  });
});

describe("deadman: only the leader fences", () => {
  it("a standby never fences; the replica that takes over fences a node left FENCING again and re-places its workloads", async () => {
    const h = new Harness();
    const standbyFencer = new FakeFencer();
    standbyFencer.modes.set("b", { kind: "confirm" });
    standbyFencer.modes.set("a", { kind: "confirm" });
    let second: Aggregator | undefined;
    try {
      await h.start("agg-1");
      await h.node("a", 100, { bmc: { kind: "confirm" } });
      await h.node("b", 900, { bmc: { kind: "hang" } });
      const w = await h.deploy("ha-1");
      second = h.replica("agg-2", standbyFencer);
      second.start();
      h.silent.add("b");
      await eventually(async () => ((await h.nodeState("b"))?.state === NodeState.FENCING ? true : undefined), 5000, "b FENCING on agg-1");
      await sleep(TTL_MS * 2);
      assert.equal(second.isLeader, false);
      assert.equal(standbyFencer.calls.length, 0, "the standby did not fence");

      // The leader goes away mid-fence; the standby takes over and finishes it.
      await h.agg.stop();
      await second.whenLeading();
      h.agg = second;
      const moved = await eventually(
        async () => {
          const p = (await h.placements()).get("ha-1");
          return p?.state === PlacementState.PLACED && p.node === "a" ? p : undefined;
        },
        5000,
        "ha-1 re-placed by the new leader",
      );
      assert.equal(moved.workloadId, w.workloadId);
      assert.deepEqual(
        standbyFencer.calls.map((c) => c.node),
        ["b"],
      );
      assert.equal((await h.nodeState("b"))?.state, NodeState.FENCED);
      assert.equal(provisionedIds(h.bidders.get("a")).filter((id) => id === w.workloadId).length, 1);
    } finally {
      await h.close();
      await second?.stop();
    }
  });
});

describe("fencing: the BMC registry and the Redfish fencer (pure)", () => {
  const target = (name: string, slot = 0, chassis = "", rack = ""): FenceTarget => ({ id: `id-${name}`, name, slot, chassis, rack });
  const entry = (extra: object) => ({ endpoint: "https://bmc.test", username: "admin", password: "hunter2-secret", ...extra });

  it("finds a BMC by node name first, then by slot (narrowed by chassis and rack)", () => {
    const r = new BmcRegistry([
      entry({ node: "n1", endpoint: "https://n1.test" }),
      entry({ slot: 2, chassis: "c1", endpoint: "https://c1-2.test" }),
      entry({ slot: 2, chassis: "c2", endpoint: "https://c2-2.test" }),
    ]);
    const at = (t: FenceTarget) => {
      const f = r.find(t);
      return "entry" in f ? f.entry.endpoint : f.none;
    };
    assert.equal(at(target("n1", 2, "c2")), "https://n1.test");
    assert.equal(at(target("n2", 2, "c1")), "https://c1-2.test");
    assert.equal(at(target("n3", 2, "c2")), "https://c2-2.test");
    assert.match(at(target("n4", 3, "c1")), /no BMC is registered for node n4 \(id-n4, slot 3 of chassis c1\)/);
    assert.match(at(target("n5")), /reports no slot/);
  });

  it("refuses duplicate or half-given entries, and reports a node that matches two", () => {
    assert.throws(() => new BmcRegistry([entry({ node: "n1" }), entry({ node: "n1" })]), /two BMC entries are registered for node n1/);
    assert.throws(() => new BmcRegistry([entry({ slot: 1 }), entry({ slot: 1 })]), /two BMC entries are registered for slot 1/);
    assert.throws(() => new BmcRegistry([entry({})]), /must name either a node or a slot/);
    assert.throws(() => new BmcRegistry([entry({ node: "x", slot: 1 })]), /must name either a node or a slot/);
    const r = new BmcRegistry([entry({ slot: 4 }), entry({ slot: 4, chassis: "c1" })]);
    const f = r.find(target("n", 4, "c1"));
    assert.ok("none" in f && /2 BMC entries match node n/.test(f.none));
  });

  it("hands the credentials to the client only, and keeps the password out of every sentence", async () => {
    const seen: RedfishTarget[] = [];
    const r = new BmcRegistry([entry({ node: "n1", profile: "ilo5", insecureSkipVerify: true, requestTimeoutMs: 1500 })]);
    const failing = new RedfishFencer(r, (t) => {
      seen.push(t);
      return {
        fence: async () => {
          throw new Error("401 from the BMC: login admin/hunter2-secret refused");
        },
      };
    });
    const loc = failing.locate(target("n1"));
    assert.ok("found" in loc);
    assert.ok(!JSON.stringify(loc).includes("hunter2"));
    assert.ok(!describeBmc(r.entries[0] as (typeof r.entries)[number]).includes("hunter2"));
    const outcome = await failing.fence(target("n1"), loc.found, { timeoutMs: 1000, pollIntervalMs: 10 });
    assert.equal(outcome.confirmed, false);
    assert.equal(outcome.reason, "401 from the BMC: login admin/******** refused");
    assert.deepEqual(seen, [
      {
        endpoint: "https://bmc.test",
        username: "admin",
        password: "hunter2-secret",
        profile: "ilo5",
        insecureSkipVerify: true,
        requestTimeoutMs: 1500,
      },
    ]);
  });

  it("restart policy: executables and VMs by default, cells only when labelled", () => {
    const spec = (kind: "executable" | "cell" | "vm", labels: Record<string, string> = {}) =>
      create(WorkloadSpecSchema, {
        labels,
        kind:
          kind === "executable"
            ? { case: "executable", value: {} }
            : kind === "cell"
              ? { case: "cell", value: {} }
              : { case: "vm", value: {} },
      });
    assert.equal(restartPolicy(spec("executable")), "on-fence");
    assert.equal(restartPolicy(spec("vm")), "on-fence");
    assert.equal(restartPolicy(spec("cell")), "never");
    assert.equal(restartPolicy(spec("cell", { "aether.io/restart": "on-fence" })), "on-fence");
    assert.equal(restartPolicy(spec("executable", { "aether.io/restart": "never" })), "never");
  });

  it("a VM's data at risk: volumes, image clones and writable host files; not kernel boots, read-only host files or ephemeral disks", () => {
    const vm = (value: MessageInitShape<typeof CreateVmRequestSchema>, labels: Record<string, string> = {}) =>
      create(WorkloadSpecSchema, { labels, kind: { case: "vm", value } });
    const kernel = { source: { case: "kernel" as const, value: { kernelPath: "/k" } } };
    assert.equal(vmDataAtRisk(vm({ boot: kernel })), undefined);
    assert.equal(
      vmDataAtRisk(vm({ boot: kernel, disks: [{ source: { case: "hostPath", value: "/srv/ro.img" }, readOnly: true }] })),
      undefined,
    );
    assert.match(
      vmDataAtRisk(vm({ boot: kernel, disks: [{ source: { case: "hostPath", value: "/srv/rw.img" } }] })) ?? "",
      /writable host file \/srv\/rw\.img/,
    );
    assert.match(vmDataAtRisk(vm({ boot: kernel, disks: [{ source: { case: "volume", value: "data" } }] })) ?? "", /volume data/);
    assert.match(vmDataAtRisk(vm({ boot: { source: { case: "disk", value: { volume: "root" } } } })) ?? "", /boot volume root/);
    assert.equal(
      vmDataAtRisk(vm({ boot: { source: { case: "disk", value: { image: "x" } } } }, { "aether.io/disk": "ephemeral" })),
      undefined,
    );
    assert.equal(vmDataAtRisk(create(WorkloadSpecSchema, { kind: { case: "executable", value: {} } })), undefined);
  });
});
