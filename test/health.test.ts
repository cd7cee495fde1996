// Health that says what is wrong: aetherd checks its state directory, shim, spawner, cgroup root,
// clock, pools and the QEMU of every running VM; a VM whose QEMU stops answering (the test freezes
// it with SIGSTOP: alive, holding its QMP socket, answering nothing) makes the node DEGRADED with a
// sentence naming the VM, and healthy again once it answers. The aggregator's CheckHealth and
// `aether health --aggregator` name each node's health and warn about a node without a BMC.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { node as nodeApi, vm as vmApi, type AetherClient } from "@aether/sdk";
import { NodeState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;
const { HealthStatus } = nodeApi;

describe("health", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-health-"));
  let agg: TestAggregator;
  let d: TestDaemon;
  let aether: AetherClient;
  let qemuPid = 0;
  const cli = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: d.address } });

  before(async () => {
    agg = await startAggregator({ dir: join(dir, "agg") });
    const config = join(dir, "node-h.toml");
    writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "node-h"\n`);
    mkdirSync(join(dir, "node-h"), { recursive: true });
    d = await startDaemon({ dir: join(dir, "node-h"), args: ["--config", config] });
    aether = await d.client();
  });

  after(async () => {
    if (qemuPid > 0) process.kill(qemuPid, "SIGCONT");
    if (d) {
      try {
        await stopWorkloads(aether);
        assert.equal(await d.stop(), 0);
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("a healthy node lists what it checked", async () => {
    const h = await aether.node.checkHealth({});
    assert.equal(h.status, HealthStatus.SERVING, h.reasons.join(" "));
    const names = h.checks.map((c) => c.name);
    for (const n of ["state_dir", "shim", "spawner", "cgroup_root", "clock", "pool/default"])
      assert.ok(names.includes(n), `${n} in ${names}`);
    assert.ok(h.checks.every((c) => c.message.length > 0));
    const out = await cli("health");
    assert.equal(out.code, 0, out.stderr + out.stdout);
    assert.match(out.stdout, /^node healthy: 0 problem\(s\)/);
  });

  it("the QEMU of a running VM that stops answering makes the node DEGRADED, naming the VM; healthy again when it answers", async () => {
    const g = guestImage();
    await aether.vm.createVm({
      name: "frozen",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      start: true,
    });
    let ready: vmApi.Vm | undefined;
    for await (const r of aether.vm.waitVmReady({ vm: "frozen", timeout: { seconds: 90n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    const fine = await aether.node.checkHealth({});
    assert.equal(fine.checks.find((c) => c.name === "vm/frozen")?.status, HealthStatus.SERVING);
    assert.match(fine.checks.find((c) => c.name === "vm/frozen")?.message ?? "", /answers: running/);

    qemuPid = ready?.pid ?? 0;
    assert.ok(qemuPid > 0);
    process.kill(qemuPid, "SIGSTOP");
    const sick = await aether.node.checkHealth({});
    assert.equal(sick.status, HealthStatus.DEGRADED);
    const vmCheck = sick.checks.find((c) => c.name === "vm/frozen");
    assert.equal(vmCheck?.status, HealthStatus.DEGRADED);
    assert.equal(vmCheck?.tenant, "default");
    assert.match(vmCheck?.message ?? "", new RegExp(`the QEMU of VM frozen \\(pid ${qemuPid}\\) is unreachable: QMP query-status failed`));
    assert.deepEqual(sick.reasons, [vmCheck?.message], "the reasons are the DEGRADED checks' sentences");
    const out = await cli("health");
    assert.equal(out.code, 1, "aether health exits 1 on a DEGRADED node");
    assert.match(out.stdout, /^node DEGRADED: 1 problem\(s\)/);
    assert.match(out.stdout, /vm\/frozen/);

    // The cluster's view: the aggregator asks the node, which names the VM.
    const cluster = await agg.client.node.checkHealth({});
    assert.equal(cluster.status, HealthStatus.SERVING, "the aggregator itself is fine: the node's problem is a check of its own");
    const nodeCheck = cluster.checks.find((c) => c.name === "node/node-h");
    assert.equal(nodeCheck?.status, HealthStatus.DEGRADED);
    assert.match(nodeCheck?.message ?? "", /node node-h is degraded: the QEMU of VM frozen .* is unreachable/);

    process.kill(qemuPid, "SIGCONT");
    qemuPid = 0;
    await eventually(
      async () => ((await aether.node.checkHealth({})).status === HealthStatus.SERVING ? true : undefined),
      10_000,
      "the node healthy again once QEMU answers",
    );
    await aether.vm.stopVm({ vm: "frozen", force: true });
    await aether.vm.deleteVm({ vm: "frozen" });
  });

  it("the cluster's health names a node without a BMC (a warning), with the leader and the store", async () => {
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({})).nodes.some((n) => n.state === NodeState.READY) ? true : undefined),
      20_000,
      "node-h READY",
    );
    const h = await agg.client.node.checkHealth({});
    assert.equal(h.status, HealthStatus.SERVING);
    const by = new Map(h.checks.map((c) => [c.name, c]));
    assert.equal(by.get("leader")?.status, HealthStatus.SERVING);
    assert.equal(by.get("store")?.status, HealthStatus.SERVING);
    assert.equal(by.get("node/node-h")?.status, HealthStatus.SERVING, by.get("node/node-h")?.message);
    assert.equal(by.get("fencing/node-h")?.status, HealthStatus.WARNING);
    assert.match(by.get("fencing/node-h")?.message ?? "", /node node-h cannot be fenced: no BMC is registered for node node-h/);
    const out = await runCommand("aether", ["health", "--aggregator", `unix://${agg.socket}`]);
    assert.equal(out.code, 0, "a warning is not a failure");
    assert.match(out.stdout, /^cluster healthy: 0 problem\(s\), 1 warning\(s\)/);
    assert.match(out.stdout, /warning\W+fencing\/node-h/);
  });
});
