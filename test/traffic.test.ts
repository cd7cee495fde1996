// The traffic layer (issue 16, items 1 and 2) against a real aetherd and Debian's HAProxy, with two
// versions of a tiny HTTP service on loopback and a load generator sending requests all along:
// weights honoured, a shift to the other version without a failed request, a dead backend taken out
// by the health check, a deterministic A/B split, the proxy carrying traffic through an aetherd
// kill -9 and adopted afterwards, restarted when it dies, and gone after DeleteEndpoint.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type AetherClient } from "@aether/sdk";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { BackendState, type Endpoint, type EndpointSpecSchema } from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import { eventually, isRunning, startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { freePort } from "./helpers/net.js";
import { runCommand } from "./helpers/run.js";
import { get, startLoad, startVersionService, tally, type VersionService } from "./helpers/traffic.js";

/** The plain-object form of an EndpointSpec (not a created message), so tests can spread and change it. */
type SpecInit = Extract<MessageInitShape<typeof EndpointSpecSchema>, { $typeName?: undefined }>;

const rejects = async (p: Promise<unknown>, code: Code, pattern: RegExp) => {
  const err = await p.then(
    () => assert.fail("the call succeeded"),
    (e: unknown) => ConnectError.from(e),
  );
  assert.equal(err.code, code, err.message);
  assert.match(err.message, pattern);
};

/** Pids of HAProxy processes started on a configuration below dir. */
function haproxiesBelow(dir: string): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const argv = readFileSync(`/proc/${n}/cmdline`, "utf8").split("\0");
        return argv.some((a) => a.endsWith("haproxy")) && argv.some((a) => a.startsWith(dir));
      } catch {
        return false;
      }
    })
    .map(Number)
    .filter(isRunning);
}

