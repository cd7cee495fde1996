// A cluster manifest with a VM and a deployment (issue 15, item 4), planned and applied through a real
// aether-aggregator with one real aetherd: plan says create, apply places the VM by auction (the
// guest really boots on the node) and creates the deployment, plan again shows nothing; a memory edit
// is a replace, an instances edit an update in place (same revision, the aggregator scales), a
// template edit a replace (a new revision); deleting the manifest removes the VM's placement and the
// deployment; GitOps: a commit that scales the deployment, pulled by aetherscript apply --watch, reaches
// the cluster and is reported. The deployment runs executables, so one guest boots in all.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  applyManifest,
  defineManifest,
  deleteManifest,
  MANIFEST_LABEL,
  planManifest,
  vm as vmApi,
  type AetherClient,
  type DeploymentDecl,
  type VmDecl,
} from "@aether/sdk";
import { DeploymentState, NodeState, PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { binDir, runCommand } from "./helpers/run.js";

const TENANT = "mfcvm";

const vm = (overrides: Partial<VmDecl> = {}): VmDecl => ({
  name: "db",
  kernel: guestImage().kernel,
  initrd: guestImage().initrd,
  cmdline: "quiet",
  acceleration: "tcg",
  memory: "128M",
  ...overrides,
});
const workers = (instances: number, seconds = 600): DeploymentDecl => ({
  name: "workers",
  instances,
  labels: { team: "a" },
  template: { executable: { argv: ["/bin/sleep", String(seconds)] }, requirements: { cpuMillis: 10, memory: "1M" } },
});
const fleet = (vms: VmDecl[], deployments: DeploymentDecl[]) =>
  defineManifest({ name: "fleet", tenant: TENANT, target: "cluster", vms, deployments });
const steps = (actions: Array<{ kind: string; resource: string; name: string }>) => actions.map((a) => `${a.kind} ${a.resource} ${a.name}`);

describe("a cluster manifest with a VM and a deployment", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-manifest-cluster-vm-"));
  let agg: TestAggregator;
  let daemon: TestDaemon;
  let node: AetherClient;

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg") });
    const config = join(dir, "node.toml");
    writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "node-0"\n`);
    mkdirSync(join(dir, "node"));
    daemon = await startDaemon({ dir: join(dir, "node"), args: ["--config", config] });
    node = await daemon.client();
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({})).nodes.some((n) => n.state === NodeState.READY) ? true : undefined),
      20_000,
      "the node to be READY",
    );
  });

  after(async () => {
    try {
      if (daemon) {
        await stopWorkloads(node);
        assert.equal(await daemon.stop(), 0, daemon.log());
      }
    } finally {
      daemon?.cleanup();
      if (agg) assert.equal(await agg.stop(), 0, agg.log());
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const deployment = async () => (await agg.client.aggregator.getDeployment({ deployment: "workers", tenant: TENANT })).deployment;

  it("plan says create; apply places the VM (the guest boots on the node) and creates the deployment; plan again shows nothing", async () => {
    const file = join(dir, "fleet.ts");
    writeFileSync(
      file,
      `import { defineManifest } from "@aether/sdk";\nexport default defineManifest(${JSON.stringify({ name: "fleet", tenant: TENANT, target: "cluster", vms: [vm()], deployments: [workers(2)] })});\n`,
    );
    const plan = await runCommand("aetherscript", ["plan", file], { cwd: "/", env: { AETHER_HOST: `unix://${agg.socket}` } });
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /\+ create\s+vm\s+db\s+not placed in the cluster/);
    assert.match(
      plan.stdout,
      /\+ create\s+deployment\s+workers\s+does not exist in the cluster; create it with 2 instances of an executable/,
    );

    const result = await applyManifest(agg.client, fleet([vm()], [workers(2)]));
    assert.deepEqual(steps(result.applied), ["create vm db", "create deployment workers"]);
    const placed = result.applied[0]?.placed;
    assert.ok(placed?.resourceId, "the VM was placed on a node");
    let ready: vmApi.Vm | undefined;
    for await (const r of node.vm.waitVmReady({ vm: placed.resourceId, tenant: TENANT, timeout: { seconds: 120n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    assert.equal(ready?.memoryBytes, 128n << 20n);
    await eventually(
      async () => ((await deployment())?.state === DeploymentState.AVAILABLE ? true : undefined),
      20_000,
      "the deployment to be AVAILABLE",
    );
    const again = await planManifest(agg.client, fleet([vm()], [workers(2)]));
    assert.equal(again.changes, 0, JSON.stringify(again.actions));
    assert.deepEqual(steps((await applyManifest(agg.client, fleet([vm()], [workers(2)]))).applied), []);
    // The CLI sends a cluster manifest to the aggregator (--aggregator) and finds nothing to change.
    const diff = await runCommand("aether", ["diff", "-f", file, "--aggregator", `unix://${agg.socket}`], {
      cwd: "/",
      env: { AETHER_HOST: daemon.address },
    });
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    assert.match(
      diff.stdout,
      /diff of manifest fleet \(tenant mfcvm\) on the cluster at unix:\/\/.*aggregator\.sock:\n0 to change, 2 unchanged\./,
    );
  });

  it("memory edit: replace; instances edit: update in place (same revision); template edit: replace (a new revision)", async () => {
    const bigger = await planManifest(agg.client, fleet([vm({ memory: "192M" })], [workers(2)]));
    assert.deepEqual(
      bigger.actions.map((a) => `${a.kind} ${a.name}`),
      ["replace db", "unchanged workers"],
    );
    assert.match(bigger.actions[0]?.reason ?? "", /^memory \(128 MiB placed, 192 MiB declared\) changed$/);

    const revision = (await deployment())?.revision;
    const scaled = await applyManifest(agg.client, fleet([vm()], [workers(3)]));
    assert.deepEqual(
      scaled.applied.map((a) => `${a.kind} ${a.name}: ${a.reason}`),
      ["update workers: instances 2 -> 3"],
    );
    const after = await eventually(
      async () => {
        const d = await deployment();
        return d?.state === DeploymentState.AVAILABLE && d.runningInstances === 3 ? d : undefined;
      },
      20_000,
      "3 running instances",
    );
    assert.equal(after.revision, revision, "scaling is not a new revision");

    const retemplated = await planManifest(agg.client, fleet([vm()], [workers(3, 601)]));
    const step = retemplated.actions.find((a) => a.name === "workers");
    assert.equal(step?.kind, "replace");
    assert.match(step?.reason ?? "", /template \(executable\.argv\) changed: revision \d+/);
    await applyManifest(agg.client, fleet([vm()], [workers(3, 601)]));
    assert.equal((await deployment())?.revision, (revision ?? 0n) + 1n);
    assert.equal((await planManifest(agg.client, fleet([vm()], [workers(3, 601)]))).changes, 0);
  });

  it("a deployment of VMs (no instance, so nothing boots): created, unchanged when planned again, a memory edit is a new revision", async () => {
    const vms = (memory: string) =>
      defineManifest({
        name: "fleet-vms",
        tenant: TENANT,
        target: "cluster",
        deployments: [
          {
            name: "guests",
            instances: 0,
            template: { vm: { kernel: guestImage().kernel, acceleration: "tcg", memory, labels: { role: "guest" } } },
          },
        ],
      });
    assert.deepEqual(steps((await applyManifest(agg.client, vms("128M"))).applied), ["create deployment guests"]);
    assert.equal((await planManifest(agg.client, vms("128M"))).changes, 0, "the template the aggregator keeps is the one declared");
    const edited = await planManifest(agg.client, vms("192M"));
    assert.deepEqual(
      edited.actions.map((a) => `${a.kind} ${a.name}`),
      ["replace guests"],
    );
    assert.match(edited.actions[0]?.reason ?? "", /^template \(vm\.memoryBytes\) changed: revision 2,/);
    assert.deepEqual(steps((await deleteManifest(agg.client, vms("192M"))).applied), ["delete deployment guests"]);
  });

  it("GitOps: a commit that scales the deployment is pulled, applied to the cluster and reported with its commit", async () => {
    const origin = join(dir, "origin");
    mkdirSync(join(origin, "prod"), { recursive: true });
    const git = (cwd: string, ...args: string[]) =>
      execFileSync(
        "git",
        ["-c", "user.name=Aether Test", "-c", "user.email=test@aether.invalid", "-c", "init.defaultBranch=main", ...args],
        {
          cwd,
          encoding: "utf8",
        },
      ).trim();
    const commit = (instances: number, subject: string) => {
      writeFileSync(
        join(origin, "prod", "fleet.ts"),
        `import { defineManifest } from "@aether/sdk";\nexport default defineManifest(${JSON.stringify({ name: "fleet", tenant: TENANT, target: "cluster", vms: [vm()], deployments: [workers(instances, 601)] })});\n`,
      );
      git(origin, "add", "-A");
      git(origin, "commit", "-q", "-m", subject);
      return git(origin, "rev-parse", "HEAD");
    };
    git(origin, "init", "-q");
    const first = commit(3, "as deployed");
    git(dir, "clone", "-q", origin, join(dir, "checkout"));
    let out = "";
    // AETHER_HOST names the node: the cluster manifest goes to --aggregator.
    const watch = spawn(
      "aetherscript",
      [
        "apply",
        "--watch",
        join(dir, "checkout", "prod"),
        "--pull",
        "--interval",
        "300ms",
        "--json",
        "--aggregator",
        `unix://${agg.socket}`,
      ],
      {
        cwd: "/",
        env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, AETHER_HOST: daemon.address },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    watch.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    try {
      const reported = (sha: string) =>
        eventually(
          () =>
            out
              .split("\n")
              .filter((l) => l.startsWith("{"))
              .map((l) => JSON.parse(l) as { commit: string; status: string; changes: number })
              .find((r) => r.commit === sha),
          45_000,
          `the watch to report ${sha} (${out})`,
        );
      const r1 = await reported(first);
      assert.deepEqual([r1.status, r1.changes], ["applied", 0], "the checkout's commit is what the cluster runs already");
      const second = commit(1, "workers: scale to 1");
      const r2 = await reported(second);
      assert.deepEqual([r2.status, r2.changes], ["applied", 1]);
      await eventually(
        async () => {
          const d = await deployment();
          return d?.instances === 1 && d.runningInstances === 1 ? true : undefined;
        },
        20_000,
        "the deployment scaled to 1",
      );
    } finally {
      watch.kill("SIGTERM");
      await new Promise((resolve) => (watch.exitCode !== null ? resolve(undefined) : watch.once("exit", resolve)));
    }
  });

  it("a deployment in a node manifest names the field; a deployment made by hand is a conflict; deleting the manifest releases the VM and deletes the deployment", async () => {
    assert.throws(
      () => defineManifest({ name: "x", deployments: [workers(1)] }),
      /invalid manifest: deployments: deployments are kept by the aggregator/,
    );
    assert.throws(
      () => defineManifest({ name: "x", target: "cluster", deployments: [{ name: "w", template: {} }] }),
      /invalid manifest: deployments\.0\.template\.vm: give exactly one of executable/,
    );
    // A deployment made by hand holds its name: the manifest may not take it over.
    await agg.client.aggregator.createDeployment({
      deployment: {
        name: "by-hand",
        tenant: TENANT,
        instances: 0,
        template: { kind: { case: "executable", value: { argv: ["/bin/sleep", "1"] } } },
      },
    });
    const taken = await planManifest(agg.client, fleet([vm()], [workers(1, 601), { ...workers(0), name: "by-hand" }]));
    assert.deepEqual(
      taken.conflicts.map((c) => `${c.resource} ${c.name}: ${c.reason}`),
      [
        "deployment by-hand: a deployment named by-hand already exists in tenant mfcvm and is not managed by a manifest, not fleet; delete or rename it",
      ],
    );
    await agg.client.aggregator.deleteDeployment({ deployment: "by-hand", tenant: TENANT });
    const removed = await deleteManifest(agg.client, fleet([vm()], [workers(1, 601)]), { stopGraceSeconds: 5 });
    assert.deepEqual(steps(removed.applied), ["delete deployment workers", "delete vm db"]);
    await eventually(
      async () => {
        const live = (await agg.client.aggregator.listPlacements({ tenant: TENANT, pageSize: 1000 })).placements.filter(
          (p) => p.state !== PlacementState.RELEASED && p.state !== PlacementState.FAILED,
        );
        const deployments = (await agg.client.aggregator.listDeployments({ tenant: TENANT })).deployments;
        return live.length === 0 && deployments.length === 0 ? true : undefined;
      },
      30_000,
      "every placement released and the deployment gone",
    );
    assert.equal((await node.vm.listVms({ tenant: TENANT })).vms.filter((v) => v.labels[MANIFEST_LABEL] === "fleet").length, 0);
  });
});
