// A ZFS pool through aetherd, on a real file-backed zfs-fuse pool: images become datasets with a
// base snapshot, volumes are `zfs clone`s of them, snapshots and rollbacks are ZFS's own.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, type AetherClient } from "@aether/sdk";
import { ImageState, PoolDriver, VolumeFormat, VolumeState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { runZfs } from "../daemon/src/host/zfs-command.js";
import { startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { hasPattern, makeRawDisk, MiB, writePattern } from "./helpers/disks.js";
import { startZfsPool, type ZfsTestPool } from "./helpers/zfs.js";

async function datasets(root: string): Promise<string[]> {
  const { stdout } = await runZfs("zfs", ["list", "-H", "-r", "-t", "all", "-o", "name", root]);
  return stdout.split("\n").filter(Boolean);
}

describe("storage: zfs pool through aetherd", () => {
  let zfs: ZfsTestPool;
  let daemon: TestDaemon;
  let aether: AetherClient;
  const dir = mkdtempSync(join(tmpdir(), "aetherd-test-"));

  before(async () => {
    zfs = await startZfsPool("aetherzfs");
    const config = join(dir, "aetherd.toml");
    writeFileSync(
      config,
      `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${zfs.dataset}"\ndefault = true\nlabels = { tier = "zfs" }\n\n` +
        `[[pools]]\nname = "files"\ndriver = "dir"\nlocation = "${join(dir, "files")}"\n\n` +
        `[[pools]]\nname = "thin"\ndriver = "lvm-thin"\nlocation = "vg0/thin"\n`,
    );
    daemon = await startDaemon({ dir, args: ["--config", config] });
    aether = await daemon.client();
  });
  after(async () => {
    // The pool and the folder go even when aetherd does not exit 0.
    try {
      if (daemon) assert.equal(await daemon.stop(), 0);
    } finally {
      daemon?.cleanup();
      await zfs?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lists the configured pools: zfs available, lvm-thin unavailable with the reason", async () => {
    const { pools } = await aether.storage.listPools({});
    assert.deepEqual(
      pools.map((p) => p.name),
      ["files", "tank", "thin"],
    );
    const tank = pools.find((p) => p.name === "tank");
    assert.equal(tank?.driver, PoolDriver.ZFS);
    assert.equal(tank?.defaultPool, true);
    assert.equal(tank?.available, true, tank?.unavailableReason);
    assert.ok(Number(tank?.capacityBytes) > 1000 * MiB);
    assert.ok(tank?.formats.includes(VolumeFormat.ZFS_FILE));
    const thin = pools.find((p) => p.name === "thin");
    assert.equal(thin?.driver, PoolDriver.LVM_THIN);
    assert.equal(thin?.available, false);
    assert.match(thin?.unavailableReason ?? "", /device-mapper/);
    assert.deepEqual(
      (await aether.storage.listPools({ filter: "tier=zfs" })).pools.map((p) => p.name),
      ["tank"],
    );
    await rejectsWith(
      aether.storage.createVolume({ name: "lv", pool: "thin", source: { case: "empty", value: { sizeBytes: BigInt(8 * MiB) } } }),
      Code.FailedPrecondition,
      /pool thin is unavailable: .*device-mapper/,
    );
  });

  it("imports an image into a dataset, clones it with zfs clone, snapshots, clones the snapshot and rolls back", async () => {
    const source = join(dir, "base.raw");
    const sha = makeRawDisk(source, 32 * MiB, 0xcd);
    await aether.storage.importImage({ name: "base", source: { source: { case: "localPath", value: source } }, sha256: sha });
    let image;
    for await (const u of aether.storage.watchImage({ image: "base" })) image = u.image;
    assert.equal(image?.state, ImageState.READY, image?.stateReason);
    assert.equal(image?.format, VolumeFormat.ZFS_FILE);

    const { volume } = await aether.storage.createVolume({
      name: "vm-disk",
      source: { case: "image", value: { image: "base", sizeBytes: BigInt(64 * MiB) } },
    });
    assert.equal(volume?.state, VolumeState.READY);
    assert.equal(volume?.format, VolumeFormat.ZFS_FILE);
    assert.equal(volume?.sizeBytes, BigInt(64 * MiB));
    const path = volume?.hostPath ?? "";
    assert.ok(hasPattern(path, "raw", MiB, MiB, 0xcd), "the clone reads the image's data");
    const origin = await runZfs("zfs", ["get", "-H", "-o", "value", "origin", `${zfs.dataset}/volumes/${volume?.id}`]);
    assert.equal(origin.stdout.trim(), `${zfs.dataset}/images/${image?.id}@base`, "the volume is a ZFS clone of the image");

    writePattern(path, "raw", MiB, MiB, 0x01);
    await aether.storage.snapshotVolume({ volume: "vm-disk", name: "before" });
    writePattern(path, "raw", MiB, MiB, 0x02);
    const clone = (await aether.storage.cloneVolume({ volume: "vm-disk", snapshot: "before", name: "copy" })).volume;
    assert.ok(hasPattern(clone?.hostPath ?? "", "raw", MiB, MiB, 0x01));
    await rejectsWith(aether.storage.deleteSnapshot({ volume: "vm-disk", snapshot: "before" }), Code.FailedPrecondition, /copy/);
    await aether.storage.deleteVolume({ volume: "copy" });

    await aether.storage.snapshotVolume({ volume: "vm-disk", name: "after" });
    await rejectsWith(
      aether.storage.rollbackVolume({ volume: "vm-disk", snapshot: "before" }),
      Code.FailedPrecondition,
      /destroy_newer_snapshots/,
    );
    const rolled = await aether.storage.rollbackVolume({ volume: "vm-disk", snapshot: "before", destroyNewerSnapshots: true });
    assert.equal(rolled.deletedSnapshots.length, 1);
    assert.ok(hasPattern(path, "raw", MiB, MiB, 0x01), "rolled back to the snapshot's bytes");

    const grown = (await aether.storage.resizeVolume({ volume: "vm-disk", sizeBytes: BigInt(128 * MiB) })).volume;
    assert.equal(grown?.sizeBytes, BigInt(128 * MiB));

    await rejectsWith(aether.storage.deleteImage({ image: "base" }), Code.FailedPrecondition, /vm-disk/);
    await aether.storage.deleteVolume({ volume: "vm-disk", deleteSnapshots: true });
    await aether.storage.deleteImage({ image: "base" });
    const left = (await datasets(zfs.dataset)).filter((d) => /\/(images|volumes)\/[0-9a-f-]{36}/.test(d));
    assert.deepEqual(left, [], "every dataset and snapshot is gone");
  });

  it("an empty volume is a sparse file alone in its dataset", async () => {
    const { volume } = await aether.storage.createVolume({
      name: "scratch",
      source: { case: "empty", value: { sizeBytes: BigInt(256 * MiB) } },
    });
    assert.equal(volume?.format, VolumeFormat.ZFS_FILE);
    assert.ok(Number(volume?.allocatedBytes) < 4 * MiB, `allocated ${volume?.allocatedBytes}`);
    await aether.storage.deleteVolume({ volume: "scratch" });
  });
});
