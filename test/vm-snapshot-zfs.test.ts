// A VM snapshot of a running VM, on a real file-backed ZFS pool (zfs-fuse): the guest's file systems
// are frozen through its agent (or its vCPUs paused) while each volume is snapshotted, the guest runs
// on afterwards, and rolling the stopped VM back brings the disk back to the moment of the snapshot.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { startZfsPool, type ZfsTestPool } from "./helpers/zfs.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  return last as vmApi.Vm;
}

async function sh(aether: AetherClient, vm: string, script: string): Promise<string> {
  const r = await aether.vm.execVm({ vm, argv: ["/bin/sh", "-c", script], timeout: { seconds: 60n } });
  assert.equal(r.exitCode, 0, `${vm}: ${script}: ${text(r.stderr)}`);
  return text(r.stdout);
}

describe("VM snapshots of a running VM on a ZFS pool", () => {
  let zfs: ZfsTestPool;
  let daemon: TestDaemon;
  let aether: AetherClient;
  const dir = mkdtempSync(join(tmpdir(), "aetherd-test-"));

  before(async () => {
    zfs = await startZfsPool("aethervmsnap");
    const config = join(dir, "aetherd.toml");
    writeFileSync(config, `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${zfs.dataset}"\ndefault = true\n`);
    daemon = await startDaemon({ dir, args: ["--config", config] });
    aether = await daemon.client();
  });
  after(async () => {
    try {
      if (aether) {
        await stopWorkloads(aether);
        for (const v of (await aether.vm.listVms({})).vms) await aether.vm.deleteVm({ vm: v.id, force: true }).catch(() => undefined);
        for (const v of (await aether.storage.listVolumes({})).volumes)
          await aether.storage.deleteVolume({ volume: v.id, deleteSnapshots: true }).catch(() => undefined);
      }
      if (daemon) assert.equal(await daemon.stop(), 0);
    } finally {
      daemon?.cleanup();
      await zfs?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("snapshots a running VM's volumes consistently, and a rollback of the stopped VM returns to it", async (t) => {
    await aether.storage.createVolume({ name: "zdata", source: { case: "empty", value: { sizeBytes: 16n * MiB } } });
    const g = guestImage();
    await aether.vm.createVm({
      name: "zvm",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      disks: [{ source: { case: "volume", value: "zdata" } }],
      start: true,
    });
    await waitReady(aether, "zvm");
    await sh(aether, "zvm", "printf before-snapshot | dd of=/dev/vda conv=fsync 2>/dev/null");
    const { snapshot } = await aether.vm.createVmSnapshot({ vm: "zvm", name: "live" });
    assert.ok(["frozen", "paused"].includes(snapshot?.consistency ?? ""), `consistency ${snapshot?.consistency}`);
    t.diagnostic(`consistency: ${snapshot?.consistency}`);
    assert.deepEqual(
      snapshot?.disks.map((d) => d.volumeName),
      ["zdata"],
    );
    // The guest runs on (thawed, or its vCPUs running again) and writes.
    assert.equal((await aether.vm.getVm({ vm: "zvm" })).vm?.state, vmApi.VmState.RUNNING);
    await sh(aether, "zvm", "printf after--snapshot | dd of=/dev/vda conv=fsync 2>/dev/null");
    assert.equal(await sh(aether, "zvm", "head -c 15 /dev/vda"), "after--snapshot");
    await aether.vm.stopVm({ vm: "zvm" });
    await aether.vm.rollbackVmSnapshot({ vm: "zvm", name: "live" });
    await aether.vm.startVm({ vm: "zvm" });
    await waitReady(aether, "zvm");
    assert.equal(await sh(aether, "zvm", "head -c 15 /dev/vda"), "before-snapshot");
  });
});
