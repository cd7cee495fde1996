// EtcdStore against a real etcd (Debian's etcd-server, started here): the store's round trip, one
// leader among replicas, hand-over on resign, fail-over when the leader is killed, fencing of a
// deposed leader's late write, and an unreachable etcd reported as such within a bounded time.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Etcd3 } from "etcd3";
import { startEtcd, startPartitionProxy, type TestEtcd } from "../../../test/helpers/etcd.js";
import { EtcdStore } from "./etcd-store.js";
import { NotLeaderError, StoreUnavailableError, type Leadership } from "./store.js";

const TTL_SECONDS = 3;
let prefixCounter = 0;
/** A fresh prefix per test, so tests sharing one etcd never see each other's keys or elections. */
function freshPrefix(): string {
  return `/aether-test/${process.pid}-${++prefixCounter}/`;
}

/** Whether the promise settles within ms (without consuming its outcome). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return settled;
}

async function timed<T>(promise: Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await promise;
  return { value, ms: Math.round(performance.now() - start) };
}

/** Awaits a rejection and returns it with how long it took. */
async function rejection(promise: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const start = performance.now();
  try {
    await promise;
  } catch (error) {
    return { error, ms: Math.round(performance.now() - start) };
  }
  assert.fail("expected the operation to be refused");
}

