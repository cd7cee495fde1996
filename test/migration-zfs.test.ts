// Live migration across pool drivers: a guest on a qcow2 volume of a dir pool moves to an aetherd
// whose default pool is ZFS (zfs-fuse here; its volume a raw ZFS file or zvol), and back, with its
// data and without a reboot.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { bootGuest, follow, sh, volumesNamed, waitReady } from "./helpers/migration.js";
import { startZfsPool, type ZfsTestPool } from "./helpers/zfs.js";

describe("live migration between a dir pool and a ZFS pool", () => {
  let zfs: ZfsTestPool;
  let a: TestDaemon;
  let b: TestDaemon;
  let dirNode: AetherClient;
  let zfsNode: AetherClient;
  const dir = mkdtempSync(join(tmpdir(), "aetherd-test-"));

  before(async () => {
    zfs = await startZfsPool("aethermig");
    const config = join(dir, "aetherd.toml");
    writeFileSync(config, `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${zfs.dataset}"\ndefault = true\n`);
    [a, b] = await Promise.all([startDaemon(), startDaemon({ dir, args: ["--config", config] })]);
    [dirNode, zfsNode] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    try {
      for (const d of [a, b]) {
        if (!d) continue;
        await stopWorkloads(await d.client()).catch(() => undefined);
        assert.equal(await d.stop(), 0, "aetherd exits 0 on SIGTERM");
        d.cleanup();
      }
    } finally {
      await zfs?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("moves a guest from qcow2 on a dir pool to ZFS and back, its data and boot intact", async () => {
    await bootGuest(dirNode, "zmover");
    const bootId = await sh(dirNode, "zmover", "cat /proc/sys/kernel/random/boot_id");
    const read = "dd if=/dev/vda bs=1M skip=100 count=4 2>/dev/null | sha256sum";
    const digest = await sh(dirNode, "zmover", `dd if=/dev/urandom of=/dev/vda bs=1M seek=100 count=4 conv=fsync 2>/dev/null && ${read}`);

    const there = await dirNode.vm.migrateVm({ vm: "zmover", target: b.address });
    const toZfs = (await follow(dirNode, there.migration?.id ?? "")).at(-1);
    assert.equal(toZfs?.state, vmApi.MigrationState.SUCCEEDED, toZfs?.stateReason);
    await waitReady(zfsNode, "zmover");
    const [volume] = await volumesNamed(zfsNode, "zmover");
    assert.equal(volume?.pool, "tank", "the volume was made in the target's ZFS pool");
    assert.equal(await sh(zfsNode, "zmover", "cat /proc/sys/kernel/random/boot_id"), bootId);
    assert.equal(await sh(zfsNode, "zmover", read), digest, "the data is on the ZFS volume");

    const back = await zfsNode.vm.migrateVm({ vm: "zmover", target: a.address });
    const toDir = (await follow(zfsNode, back.migration?.id ?? "")).at(-1);
    assert.equal(toDir?.state, vmApi.MigrationState.SUCCEEDED, toDir?.stateReason);
    await waitReady(dirNode, "zmover");
    assert.equal(await sh(dirNode, "zmover", "cat /proc/sys/kernel/random/boot_id"), bootId);
    assert.equal(await sh(dirNode, "zmover", read), digest, "and back on a qcow2 volume");
    assert.deepEqual(await volumesNamed(zfsNode, "zmover"), [], "nothing left in the ZFS pool");

    await dirNode.vm.deleteVm({ vm: "zmover", force: true });
    await dirNode.storage.deleteVolume({ volume: "zmover-data" });
  });
});
