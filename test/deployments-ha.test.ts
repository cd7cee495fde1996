// Deployments when things go wrong (issue 15): a leader change in the middle of a scale-up (two
// aggregator replicas on etcd, nodes that bid slowly) ends with exactly the wanted number of
// instances, none provisioned twice; and a hung node's instance is replaced only after its BMC has
// confirmed the power off (three real aetherd, a test BMC), never while the node is only suspect.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AetherClient } from "@aether/sdk";
import {
  ClusterEventKind,
  DeploymentState,
  NodeState,
  PlacementState,
  RestartPolicy,
  type ClusterEvent,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, powerOffHost, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { startFakeBidder, type FakeBidder } from "./helpers/fake-bidder.js";
import { startTestBmc, type TestBmc, writeBmcRegistration } from "./helpers/test-bmc.js";

const sleeper = { requirements: { cpuMillis: 10 }, kind: { case: "executable" as const, value: { argv: ["/bin/sleep", "600"] } } };

describe("a leader change in the middle of a scale-up (etcd)", () => {
  const WANTED = 12;
  let etcd: TestEtcd;
  let first: TestAggregator;
  let second: TestAggregator;
  const bidders: FakeBidder[] = [];

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
      "60000",
    ];
    first = await startAggregator({ args: args("agg-1") });
    second = await startAggregator({ args: args("agg-2"), standby: true });
    for (const id of ["n1", "n2", "n3"]) {
      const b = await startFakeBidder(id, { score: 500 });
      bidders.push(b);
      await first.client.aggregator.registerNode({ nodeId: id, name: id, address: b.address });
    }
  });
  after(async () => {
    await first?.kill9();
    await second?.stop();
    for (const b of bidders) await b.close();
    await etcd?.stop();
  });

  it("kill -9 of the leader while it places instances: the new leader ends with exactly the wanted number", async () => {
    await first.client.aggregator.createDeployment({ deployment: { name: "fleet", instances: 2, template: sleeper } });
    await eventually(
      async () =>
        (await first.client.aggregator.getDeployment({ deployment: "fleet" })).deployment?.runningInstances === 2 ? true : undefined,
      15_000,
      "2 instances",
    );
    const initial = new Set((await first.client.aggregator.getDeployment({ deployment: "fleet" })).instances.map((i) => i.workloadId));
    // Two nodes hold their provisioning calls: the old leader places the new instances, some get to
    // run (on n1), the others are still PROVISIONING on n2 and n3 when it dies.
    for (const b of bidders.slice(1)) b.behaviour = { score: 500, provision: "hang" };
    await first.client.aggregator.scaleDeployment({ deployment: "fleet", instances: WANTED });
    const workloadsAsked = () => new Set(bidders.flatMap((b) => b.provisioned.map((r) => r.spec?.workloadId))).size;
    await eventually(
      () => (workloadsAsked() === WANTED ? true : undefined),
      45_000,
      "every instance of the scale-up sent to its node",
    ).catch((err: unknown) => {
      throw new Error(
        `${String(err)}: ${bidders.map((b) => `${b.nodeId} ${b.provisioned.length}`).join(", ")}; ${first.log().slice(-3000)}`,
      );
    });
    const hanging = new Set(
      bidders.slice(1).flatMap((b) => b.provisioned.map((r) => r.spec?.workloadId ?? "").filter((wid) => !initial.has(wid))),
    ).size;
    assert.ok(hanging >= 2, `provisioning held on n2 and n3 (${hanging} new calls)`);
    await first.kill9();
    for (const b of bidders.slice(1)) b.behaviour = { score: 500 };
    const placedBefore = WANTED - hanging;
    await eventually(
      async () => ((await second.client.node.checkHealth({}).catch(() => undefined))?.status === HealthStatus.SERVING ? true : undefined),
      15_000,
      "the standby to lead",
    );
    const done = await eventually(
      async () => {
        const got = await second.client.aggregator.getDeployment({ deployment: "fleet" });
        return got.deployment?.state === DeploymentState.AVAILABLE && got.deployment.runningInstances === WANTED ? got : undefined;
      },
      30_000,
      `fleet AVAILABLE with ${WANTED} under the new leader`,
    );
    assert.ok(placedBefore < WANTED, `the old leader had placed ${placedBefore} of ${WANTED}`);
    const live = done.instances.filter((i) => i.state === PlacementState.PLACED);
    assert.equal(live.length, WANTED);
    assert.equal(new Set(live.map((i) => i.workloadId)).size, WANTED);
    // On the nodes: exactly WANTED workloads provisioned and not released, none provisioned twice
    // (a retried ExecuteProvisioning carries the same request_id: the same workload).
    const released = new Set(bidders.flatMap((b) => b.released.map((r) => r.workloadId)));
    const provisioned = bidders.flatMap((b) => b.provisioned.map((r) => `${b.nodeId}/${r.spec?.workloadId}`));
    const kept = new Set([...new Set(provisioned)].map((key) => key.split("/")[1] as string).filter((wid) => !released.has(wid)));
    assert.equal(kept.size, WANTED, `${kept.size} instances live on the nodes`);
    const perWorkload = new Map<string, Set<string>>();
    for (const key of new Set(provisioned)) {
      const [node, wid] = key.split("/") as [string, string];
      if (released.has(wid)) continue;
      perWorkload.set(wid, (perWorkload.get(wid) ?? new Set()).add(node));
    }
    assert.ok(
      [...perWorkload.values()].every((nodes) => nodes.size === 1),
      "no instance was provisioned on two nodes",
    );
    // The spread held across the change of leader: 4 per node.
    const perNode = new Map<string, number>();
    for (const i of live) perNode.set(i.node, (perNode.get(i.node) ?? 0) + 1);
    assert.deepEqual([...perNode.values()].sort(), [4, 4, 4], JSON.stringify([...perNode]));
    await second.client.aggregator.deleteDeployment({ deployment: "fleet", gracePeriod: { seconds: 1n } });
  });
});

