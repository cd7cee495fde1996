// Cluster manifests (target "cluster") as a user applies them: `aetherscript plan|apply` with
// AETHER_HOST at a real aether-aggregator, two real aetherd that register with it by themselves,
// and every placement checked to really run (or really be stopped) on the node that won it.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, defineManifest, MANIFEST_LABEL, type AetherClient, type ManifestInput } from "@aether/sdk";
import { NodeState, PlacementState, type WorkloadPlacement } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, isRunning, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { runCommand } from "./helpers/run.js";

const NODES = 2;
const TENANT = "mfc";

interface JsonAction {
  kind: string;
  resource: string;
  name: string;
  reason: string;
  liveId?: string;
  node?: string;
  placed?: { workloadId: string; node: string; resourceId: string; auctionId: string };
}

/** A cluster manifest named "fleet" with these executables (TypeScript source of the array). */
const fleet = (executables: string) => `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "fleet", tenant: "${TENANT}", target: "cluster", executables: ${executables} });
`;

const A = '{ name: "a", argv: ["/bin/sleep", "600"], requirements: { cpuMillis: 10, memory: "1M", nodeSelector: { zone: "a" } } }';
const A_ZONE_B = '{ name: "a", argv: ["/bin/sleep", "600"], requirements: { cpuMillis: 10, memory: "1M", nodeSelector: { zone: "b" } } }';
const B = (seconds: number) =>
  `{ name: "b", argv: ["/bin/sleep", "${seconds}"], env: { MODE: "batch" }, labels: { role: "worker" }, requirements: { cpuMillis: 10 } }`;

