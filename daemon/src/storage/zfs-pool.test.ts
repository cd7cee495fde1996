// The ZFS driver against a real pool on zfs-fuse: an image's whole life and its volumes' (clones,
// snapshots, rollback, resize, deletion), checked through the files a hypervisor would open and
// through `zfs list`, plus what probe says when the dataset is missing or ZFS is not answering.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startZfsPool, type ZfsTestPool } from "../../../test/helpers/zfs.js";
import { runZfs } from "../host/zfs-command.js";
import { PoolUnavailableError, type StoredDisk } from "./pool.js";
import { ZfsPool } from "./zfs-pool.js";

const MiB = 1024 * 1024;

async function writeAt(path: string, offset: number, text: string): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.write(Buffer.from(text), 0, text.length, offset);
  } finally {
    await handle.close();
  }
}

async function readAt(path: string, offset: number, length: number): Promise<string> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, offset);
    return buffer.toString();
  } finally {
    await handle.close();
  }
}

/** Every dataset and snapshot below `root`, by name. */
async function zfsNames(root: string): Promise<string[]> {
  const { stdout } = await runZfs("zfs", ["list", "-H", "-r", "-t", "all", "-o", "name", root]);
  return stdout.split("\n").filter((l) => l !== "");
}

describe("ZFS pool driver (zfs-fuse)", () => {
  let zfs: ZfsTestPool;
  let pool: ZfsPool;

  before(async () => {
    zfs = await startZfsPool("aetherzfstest");
    pool = new ZfsPool("tank", zfs.dataset);
  });

  after(async () => {
    await zfs?.destroy();
  });

  it("probes capacity, and names zvols only where ZFS on Linux is loaded", async () => {
    const status = await pool.probe();
    assert.equal(status.reason, "");
    assert.equal(status.available, true);
    // A 2 GiB file vdev: capacity is what the dataset can hold, a little under that.
    assert.ok(status.capacityBytes > 1.5 * 1024 * MiB && status.capacityBytes <= 2048 * MiB, `capacity ${status.capacityBytes}`);
    assert.ok(status.usedBytes > 0 && status.usedBytes < status.capacityBytes);
    assert.deepEqual(pool.formats(), existsSync("/sys/module/zfs") ? ["zvol", "zfs-file"] : ["zfs-file"]);
    assert.equal(pool.granularityBytes, MiB);
  });

  it("says how to create a missing dataset, and refuses work on it", async () => {
    const missing = new ZfsPool("gone", `${zfs.pool}/missing`);
    const status = await missing.probe();
    assert.equal(status.available, false);
    assert.equal(status.reason, `ZFS dataset ${zfs.pool}/missing does not exist: create it with "zfs create ${zfs.pool}/missing"`);
    await assert.rejects(
      missing.createVolume(randomUUID(), MiB, "zfs-file"),
      (e: unknown) => e instanceof PoolUnavailableError && e.message === status.reason,
    );
    await assert.rejects(missing.stagingPath(randomUUID()), PoolUnavailableError);
  });

  it("says to start zfs-fuse when the zfs daemon is not answering", async () => {
    // Stopping the real daemon would pull the pool from under the other tests; a zfs that prints
    // exactly what zfs-fuse's client prints with no daemon behind its socket shows the same thing.
    const dir = mkdtempSync(join(tmpdir(), "aether-zfs-fake-"));
    const fake = join(dir, "zfs");
    writeFileSync(
      fake,
      "#!/bin/sh\necho 'connect: No such file or directory' >&2\necho 'Please make sure that the zfs-fuse daemon is running.' >&2\necho 'internal error: failed to initialize ZFS library' >&2\nexit 1\n",
    );
    chmodSync(fake, 0o755);
    const status = await new ZfsPool("away", zfs.dataset, { zfsCommand: fake }).probe();
    assert.equal(status.available, false);
    if (!existsSync("/sys/module/zfs")) {
      assert.equal(
        status.reason,
        'ZFS is not answering (connect: No such file or directory): start zfs-fuse (run "zfs-fuse" as root), then "zfs mount -a"',
      );
    }
    const none = await new ZfsPool("none", zfs.dataset, { zfsCommand: join(dir, "no-such-zfs") }).probe();
    assert.equal(none.available, false);
    assert.match(none.reason, /is not installed: install ZFS/);
  });

  it("imports, clones thinly, snapshots, clones a snapshot, rolls back, resizes and deletes", async () => {
    const imageId = randomUUID();
    const imageBytes = "AETHER-IMAGE-v1";

    // Import: the source's bytes land in the pool's staging folder, then become a READY image.
    const staged = await pool.stagingPath(imageId);
    assert.ok(staged.startsWith(`${zfs.mountpoint}/aether/`), staged);
    const source = Buffer.alloc(8 * MiB);
    source.write(imageBytes, 0);
    writeFileSync(staged, source);
    const image = { id: imageId, ...(await pool.finishImport(imageId, staged, "raw")) };
    assert.equal(image.format, "zfs-file");
    assert.equal(image.sizeBytes, 8 * MiB);
    assert.equal(image.hostPath, `${zfs.mountpoint}/aether/images/${imageId}/disk.raw`);
    assert.equal(existsSync(staged), false, "the staged file is removed");
    assert.equal(await readAt(image.hostPath, 0, imageBytes.length), imageBytes);
    assert.ok((await zfsNames(zfs.dataset)).includes(`${zfs.dataset}/images/${imageId}@base`));

    // Clone: same bytes, larger size, next to no space of its own.
    const volumeId = randomUUID();
    let started = performance.now();
    const volume = { id: volumeId, ...(await pool.cloneImage(image, volumeId, 16 * MiB)) };
    console.log(`cloneImage (zfs clone + mount wait + grow) under zfs-fuse: ${(performance.now() - started).toFixed(1)} ms`);
    assert.deepEqual({ format: volume.format, sizeBytes: volume.sizeBytes }, { format: "zfs-file", sizeBytes: 16 * MiB });
    assert.equal(volume.hostPath, `${zfs.mountpoint}/aether/volumes/${volumeId}/disk.raw`);
    assert.equal((await stat(volume.hostPath)).size, 16 * MiB);
    assert.equal(await readAt(volume.hostPath, 0, imageBytes.length), imageBytes);
    const cloneUsed = await pool.allocatedBytes(volume);
    assert.ok(cloneUsed < 256 * 1024, `a fresh clone uses ${cloneUsed} bytes`);

    // Snapshot, write more, clone the snapshot: the clone sees the snapshot's bytes.
    await writeAt(volume.hostPath, MiB, "FIRST-WRITE");
    const snap1 = randomUUID();
    await pool.snapshot(volume, snap1);
    await writeAt(volume.hostPath, MiB, "LATER-WRITE");
    const snap2 = randomUUID();
    await pool.snapshot(volume, snap2);
    await writeAt(volume.hostPath, MiB, "UNSAVED-WRITE");

    const copyId = randomUUID();
    started = performance.now();
    const copy = { id: copyId, ...(await pool.cloneSnapshot(volume, snap1, copyId, 32 * MiB)) };
    console.log(`cloneSnapshot under zfs-fuse: ${(performance.now() - started).toFixed(1)} ms`);
    assert.equal(copy.sizeBytes, 32 * MiB);
    assert.equal((await stat(copy.hostPath)).size, 32 * MiB);
    assert.equal(await readAt(copy.hostPath, MiB, 11), "FIRST-WRITE");
    assert.equal(await readAt(copy.hostPath, 0, imageBytes.length), imageBytes);
    assert.equal(await readAt(volume.hostPath, MiB, 13), "UNSAVED-WRITE", "the volume itself is untouched");

    // Rollback: the snapshot's bytes are back and the newer snapshot is gone.
    started = performance.now();
    await pool.rollback(volume, snap1, [{ id: snap2 }]);
    console.log(`rollback under zfs-fuse: ${(performance.now() - started).toFixed(1)} ms`);
    assert.equal(await readAt(volume.hostPath, MiB, 13), "FIRST-WRITE\0\0");
    let names = await zfsNames(`${zfs.dataset}/volumes/${volumeId}`);
    assert.ok(names.includes(`${zfs.dataset}/volumes/${volumeId}@${snap1}`));
    assert.ok(!names.includes(`${zfs.dataset}/volumes/${volumeId}@${snap2}`), "rollback removed the newer snapshot");

    // deleteSnapshot: the snapshot goes, the volume's data stays; deleting it again is fine.
    const snap3 = randomUUID();
    await pool.snapshot(volume, snap3);
    await pool.deleteSnapshot(volume, snap3, undefined, { id: snap1 });
    await pool.deleteSnapshot(volume, snap3, undefined, { id: snap1 });
    names = await zfsNames(`${zfs.dataset}/volumes/${volumeId}`);
    assert.ok(!names.includes(`${zfs.dataset}/volumes/${volumeId}@${snap3}`));
    assert.equal(await readAt(volume.hostPath, MiB, 11), "FIRST-WRITE");

    // Resize grows the file and keeps the data; shrinking is refused.
    await pool.resize(volume, 64 * MiB);
    assert.equal((await stat(volume.hostPath)).size, 64 * MiB);
    assert.equal(await readAt(volume.hostPath, 0, imageBytes.length), imageBytes);
    await assert.rejects(pool.resize(volume, 8 * MiB), /does not shrink/);

    // A new empty volume, its size rounded up to the granularity; no zvols on zfs-fuse.
    const blankId = randomUUID();
    const blank = { id: blankId, ...(await pool.createVolume(blankId, 10 * MiB + 1, "zfs-file")) };
    assert.deepEqual({ format: blank.format, sizeBytes: blank.sizeBytes }, { format: "zfs-file", sizeBytes: 11 * MiB });
    assert.equal((await stat(blank.hostPath)).size, 11 * MiB);
    assert.ok((await stat(blank.hostPath)).blocks * 512 < MiB, "a new volume is sparse");
    if (!existsSync("/sys/module/zfs")) {
      await assert.rejects(pool.createVolume(randomUUID(), MiB, "zvol"), /cannot hold zvol volumes/);
    }

    // The image cannot go while volumes are cloned from it.
    await assert.rejects(pool.deleteImage(imageId), /dependent clones/);

    // Deletion: volumes (the snapshot's clone first), then the image; again is not an error.
    started = performance.now();
    await pool.deleteVolume(copy, []);
    console.log(`deleteVolume under zfs-fuse: ${(performance.now() - started).toFixed(1)} ms`);
    await pool.deleteVolume(volume, [{ id: snap1 }]);
    await pool.deleteVolume(blank, []);
    await pool.deleteVolume(volume, []);
    await pool.deleteImage(imageId);
    await pool.deleteImage(imageId);
    assert.deepEqual(await zfsNames(zfs.dataset), [zfs.dataset, `${zfs.dataset}/images`, `${zfs.dataset}/volumes`]);
    assert.equal(await pool.allocatedBytes(volume), 0, "a deleted volume takes nothing");
  });

  it("deleteImage removes a half-finished import's staged file", async () => {
    const imageId = randomUUID();
    const staged = await pool.stagingPath(imageId);
    writeFileSync(staged, "partial");
    await pool.deleteImage(imageId);
    assert.equal(existsSync(staged), false);
  });

  it("an image's dataset holds its data; allocatedBytes reports it", async () => {
    const imageId = randomUUID();
    const staged = await pool.stagingPath(imageId);
    // Incompressible bytes, so `used` reflects them whatever compression the pool has.
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    writeFileSync(staged, data);
    const image: StoredDisk = await pool.finishImport(imageId, staged, "raw");
    assert.ok(readFileSync(image.hostPath).equals(data));
    // zfs accounts written blocks when the transaction group syncs; a snapshot (taken at import)
    // syncs it, so `used` is already there.
    const used = await pool.allocatedBytes(image);
    assert.ok(used >= 4 * MiB, `image uses ${used} bytes`);
    await pool.deleteImage(imageId);
  });

  it("times a bare zfs clone under zfs-fuse", async () => {
    // Not an assertion: a number to compare with ZoL and with qcow2 backing files.
    const imageId = randomUUID();
    const staged = await pool.stagingPath(imageId);
    writeFileSync(staged, Buffer.alloc(MiB));
    await pool.finishImport(imageId, staged, "raw");
    const times: number[] = [];
    const clones: string[] = [];
    for (let i = 0; i < 5; i++) {
      const target = `${zfs.dataset}/volumes/${randomUUID()}`;
      const started = performance.now();
      await runZfs("zfs", ["clone", `${zfs.dataset}/images/${imageId}@base`, target]);
      times.push(performance.now() - started);
      clones.push(target);
    }
    console.log(`bare zfs clone under zfs-fuse: ${times.map((t) => t.toFixed(1)).join(", ")} ms`);
    for (const target of clones)
      await pool.deleteVolume({ id: target.split("/").at(-1) ?? "", hostPath: "", format: "zfs-file", sizeBytes: 0 }, []);
    await pool.deleteImage(imageId);
    assert.equal((await readFile("/proc/self/mounts", "utf8")).includes(`${zfs.dataset}/volumes/`), false, "no clone stays mounted");
  });
});
