// The StoragePool interface: what every storage driver (dir, zfs, lvm-thin) does on the host. The
// registry decides what may happen (names, tenants, references, locks) and calls a driver with
// server-assigned ids only, so a user's name never becomes part of a path, a dataset or an LV name.

/** How a volume's or image's data is stored, as the drivers name it. */
export type DiskFormat = "qcow2" | "raw" | "zvol" | "zfs-file" | "lvm-thin";

/** The format a hypervisor opens a disk with. */
export function hypervisorFormat(format: DiskFormat): "qcow2" | "raw" {
  return format === "qcow2" ? "qcow2" : "raw";
}

export interface PoolStatus {
  available: boolean;
  /** Why the pool cannot be used and what to do; "" when available. */
  reason: string;
  capacityBytes: number;
  /** Space written in the pool (the driver's own measure), in bytes. */
  usedBytes: number;
}

export type PoolCapacity = Omit<PoolStatus, "usedBytes">;

/** A disk the driver made: where a hypervisor opens it, how it is stored, the size the guest sees. */
export interface StoredDisk {
  hostPath: string;
  format: DiskFormat;
  sizeBytes: number;
}

/** A snapshot in its volume's history, oldest first, as the registry knows them. */
export interface SnapshotRef {
  id: string;
}

export interface StoragePool {
  readonly name: string;
  readonly driver: "dir" | "zfs" | "lvm-thin";
  /** A directory (dir), a dataset (zfs), "vg/thinpool" (lvm-thin). */
  readonly location: string;
  /** Sizes are rounded up to a multiple of this. */
  readonly granularityBytes: number;

  /** Whether the pool can be used now, with capacity figures; never throws. */
  probe(): Promise<PoolStatus>;
  /**
   * Whether the pool can be used and how much it can ever hold, for checking a requested size; never
   * throws. Cheaper than probe: it leaves out what is used (a dir pool would walk every file), and a
   * driver may answer from a check it made moments ago (a pool's size does not change per request).
   */
  capacity(): Promise<PoolCapacity>;
  /** Formats the pool can hold, the default first (known after probe). */
  formats(): DiskFormat[];

  createVolume(volumeId: string, sizeBytes: number, format: DiskFormat): Promise<StoredDisk>;
  /** A thin clone of a READY image; sizeBytes is at least the image's size. */
  cloneImage(image: StoredDisk & { id: string }, volumeId: string, sizeBytes: number): Promise<StoredDisk>;
  /** Freezes the volume's current contents as a snapshot; the volume's host path does not change. */
  snapshot(volume: StoredDisk & { id: string }, snapshotId: string): Promise<void>;
  /** A thin clone of a snapshot of a volume. */
  cloneSnapshot(volume: StoredDisk & { id: string }, snapshotId: string, newVolumeId: string, sizeBytes: number): Promise<StoredDisk>;
  /**
   * Returns the volume to a snapshot; `newer` are the snapshots taken after it (oldest first), which
   * the driver deletes. The registry has checked that none of them has clones.
   */
  rollback(volume: StoredDisk & { id: string }, snapshotId: string, newer: SnapshotRef[]): Promise<void>;
  /**
   * Deletes a snapshot without changing what the volume or the newer snapshots contain. `newer` is
   * the next newer snapshot, or undefined when the snapshot is the newest.
   */
  deleteSnapshot(
    volume: StoredDisk & { id: string },
    snapshotId: string,
    newer: SnapshotRef | undefined,
    older: SnapshotRef | undefined,
  ): Promise<void>;
  /** Grows a volume (the registry has refused shrinking). */
  resize(volume: StoredDisk & { id: string }, sizeBytes: number): Promise<void>;
  /** Deletes a volume and all its snapshots; a volume already gone is not an error. */
  deleteVolume(volume: StoredDisk & { id: string }, snapshots: SnapshotRef[]): Promise<void>;

  /** A file inside the pool where an import writes the source's bytes. */
  stagingPath(imageId: string): Promise<string>;
  /** Turns a verified staged file of the given format into a READY image; removes the staged file. */
  finishImport(imageId: string, stagedPath: string, sourceFormat: "qcow2" | "raw"): Promise<StoredDisk>;
  /** Deletes an image (or a half-imported one); an image already gone is not an error. */
  deleteImage(imageId: string): Promise<void>;

  /** Space the volume's or image's own data takes, in bytes; 0 when unknown. */
  allocatedBytes(disk: StoredDisk): Promise<number>;

  /**
   * Host paths of the volumes and images the pool holds, for reconciling with the records (a
   * crash between making a clone and recording it leaves one unrecorded). Optional: drivers that
   * cannot list cheaply leave it out.
   */
  storedPaths?(): Promise<string[]>;
}

export class PoolUnavailableError extends Error {}