describe("EtcdStore against a real etcd", () => {
  let etcd: TestEtcd;
  const stores: EtcdStore[] = [];
  const open = (options: { endpoint?: string; prefix: string; callTimeoutMs?: number }): EtcdStore => {
    const store = new EtcdStore([options.endpoint ?? etcd.endpoint], {
      prefix: options.prefix,
      leaseTtlSeconds: TTL_SECONDS,
      ...(options.callTimeoutMs === undefined ? {} : { callTimeoutMs: options.callTimeoutMs }),
    });
    stores.push(store);
    return store;
  };

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await Promise.all(stores.map((store) => store.close()));
    await etcd.stop();
  });

  it("puts, gets, lists in key order and deletes; writes need leadership", async () => {
    const store = open({ prefix: freshPrefix() });
    assert.equal(store.description, `etcd:${etcd.endpoint}`);
    assert.equal(await store.get("nodes/a"), undefined);
    await assert.rejects(store.put("nodes/a", "{}"), NotLeaderError, "a put before campaign is refused");
    await assert.rejects(store.delete("nodes/a"), NotLeaderError);

    await store.campaign("replica-1");
    await store.put("nodes/b", JSON.stringify({ id: "b" }));
    await store.put("nodes/a", JSON.stringify({ id: "a", note: "größe ✓" }));
    await store.put("nodes/c", "c");
    await store.put("placements/w1", "b");
    assert.deepEqual(JSON.parse((await store.get("nodes/a")) ?? "null"), { id: "a", note: "größe ✓" });
    assert.deepEqual(
      (await store.list("nodes/")).map((entry) => entry.key),
      ["nodes/a", "nodes/b", "nodes/c"],
    );
    // The election's own keys live beside the data, never in it.
    assert.deepEqual(
      (await store.list("")).map((entry) => entry.key),
      ["nodes/a", "nodes/b", "nodes/c", "placements/w1"],
    );
    await store.put("nodes/c", "c2");
    assert.equal(await store.get("nodes/c"), "c2");
    await store.delete("nodes/c");
    await store.delete("nodes/never-there");
    assert.equal(await store.get("nodes/c"), undefined);
    assert.deepEqual(await store.list("nodes/"), [
      { key: "nodes/a", value: JSON.stringify({ id: "a", note: "größe ✓" }) },
      { key: "nodes/b", value: JSON.stringify({ id: "b" }) },
    ]);

    // More entries than one range request returns: list pages through them, in order.
    const keys = Array.from({ length: 1_234 }, (_, i) => `auctions/${String(i).padStart(5, "0")}`);
    for (let i = 0; i < keys.length; i += 100) {
      await Promise.all(keys.slice(i, i + 100).map((key) => store.put(key, `v${key}`)));
    }
    const listed = await store.list("auctions/");
    assert.equal(listed.length, keys.length);
    assert.deepEqual(
      listed.map((entry) => entry.key),
      keys,
    );
    assert.ok(listed.every((entry) => entry.value === `v${entry.key}`));
  });

  it("elects exactly one of two replicas, refuses the follower's writes, hands over on resign", async () => {
    const prefix = freshPrefix();
    const a = open({ prefix });
    const b = open({ prefix });
    const campaignA = a.campaign("replica-a");
    const campaignB = b.campaign("replica-b");
    const first = await Promise.race([campaignA.then(() => "a" as const), campaignB.then(() => "b" as const)]);
    const [leaderStore, followerStore, followerCampaign] = first === "a" ? [a, b, campaignB] : [b, a, campaignA];
    const leadership = await (first === "a" ? campaignA : campaignB);
    assert.equal(await settlesWithin(followerCampaign, 1_000), false, "the second replica waits while the first leads");

    await leaderStore.put("nodes/n1", "from the first leader");
    await assert.rejects(followerStore.put("nodes/n2", "x"), NotLeaderError, "the follower's write is refused");
    await assert.rejects(followerStore.delete("nodes/n1"), NotLeaderError);
    assert.equal(await followerStore.get("nodes/n1"), "from the first leader", "followers read");

    const resignedAt = performance.now();
    await leadership.resign();
    await leadership.lost;
    const next = await followerCampaign;
    const handOverMs = Math.round(performance.now() - resignedAt);
    console.log(`resign → the other replica leads: ${handOverMs} ms`);
    assert.ok(handOverMs < 1_000, `hand-over took ${handOverMs} ms`);

    await followerStore.put("nodes/n2", "from the second leader");
    await assert.rejects(leaderStore.put("nodes/n3", "x"), NotLeaderError, "the resigned replica no longer writes");
    assert.equal(await leaderStore.get("nodes/n2"), "from the second leader");
    assert.equal(await settlesWithin(next.lost, 200), false, "the new leadership lasts");
  });

  it("fails over within the lease TTL when the leader is killed, and keeps its data", async () => {
    const prefix = freshPrefix();
    // The first leader is a separate process, killed with SIGKILL: no resign, no lease revoke.
    const storeModule = new URL("./etcd-store.ts", import.meta.url).href;
    const script = `
      import { EtcdStore } from ${JSON.stringify(storeModule)};
      const [endpoint, prefix, ttl] = process.argv.slice(-3);
      const store = new EtcdStore([endpoint], { prefix, leaseTtlSeconds: Number(ttl) });
      await store.campaign("doomed");
      await store.put("placements/w1", "node-7");
      process.stdout.write("leading\\n");
      setInterval(() => undefined, 1000);
    `;
    const child = spawn(
      process.execPath,
      ["--conditions=source", "--import", "tsx", "--input-type=module", "-e", script, "--", etcd.endpoint, prefix, String(TTL_SECONDS)],
      { cwd: fileURLToPath(new URL("../../..", import.meta.url)), stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        let out = "";
        child.stdout.setEncoding("utf8");
        child.stdout.on("data", (chunk: string) => {
          out += chunk;
          if (out.includes("leading")) resolve();
        });
        child.once("exit", (code) => reject(new Error(`the leader process exited (${code}) before leading`)));
      });
      const survivor = open({ prefix });
      const campaign = survivor.campaign("survivor");
      assert.equal(await settlesWithin(campaign, 500), false, "the survivor waits while the first process leads");

      const killedAt = performance.now();
      child.kill("SIGKILL");
      await exited;
      await campaign;
      const failoverMs = Math.round(performance.now() - killedAt);
      console.log(`leader killed (SIGKILL) → the other replica leads: ${failoverMs} ms (lease TTL ${TTL_SECONDS} s)`);
      assert.ok(failoverMs < TTL_SECONDS * 1000 + 1_000, `fail-over took ${failoverMs} ms; ${etcd.warnings()}`);
      assert.equal(await survivor.get("placements/w1"), "node-7", "the first leader's write survives it");
      await survivor.put("placements/w2", "node-3");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });

  it("fences a partitioned leader: its late write is refused by etcd after another replica took over", async () => {
    const prefix = freshPrefix();
    const proxy = await startPartitionProxy(etcd.endpoint);
    try {
      // The old leader reaches etcd through the relay and waits long for answers, so its write is
      // still in flight when the network comes back.
      const old = open({ endpoint: proxy.endpoint, prefix, callTimeoutMs: 20_000 });
      const next = open({ prefix });
      const oldLeadership = await old.campaign("old");
      await old.put("placements/w1", "node-1");
      const nextCampaign = next.campaign("next");
      assert.equal(await settlesWithin(nextCampaign, 500), false);

      const cutAt = performance.now();
      proxy.partition();
      const oldGaveUp = oldLeadership.lost.then(() => Math.round(performance.now() - cutAt));
      // Sent while the old leader still believes it leads; held by the partition.
      const lateWrite = old.put("placements/w1", "node-1-late");
      const lateWriteOutcome = rejection(lateWrite);
      await nextCampaign;
      const failoverMs = Math.round(performance.now() - cutAt);
      assert.ok(await settlesWithin(oldGaveUp, 1_000), "the partitioned leader notices it can no longer count on its lease");
      const lostMs = await oldGaveUp;
      console.log(`leader partitioned → the old one stops leading after ${lostMs} ms, the other replica leads after ${failoverMs} ms`);
      assert.ok(failoverMs < TTL_SECONDS * 1000 + 1_000, `fail-over took ${failoverMs} ms; ${etcd.warnings()}`);
      // Its lease provably lived until (last renewal sent + TTL): it gave up no later than etcd let another lead.
      assert.ok(lostMs <= failoverMs + 100, `the old leader gave up at ${lostMs} ms, after the new one led at ${failoverMs} ms`);
      await assert.rejects(old.put("placements/w9", "x"), NotLeaderError, "once it knows, it refuses writes itself");

      proxy.heal();
      const { error, ms } = await lateWriteOutcome;
      assert.ok(error instanceof NotLeaderError, `the late write failed with ${String(error)}`);
      assert.match(error.message, /etcd refused to write "placements\/w1"/, "etcd itself refused it (the fencing transaction)");
      console.log(`the deposed leader's in-flight write was refused by etcd ${ms} ms after it was sent`);
      assert.equal(await next.get("placements/w1"), "node-1", "the late write never landed");
      await next.put("placements/w1", "node-2");
      assert.equal(await old.get("placements/w1"), "node-2");
    } finally {
      await proxy.close();
    }
  });

  it("ends leadership at once when the election key is deleted under it", async () => {
    const prefix = freshPrefix();
    const store = open({ prefix });
    const leadership: Leadership = await store.campaign("replica");
    const operator = new Etcd3({ hosts: etcd.endpoint });
    try {
      const deletedAt = performance.now();
      await operator.delete().prefix(`${prefix}election/`);
      assert.ok(await settlesWithin(leadership.lost, 1_000), "lost resolves");
      console.log(`election key deleted → leadership lost after ${Math.round(performance.now() - deletedAt)} ms`);
      await assert.rejects(store.put("k", "v"), NotLeaderError);
      const again = await timed(store.campaign("replica"));
      await store.put("k", "v");
      console.log(`campaigned again in ${again.ms} ms`);
    } finally {
      operator.close();
    }
  });
});

