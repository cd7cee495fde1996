// Live migration of a guest with a NIC: the target puts its own TAP on the same bridge (here both
// aetherd share one network namespace and its bridge, as two hosts share an L2 segment, so the target's
// TAP takes another name than the source's), the guest keeps its MAC and address and reaches the
// bridge again after the move, and the source's TAP is gone.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { follow, MiB, sh, waitReady } from "./helpers/migration.js";

describe("live migration of a guest on a bridge", () => {
  const ns = `aethermig${process.pid}`;
  let a: TestDaemon;
  let b: TestDaemon;
  let source: AetherClient;
  let target: AetherClient;
  const ip = (...args: string[]) => execFileSync("ip", ["-n", ns, ...args], { encoding: "utf8" });

  before(async () => {
    execFileSync("ip", ["netns", "add", ns]);
    // A fixed MAC, as a host's bridge has from its uplink: a port-less bridge would take the lowest
    // MAC of its TAPs and change it when the source's TAP goes, leaving the guest's ARP entry stale.
    ip("link", "add", "br0", "address", "02:00:0a:fb:00:01", "type", "bridge");
    ip("addr", "add", "10.251.0.1/24", "dev", "br0");
    ip("link", "set", "br0", "up");
    ip("link", "set", "lo", "up");
    [a, b] = await Promise.all([startDaemon({ netns: ns }), startDaemon({ netns: ns })]);
    [source, target] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    for (const d of [a, b]) {
      if (!d) continue;
      await stopWorkloads(await d.client()).catch(() => undefined);
      assert.equal(await d.stop(), 0, "aetherd exits 0 on SIGTERM");
      d.cleanup();
    }
    execFileSync("ip", ["netns", "delete", ns]);
    rmSync(`/var/run/netns/${ns}`, { force: true });
  });

  it("the guest keeps its MAC and address and reaches the bridge from the target; the source's TAP is gone", async () => {
    const g = guestImage();
    const created = (
      await source.vm.createVm({
        name: "netmover",
        acceleration: vmApi.Acceleration.TCG,
        memoryBytes: 128n * MiB,
        vcpus: 1,
        guestAgent: true,
        boot: {
          source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet aether.ip=10.251.0.2/24" } },
        },
        nics: [{ bridge: "br0" }],
        start: true,
      })
    ).vm;
    await waitReady(source, "netmover");
    const ping = "ping -c 3 -W 5 10.251.0.1 | grep -o '[0-9]* packets received'";
    assert.equal(await sh(source, "netmover", ping), "3 packets received");
    const sourceTap = created?.nics[0]?.tapDevice ?? "?";

    const { migration } = await source.vm.migrateVm({ vm: "netmover", target: b.address });
    const last = (await follow(source, migration?.id ?? "")).at(-1);
    assert.equal(last?.state, vmApi.MigrationState.SUCCEEDED, last?.stateReason);
    const moved = await waitReady(target, "netmover");
    const targetTap = moved.nics[0]?.tapDevice ?? "?";
    assert.equal(moved.nics[0]?.mac, created?.nics[0]?.mac, "the same MAC");
    assert.notEqual(targetTap, sourceTap, "the target's TAP has a name of its own (the source's existed here when it was made)");
    assert.ok(ip("-o", "link", "show", "master", "br0").includes(targetTap), "the target's TAP is on the bridge");
    assert.equal(ip("-o", "link", "show").includes(`${sourceTap}:`), false, "the source's TAP is gone");
    assert.equal(await sh(target, "netmover", ping), "3 packets received", "the guest reaches the bridge from the target");
    assert.equal(await sh(target, "netmover", "ip -o -4 addr show eth0 | grep -o '10.251.0.2/24'"), "10.251.0.2/24");

    await target.vm.deleteVm({ vm: "netmover", force: true });
    assert.equal(ip("-o", "link", "show").includes(`${targetTap}:`), false, "deleting the VM removed its TAP");
  });
});