describe("a deployment's instance on a hung node is replaced only once the fence is confirmed", () => {
  const TTL_MS = 2000;
  /** The BMC takes this long to report Off: the window in which the node is FENCING, not yet fenced. */
  const POWER_OFF_DELAY_MS = 2500;
  const dir = mkdtempSync(join(tmpdir(), "aether-deploy-fence-"));
  let agg: TestAggregator;
  let bmc: TestBmc;
  const daemons = new Map<string, TestDaemon>();
  const clients = new Map<string, AetherClient>();
  let bPids: number[] = [];
  let bOff = false;

  before(async () => {
    bmc = await startTestBmc({
      profile: "dmtf",
      powerOffDelayMs: POWER_OFF_DELAY_MS,
      onPowerOff: async () => {
        bOff = true;
        await powerOffHost(daemons.get("node-b") as TestDaemon, bPids);
      },
    });
    const bmcs = writeBmcRegistration(dir, "node-b", bmc);
    agg = await startAggregator({
      dir: join(dir, "agg"),
      args: [
        "--lease-ttl-ms",
        String(TTL_MS),
        "--bmcs",
        bmcs,
        "--fence-timeout-ms",
        String(POWER_OFF_DELAY_MS + 5000),
        "--fence-poll-interval-ms",
        "50",
        "--auction-window-ms",
        "5000",
      ],
    });
    for (const name of ["node-a", "node-b", "node-c"]) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      const config = join(dir, `${name}.toml`);
      writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n`);
      const d = await startDaemon({ dir: nodeDir, args: ["--config", config] });
      daemons.set(name, d);
    }
    const nodes = await eventually(
      async () => {
        const { nodes: n } = await agg.client.aggregator.listNodes({ state: NodeState.READY });
        return n.length === 3 ? n : undefined;
      },
      20_000,
      "three READY nodes",
    );
    for (const n of nodes) clients.set(n.id, await (daemons.get(n.name) as TestDaemon).client());
  });

  after(async () => {
    for (const d of daemons.values()) {
      const pid = d.process.pid;
      if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGCONT");
    }
    await agg.client.aggregator.deleteDeployment({ deployment: "svc", gracePeriod: { seconds: 1n } }).catch(() => undefined);
    await agg.client.aggregator.deleteDeployment({ deployment: "once", gracePeriod: { seconds: 1n } }).catch(() => undefined);
    for (const d of daemons.values()) {
      if (d.process.exitCode === null && d.process.signalCode === null) {
        await stopWorkloads(await d.client());
        await d.stop();
      }
      d.cleanup();
    }
    for (const p of bPids) {
      try {
        process.kill(-p, "SIGKILL");
      } catch {
        // Gone.
      }
    }
    for (const c of clients.values()) c.close();
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    await bmc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const events = async (): Promise<ClusterEvent[]> => {
    const out: ClusterEvent[] = [];
    for await (const r of agg.client.aggregator.streamClusterEvents({})) if (r.event) out.push(r.event);
    return out;
  };

  it("SUSPECT and FENCING keep the instance counted; after Off it runs elsewhere, and the deployment is whole again", async () => {
    await agg.client.aggregator.createDeployment({ deployment: { name: "svc", instances: 3, template: sleeper } });
    // The same beside it with restart policy never: its instance on node-b is not started again.
    await agg.client.aggregator.createDeployment({
      deployment: { name: "once", instances: 3, template: { ...sleeper, restartPolicy: RestartPolicy.NEVER } },
    });
    const placed = await eventually(
      async () => {
        const got = await agg.client.aggregator.getDeployment({ deployment: "svc" });
        return got.deployment?.state === DeploymentState.AVAILABLE ? got.instances : undefined;
      },
      20_000,
      "svc AVAILABLE",
    );
    await eventually(
      async () =>
        (await agg.client.aggregator.getDeployment({ deployment: "once" })).deployment?.state === DeploymentState.AVAILABLE
          ? true
          : undefined,
      20_000,
      "once AVAILABLE",
    );
    const onceOnB = async () => (await agg.client.aggregator.getDeployment({ deployment: "once" })).instances.find((i) => i.node === b?.id);
    const { nodes } = await agg.client.aggregator.listNodes({});
    const b = nodes.find((n) => n.name === "node-b");
    const onB = placed.find((i) => i.node === b?.id);
    assert.ok(b && onB, "one instance is on node-b (one per node)");
    const onceVictim = await onceOnB();
    assert.ok(onceVictim, "one instance of once is on node-b too");
    const before = (await events()).at(-1)?.sequence ?? 0n;
    // node-b hangs: its aetherd stops answering, its instance's process keeps running.
    const { executables } = await clients.get(b.id)!.runtime.listExecutables({ pageSize: 100 });
    bPids = executables.filter((e) => e.state === ExecutableState.RUNNING && e.pid > 0).map((e) => e.pid);
    process.kill(daemons.get("node-b")!.process.pid as number, "SIGSTOP");

    // While node-b is SUSPECT or FENCING, its instance still counts: no instance is placed anywhere.
    const fencing = await eventually(
      async () => {
        const n = (await agg.client.aggregator.listNodes({})).nodes.find((x) => x.id === b.id);
        return n?.state === NodeState.FENCING ? n : undefined;
      },
      TTL_MS + 10_000,
      "node-b FENCING",
    );
    assert.ok(fencing);
    const during = await agg.client.aggregator.getDeployment({ deployment: "svc" });
    assert.ok(!bOff, "the BMC has not reported Off yet");
    assert.equal(during.instances.filter((i) => i.state === PlacementState.PLACED).length, 3, "node-b's instance still counts");
    assert.ok(during.instances.some((i) => i.workloadId === onB.workloadId && i.node === b.id));

    // Once Off is confirmed, it runs on node-a or node-c.
    const moved = await eventually(
      async () => {
        const got = await agg.client.aggregator.getDeployment({ deployment: "svc" });
        const live = got.instances.filter((i) => i.state === PlacementState.PLACED);
        return got.deployment?.state === DeploymentState.AVAILABLE && live.length === 3 && live.every((i) => i.node !== b.id)
          ? live
          : undefined;
      },
      POWER_OFF_DELAY_MS + 20_000,
      "svc whole again without node-b",
    );
    assert.ok(bOff);
    for (const i of moved) {
      const { executable } = await clients.get(i.node)!.runtime.getExecutable({ executable: i.resourceId });
      assert.equal(executable?.state, ExecutableState.RUNNING, `${i.name} runs on ${i.node}`);
    }
    for (const pid of bPids) assert.ok(!isRunning(pid), `node-b's old process ${pid} is gone`);
    // Restart policy never: node-b's instance of once FAILED, counted finished, and not replaced.
    const once = await eventually(
      async () => {
        const got = await agg.client.aggregator.getDeployment({ deployment: "once" });
        return got.deployment?.finishedInstances === 1 ? got : undefined;
      },
      10_000,
      "once's fenced instance counted finished",
    );
    assert.equal(once.deployment?.runningInstances, 2);
    assert.equal(once.deployment?.state, DeploymentState.AVAILABLE);
    const abandoned = once.instances.find((i) => i.workloadId === onceVictim.workloadId);
    assert.equal(abandoned?.state, PlacementState.FAILED);
    assert.match(abandoned?.stateReason ?? "", /fenced .* aether\.io\/restart=never says not to start it elsewhere/);
    assert.equal(once.instances.filter((i) => i.state === PlacementState.PLACED).length, 2, "no new instance of once");
    // In order: fenced, then the instance started elsewhere; no auction for svc before the fence.
    const mine = (await events()).filter((e) => e.sequence > before);
    const fenced = mine.find((e) => e.kind === ClusterEventKind.NODE_FENCED && e.node === b.id);
    assert.ok(fenced, mine.map((e) => ClusterEventKind[e.kind]).join(" "));
    const started = mine.filter(
      (e) => (e.kind === ClusterEventKind.WORKLOAD_REPLACED || e.kind === ClusterEventKind.WORKLOAD_PLACED) && e.tenant === "default",
    );
    assert.ok(started.length >= 1, "an instance was started elsewhere");
    assert.ok(
      started.every((e) => e.sequence > fenced.sequence),
      "nothing was started before the fence was confirmed",
    );
  });
});