describe("EtcdStore when etcd is unreachable", () => {
  it("reports StoreUnavailableError within a bounded time, paused or stopped, and never hangs", async () => {
    const etcd = await startEtcd();
    const prefix = freshPrefix();
    const leader = new EtcdStore([etcd.endpoint], { prefix, leaseTtlSeconds: TTL_SECONDS });
    const follower = new EtcdStore([etcd.endpoint], { prefix, leaseTtlSeconds: TTL_SECONDS });
    const late = new EtcdStore([etcd.endpoint], { prefix, leaseTtlSeconds: TTL_SECONDS });
    const check = async (
      what: string,
      operation: Promise<unknown>,
      errorType: typeof StoreUnavailableError | typeof NotLeaderError = StoreUnavailableError,
    ): Promise<void> => {
      const { error, ms } = await rejection(operation);
      console.log(`${what}: refused after ${ms} ms: ${error instanceof Error ? error.message : String(error)}`);
      assert.ok(error instanceof errorType, `${what} failed with ${String(error)}`);
      assert.ok(ms < 10_000, `${what} took ${ms} ms`);
    };
    try {
      const first = await leader.campaign("leader");
      await leader.put("nodes/a", "1");

      // A stall well under the lease TTL costs nothing.
      await etcd.pause();
      await sleep(1_000);
      etcd.resume();
      await leader.put("nodes/a", "2");
      assert.equal(await settlesWithin(first.lost, 0), false, "a one-second stall of etcd does not end leadership");

      // Frozen: connections stay open and nothing answers; only the deadlines end the calls.
      const followerCampaign = follower.campaign("follower");
      const followerOutcome = rejection(followerCampaign);
      const followerFailedAt = followerCampaign.then(
        () => Number.NaN,
        () => performance.now(),
      );
      assert.equal(await settlesWithin(followerCampaign, 300), false);
      await etcd.pause();
      const pausedAt = performance.now();
      const leaderGaveUp = first.lost.then(() => Math.round(performance.now() - pausedAt));
      await Promise.all([
        check("paused etcd: get", leader.get("nodes/a")),
        check("paused etcd: list", leader.list("nodes/")),
        check("paused etcd: put", leader.put("nodes/b", "2")),
        check("paused etcd: the follower's delete", follower.delete("nodes/a"), NotLeaderError),
      ]);
      assert.ok(await settlesWithin(first.lost, TTL_SECONDS * 1000 + 1_000 - (performance.now() - pausedAt)), "the leader stops leading");
      console.log(`paused etcd: the leader gave up its leadership after ${await leaderGaveUp} ms`);
      const unavailable = await rejection(leader.get("nodes/a"));
      assert.ok(unavailable.error instanceof StoreUnavailableError);
      assert.match(
        unavailable.error.message,
        new RegExp(`^etcd at ${etcd.endpoint} is unreachable \\(read "nodes/a": .+\\); the aggregator refuses writes until it is back$`),
      );
      const { error: followerError } = await followerOutcome;
      const followerFailedMs = Math.round((await followerFailedAt) - pausedAt);
      console.log(`paused etcd: the waiting follower's campaign failed ${followerFailedMs} ms after the pause: ${String(followerError)}`);
      assert.ok(followerError instanceof StoreUnavailableError, `the follower's campaign failed with ${String(followerError)}`);
      assert.ok(followerFailedMs < TTL_SECONDS * 1000 + 1_000, `the follower waited ${followerFailedMs} ms`);

      // Back: campaigning again (as the aggregator does, every half second) leads once etcd3 tries
      // etcd again (it holds off a few seconds after a run of failures) and the candidates' leases
      // from before are gone.
      etcd.resume();
      const resumedAt = performance.now();
      let leadershipAgain: Leadership | undefined;
      while (leadershipAgain === undefined) {
        try {
          leadershipAgain = await leader.campaign("leader");
        } catch (error) {
          assert.ok(error instanceof StoreUnavailableError, `campaign failed with ${String(error)}`);
          assert.ok(performance.now() - resumedAt < 15_000, "leads again within 15 s of etcd coming back");
          await sleep(500);
        }
      }
      const again = { value: leadershipAgain };
      console.log(`etcd back: leading again after ${Math.round(performance.now() - resumedAt)} ms`);
      await leader.put("nodes/c", "3");

      // Stopped: connections refused.
      await etcd.stop();
      const stoppedAt = performance.now();
      const againGaveUp = again.value.lost.then(() => Math.round(performance.now() - stoppedAt));
      await Promise.all([
        check("stopped etcd: put", leader.put("nodes/d", "4")),
        check("stopped etcd: delete", leader.delete("nodes/c")),
        check("stopped etcd: get", leader.get("nodes/a")),
        check("stopped etcd: list", leader.list("")),
        check("stopped etcd: campaign", late.campaign("late")),
      ]);
      assert.ok(
        await settlesWithin(again.value.lost, TTL_SECONDS * 1000 + 1_000 - (performance.now() - stoppedAt)),
        "the leader stops leading",
      );
      console.log(`stopped etcd: the leader gave up its leadership after ${await againGaveUp} ms`);

      const closing = await timed(Promise.all([leader.close(), follower.close(), late.close()]));
      console.log(`close() with etcd gone: ${closing.ms} ms`);
      assert.ok(closing.ms < 10_000);
      await assert.rejects(leader.get("nodes/a"), StoreUnavailableError);
    } finally {
      await Promise.all([leader.close(), follower.close(), late.close()]);
      await etcd.stop();
    }
  });
});
