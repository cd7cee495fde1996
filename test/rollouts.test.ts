// Rollouts with real traffic (issue 16, items 3 and 4): etcd, two aether-aggregator replicas, three
// aetherd and HAProxy (run by node-0's aetherd as each deployment's endpoint), all on loopback. Two
// versions of a tiny HTTP service (python3, a few lines, as executables: v1, v2, and a v2 that
// answers 500 to one request in five); a load generator in this file sends requests through the
// endpoint all along and records every answer. One cluster is shared by every case:
// - canary with a healthy v2: the share of v2 per stage within a few points of 5/25/50/100, no failure;
// - canary with the bad v2: rolled back at the first stage, v1 serves everything after, failures
//   bounded by the first stage's share;
// - blue-green: no failure across the switch, the switch time measured and printed;
// - rolling of 4 instances with maxUnavailable 1: never fewer than 3 healthy weighted backends, no failure;
// - A/B by header: the same header always lands on the same version, shares as the ratio; then promoted;
// - immediate: every instance replaced at once;
// - kill -9 of the leader mid-rollout: the standby continues it from its stage; pause and resume.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AetherClient } from "@aether/sdk";
import {
  ClusterEventKind,
  DeploymentState,
  PlacementState,
  RolloutPhase,
  type DeploymentStrategy,
  type Rollout,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { DeploymentStrategySchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { freePort } from "./helpers/net.js";
import { runCommand } from "./helpers/run.js";

// GET /healthz answers "ok"; anything else the version, or (with "bad") 500 to every fifth request.
const SERVICE = `
import http.server, itertools, os, sys
port, version, bad = int(os.environ["PORT"]), sys.argv[1].encode(), len(sys.argv) > 2
count = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code, body = 200, b"ok"
        if self.path != "/healthz":
            body = version
            if bad and next(count) % 5 == 0:
                code = 500
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
`;

const version = (v: string, bad = false) => ({
  requirements: { cpuMillis: 10, memoryBytes: 16n << 20n },
  kind: { case: "executable" as const, value: { argv: ["/usr/bin/python3", "-c", SERVICE, v, ...(bad ? ["bad"] : [])] } },
});

// ---------------------------------------------------------------- load

const agent = new Agent({ keepAlive: true, maxSockets: 16 });

interface Answer {
  sentAt: number;
  at: number;
  body: string;
  /** A refused connection, a timeout or a status other than 200. */
  failed: boolean;
  header?: string;
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers, timeout: 5_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

/** Requests sent continuously (`loops` at a time) until stop(); every answer recorded with its times. */
function startLoad(url: string, loops = 4, header?: (i: number) => string) {
  const answers: Answer[] = [];
  let running = true;
  let n = 0;
  const loop = async () => {
    while (running) {
      const sentAt = Date.now();
      const h = header?.(n++);
      try {
        const got = await get(url, h === undefined ? {} : { "x-user": h });
        answers.push({ sentAt, at: Date.now(), body: got.body, failed: got.status !== 200, header: h });
      } catch {
        answers.push({ sentAt, at: Date.now(), body: "", failed: true, header: h });
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  const all = Array.from({ length: loops }, loop);
  const load = {
    answers,
    async stop() {
      running = false;
      await Promise.all(all);
      return answers;
    },
  };
  loads.push(load);
  return load;
}

/** Every load started, stopped by the suite's after() when a failed case could not. */
const loads: Array<{ stop(): Promise<Answer[]> }> = [];

const share = (answers: Answer[], body: string) =>
  answers.length === 0 ? NaN : answers.filter((a) => a.body === body).length / answers.length;

// ---------------------------------------------------------------- cluster

describe("rollouts with real traffic: three aetherd, two aggregators on etcd, HAProxy on node-0", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-rollouts-"));
  let etcd: TestEtcd;
  let first: TestAggregator;
  let second: TestAggregator;
  /** The replica that leads now. */
  let leader: TestAggregator;
  const nodes: TestDaemon[] = [];
  let node0: AetherClient;

  const api = () => leader.client.aggregator;
  const rollout = async (name: string) => (await api().getRollout({ rollout: name })).rollout as Rollout;

  /** Creates a deployment with an endpoint; resolves once it is AVAILABLE and the endpoint answers v1. */
  const deploy = async (name: string, instances: number, strategy: MessageInitShape<typeof DeploymentStrategySchema>) => {
    const listen = `127.0.0.1:${await freePort()}`;
    const first = 20_000 + Math.floor(Math.random() * 400) * 100;
    await api().createDeployment({
      deployment: {
        name,
        instances,
        template: version("v1"),
        strategy,
        traffic: {
          listen,
          node: "node-0",
          backendPortFirst: first,
          backendPortLast: first + 99,
          healthPath: "/healthz",
          healthInterval: { nanos: 200_000_000 },
        },
      },
    });
    await eventually(
      async () => {
        const d = (await api().getDeployment({ deployment: name })).deployment;
        if (d?.state !== DeploymentState.AVAILABLE) return undefined;
        // Every instance weighted in the proxy.
        const e = (await node0.traffic.getEndpoint({ name }).catch(() => undefined))?.endpoint;
        const serving = e?.backends.filter((b) => b.healthy && b.weight > 0).length ?? 0;
        if (serving !== instances) return undefined;
        return (await get(`http://${listen}/`).catch(() => undefined))?.body === "v1" ? true : undefined;
      },
      30_000,
      `deployment ${name} AVAILABLE with its endpoint answering v1`,
    );
    return `http://${listen}/`;
  };

  /** Follows the rollout's weight: when each weight began (ms), until it ended. */
  const followWeights = (name: string) => {
    const changes: Array<{ at: number; weight: number; phase: RolloutPhase }> = [];
    let stop = false;
    const done = (async () => {
      while (!stop) {
        const r = await rollout(name).catch(() => undefined);
        const last = changes[changes.length - 1];
        if (r && (!last || last.weight !== r.weight || last.phase !== r.phase))
          changes.push({ at: Date.now(), weight: r.weight, phase: r.phase });
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    return {
      changes,
      async stop() {
        stop = true;
        await done;
      },
    };
  };

  const ended = (name: string, phase: RolloutPhase, timeoutMs = 60_000) =>
    eventually(
      async () => {
        const r = await rollout(name);
        if (r.phase === phase) return r;
        if (r.phase !== RolloutPhase.PROGRESSING && r.phase !== RolloutPhase.ROLLING_BACK && r.phase !== RolloutPhase.PAUSED)
          throw new Error(
            `rollout of ${name} ended ${RolloutPhase[r.phase]}, not ${RolloutPhase[phase]}: ${r.history.map((h) => `${h.action}: ${h.reason} ${JSON.stringify(h.figures)}`).join(" | ")}`,
          );
        return undefined;
      },
      timeoutMs,
      `rollout of ${name} ${RolloutPhase[phase]}`,
    );

  const remove = async (name: string) => {
    await api().deleteDeployment({ deployment: name, gracePeriod: { seconds: 1n } });
    await eventually(
      async () => ((await api().listDeployments({})).deployments.some((d) => d.name === name) ? undefined : true),
      20_000,
      `deployment ${name} gone`,
    );
  };

  before(async () => {
    etcd = await startEtcd();
    const args = (replica: string) => [
      "--store",
      "etcd",
      "--etcd-endpoints",
      etcd.endpoint,
      "--replica",
      replica,
      "--lease-ttl-ms",
      "8000",
    ];
    first = await startAggregator({ dir: join(dir, "agg-1"), args: args("agg-1") });
    second = await startAggregator({ dir: join(dir, "agg-2"), args: args("agg-2"), standby: true });
    leader = first;
    for (let i = 0; i < 3; i++) {
      const nodeDir = join(dir, `node-${i}`);
      const config = join(dir, `node-${i}.toml`);
      writeFileSync(config, `[cluster]\naggregator = ["unix://${first.socket}", "unix://${second.socket}"]\nname = "node-${i}"\n`);
      mkdirSync(nodeDir, { recursive: true });
      nodes.push(await startDaemon({ dir: nodeDir, args: ["--config", config] }));
    }
    node0 = await (nodes[0] as TestDaemon).client();
    await eventually(async () => ((await api().listNodes({})).nodes.length === 3 ? true : undefined), 20_000, "three registered nodes");
  });

  after(async () => {
    await Promise.all(loads.map((l) => l.stop()));
    agent.destroy();
    for (const { name } of (
      await api()
        .listDeployments({})
        .catch(() => ({ deployments: [] }))
    ).deployments)
      await api()
        .deleteDeployment({ deployment: name, gracePeriod: { seconds: 1n } })
        .catch(() => undefined);
    await eventually(
      async () =>
        (
          await api()
            .listDeployments({})
            .catch(() => ({ deployments: [] }))
        ).deployments.length === 0
          ? true
          : undefined,
      20_000,
      "every deployment deleted",
    ).catch(() => undefined);
    for (const { spec } of (await node0.traffic.listEndpoints({}).catch(() => ({ endpoints: [] }))).endpoints)
      await node0.traffic.deleteEndpoint({ name: spec?.name ?? "" }).catch(() => undefined);
    node0?.close();
    for (const d of nodes) {
      try {
        await stopWorkloads(await d.client());
        await d.stop();
      } finally {
        d.cleanup();
      }
    }
    await first?.stop().catch(() => undefined);
    await second?.stop().catch(() => undefined);
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("canary with a healthy v2: v2's share per stage within a few points of 5/25/50/100, no failed request", async () => {
    const url = await deploy("canary-ok", 2, { kind: { case: "canary", value: { hold: { seconds: 3n } } } });
    const load = startLoad(url);
    const weights = followWeights("canary-ok");
    const startedAt = Date.now();
    let r: Rollout;
    let endedAt: number;
    try {
      await api().updateDeployment({ deployment: "canary-ok", template: version("v2") });
      r = await ended("canary-ok", RolloutPhase.SUCCEEDED);
      // Some requests after the end: all v2.
      endedAt = Date.now();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    } finally {
      await weights.stop();
      await load.stop();
    }
    const answers = load.answers.filter((a) => a.sentAt >= startedAt);
    const failed = answers.filter((a) => a.failed);
    assert.equal(failed.length, 0, `no failed request over the rollout (${answers.length} sent)`);
    const measured: string[] = [];
    for (const stage of [5, 25, 50]) {
      const i = weights.changes.findIndex((c) => c.weight === stage);
      assert.ok(i >= 0, `stage ${stage} % was seen (${JSON.stringify(weights.changes.map((c) => c.weight))})`);
      const from = (weights.changes[i] as { at: number }).at + 300;
      const to = weights.changes[i + 1]?.at ?? endedAt;
      const during = answers.filter((a) => a.sentAt >= from && a.at <= to);
      const got = share(during, "v2") * 100;
      measured.push(`${stage} %: ${got.toFixed(1)} % of ${during.length}`);
      assert.ok(during.length >= 50, `enough requests in stage ${stage} % (${during.length})`);
      assert.ok(Math.abs(got - stage) <= 4, `stage ${stage} %: v2 had ${got.toFixed(1)} % of ${during.length} requests`);
    }
    const afterEnd = answers.filter((a) => a.sentAt >= endedAt + 200);
    measured.push(`after: ${(share(afterEnd, "v2") * 100).toFixed(1)} % of ${afterEnd.length}`);
    assert.equal(share(afterEnd, "v2"), 1, "v2 serves everything once the rollout succeeded");
    console.log(`canary shares of v2 (measured at the client): ${measured.join("; ")}`);
    // Every decision is in the history with its figures.
    assert.deepEqual(
      r.history.map((h) => h.action),
      ["start", "stage", "stage", "stage", "succeed"],
    );
    assert.ok(
      r.history[1]?.figures.error_rate !== undefined && r.history[1]?.figures.requests_new !== undefined,
      "a stage's figures are recorded",
    );
    await remove("canary-ok");
  });

  it("canary with a v2 that answers 500 to one request in five: rolled back at the first stage, v1 serves everything after", async () => {
    const url = await deploy("canary-bad", 2, { kind: { case: "canary", value: { hold: { seconds: 20n } } } });
    const load = startLoad(url);
    const startedAt = Date.now();
    await api().updateDeployment({ deployment: "canary-bad", template: version("v2", true) });
    const r = await ended("canary-bad", RolloutPhase.ROLLED_BACK, 40_000);
    const endedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const answers = (await load.stop()).filter((a) => a.sentAt >= startedAt);
    const during = answers.filter((a) => a.sentAt <= endedAt);
    const failed = during.filter((a) => a.failed);
    const rollback = r.history.find((h) => h.action === "rollback");
    assert.ok(rollback, `a rollback decision (${r.history.map((h) => h.action).join(", ")})`);
    assert.equal(rollback.stage, 0, "rolled back at the first stage");
    assert.ok(Number(rollback.figures.error_rate) > 0.01, `with the error rate it measured (${rollback.figures.error_rate})`);
    console.log(
      `canary rolled back: ${failed.length} failed of ${during.length} requests (${((100 * failed.length) / during.length).toFixed(2)} %); decided on ${JSON.stringify(rollback.figures)}`,
    );
    assert.ok(
      failed.length / during.length <= 0.05,
      `failed requests bounded by the first stage's 5 % (${failed.length} of ${during.length})`,
    );
    const afterEnd = answers.filter((a) => a.sentAt >= endedAt + 500);
    assert.ok(afterEnd.length > 20);
    assert.equal(share(afterEnd, "v1"), 1, "v1 serves everything after the rollback");
    const d = (await api().getDeployment({ deployment: "canary-bad" })).deployment;
    assert.equal(d?.revision, 1n, "the deployment holds revision 1 (its template) again");
    // The CLI: the status as JSON, the list, and steering an ended rollout refused with a sentence (exit 1).
    const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_AGGREGATOR: `unix://${leader.socket}` } });
    const status = await aether("rollout", "status", "canary-bad", "-o", "json");
    assert.equal(status.code, 0, status.stderr);
    const json = JSON.parse(status.stdout) as { phase: string; history: Array<{ action: string }> };
    assert.equal(json.phase, "ROLLOUT_PHASE_ROLLED_BACK");
    assert.ok(json.history.some((h) => h.action === "rollback"));
    const listed = await aether("rollout", "list", "--deployment", "canary-bad");
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /canary-bad\s+1 → 2\s+canary 5\/25\/50\/100 %\s+rolled back/);
    const late = await aether("rollout", "promote", "canary-bad");
    assert.equal(late.code, 1);
    assert.match(late.stderr, /has ended \(ROLLED_BACK\); a new one starts with the next template change/);
    const unknown = await aether("rollout", "status", "nothing-here");
    assert.equal(unknown.code, 3, unknown.stderr);
    await remove("canary-bad");
  });

  it("blue-green: the new set started and ready in full, one switch, no failed request; the switch time is measured", async () => {
    const url = await deploy("bluegreen", 2, { kind: { case: "blueGreen", value: { gracePeriod: { seconds: 2n } } } });
    const load = startLoad(url);
    const startedAt = Date.now();
    await api().updateDeployment({ deployment: "bluegreen", template: version("v2") });
    const r = await ended("bluegreen", RolloutPhase.SUCCEEDED);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const answers = (await load.stop()).filter((a) => a.sentAt >= startedAt);
    assert.equal(answers.filter((a) => a.failed).length, 0, `no failed request (${answers.length} sent)`);
    const firstV2 = answers.find((a) => a.body === "v2");
    const lastV1 = answers.filter((a) => a.body === "v1").pop();
    assert.ok(firstV2 && lastV1);
    const decided = r.history.find((h) => h.action === "switch");
    assert.ok(decided?.time);
    const decidedAt = Number(decided.time.seconds) * 1000 + decided.time.nanos / 1e6;
    const overlap = Math.max(0, lastV1.at - firstV2.sentAt);
    console.log(
      `blue-green switch: first v2 answer ${firstV2.at - decidedAt} ms after the decision; v1 and v2 answered side by side for ${overlap} ms; ${answers.length} requests, 0 failed`,
    );
    assert.ok(
      answers.filter((a) => a.sentAt > lastV1.at).every((a) => a.body === "v2"),
      "after the switch, only v2",
    );
    await remove("bluegreen");
  });

  it("rolling 4 instances with maxUnavailable 1: never fewer than 3 healthy backends, no failed request", async () => {
    const url = await deploy("rolling", 4, { kind: { case: "rolling", value: { maxUnavailable: 1 } } });
    const load = startLoad(url);
    let fewest = Infinity;
    let sampling = true;
    const samples = (async () => {
      while (sampling) {
        const e = (await node0.traffic.getEndpoint({ name: "rolling" })).endpoint;
        const serving = e?.backends.filter((b) => b.healthy && b.weight > 0 && b.status.startsWith("UP")).length ?? 0;
        fewest = Math.min(fewest, serving);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const startedAt = Date.now();
    await api().updateDeployment({ deployment: "rolling", template: version("v2") });
    const r = await ended("rolling", RolloutPhase.SUCCEEDED, 90_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    sampling = false;
    await samples;
    const answers = (await load.stop()).filter((a) => a.sentAt >= startedAt);
    console.log(
      `rolling: ${r.history.filter((h) => h.action === "step").length} steps, fewest healthy backends ${fewest}, ${answers.length} requests`,
    );
    assert.ok(fewest >= 3, `never fewer than 3 healthy backends (fewest ${fewest})`);
    assert.equal(answers.filter((a) => a.failed).length, 0, `no failed request (${answers.length} sent)`);
    assert.equal(share(answers.slice(-50), "v2"), 1);
    await remove("rolling");
  });

  it("A/B by header: the same header always lands on the same version, shares match the ratio; promote ends it with v2", async () => {
    const url = await deploy("ab", 2, { kind: { case: "ab", value: { header: "x-user", percent: 30 } } });
    await api().updateDeployment({ deployment: "ab", template: version("v2") });
    // Both sides serving: some caller sees v2.
    await eventually(
      async () => {
        const r = await rollout("ab");
        if (r.newInstances !== 2) return undefined;
        const e = (await node0.traffic.getEndpoint({ name: "ab" })).endpoint;
        return e?.spec?.abSplit && e.backends.filter((b) => b.healthy && b.weight > 0).length === 4 ? true : undefined;
      },
      30_000,
      "both versions serving behind the A/B split",
    );
    const users = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    const seen = new Map<string, Set<string>>();
    for (let round = 0; round < 3; round++)
      for (const u of users) {
        const got = await get(url, { "x-user": u });
        assert.equal(got.status, 200);
        seen.set(u, (seen.get(u) ?? new Set()).add(got.body));
      }
    const mixed = [...seen].filter(([, versions]) => versions.size > 1);
    assert.deepEqual(mixed, [], "each caller always got the same version");
    const onV2 = [...seen.values()].filter((v) => v.has("v2")).length / users.length;
    console.log(`A/B: ${(onV2 * 100).toFixed(1)} % of 200 callers on v2 (ratio 30 %)`);
    assert.ok(Math.abs(onV2 - 0.3) <= 0.1, `callers on v2: ${(onV2 * 100).toFixed(1)} %`);
    await api().promoteRollout({ rollout: "ab" });
    await ended("ab", RolloutPhase.SUCCEEDED);
    // Taking the split away restarts the endpoint's HAProxy (traffic.proto): a connection may be refused meanwhile.
    await eventually(
      async () => ((await get(url, { "x-user": "user-1" }).catch(() => undefined))?.body === "v2" ? true : undefined),
      10_000,
      "v2 for everyone",
    );
    await remove("ab");
  });

  it("immediate: every old instance replaced at once; the endpoint serves v2 once the new ones pass their checks", async () => {
    const url = await deploy("immediate", 2, { kind: { case: "immediate", value: {} } });
    await api().updateDeployment({ deployment: "immediate", template: version("v2") });
    const r = await ended("immediate", RolloutPhase.SUCCEEDED);
    assert.deepEqual(
      r.history.map((h) => h.action),
      ["start", "succeed"],
    );
    await eventually(async () => ((await get(url).catch(() => undefined))?.body === "v2" ? true : undefined), 10_000, "v2 served");
    const d = await api().getDeployment({ deployment: "immediate" });
    assert.deepEqual(
      d.instances.filter((i) => i.state === PlacementState.PLACED).map((i) => i.revision),
      [2n, 2n],
    );
    await remove("immediate");
  });

  it("command health check: an instance whose command fails or hangs goes to MAINT and is avoided with no failed request; back when it passes", async () => {
    // An empty argv is refused with a sentence.
    await assert.rejects(
      api().createDeployment({
        deployment: {
          name: "cmd-bad",
          template: version("v1"),
          traffic: { listen: "127.0.0.1:1", node: "node-0", backendPortFirst: 30_000, backendPortLast: 30_001, commandCheck: { argv: [] } },
        },
      }),
      (err: unknown) =>
        err instanceof ConnectError && err.code === Code.InvalidArgument && /command_check\.argv is empty/.test(err.message),
    );
    // Each instance is healthy while the file named after its PORT exists (the check runs in its cell, with its
    // env), and its check hangs past the timeout while a hang- file exists.
    const marks = mkdtempSync(join(dir, "marks-"));
    const listen = `127.0.0.1:${await freePort()}`;
    const first = 20_000 + Math.floor(Math.random() * 400) * 100;
    for (let port = first; port <= first + 9; port++) writeFileSync(join(marks, `up-${port}`), "");
    await api().createDeployment({
      deployment: {
        name: "cmd-check",
        instances: 2,
        template: version("v1"),
        traffic: {
          listen,
          node: "node-0",
          backendPortFirst: first,
          backendPortLast: first + 9,
          healthPath: "/healthz",
          healthInterval: { nanos: 200_000_000 },
          commandCheck: {
            argv: ["/bin/sh", "-c", `test -f ${marks}/up-$PORT || exit 1; test -f ${marks}/hang-$PORT && exec sleep 30; exit 0`],
            interval: { seconds: 1n },
            timeout: { seconds: 1n },
            rise: 1,
            fall: 2,
          },
        },
      },
    });
    const endpoint = async () => (await node0.traffic.getEndpoint({ name: "cmd-check" })).endpoint;
    await eventually(
      async () =>
        (await endpoint().catch(() => undefined))?.backends.filter((b) => b.healthy && b.weight > 0).length === 2 ? true : undefined,
      30_000,
      "both instances serving",
    );
    const spec = (await endpoint())?.spec?.backends ?? [];
    const victim = spec[0] as { id: string; address: string };
    const port = victim.address.split(":").pop();
    const url = `http://${listen}/`;
    const load = startLoad(url, 2);
    try {
      rmSync(join(marks, `up-${port}`));
      await eventually(
        async () => ((await endpoint())?.backends.find((b) => b.id === victim.id)?.status.startsWith("MAINT") ? true : undefined),
        10_000,
        `${victim.id} in MAINT after its command failed`,
      );
      // Traffic avoids it: its request count stays while the other serves.
      const countOf = async () => (await endpoint())?.backends.find((b) => b.id === victim.id)?.totalRequests ?? 0n;
      const before = await countOf();
      const sent = load.answers.length;
      await eventually(async () => (load.answers.length >= sent + 50 ? true : undefined), 10_000, "50 requests while in MAINT");
      assert.equal(await countOf(), before, `${victim.id} took no request while in MAINT`);
      writeFileSync(join(marks, `up-${port}`), "");
      const serving = (after: bigint, why: string) =>
        eventually(
          async () => {
            const b = (await endpoint())?.backends.find((x) => x.id === victim.id);
            return b?.healthy && b.weight > 0 && b.totalRequests > after ? true : undefined;
          },
          15_000,
          `${victim.id} serving again once its command ${why}`,
        );
      await serving(before, "passed");
      // A check that outlives its timeout fails too (its process is killed and forgotten).
      writeFileSync(join(marks, `hang-${port}`), "");
      await eventually(
        async () => ((await endpoint())?.backends.find((b) => b.id === victim.id)?.status.startsWith("MAINT") ? true : undefined),
        15_000,
        `${victim.id} in MAINT after its command timed out`,
      );
      rmSync(join(marks, `hang-${port}`));
      await serving(await countOf(), "ended in time again");
    } finally {
      await load.stop();
    }
    const failed = load.answers.filter((a) => a.failed);
    assert.equal(failed.length, 0, `no failed request (${load.answers.length} sent)`);
    await remove("cmd-check");
    // The checks' processes (the killed sleep included) are forgotten on every node.
    await eventually(
      async () => {
        for (const n of nodes) {
          const c = await n.client();
          try {
            const left = (await c.runtime.listExecutables({})).executables.filter((e) => e.labels["aether.health-check-of"]);
            if (left.length > 0) return undefined;
          } finally {
            c.close();
          }
        }
        return true;
      },
      20_000,
      "no health check process left on the nodes",
    );
  });

  it("kill -9 of the leader mid-rollout: the standby continues from the same stage; pause holds it, resume ends it", async () => {
    const url = await deploy("handover", 2, { kind: { case: "canary", value: { stages: [10, 50, 100], hold: { seconds: 3n } } } });
    const load = startLoad(url);
    await api().updateDeployment({ deployment: "handover", template: version("v2") });
    const atKill = await eventually(
      async () => {
        const r = await rollout("handover");
        return r.stage >= 1 ? r : undefined;
      },
      30_000,
      "the rollout at its second stage",
    );
    await first.kill9();
    leader = second;
    await eventually(
      async () => ((await second.client.aggregator.listNodes({}).catch(() => undefined)) ? true : undefined),
      30_000,
      "the standby leads",
    );
    const continued = await rollout("handover");
    assert.ok(continued.stage >= atKill.stage, `the new leader read stage ${continued.stage} (was ${atKill.stage})`);
    assert.deepEqual(
      continued.history.slice(0, atKill.history.length).map((h) => h.action),
      atKill.history.map((h) => h.action),
      "the history the old leader wrote is kept",
    );
    if (continued.phase === RolloutPhase.PROGRESSING) {
      const paused = (await api().pauseRollout({ rollout: "handover" })).rollout;
      assert.equal(paused?.phase, RolloutPhase.PAUSED);
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      const held = await rollout("handover");
      assert.equal(held.stage, paused?.stage, "a paused rollout does not advance");
      await api().resumeRollout({ rollout: "handover" });
    }
    const r = await ended("handover", RolloutPhase.SUCCEEDED);
    const answers = await load.stop();
    assert.equal(r.history.filter((h) => h.action === "start").length, 1, "not started again by the new leader");
    assert.equal(share(answers.slice(-20), "v2"), 1);
    const events = [];
    for await (const e of second.client.aggregator.streamClusterEvents({
      kinds: [ClusterEventKind.ROLLOUT_DECISION],
      start: { case: "tailEvents", value: 1000 },
      follow: false,
    }))
      if (e.event?.kind === ClusterEventKind.ROLLOUT_DECISION) events.push(e.event);
    assert.ok(
      events.some((e) => e.attributes.deployment === "handover" && e.attributes.action === "succeed"),
      "each decision is a cluster event",
    );
    await remove("handover");
  });
});