describe("cluster manifests through the aggregator", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-manifest-cluster-"));
  const files = join(dir, "manifests");
  mkdirSync(files);
  let agg: TestAggregator;
  const daemons: TestDaemon[] = [];
  /** A client of each node, by node id. */
  const nodes = new Map<string, AetherClient>();
  /** Node ids by name (node-0 is in zone a, node-1 in zone b). */
  const ids = new Map<string, string>();

  const write = (name: string, content: string) => {
    const file = join(files, name);
    writeFileSync(file, content);
    return file;
  };
  const aetherscript = (args: string[], host = `unix://${agg.socket}`) =>
    runCommand("aetherscript", args, { cwd: "/", env: { AETHER_HOST: host } });
  const actions = (stdout: string) =>
    (JSON.parse(stdout) as { actions: JsonAction[] }).actions.map((a) => `${a.kind} ${a.name} ${a.reason}`);
  const applied = (stdout: string) => (JSON.parse(stdout) as { applied: JsonAction[] }).applied;
  const placements = async (state?: PlacementState): Promise<WorkloadPlacement[]> =>
    (await agg.client.aggregator.listPlacements({ tenant: TENANT, filter: `${MANIFEST_LABEL}=fleet`, state, pageSize: 1000 })).placements;
  const placed = async (name: string): Promise<WorkloadPlacement> => {
    const live = (await placements(PlacementState.PLACED)).filter((p) => p.name === name);
    assert.equal(live.length, 1, `one PLACED placement of ${name}`);
    return live[0] as WorkloadPlacement;
  };
  /** The executable a placement put on its node, read from that node itself. */
  const onNode = async (p: WorkloadPlacement) => {
    const node = nodes.get(p.node);
    assert.ok(node, `the placement's node ${p.node} is one of the cluster's`);
    const { executable } = await node.runtime.getExecutable({ executable: p.resourceId, tenant: p.tenant });
    assert.ok(executable);
    return executable;
  };
  /** Resolves once the executable `p` placed is gone from its node, or no longer running there. */
  const stoppedOnNode = async (p: WorkloadPlacement, pid: number) => {
    const node = nodes.get(p.node);
    assert.ok(node);
    await eventually(
      async () => {
        const state = await node.runtime
          .getExecutable({ executable: p.resourceId, tenant: p.tenant })
          .then((r) => r.executable?.state)
          .catch((err: unknown) => (err instanceof ConnectError && err.code === Code.NotFound ? "gone" : Promise.reject(err)));
        return state !== ExecutableState.RUNNING && !isRunning(pid) ? true : undefined;
      },
      15_000,
      `${p.name} (pid ${pid}) to stop on node ${p.node}`,
    );
  };

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg") });
    for (let i = 0; i < NODES; i++) {
      const nodeDir = join(dir, `node-${i}`);
      const config = join(dir, `node-${i}.toml`);
      writeFileSync(
        config,
        `[cluster]\naggregator = "unix://${agg.socket}"\nname = "node-${i}"\n\n[node]\nlabels = { zone = "${i === 0 ? "a" : "b"}" }\n`,
      );
      mkdirSync(nodeDir, { recursive: true });
      daemons.push(await startDaemon({ dir: nodeDir, args: ["--config", config] }));
    }
    const ready = await eventually(
      async () => {
        const { nodes: listed } = await agg.client.aggregator.listNodes({});
        return listed.filter((n) => n.state === NodeState.READY).length === NODES ? listed : undefined;
      },
      20_000,
      `${NODES} READY nodes`,
    );
    for (const n of ready) {
      const d = daemons.find((x) => n.address === `unix://${x.socket}`);
      assert.ok(d, `node ${n.name} advertises one of the daemons' sockets (${n.address})`);
      nodes.set(n.id, await d.client());
      ids.set(n.name, n.id);
    }
  });

  after(async () => {
    // Stop what the manifests left running (in the manifests' tenant), node by node; each aetherd
    // must exit 0 on SIGTERM, and its folder goes even when it does not.
    for (const d of daemons) {
      try {
        await stopWorkloads(await d.client());
        assert.equal(await d.stop(), 0, d.log());
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("plan shows creates; apply places them by auction, each running on the node that won it; a second apply changes nothing", async () => {
    const v1 = write("v1.ts", fleet(`[${A}, ${B(601)}]`));
    const plan = await aetherscript(["plan", v1, "--json"]);
    assert.equal(plan.code, 0, plan.stderr);
    assert.deepEqual(actions(plan.stdout), ["create a not placed in the cluster", "create b not placed in the cluster"]);
    assert.equal(JSON.parse(plan.stdout).target, "cluster");
    const text = await aetherscript(["plan", v1]);
    assert.match(text.stdout, new RegExp(`^plan for manifest fleet \\(tenant ${TENANT}\\) on the cluster at unix://`, "m"));
    assert.match(text.stdout, /\+ create\s+executable a\s+not placed in the cluster/);
    assert.match(text.stdout, /^2 to change, 0 unchanged\.$/m);

    const apply = await aetherscript(["apply", v1]);
    assert.equal(apply.code, 0, apply.stderr);
    assert.match(
      apply.stdout,
      /\+ create\s+executable b\s+not placed in the cluster\n\s+placed on node [0-9a-f-]{36} as workload [0-9a-f-]{36} \(executable \S+\)/,
    );
    assert.match(apply.stdout, /^applied: 2 to change, 0 unchanged\.$/m);

    const a = await placed("a");
    const b = await placed("b");
    assert.equal(a.node, ids.get("node-0"), "a's node selector (zone a) picked node-0");
    assert.deepEqual(a.labels, { [MANIFEST_LABEL]: "fleet" });
    assert.deepEqual(b.labels, { role: "worker", [MANIFEST_LABEL]: "fleet" });
    assert.equal(a.spec?.requirements?.memoryBytes, 1n << 20n, 'memory "1M" is sent in bytes');
    assert.equal(a.spec?.requirements?.cpuMillis, 10);
    for (const p of [a, b]) {
      const exe = await onNode(p);
      assert.equal(exe.state, ExecutableState.RUNNING, `${p.name} runs on ${p.node}`);
      assert.equal(exe.tenant, TENANT);
      assert.equal(exe.name, p.name);
      assert.equal(exe.labels[MANIFEST_LABEL], "fleet");
      assert.equal(exe.labels["aether.io/workload"], p.workloadId);
    }
    assert.deepEqual((await onNode(b)).argv, ["/bin/sleep", "601"]);
    assert.deepEqual((await onNode(b)).env, { MODE: "batch" });

    const again = await aetherscript(["apply", v1, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(applied(again.stdout), [], "a second apply changes nothing");
    assert.equal(JSON.parse(again.stdout).changes, 0);
    const unchanged = await aetherscript(["plan", v1, "--json"]);
    assert.deepEqual(actions(unchanged.stdout), [
      `unchanged a placed on node ${a.node} as declared`,
      `unchanged b placed on node ${b.node} as declared`,
    ]);
    const text2 = await aetherscript(["apply", v1]);
    assert.match(text2.stdout, /^nothing to change: the cluster already matches the manifest\.$/m);
    assert.equal((await placements()).length, 2, "no placement was made or released");
  });

  it("changing argv replaces the workload: the old process is stopped on its node and the new one runs", async () => {
    const a = await placed("a");
    const oldB = await placed("b");
    const oldPid = (await onNode(oldB)).pid;
    const v2 = write("v2.ts", fleet(`[${A}, ${B(602)}]`));
    const plan = await aetherscript(["plan", v2, "--json"]);
    assert.deepEqual(actions(plan.stdout), [`unchanged a placed on node ${a.node} as declared`, "replace b argv changed"]);
    const apply = await aetherscript(["apply", v2, "--json"]);
    assert.equal(apply.code, 0, apply.stderr);
    const steps = applied(apply.stdout);
    assert.deepEqual(
      steps.map((s) => `${s.kind} ${s.name}`),
      ["replace b"],
    );
    assert.equal(steps[0]?.liveId, oldB.workloadId);

    const newB = await placed("b");
    assert.notEqual(newB.workloadId, oldB.workloadId);
    assert.equal(steps[0]?.placed?.workloadId, newB.workloadId);
    assert.equal(steps[0]?.placed?.node, newB.node);
    const exe = await onNode(newB);
    assert.equal(exe.state, ExecutableState.RUNNING);
    assert.deepEqual(exe.argv, ["/bin/sleep", "602"]);
    const released = (await agg.client.aggregator.getPlacement({ workload: oldB.workloadId, tenant: TENANT })).placement;
    assert.equal(released?.state, PlacementState.RELEASED);
    await stoppedOnNode(oldB, oldPid);
    assert.equal((await placed("a")).workloadId, a.workloadId, "a was left alone");
    assert.deepEqual(applied((await aetherscript(["apply", v2, "--json"])).stdout), [], "and a second apply changes nothing");
  });

  it("changing requirements replaces the workload where they now point", async () => {
    const oldA = await placed("a");
    const v2b = write("v2b.ts", fleet(`[${A_ZONE_B}, ${B(602)}]`));
    const plan = await aetherscript(["plan", v2b, "--json"]);
    assert.deepEqual(actions(plan.stdout)[0], "replace a requirements changed");
    const apply = await aetherscript(["apply", v2b]);
    assert.equal(apply.code, 0, apply.stderr);
    assert.match(apply.stdout, /~ replace\s+executable a\s+requirements changed/);
    const a = await placed("a");
    assert.equal(a.node, ids.get("node-1"), "zone b is node-1");
    assert.equal((await onNode(a)).state, ExecutableState.RUNNING);
    assert.equal(
      (await agg.client.aggregator.getPlacement({ workload: oldA.workloadId, tenant: TENANT })).placement?.state,
      PlacementState.RELEASED,
    );
  });

  it("removing an executable from the manifest releases it and stops its process on its node", async () => {
    const b = await placed("b");
    const pid = (await onNode(b)).pid;
    const v3 = write("v3.ts", fleet(`[${A_ZONE_B}]`));
    const plan = await aetherscript(["plan", v3]);
    assert.match(plan.stdout, /- delete\s+executable b\s+no longer in the manifest/);
    const apply = await aetherscript(["apply", v3]);
    assert.equal(apply.code, 0, apply.stderr);
    assert.match(apply.stdout, /- delete\s+executable b\s+no longer in the manifest/);
    assert.deepEqual(
      (await placements(PlacementState.PLACED)).map((p) => p.name),
      ["a"],
    );
    assert.equal(
      (await agg.client.aggregator.getPlacement({ workload: b.workloadId, tenant: TENANT })).placement?.state,
      PlacementState.RELEASED,
    );
    await stoppedOnNode(b, pid);
    assert.deepEqual(applied((await aetherscript(["apply", v3, "--json"])).stdout), []);
  });

  it("a workload of the same name that the manifest does not manage is a conflict, and nothing is applied", async () => {
    await agg.client.aggregator.deploy({
      spec: {
        name: "c",
        tenant: TENANT,
        requirements: { cpuMillis: 10 },
        kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
      },
    });
    const v4 = write("v4.ts", fleet(`[${A_ZONE_B}, { name: "c", argv: ["/bin/sleep", "603"] }]`));
    const plan = await aetherscript(["plan", v4]);
    assert.equal(plan.code, 1);
    assert.match(
      plan.stdout,
      /! conflict\s+executable c\s+a workload named c is already placed in tenant mfc \(workload [0-9a-f-]{36} on node [0-9a-f-]{36}\) and is not managed by a manifest, not fleet; release or rename it/,
    );
    const apply = await aetherscript(["apply", v4]);
    assert.equal(apply.code, 1);
    assert.match(apply.stderr, /^aetherscript: nothing was applied: a workload named c is already placed/);
    await agg.client.aggregator.releasePlacement({ workload: "c", tenant: TENANT, gracePeriod: { seconds: 0n } });
  });

  it("a cluster manifest with volumes or cells fails validation naming the field", async () => {
    const volumes = write(
      "volumes.ts",
      `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "fleet", tenant: "${TENANT}", target: "cluster", volumes: [{ name: "data", size: "1G" }], executables: [${A}] });
`,
    );
    const r = await aetherscript(["plan", volumes]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      'aetherscript: invalid manifest: volumes: volumes belong to one node; apply them to a node (in a manifest without target "cluster")',
    );
    const invalid = (input: ManifestInput) => {
      try {
        defineManifest(input);
      } catch (err) {
        return (err as Error).message;
      }
      return "accepted";
    };
    assert.match(invalid({ name: "f", target: "cluster", cells: [{ name: "pod" }] }), /^invalid manifest: cells: cells belong to one node/);
    assert.match(
      invalid({ name: "f", target: "cluster", executables: [{ name: "x", argv: ["/bin/true"], cell: "pod" }] }),
      /^invalid manifest: executables\.0\.cell: an executable of a cluster manifest runs on whichever node wins its auction/,
    );
    assert.match(
      invalid({ name: "f", executables: [{ name: "x", argv: ["/bin/true"], requirements: { cpuMillis: 10 } }] }),
      /^invalid manifest: executables\.0\.requirements: only a cluster manifest places executables by their requirements/,
    );
    assert.equal(
      invalid({ name: "f", target: "cluster", executables: [{ name: "x", argv: ["/bin/true"], requirements: { memory: "lots" } }] }),
      'invalid manifest: executables.0.requirements.memory: "lots" is not a size like "512M", "10G" or a number of bytes',
    );
    assert.equal(invalid({ name: "f", target: "everywhere" as "cluster" }), 'invalid manifest: target: must be "node" or "cluster"');
    assert.equal(defineManifest({ name: "f" }).target, "node", "a node manifest by default");
    assert.deepEqual(
      defineManifest({ name: "f", target: "cluster", executables: [{ name: "x", argv: ["/bin/true"], requirements: { memory: "2G" } }] })
        .executables[0]?.requirements,
      {
        cpuMillis: 0,
        memoryBytes: 2 * 2 ** 30,
        nodeSelector: {},
      },
    );
  });

  it("a cluster manifest applied to a plain aetherd says to point AETHER_HOST at the aggregator, and a node manifest applied to the aggregator says the reverse", async () => {
    const [first] = daemons;
    assert.ok(first);
    const v1 = write("to-node.ts", fleet(`[${B(604)}]`));
    for (const mode of ["plan", "apply"]) {
      const r = await aetherscript([mode, v1], first.address);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr.trim(),
        `aetherscript: manifest fleet targets the cluster, but ${first.address} is a node's aetherd, not aether-aggregator: point AETHER_HOST at the aggregator (its socket, e.g. unix:///run/aether/aggregator.sock, or its https address) and run again.`,
      );
    }
    const c = await first.client();
    assert.deepEqual(
      (await c.runtime.listExecutables({ tenant: TENANT })).executables.filter((e) => e.labels["aether.io/workload"] === undefined),
      [],
      "nothing was started on the node by itself",
    );

    const nodeManifest = write(
      "node.ts",
      `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "local", tenant: "${TENANT}", executables: [{ name: "x", argv: ["/bin/sleep", "600"] }] });
`,
    );
    const r = await aetherscript(["plan", nodeManifest]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `aetherscript: manifest local targets one node, but unix://${agg.socket} serves no ExecutableService (an aether-aggregator, say): point AETHER_HOST at a node's aetherd, or set target: "cluster" in the manifest to have the aggregator place its executables.`,
    );
  });
});