describe("traffic endpoints (HAProxy run by aetherd)", () => {
  let daemon: TestDaemon;
  let aether: AetherClient;
  let v1: VersionService;
  let v2: VersionService;
  let url: string;
  let listen: string;

  // Checks every 400 ms (a dead backend is DOWN within a second) with a timeout as long, so a loaded
  // host does not fail a live backend.
  const spec = (weights: [number, number]): SpecInit => ({
    name: "web",
    listen,
    backends: [
      { id: "v1", address: v1.address, weight: weights[0] },
      { id: "v2", address: v2.address, weight: weights[1] },
    ],
    healthCheck: {
      kind: { case: "http", value: { path: "/healthz", expectedStatus: 200 } },
      intervalMs: 400,
      timeoutMs: 400,
      rise: 1,
      fall: 2,
    },
  });
  const endpoint = async () => (await aether.traffic.getEndpoint({ name: "web" })).endpoint as Endpoint;
  const backend = (e: Endpoint, id: string) => e.backends.find((b) => b.id === id);
  const allHealthy = () =>
    eventually(async () => ((await endpoint()).backends.every((b) => b.healthy) ? true : undefined), 10_000, "every backend checked UP");

  before(async () => {
    daemon = await startDaemon();
    aether = await daemon.client();
    [v1, v2] = await Promise.all([startVersionService("v1"), startVersionService("v2")]);
    const port = await freePort();
    listen = `127.0.0.1:${port}`;
    url = `http://${listen}/`;
  });

  after(async () => {
    await aether?.traffic.deleteEndpoint({ name: "web" }).catch(() => undefined);
    await Promise.all([v1?.kill(), v2?.kill()]);
    if (daemon) {
      assert.equal(await daemon.stop(), 0, "aetherd exits 0 on SIGTERM");
      daemon.cleanup();
    }
  });

  it("refuses bad requests with a sentence that says what to give", async () => {
    await rejects(aether.traffic.putEndpoint({ spec: { ...spec([1, 1]), listen: "localhost:80" } }), Code.InvalidArgument, /IP literal/);
    await rejects(aether.traffic.putEndpoint({ spec: { ...spec([300, 1]) } }), Code.InvalidArgument, /0 to 256/);
    await rejects(aether.traffic.putEndpoint({ spec: { ...spec([1, 1]), backends: [] } }), Code.InvalidArgument, /1 to 256/);
    await rejects(
      aether.traffic.putEndpoint({
        spec: { ...spec([1, 1]), abSplit: { key: { case: "header", value: "x-user" }, sideA: ["v1"], sideB: [], percentA: 50 } },
      }),
      Code.InvalidArgument,
      /side B/,
    );
    await rejects(aether.traffic.setWeights({ name: "nope", weights: { v1: 1 } }), Code.NotFound, /does not exist/);
    // An address something else listens on: HAProxy cannot bind, and nothing is left of the endpoint.
    await rejects(
      aether.traffic.putEndpoint({ spec: { ...spec([1, 1]), name: "clash", listen: v1.address } }),
      Code.FailedPrecondition,
      /in use/,
    );
    assert.deepEqual((await aether.traffic.listEndpoints({})).endpoints, []);
    assert.deepEqual(haproxiesBelow(dirname(daemon.stateDir)), []);
    assert.equal(existsSync(join(daemon.stateDir, "traffic", "clash")), false, "no files of the endpoint that never started");
    await rejects(aether.traffic.getEndpoint({ name: "Bad Name" }), Code.InvalidArgument, /not a valid name/);
  });

  it("sends traffic by weight (95/5) and reports per-backend statistics", async () => {
    const put = await aether.traffic.putEndpoint({ spec: spec([95, 5]) });
    assert.equal(put.created, true);
    assert.equal(put.endpoint?.proxy?.state, 1, put.endpoint?.proxy?.message);
    await allHealthy();
    const again = await aether.traffic.putEndpoint({ spec: spec([95, 5]) });
    assert.deepEqual([again.created, again.restarted], [false, false], "the same spec twice changes nothing");
    const answers = [];
    for (let i = 0; i < 400; i++) answers.push(await get(url));
    const share = answers.filter((b) => b === "v2").length / answers.length;
    assert.ok(Math.abs(share - 0.05) <= 0.03, `v2 got ${(share * 100).toFixed(1)}% of requests at weight 5 of 100`);
    const e = await endpoint();
    assert.ok(Number(backend(e, "v1")?.responses2xx) >= 360, "v1's 2xx responses are counted");
    assert.equal(backend(e, "v2")?.weight, 5);
    assert.equal(backend(e, "v1")?.lastCheck, "L7OK");
    assert.ok(backend(e, "v1")?.responseTimeP95Ms !== undefined, "a p95 from the request log");
  });

  it("shifts all traffic to v2 at runtime with zero failed requests", async () => {
    const pid = (await endpoint()).proxy?.pid;
    const load = startLoad(url);
    await eventually(() => (load.answers.length > 200 ? true : undefined), 10_000, "load before the shift");
    await aether.traffic.setWeights({ name: "web", weights: { v1: 0, v2: 100 } });
    const shifted = performance.now();
    await eventually(
      () => (load.answers.filter((a) => a.sentAt > shifted).length > 200 ? true : undefined),
      10_000,
      "load after the shift",
    );
    const answers = await load.stop();
    const { failures } = tally(answers);
    assert.deepEqual(failures, [], "no request failed across the shift");
    assert.deepEqual(tally(answers.filter((a) => a.sentAt > shifted)).counts, { v2: answers.filter((a) => a.sentAt > shifted).length });
    assert.equal((await endpoint()).proxy?.pid, pid, "no reload: the same HAProxy process");
  });

  it("takes a dead backend out through its health check, without failed requests", async () => {
    await aether.traffic.setWeights({ name: "web", weights: { v1: 50, v2: 50 } });
    const load = startLoad(url);
    await eventually(() => (load.answers.length > 100 ? true : undefined), 10_000, "load before the kill");
    await v1.kill();
    await eventually(async () => (/DOWN/.test(backend(await endpoint(), "v1")?.status ?? "") ? true : undefined), 10_000, "v1 marked DOWN");
    const down = performance.now();
    await eventually(() => (load.answers.filter((a) => a.sentAt > down).length > 100 ? true : undefined), 10_000, "load after DOWN");
    const answers = await load.stop();
    assert.deepEqual(tally(answers).failures, [], "the proxy retried on v2 while v1 was dying");
    assert.equal(backend(await endpoint(), "v1")?.healthy, false);
    v1 = await startVersionService("v1", v1.port);
    await allHealthy();
  });

  it("drains a backend and adds and removes backends without a restart", async () => {
    const pid = (await endpoint()).proxy?.pid;
    await aether.traffic.setBackendState({ name: "web", backend: "v1", state: BackendState.DRAIN });
    assert.match(backend(await endpoint(), "v1")?.status ?? "", /DRAIN/);
    for (let i = 0; i < 20; i++) assert.equal(await get(url), "v2");
    const v3 = await startVersionService("v3");
    try {
      const base = spec([0, 0]);
      const three = await aether.traffic.putEndpoint({
        spec: { ...base, backends: [...(base.backends ?? []).slice(1), { id: "v3", address: v3.address, weight: 10 }] },
      });
      assert.equal(three.restarted, false, "membership changes at runtime");
      assert.deepEqual(
        three.endpoint?.backends.map((b) => b.id),
        ["v2", "v3"],
      );
      await eventually(async () => ((await get(url)) === "v3" ? true : undefined), 10_000, "v3 answering through the endpoint");
      await aether.traffic.putEndpoint({ spec: spec([50, 50]) });
      assert.equal((await endpoint()).proxy?.pid, pid, "the same HAProxy process throughout");
      await allHealthy();
    } finally {
      await v3.kill();
    }
  });

  it("splits callers A/B by header: the same caller always on the same side, shares by the ratio", async () => {
    const put = await aether.traffic.putEndpoint({
      spec: { ...spec([1, 1]), abSplit: { key: { case: "header", value: "x-user" }, sideA: ["v1"], sideB: ["v2"], percentA: 30 } },
    });
    assert.equal(put.restarted, true, "a new split is a new frame: HAProxy restarted");
    await allHealthy();
    const side = new Map<string, string>();
    for (let round = 0; round < 2; round++) {
      for (let u = 0; u < 300; u++) {
        const body = await get(url, { "x-user": `user-${u}` });
        if (round === 0) side.set(`user-${u}`, body);
        else assert.equal(body, side.get(`user-${u}`), `user-${u} changed sides`);
      }
    }
    const shareA = [...side.values()].filter((b) => b === "v1").length / side.size;
    assert.ok(Math.abs(shareA - 0.3) <= 0.06, `side A got ${(shareA * 100).toFixed(1)}% of callers for a ratio of 30%`);
    // The ratio changes at runtime (the hash buckets' map), without a restart.
    const moved = await aether.traffic.putEndpoint({
      spec: { ...spec([1, 1]), abSplit: { key: { case: "header", value: "x-user" }, sideA: ["v1"], sideB: ["v2"], percentA: 100 } },
    });
    assert.equal(moved.restarted, false);
    for (let u = 0; u < 50; u++) assert.equal(await get(url, { "x-user": `user-${u}` }), "v1");
    await aether.traffic.putEndpoint({ spec: spec([50, 50]) });
    await allHealthy();
  });

  it("keeps carrying traffic through an aetherd kill -9, and the restarted aetherd adopts the proxy", async () => {
    const pid = (await endpoint()).proxy?.pid;
    const load = startLoad(url);
    await eventually(() => (load.answers.length > 50 ? true : undefined), 10_000, "load before the crash");
    await daemon.kill9();
    const crashed = performance.now();
    await eventually(
      () => (load.answers.filter((a) => a.sentAt > crashed).length > 100 ? true : undefined),
      10_000,
      "load without aetherd",
    );
    daemon = await startDaemon({ dir: dirname(daemon.stateDir), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    const adopted = await endpoint();
    assert.equal(adopted.proxy?.pid, pid, "the running HAProxy was adopted, not restarted");
    assert.equal(adopted.proxy?.restarts, 0);
    await aether.traffic.setWeights({ name: "web", weights: { v1: 0 } });
    const answers = await load.stop();
    assert.deepEqual(tally(answers).failures, [], "no request failed while aetherd was down or after");
    assert.equal(await get(url), "v2", "the adopted proxy takes runtime changes");
  });

  it("restarts a proxy that died", async () => {
    const pid = (await endpoint()).proxy?.pid as number;
    process.kill(pid, "SIGKILL");
    const restarted = await eventually(
      async () => {
        const e = await endpoint();
        return e.proxy?.state === 1 && e.proxy.pid !== pid ? e : undefined;
      },
      10_000,
      "HAProxy started again",
    );
    assert.equal(restarted.proxy?.restarts, 1);
    await eventually(async () => ((await get(url).catch(() => "")) === "v2" ? true : undefined), 10_000, "traffic through the new proxy");
  });

  it("aether traffic list|get: tables for people, JSON for scripts", async () => {
    const cli = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: daemon.address } });
    const table = await cli("traffic");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`web\\s+${listen.replace(/\./g, "\\.")}\\s+running\\s+2/2\\s+v1 0, v2 50`));
    const list = JSON.parse((await cli("traffic", "list", "--json")).stdout) as Array<{ spec: { name: string } }>;
    assert.deepEqual(
      list.map((e) => e.spec.name),
      ["web"],
    );
    const one = await cli("traffic", "get", "web");
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /HTTP GET \/healthz expects 200/);
    assert.match(one.stdout, /v2\s+127\.0\.0\.1:\d+\s+ready\s+UP/);
    const json = JSON.parse((await cli("traffic", "get", "web", "-o", "json")).stdout) as {
      backends: Array<{ id: string; healthy: boolean }>;
    };
    assert.deepEqual(
      json.backends.map((b) => [b.id, b.healthy]),
      [
        ["v1", true],
        ["v2", true],
      ],
    );
    const missing = await cli("traffic", "get", "nope");
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /endpoint nope does not exist/);
  });

  it("DeleteEndpoint stops the proxy and leaves no HAProxy process", async () => {
    assert.equal(haproxiesBelow(dirname(daemon.stateDir)).length, 1);
    await aether.traffic.deleteEndpoint({ name: "web" });
    assert.deepEqual(haproxiesBelow(dirname(daemon.stateDir)), []);
    await rejects(aether.traffic.getEndpoint({ name: "web" }), Code.NotFound, /does not exist/);
    assert.deepEqual((await aether.traffic.listEndpoints({})).endpoints, []);
  });
});

describe("traffic endpoints without HAProxy installed", () => {
  it("answers FAILED_PRECONDITION saying to install it", async () => {
    const daemon = await startDaemon({ env: { PATH: "/usr/bin:/bin" } });
    try {
      const aether = await daemon.client();
      const port = await freePort();
      await rejects(
        aether.traffic.putEndpoint({
          spec: { name: "web", listen: `127.0.0.1:${port}`, backends: [{ id: "a", address: "127.0.0.1:1", weight: 1 }] },
        }),
        Code.FailedPrecondition,
        /haproxy is not installed.*apt-get install -y haproxy/,
      );
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
