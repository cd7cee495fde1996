// The dir pool: qcow2 (and raw) files in one directory, cloned and snapshotted with qemu-img.
//
// Layout under the pool's root (every file name is a server-assigned id, never a user's name):
//   images/<id>.<qcow2|raw>           read-only bases, exactly as imported
//   volumes/<id>.<qcow2|raw>          the active layer a hypervisor opens (its path never changes)
//   snapshots/<volume>/<id>.qcow2     frozen layers of a volume, oldest at the bottom of the chain
//   .staging/<id>.part                imports in progress
// A thin clone is a qcow2 overlay whose backing file is an image or a snapshot: created in
// milliseconds, taking a few hundred KiB until written. A snapshot is external: the volume's current
// file becomes the snapshot (a hard link, then the volume's path is renamed onto a fresh overlay),
// so clones of a snapshot and the volume itself share every block written before it.
import { constants } from "node:fs";
import { access, link, mkdir, readdir, rename, rm, stat, statfs, truncate } from "node:fs/promises";
import { join } from "node:path";
import { qemuImg, qemuImgInfo } from "./qemu-img.js";
import {
  PoolUnavailableError,
  type DiskFormat,
  type PoolCapacity,
  type PoolStatus,
  type SnapshotRef,
  type StoragePool,
  type StoredDisk,
} from "./pool.js";

