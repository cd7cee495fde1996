// Deployments on a real cluster (issue 15): three aetherd and aether-aggregator on loopback. A
// deployment of executables is spread over the three nodes, really runs there, is followed by
// WatchDeployment, scaled up and down (the newest removed first), rolled to a new revision, healed
// within seconds when an instance is killed, keeps a finished instance down under restart policy
// on-failure, reports how many it could place when the cluster is too small, and is deleted with its
// instances. Bad input is refused with nothing created.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type AetherClient } from "@aether/sdk";
import {
  DeploymentState,
  PlacementState,
  RestartPolicy,
  type Deployment,
  type DeploymentInstance,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { runCommand } from "./helpers/run.js";

const NODES = 3;

const sleeper = (seconds = 600) => ({
  requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
  kind: { case: "executable" as const, value: { argv: ["/bin/sleep", String(seconds)] } },
});

describe("deployments on a cluster of three aetherd", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-deployments-"));
  let agg: TestAggregator;
  const nodes: TestDaemon[] = [];
  /** node id → a client of its aetherd. */
  const clients = new Map<string, AetherClient>();

  const get = async (name: string) => {
    const got = await agg.client.aggregator.getDeployment({ deployment: name });
    return { deployment: got.deployment as Deployment, instances: got.instances };
  };
  const running = (instances: DeploymentInstance[]) => instances.filter((i) => i.state === PlacementState.PLACED);
  /** Waits until the deployment is AVAILABLE with n instances running, and returns them. */
  const available = (name: string, n: number, timeoutMs = 20_000) =>
    eventually(
      async () => {
        const { deployment, instances } = await get(name);
        return deployment.state === DeploymentState.AVAILABLE && running(instances).length === n ? running(instances) : undefined;
      },
      timeoutMs,
      `deployment ${name} AVAILABLE with ${n} instance(s)`,
    );
  const executableOf = async (i: DeploymentInstance) => {
    const node = clients.get(i.node);
    assert.ok(node, `instance ${i.name} is on one of the nodes (${i.node})`);
    return (await node.runtime.getExecutable({ executable: i.resourceId })).executable;
  };

  before(async () => {
    // A wide auction window: on a loaded host a node may take longer than the default 250 ms to bid, and
    // the spread this file checks needs every node's bid (an auction still closes once all have answered).
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "6000", "--auction-window-ms", "5000"] });
    for (let i = 0; i < NODES; i++) {
      const nodeDir = join(dir, `node-${i}`);
      const config = join(dir, `node-${i}.toml`);
      writeFileSync(
        config,
        `[cluster]\naggregator = "unix://${agg.socket}"\nname = "node-${i}"\n\n[node]\nlabels = { size = "${i === 0 ? "big" : "small"}" }\n`,
      );
      mkdirSync(nodeDir, { recursive: true });
      nodes.push(await startDaemon({ dir: nodeDir, args: ["--config", config] }));
    }
    const listed = await eventually(
      async () => {
        const { nodes: n } = await agg.client.aggregator.listNodes({});
        return n.length === NODES ? n : undefined;
      },
      20_000,
      "three registered nodes",
    );
    for (const n of listed) {
      const d = nodes.find((x) => n.address === `unix://${x.socket}`);
      assert.ok(d);
      clients.set(n.id, await d.client());
    }
  });

  after(async () => {
    for (const { name, tenant } of (await agg.client.aggregator.listDeployments({}).catch(() => ({ deployments: [] }))).deployments)
      await agg.client.aggregator.deleteDeployment({ deployment: name, tenant, gracePeriod: { seconds: 1n } }).catch(() => undefined);
    await eventually(
      async () =>
        (await agg.client.aggregator.listDeployments({}).catch(() => ({ deployments: [] }))).deployments.length === 0 ? true : undefined,
      20_000,
      "every deployment deleted",
    ).catch(() => undefined);
    for (const c of clients.values()) c.close();
    for (const d of nodes) {
      try {
        await stopWorkloads(await d.client());
        assert.equal(await d.stop(), 0);
      } finally {
        d.cleanup();
      }
    }
    assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates a deployment of 3 executables: one on each node (spread), really running, followed by WatchDeployment", async () => {
    const watched: string[] = [];
    const abort = new AbortController();
    const created = await agg.client.aggregator.createDeployment({
      deployment: { name: "web", labels: { team: "a" }, instances: 3, template: sleeper() },
    });
    assert.equal(created.deployment?.revision, 1n);
    assert.ok(created.deployment?.id);
    const watching = (async () => {
      try {
        for await (const r of agg.client.aggregator.watchDeployment({ deployment: "web" }, { signal: abort.signal }))
          watched.push(`${DeploymentState[r.deployment?.state ?? 0]}:${r.deployment?.runningInstances}`);
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Canceled) throw err;
      }
    })();
    const instances = await available("web", 3);
    assert.equal(new Set(instances.map((i) => i.node)).size, NODES, `one instance per node: ${instances.map((i) => i.node).join(", ")}`);
    for (const i of instances) {
      assert.match(i.name, /^web-[0-9a-f]{6}$/);
      assert.equal(i.revision, 1n);
      const exe = await executableOf(i);
      assert.equal(exe?.state, ExecutableState.RUNNING, `${i.name} runs on its node`);
      assert.equal(exe?.labels["aether.io/deployment"], "web");
      assert.ok(isRunning(exe?.pid ?? 0));
    }
    // The placements carry the deployment; the spread is in the auction records.
    const { placements } = await agg.client.aggregator.listPlacements({ filter: "aether.io/deployment=web" });
    assert.equal(placements.length, 3);
    assert.ok(placements.every((p) => p.deployment === "web" && p.deploymentRevision === 1n));
    const auctions = await Promise.all(placements.map((p) => agg.client.aggregator.getAuction({ auction: p.auctionId })));
    assert.ok(
      auctions.some((a) => a.auction?.bids.some((b) => b.breakdown?.factors.some((f) => f.name === "deployment_spread"))),
      "a later auction scaled down the bid of a node that already ran an instance",
    );
    await eventually(() => (watched.includes("AVAILABLE:3") ? true : undefined), 5000, "the watch to see AVAILABLE:3");
    abort.abort();
    await watching;
    assert.ok(watched.length >= 2, `the watch saw the deployment change: ${watched.join(" ")}`);
    assert.match(watched[0] ?? "", /^PROGRESSING/);
    const listed = (await agg.client.aggregator.listDeployments({ filter: "team=a" })).deployments;
    assert.deepEqual(
      listed.map((d) => `${d.name}:${d.runningInstances}/${d.instances}`),
      ["web:3/3"],
    );
  });

  it("refuses bad input with a sentence and creates nothing", async () => {
    const before = (await agg.client.aggregator.listDeployments({})).deployments.length;
    const placementsBefore = (await agg.client.aggregator.listPlacements({ pageSize: 1000 })).placements.length;
    const refused = async (init: Parameters<typeof agg.client.aggregator.createDeployment>[0], code: Code, pattern: RegExp) =>
      assert.rejects(agg.client.aggregator.createDeployment(init), (e: ConnectError) => {
        assert.equal(e.code, code, e.message);
        assert.match(e.rawMessage, pattern);
        return true;
      });
    await refused(
      { deployment: { name: "web", instances: 1, template: sleeper() } },
      Code.AlreadyExists,
      /deployment name web is already used in tenant default/,
    );
    await refused(
      { deployment: { name: "rel", instances: 1, template: { kind: { case: "executable", value: { argv: ["sleep", "1"] } } } } },
      Code.InvalidArgument,
      /deployment\.template\.executable\.argv\[0\] "sleep" is not an absolute path/,
    );
    await refused({ deployment: { name: "Bad_Name", instances: 1, template: sleeper() } }, Code.InvalidArgument, /deployment\.name/);
    await refused({ deployment: { name: "none", instances: 1 } }, Code.InvalidArgument, /deployment\.template is missing/);
    await refused(
      { deployment: { name: "many", instances: 5000, template: sleeper() } },
      Code.InvalidArgument,
      /instances 5000 is out of range/,
    );
    await refused(
      { deployment: { name: "x".repeat(60), instances: 1, template: sleeper() } },
      Code.InvalidArgument,
      /at most 56, since each instance adds a 7-character suffix/,
    );
    await assert.rejects(
      agg.client.aggregator.scaleDeployment({ deployment: "nope", instances: 1 }),
      (e: ConnectError) => e.code === Code.NotFound && /no deployment with id or name "nope"/.test(e.rawMessage),
    );
    assert.equal((await agg.client.aggregator.listDeployments({})).deployments.length, before);
    assert.equal((await agg.client.aggregator.listPlacements({ pageSize: 1000 })).placements.length, placementsBefore);
  });

  it("kill -9 of an instance: a new one runs within seconds, the dead one says how it ended", async () => {
    const [victim] = await available("web", 3);
    assert.ok(victim);
    const exe = await executableOf(victim);
    const killedAt = Date.now();
    process.kill(exe?.pid ?? 0, "SIGKILL");
    const replaced = await eventually(
      async () => {
        const { instances } = await get("web");
        const live = running(instances);
        return live.length === 3 && !live.some((i) => i.workloadId === victim.workloadId) ? live : undefined;
      },
      15_000,
      "a replacement instance",
    );
    const tookMs = Date.now() - killedAt;
    assert.ok(tookMs < 10_000, `replaced in ${tookMs} ms`);
    assert.equal(
      new Set(replaced.map((i) => i.node)).size,
      NODES,
      "the replacement went where the dead one was (the only node without one)",
    );
    const dead = (await get("web")).instances.find((i) => i.workloadId === victim.workloadId);
    assert.equal(dead?.state, PlacementState.FAILED);
    assert.match(dead?.stateReason ?? "", /its executable was killed by SIGKILL; a new instance replaces it \(restart policy always\)/);
    for (const i of replaced) assert.equal((await executableOf(i))?.state, ExecutableState.RUNNING);
  });

  it("scales up to 5 and down to 1: the newest go first", async () => {
    await agg.client.aggregator.scaleDeployment({ deployment: "web", instances: 5 });
    const five = await available("web", 5);
    const counts = new Map<string, number>();
    for (const i of five) counts.set(i.node, (counts.get(i.node) ?? 0) + 1);
    assert.ok(
      [...counts.values()].every((c) => c <= 2),
      `spread 2/2/1: ${JSON.stringify([...counts])}`,
    );
    const oldest = [...five].sort(
      (a, b) => Number(a.createTime?.seconds) - Number(b.createTime?.seconds) || (a.createTime?.nanos ?? 0) - (b.createTime?.nanos ?? 0),
    )[0];
    const scaled = await agg.client.aggregator.scaleDeployment({ deployment: "web", instances: 1 });
    assert.equal(scaled.deployment?.instances, 1);
    const [left] = await available("web", 1);
    assert.equal(left?.workloadId, oldest?.workloadId, "the oldest instance is the one kept");
    // The removed instances' executables are gone from their nodes.
    for (const i of five.filter((x) => x.workloadId !== left?.workloadId)) {
      const node = clients.get(i.node);
      await assert.rejects(node!.runtime.getExecutable({ executable: i.resourceId }), (e: ConnectError) => e.code === Code.NotFound);
    }
    await agg.client.aggregator.scaleDeployment({ deployment: "web", instances: 3 });
    await available("web", 3);
  });

  it("a new template is a new revision, rolled out one instance at a time; labels alone are not", async () => {
    const labelsOnly = await agg.client.aggregator.updateDeployment({ deployment: "web", labels: { team: "b" }, replaceLabels: true });
    assert.equal(labelsOnly.templateChanged, false);
    assert.equal(labelsOnly.deployment?.revision, 1n);
    const updated = await agg.client.aggregator.updateDeployment({ deployment: "web", template: sleeper(700) });
    assert.equal(updated.templateChanged, true);
    assert.equal(updated.deployment?.revision, 2n);
    const rolled = await eventually(
      async () => {
        const live = running((await get("web")).instances);
        return live.length === 3 &&
          live.every((i) => i.revision === 2n) &&
          (await get("web")).deployment.state === DeploymentState.AVAILABLE
          ? live
          : undefined;
      },
      30_000,
      "every instance at revision 2",
    );
    for (const i of rolled) assert.deepEqual((await executableOf(i))?.argv, ["/bin/sleep", "700"]);
    // Never more than one instance over the wanted number while it rolled (the placements tell).
    const same = await agg.client.aggregator.updateDeployment({ deployment: "web", template: sleeper(700) });
    assert.equal(same.templateChanged, false, "the same template again is no new revision");
  });

  it("restart policy on-failure: an instance that exits 0 is finished, not replaced", async () => {
    await agg.client.aggregator.createDeployment({
      deployment: {
        name: "batch",
        instances: 2,
        template: {
          restartPolicy: RestartPolicy.ON_FAILURE,
          requirements: { cpuMillis: 10 },
          kind: { case: "executable", value: { argv: ["/bin/sh", "-c", "sleep 1; exit 0"] } },
        },
      },
    });
    const done = await eventually(
      async () => {
        const { deployment } = await get("batch");
        return deployment.finishedInstances === 2 ? deployment : undefined;
      },
      20_000,
      "both instances finished",
    );
    assert.equal(done.runningInstances, 0);
    assert.equal(done.state, DeploymentState.AVAILABLE);
    assert.match(done.stateReason, /2 finished and not replaced/);
    const { instances } = await get("batch");
    assert.equal(instances.length, 2);
    assert.ok(
      instances.every(
        (i) =>
          i.state === PlacementState.RELEASED &&
          /exited with status 0; it is not replaced \(restart policy on-failure\)/.test(i.stateReason),
      ),
    );
    await agg.client.aggregator.deleteDeployment({ deployment: "batch" });
  });

  it("more instances than the cluster holds: the deployment says how many run and why the rest cannot", async () => {
    // Only node-0 matches the selector, and each instance asks for 60 % of its memory: one fits.
    const { nodes: listed } = await agg.client.aggregator.listNodes({});
    const big = listed.find((n) => n.name === "node-0");
    const memory = big?.capabilities?.memoryTotalBytes ?? 0n;
    await agg.client.aggregator.createDeployment({
      deployment: {
        name: "huge",
        instances: 3,
        template: {
          requirements: { cpuMillis: 10, memoryBytes: (memory * 6n) / 10n, nodeSelector: { size: "big" } },
          kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
        },
      },
    });
    const degraded = await eventually(
      async () => {
        const { deployment } = await get("huge");
        return deployment.state === DeploymentState.DEGRADED && deployment.runningInstances === 1 ? deployment : undefined;
      },
      20_000,
      "huge DEGRADED with 1 running",
    );
    assert.match(degraded.stateReason, /^1 of 3 instance\(s\) run; 2 could not be placed: no node can host workload huge-[0-9a-f]{6}: /);
    assert.match(degraded.stateReason, /node_selector/);
    await agg.client.aggregator.deleteDeployment({ deployment: "huge", gracePeriod: { seconds: 1n } });
  });

  it("delete: DELETING, every instance released on its node, then gone", async () => {
    const live = await available("web", 3);
    const deleted = await agg.client.aggregator.deleteDeployment({ deployment: "web", gracePeriod: { seconds: 1n } });
    assert.equal(deleted.deployment?.state, DeploymentState.DELETING);
    await assert.rejects(
      agg.client.aggregator.scaleDeployment({ deployment: "web", instances: 2 }),
      (e: ConnectError) => e.code === Code.FailedPrecondition || e.code === Code.NotFound,
    );
    await eventually(
      async () =>
        await agg.client.aggregator.getDeployment({ deployment: "web" }).then(
          () => undefined,
          (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined),
        ),
      20_000,
      "web gone",
    );
    for (const i of live) {
      await assert.rejects(
        clients.get(i.node)!.runtime.getExecutable({ executable: i.resourceId }),
        (e: ConnectError) => e.code === Code.NotFound,
      );
    }
    const left = (await agg.client.aggregator.listPlacements({ pageSize: 1000, filter: "aether.io/deployment=web" })).placements;
    assert.ok(
      left.every((p) => p.state === PlacementState.RELEASED || p.state === PlacementState.FAILED),
      "no live placement of web is left",
    );
    // The name is free again.
    await agg.client.aggregator.createDeployment({ deployment: { name: "web", instances: 1, template: sleeper() } });
    await available("web", 1);
    const fresh = await get("web");
    assert.equal(fresh.instances.length, 1, "the new web does not count the old one's instances");
  });

  it("the CLI: deploy apply (TOML), list, get, scale, watch, placements show the deployment, delete; usage errors exit 2", async () => {
    const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_AGGREGATOR: `unix://${agg.socket}` } });
    const file = join(dir, "api.toml");
    writeFileSync(
      file,
      `name = "api"\ninstances = 2\nlabels = { team = "cli" }\n\n[template]\nrestart_policy = "on-failure"\nrequirements = { cpu_millis = 10, memory_bytes = "1M" }\n\n[template.executable]\nargv = ["/bin/sleep", "600"]\n`,
    );
    const applied = await aether("deploy", "apply", file);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /deployment api created: 2 instance\(s\) of revision 1/);
    const instances = await available("api", 2);
    assert.equal(new Set(instances.map((i) => i.node)).size, 2);
    const again = await aether("deploy", "apply", file, "--json");
    assert.equal(again.code, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { revision: string }).revision, "1", "the same file again is no new revision");

    const listed = JSON.parse((await aether("deploy", "list", "--json")).stdout) as Array<{ name: string; instances: number }>;
    assert.ok(listed.some((d) => d.name === "api" && d.instances === 2));
    const table = await aether("deploy", "list", "--filter", "team=cli");
    assert.match(table.stdout, /NAME\s+TENANT\s+KIND\s+READY\s+REVISION\s+STATE/);
    assert.match(table.stdout, /api\s+default\s+executable\s+2\/2\s+1\s+available/);
    const got = JSON.parse((await aether("deploy", "get", "api", "-o", "json")).stdout) as {
      deployment: { template: { restartPolicy: string } };
      instances: Array<{ name: string }>;
    };
    assert.equal(got.deployment.template.restartPolicy, "RESTART_POLICY_ON_FAILURE");
    assert.equal(got.instances.length, 2);
    const people = await aether("deploy", "get", "api");
    assert.match(people.stdout, /restart policy\s+on-failure/);
    assert.match(people.stdout, /INSTANCE\s+STATE\s+NODE/);

    const placements = await aether("cluster", "placements", "-l", "aether.io/deployment=api");
    assert.match(placements.stdout, /DEPLOYMENT/);
    assert.match(placements.stdout, /api-[0-9a-f]{6}\s+default\s+placed\s+node-\d\s+api@1/);

    // watch --json: one object per change; scaling shows up in it.
    const watching = runCommand("aether", ["deploy", "watch", "api", "--json"], {
      env: { AETHER_AGGREGATOR: `unix://${agg.socket}` },
      timeoutMs: 30_000,
    });
    const scaled = await aether("scale", "api", "--instances", "3");
    assert.equal(scaled.code, 0, scaled.stderr);
    assert.match(scaled.stdout, /deployment api scaled to 3 instance\(s\)/);
    await available("api", 3);
    const deleted = await aether("deploy", "delete", "api", "--wait", "--grace", "1");
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, /deployment api deleted/);
    const watched = await watching;
    assert.equal(watched.code, 0, watched.stderr);
    const states = watched.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { deployment: { state: string; runningInstances?: number } });
    assert.ok(
      states.some((w) => w.deployment.runningInstances === 3),
      "the watch saw 3 running",
    );
    assert.equal(states.at(-1)?.deployment.state, "DEPLOYMENT_STATE_DELETED", "the watch ends when the deployment is gone");

    // Usage errors exit 2; what the aggregator refuses exits 1 (3: not found).
    const bad = join(dir, "bad.toml");
    writeFileSync(bad, 'name = "x"\ninstances = [\n');
    const notToml = await aether("deploy", "apply", bad);
    assert.equal(notToml.code, 2, notToml.stderr);
    assert.match(notToml.stderr, /is not TOML/);
    writeFileSync(bad, 'name = "x"\ninstances = 1\nreplicas = 3\n');
    const unknownField = await aether("deploy", "apply", bad);
    assert.equal(unknownField.code, 2);
    assert.match(unknownField.stderr, /does not describe a deployment/);
    assert.equal((await aether("scale", "api")).code, 2, "--instances is required");
    assert.equal((await aether("scale", "api", "--instances", "many")).code, 2);
    assert.equal((await aether("deploy", "get", "nope")).code, 3);
    writeFileSync(bad, 'name = "x"\ninstances = 1\n[template.executable]\nargv = ["sleep"]\n');
    const refused = await aether("deploy", "apply", bad);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /template\.executable\.argv\[0\] "sleep" is not an absolute path/);
    const help = await aether("deploy", "apply", "--help");
    assert.match(help.stdout, /Examples:/);
  });
});