type Disk = StoredDisk & { id: string };

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export class DirPool implements StoragePool {
  readonly driver = "dir" as const;
  readonly granularityBytes = 512;

  constructor(
    readonly name: string,
    readonly location: string,
  ) {}

  formats(): DiskFormat[] {
    return ["qcow2", "raw"];
  }

  /** Creates the pool's folders; only for a pool that has never held anything (see the registry). */
  async initialize(): Promise<void> {
    for (const sub of ["images", "volumes", "snapshots", ".staging"])
      await mkdir(join(this.location, sub), { recursive: true, mode: 0o700 });
  }

  /** The reason the pool's folders cannot be used, or "" when they can. */
  private async unusable(): Promise<string> {
    try {
      await access(join(this.location, "volumes"), constants.W_OK);
      await access(join(this.location, "images"), constants.W_OK);
      return "";
    } catch {
      return `the pool's directory ${this.location} (or its images/ and volumes/ folders) is missing or not writable: was it deleted or unmounted? Restore it, or fix the pool in aetherd's configuration; volumes in it are unusable until then.`;
    }
  }

  async probe(): Promise<PoolStatus> {
    const reason = await this.unusable();
    if (reason !== "") return { available: false, reason, capacityBytes: 0, usedBytes: 0 };
    const fs = await statfs(this.location);
    return { available: true, reason: "", capacityBytes: fs.blocks * fs.bsize, usedBytes: await this.writtenBytes() };
  }

  async capacity(): Promise<PoolCapacity> {
    const reason = await this.unusable();
    if (reason !== "") return { available: false, reason, capacityBytes: 0 };
    const fs = await statfs(this.location);
    return { available: true, reason: "", capacityBytes: fs.blocks * fs.bsize };
  }

  /** What the pool's own files take on disk (like du), not the whole file system. */
  private async writtenBytes(): Promise<number> {
    let total = 0;
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.isFile()) total += (await stat(path).catch(() => ({ blocks: 0 }))).blocks * 512;
      }
    };
    await walk(this.location);
    return total;
  }

  /** Operations check only that the folders are there (two access calls), not the capacity. */
  private async need(): Promise<void> {
    const reason = await this.unusable();
    if (reason !== "") throw new PoolUnavailableError(reason);
  }

  private volumePath(id: string, format: DiskFormat): string {
    return join(this.location, "volumes", `${id}.${format}`);
  }

  private snapshotPath(volumeId: string, snapshotId: string): string {
    return join(this.location, "snapshots", volumeId, `${snapshotId}.qcow2`);
  }

  async createVolume(volumeId: string, sizeBytes: number, format: DiskFormat): Promise<StoredDisk> {
    await this.need();
    if (format !== "qcow2" && format !== "raw") throw new Error(`a dir pool stores qcow2 or raw files, not ${format}`);
    const path = this.volumePath(volumeId, format);
    await qemuImg(["create", "-q", "-f", format, path, String(sizeBytes)]);
    return { hostPath: path, format, sizeBytes };
  }

  private async overlay(backing: string, backingFormat: string, path: string, sizeBytes: number | undefined): Promise<void> {
    const args = ["create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path];
    if (sizeBytes !== undefined) args.push(String(sizeBytes));
    await qemuImg(args);
  }

  async cloneImage(image: Disk, volumeId: string, sizeBytes: number): Promise<StoredDisk> {
    await this.need();
    const path = this.volumePath(volumeId, "qcow2");
    await this.overlay(image.hostPath, image.format, path, sizeBytes);
    return { hostPath: path, format: "qcow2", sizeBytes };
  }

  async snapshot(volume: Disk, snapshotId: string): Promise<void> {
    await this.need();
    if (volume.format !== "qcow2") throw new Error("raw volumes in a dir pool have no snapshots; create the volume as qcow2");
    const frozen = this.snapshotPath(volume.id, snapshotId);
    await mkdir(join(this.location, "snapshots", volume.id), { recursive: true, mode: 0o700 });
    // Link first, then swap the volume's path onto a new overlay in one rename: at every instant the
    // volume's path names a complete image, so a crash leaves either the old or the new state.
    await link(volume.hostPath, frozen);
    const next = `${volume.hostPath}.next`;
    try {
      await this.overlay(frozen, "qcow2", next, volume.sizeBytes);
      await rename(next, volume.hostPath);
    } catch (err) {
      await rm(next, { force: true });
      await rm(frozen, { force: true });
      throw err;
    }
  }

  async cloneSnapshot(volume: Disk, snapshotId: string, newVolumeId: string, sizeBytes: number): Promise<StoredDisk> {
    await this.need();
    const path = this.volumePath(newVolumeId, "qcow2");
    await this.overlay(this.snapshotPath(volume.id, snapshotId), "qcow2", path, sizeBytes);
    return { hostPath: path, format: "qcow2", sizeBytes };
  }

  async rollback(volume: Disk, snapshotId: string, newer: SnapshotRef[]): Promise<void> {
    await this.need();
    // A fresh empty overlay on the snapshot is the snapshot's contents; renaming it over the volume
    // discards everything written since in one step.
    const next = `${volume.hostPath}.next`;
    await this.overlay(this.snapshotPath(volume.id, snapshotId), "qcow2", next, undefined);
    await rename(next, volume.hostPath);
    for (const s of newer) await rm(this.snapshotPath(volume.id, s.id), { force: true });
  }

  async deleteSnapshot(volume: Disk, snapshotId: string, newer: SnapshotRef | undefined): Promise<void> {
    await this.need();
    const frozen = this.snapshotPath(volume.id, snapshotId);
    // A snapshot a crash interrupted may have no file yet, or a new overlay not yet renamed into place.
    if (!newer) await rm(`${volume.hostPath}.next`, { force: true });
    if (!(await exists(frozen))) return;
    // The layer above the snapshot (the next snapshot, or the volume itself) is rebased onto the
    // snapshot's own parent in qemu-img's safe mode, which copies into it every cluster that
    // differs: its contents stay the same and the snapshot's file is then unreferenced.
    const child = newer ? this.snapshotPath(volume.id, newer.id) : volume.hostPath;
    const info = await qemuImgInfo(frozen, "qcow2");
    const args = ["rebase", "-q", "-f", "qcow2", "-b", info.backingFile];
    if (info.backingFile !== "") args.push("-F", info.backingFormat || "qcow2");
    await qemuImg([...args, child]);
    await rm(frozen, { force: true });
  }

  async resize(volume: Disk, sizeBytes: number): Promise<void> {
    await this.need();
    if (volume.format === "raw") await truncate(volume.hostPath, sizeBytes);
    else await qemuImg(["resize", "-q", "-f", "qcow2", volume.hostPath, String(sizeBytes)]);
  }

  async deleteVolume(volume: Disk): Promise<void> {
    // By id as well as by path: a volume whose create was interrupted has no recorded path yet.
    for (const path of new Set([volume.hostPath, this.volumePath(volume.id, "qcow2"), this.volumePath(volume.id, "raw")])) {
      if (path === "") continue;
      await rm(path, { force: true });
      await rm(`${path}.next`, { force: true });
    }
    await rm(join(this.location, "snapshots", volume.id), { recursive: true, force: true });
  }

  async stagingPath(imageId: string): Promise<string> {
    await this.need();
    await mkdir(join(this.location, ".staging"), { recursive: true, mode: 0o700 });
    return join(this.location, ".staging", `${imageId}.part`);
  }

  async finishImport(imageId: string, stagedPath: string, sourceFormat: "qcow2" | "raw"): Promise<StoredDisk> {
    await this.need();
    // Kept as imported: a raw or qcow2 file can back a qcow2 overlay directly, so no conversion.
    const path = join(this.location, "images", `${imageId}.${sourceFormat}`);
    await rename(stagedPath, path);
    const info = await qemuImgInfo(path, sourceFormat);
    return { hostPath: path, format: sourceFormat, sizeBytes: info.virtualSize };
  }

  async deleteImage(imageId: string): Promise<void> {
    for (const format of ["qcow2", "raw"]) await rm(join(this.location, "images", `${imageId}.${format}`), { force: true });
    await rm(join(this.location, ".staging", `${imageId}.part`), { force: true });
  }

  async storedPaths(): Promise<string[]> {
    const out: string[] = [];
    for (const sub of ["volumes", "images"]) {
      for (const name of await readdir(join(this.location, sub)).catch(() => [])) {
        if (/^[0-9a-f-]{36}\.(qcow2|raw)$/.test(name)) out.push(join(this.location, sub, name));
      }
    }
    return out;
  }

  async allocatedBytes(disk: StoredDisk): Promise<number> {
    try {
      return (await stat(disk.hostPath)).blocks * 512;
    } catch {
      return 0;
    }
  }
}
