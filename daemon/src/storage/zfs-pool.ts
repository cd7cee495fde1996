// The ZFS storage driver. Every image and every volume is a dataset of its own under the pool's
// dataset (`<ds>/images/<id>`, `<ds>/volumes/<id>`), so clones, snapshots and rollbacks are ZFS's
// own (instant and thin) rather than qcow2 backing chains the driver would have to manage. A disk
// is either a raw file alone in its dataset ("zfs-file", works everywhere, including zfs-fuse) or a
// zvol ("zvol", only where ZFS on Linux provides block devices).
//
// It is past 400 lines because it implements the whole StoragePool contract (volumes, images,
// snapshots, clones, resize, usage) plus the datasets replication receives into, over one set of
// zfs command helpers and zfs-fuse's quirks, which the methods share.
import { existsSync } from "node:fs";
import { mkdir, open, readFile, rm, stat, truncate } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { HostCommandError, runHost, which } from "../host/command.js";
import { runZfs, runZfsInOneTurn } from "../host/zfs-command.js";
import { RecentUsage } from "./zfs-recent-usage.js";
import {
  PoolUnavailableError,
  type DiskFormat,
  type PoolCapacity,
  type PoolStatus,
  type SnapshotRef,
  type StoragePool,
  type StoredDisk,
} from "./pool.js";

const MiB = 1024 * 1024;
/** The one file of a "zfs-file" dataset; alone in its dataset so the dataset's `used` is the disk's. */
const DISK_FILE = "disk.raw";
/** Where imports stage their bytes: inside the pool, so a large download cannot fill another disk. */
const STAGING_DIR = ".staging";
const ZFS_TIMEOUT_MS = 30_000;
// Short, because a probe answers the node's status and a hung zfs daemon must not hang that.
const PROBE_TIMEOUT_MS = 10_000;
// Converting a large image is real work; the bound only catches a qemu-img that hangs for good.
const CONVERT_TIMEOUT_MS = 2 * 60 * 60_000;
// zfs-fuse mounts a new dataset (and ZoL's udev links a new zvol) shortly after the command returns.
const APPEAR_TIMEOUT_MS = 15_000;
/** How long one check of the pool's dataset vouches for it (see requireRoot). */
const ROOT_CHECK_TTL_MS = 2_000;
// zfs-fuse answers the first `zfs destroy` of a mounted dataset with "dataset is busy" while its own
// unmount settles; a second attempt a moment later succeeds.
const BUSY_RETRY_MS = 10_000;

/** ZFS on Linux is loaded (zvols exist); without it, this is zfs-fuse, which has no zvols. */
const ZOL_MODULE = "/sys/module/zfs";

// The characters ZFS allows in a dataset or snapshot component. Ids are server-assigned UUIDs; the
// check keeps a bug elsewhere from ever turning an id into another dataset's name.
const COMPONENT = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$/;
const DATASET = /^[A-Za-z0-9][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)*$/;

type Kind = "images" | "volumes";

export interface ZfsPoolOptions {
  /** The zfs command, on PATH or absolute. */
  zfsCommand?: string;
  /** The qemu-img command, on PATH or absolute. */
  qemuImgCommand?: string;
}

interface RootDataset {
  mountpoint: string;
  used: number;
  available: number;
}

export class ZfsPool implements StoragePool {
  readonly driver = "zfs" as const;
  readonly granularityBytes = MiB;
  private readonly zfsCommand: string;
  private readonly qemuImgCommand: string;
  // Whether the kernel has ZFS does not change while aetherd runs.
  private zvolCapable: boolean | undefined;
  private rootChecked: { root: RootDataset; at: number } | undefined;
  /** The `used` of a clone read with the clone itself, for the answer that follows. */
  private readonly recentUsage = new RecentUsage();
  private readonly parentsMade = new Set<Kind>();

  constructor(
    readonly name: string,
    /** A dataset, such as "tank/aether". */
    readonly location: string,
    options: ZfsPoolOptions = {},
  ) {
    if (!DATASET.test(location)) {
      throw new Error(`ZFS pool ${name}: "${location}" is not a dataset name (expected something like "tank/aether")`);
    }
    this.zfsCommand = options.zfsCommand ?? "zfs";
    this.qemuImgCommand = options.qemuImgCommand ?? "qemu-img";
  }

  async probe(): Promise<PoolStatus> {
    try {
      const root = await this.checkRoot();
      return { available: true, reason: "", capacityBytes: root.used + root.available, usedBytes: root.used };
    } catch (error) {
      const reason =
        error instanceof PoolUnavailableError ? error.message : `ZFS dataset ${this.location} could not be probed: ${message(error)}`;
      return { available: false, reason, capacityBytes: 0, usedBytes: 0 };
    }
  }

  /** From the pool's dataset as checked at most ROOT_CHECK_TTL_MS ago (see requireRoot). */
  async capacity(): Promise<PoolCapacity> {
    try {
      const root = await this.requireRoot();
      return { available: true, reason: "", capacityBytes: root.used + root.available };
    } catch {
      const { available, reason } = await this.probe();
      return { available, reason, capacityBytes: 0 };
    }
  }

  formats(): DiskFormat[] {
    this.zvolCapable ??= existsSync(ZOL_MODULE);
    return this.zvolCapable ? ["zvol", "zfs-file"] : ["zfs-file"];
  }

  async createVolume(volumeId: string, sizeBytes: number, format: DiskFormat): Promise<StoredDisk> {
    await this.requireRoot();
    if (!this.formats().includes(format)) {
      throw new Error(`ZFS pool ${this.name} cannot hold ${format} volumes; it holds ${this.formats().join(", ")}`);
    }
    const size = this.roundUp(sizeBytes);
    await this.ensureParent("volumes");
    const dataset = this.dataset("volumes", volumeId);
    if (format === "zvol") {
      // Sparse (-s): like the files, a new zvol takes no space until the guest writes.
      await this.zfs(["create", "-s", "-V", String(size), dataset]);
      return this.cleanupOnFailure(dataset, async () => ({ hostPath: await this.zvolDevice(dataset), format, sizeBytes: size }));
    }
    await this.zfs(["create", dataset]);
    return this.cleanupOnFailure(dataset, async () => {
      const file = await this.mountedFile(dataset, false);
      // "wx": the dataset is new, so a file already there would mean the mount check lied; never clobber.
      const handle = await open(file, "wx");
      try {
        await handle.truncate(size);
      } finally {
        await handle.close();
      }
      return { hostPath: file, format: "zfs-file", sizeBytes: size };
    });
  }

  async cloneImage(image: StoredDisk & { id: string }, volumeId: string, sizeBytes: number): Promise<StoredDisk> {
    await this.requireRoot();
    await this.ensureParent("volumes");
    return this.cloneFrom(`${this.dataset("images", image.id)}@base`, image.format, this.dataset("volumes", volumeId), sizeBytes);
  }

  async snapshot(volume: StoredDisk & { id: string }, snapshotId: string): Promise<void> {
    await this.requireRoot();
    await this.zfs(["snapshot", this.snapshotName(volume.id, snapshotId)]);
  }

  async cloneSnapshot(
    volume: StoredDisk & { id: string },
    snapshotId: string,
    newVolumeId: string,
    sizeBytes: number,
  ): Promise<StoredDisk> {
    await this.requireRoot();
    return this.cloneFrom(this.snapshotName(volume.id, snapshotId), volume.format, this.dataset("volumes", newVolumeId), sizeBytes);
  }

  async rollback(volume: StoredDisk & { id: string }, snapshotId: string, _newer: SnapshotRef[]): Promise<void> {
    await this.requireRoot();
    // -r destroys the snapshots newer than the target, which is exactly `newer` (the registry has
    // checked they have no clones; if one had, ZFS refuses and nothing changes).
    await this.zfs(["rollback", "-r", this.snapshotName(volume.id, snapshotId)]);
    if (volume.format !== "zvol") {
      // A hypervisor opens the host path next; make sure the rolled-back file is there to open.
      await this.mountedFile(this.dataset("volumes", volume.id), true);
    }
  }

  async deleteSnapshot(
    volume: StoredDisk & { id: string },
    snapshotId: string,
    _newer: SnapshotRef | undefined,
    _older: SnapshotRef | undefined,
  ): Promise<void> {
    await this.requireRoot();
    // ZFS keeps the blocks a newer snapshot or the volume still needs by itself; nothing to merge.
    try {
      await this.zfs(["destroy", this.snapshotName(volume.id, snapshotId)]);
    } catch (error) {
      // A retry after a crash finds it gone already: what was asked for is true.
      if (!isMissing(error)) throw error;
    }
  }

  async resize(volume: StoredDisk & { id: string }, sizeBytes: number): Promise<void> {
    await this.requireRoot();
    const dataset = this.dataset("volumes", volume.id);
    const size = this.roundUp(sizeBytes);
    if (volume.format === "zvol") {
      const current = Number(await this.property(dataset, "volsize"));
      if (size < current) throw new Error(`volume ${volume.id} is ${current} bytes; ZFS pool ${this.name} does not shrink volumes`);
      if (size > current) await this.zfs(["set", `volsize=${size}`, dataset]);
      return;
    }
    const file = await this.mountedFile(dataset, true);
    const current = (await stat(file)).size;
    // Truncating to a smaller size would cut the guest's data off; the registry refuses it, and so do we.
    if (size < current) throw new Error(`volume ${volume.id} is ${current} bytes; ZFS pool ${this.name} does not shrink volumes`);
    if (size > current) await truncate(file, size);
  }

  async deleteVolume(volume: StoredDisk & { id: string }, _snapshots: SnapshotRef[]): Promise<void> {
    await this.requireRoot();
    // -r takes the volume's snapshots with it.
    await this.destroyDataset(this.dataset("volumes", volume.id));
  }

  async stagingPath(imageId: string): Promise<string> {
    const root = await this.requireRoot();
    const dir = join(root.mountpoint, STAGING_DIR);
    await mkdir(dir, { recursive: true });
    return join(dir, `${checkId(imageId)}.part`);
  }

  async finishImport(imageId: string, stagedPath: string, sourceFormat: "qcow2" | "raw"): Promise<StoredDisk> {
    await this.requireRoot();
    await this.ensureParent("images");
    const dataset = this.dataset("images", imageId);
    await this.zfs(["create", dataset]);
    return this.cleanupOnFailure(dataset, async () => {
      const file = await this.mountedFile(dataset, false);
      // Raw output so every clone is a plain file a hypervisor opens directly; qemu-img skips zero
      // blocks, so the image is as sparse as its source.
      await runHost(this.qemuImgCommand, ["convert", "-f", sourceFormat, "-O", "raw", stagedPath, file], { timeoutMs: CONVERT_TIMEOUT_MS });
      // Clones come from this snapshot; it is taken before the staged file goes, so a failure here
      // leaves the source for a retry.
      await this.zfs(["snapshot", `${dataset}@base`]);
      const sizeBytes = (await stat(file)).size;
      await rm(stagedPath, { force: true });
      return { hostPath: file, format: "zfs-file", sizeBytes };
    });
  }

  async deleteImage(imageId: string): Promise<void> {
    const root = await this.requireRoot();
    // ZFS refuses while volumes are still cloned from the image ("has dependent clones"), which is
    // the answer: their blocks are the image's.
    await this.destroyDataset(this.dataset("images", imageId));
    // A half-finished import leaves only its staged file.
    await rm(join(root.mountpoint, STAGING_DIR, `${checkId(imageId)}.part`), { force: true });
  }

  async allocatedBytes(disk: StoredDisk): Promise<number> {
    const dataset = this.datasetOf(disk);
    if (dataset === undefined) return 0;
    const recent = this.recentUsage.take(dataset);
    if (recent !== undefined) return recent;
    try {
      return Number(await this.property(dataset, "used", PROBE_TIMEOUT_MS));
    } catch (error) {
      if (isMissing(error)) return 0;
      // Asked on every listing, so this skips the probe and only explains a daemon that is away.
      const reason = await this.unavailableReason(error);
      if (reason !== undefined) throw new PoolUnavailableError(reason);
      throw error;
    }
  }

  // ---- for replication (replication/zfs-replication.ts) ----

  /** The dataset of a volume of this pool. */
  volumeDataset(volumeId: string): string {
    return this.dataset("volumes", volumeId);
  }

  /** The dataset where this pool keeps the replica of another node's volume. */
  replicaDataset(sourceVolumeId: string): string {
    return `${this.location}/replicas/${checkId(sourceVolumeId)}`;
  }

  /** A new volume of this pool, a thin clone of a replica's point (`<replica dataset>@<point>`). */
  async cloneReplica(origin: string, format: DiskFormat, volumeId: string, sizeBytes: number): Promise<StoredDisk> {
    await this.requireRoot();
    await this.ensureParent("volumes");
    return this.cloneFrom(origin, format, this.dataset("volumes", volumeId), sizeBytes);
  }

  // ---- the pool's own dataset ----

  /**
   * The pool's dataset as checked at most ROOT_CHECK_TTL_MS ago. Every operation checks the pool
   * first, and under zfs-fuse each zfs command costs 10-20 ms: checking once per operation would
   * more than double the cost of a clone. A pool that breaks is still noticed within the TTL, and
   * the operation's own zfs command fails with ZFS's words in the meantime.
   */
  private async requireRoot(): Promise<RootDataset> {
    const cached = this.rootChecked;
    if (cached && Date.now() - cached.at < ROOT_CHECK_TTL_MS) return cached.root;
    const root = await this.checkRoot();
    this.rootChecked = { root, at: Date.now() };
    return root;
  }

  /** Checks the pool's dataset is usable now, or throws PoolUnavailableError with what to do. */
  private async checkRoot(): Promise<RootDataset> {
    this.rootChecked = undefined;
    if ((await which(this.zfsCommand)) === undefined) {
      throw new PoolUnavailableError(
        `the zfs command (${this.zfsCommand}) is not installed: install ZFS (Debian: apt-get install zfsutils-linux, or zfs-fuse where the zfs kernel module cannot be loaded)`,
      );
    }
    let props: Map<string, string>;
    try {
      props = await this.properties(this.location, ["type", "used", "available", "mountpoint", "mounted"], PROBE_TIMEOUT_MS);
    } catch (error) {
      if (isMissing(error)) {
        throw new PoolUnavailableError(`ZFS dataset ${this.location} does not exist: create it with "zfs create ${this.location}"`);
      }
      const reason = await this.unavailableReason(error);
      throw new PoolUnavailableError(reason ?? `ZFS dataset ${this.location} could not be read: ${message(error)}`);
    }
    const type = props.get("type") ?? "";
    if (type !== "filesystem") {
      throw new PoolUnavailableError(
        `ZFS dataset ${this.location} is a ${type}, not a file system: point the pool at a file system dataset (zfs create <pool>/aether)`,
      );
    }
    // Images and volume files live under the mountpoint, and imports stage there.
    const mountpoint = props.get("mountpoint") ?? "";
    if (!mountpoint.startsWith("/")) {
      throw new PoolUnavailableError(
        `ZFS dataset ${this.location} has no mountpoint (mountpoint=${mountpoint}): give it one with "zfs set mountpoint=/srv/aether ${this.location}"`,
      );
    }
    if (props.get("mounted") !== "yes") {
      // zfs-fuse imports its pools when it starts but mounts none of their datasets.
      throw new PoolUnavailableError(`ZFS dataset ${this.location} is not mounted: mount it with "zfs mount -a"`);
    }
    const root = { mountpoint, used: Number(props.get("used")), available: Number(props.get("available")) };
    this.rootChecked = { root, at: Date.now() };
    return root;
  }

  /** The sentence for a zfs command that failed because ZFS itself is not there; undefined otherwise. */
  private async unavailableReason(error: unknown): Promise<string | undefined> {
    if (!(error instanceof HostCommandError)) return undefined;
    const timedOut = error.exitCode === undefined;
    // zfs-fuse's client says this when nothing listens on its socket; ZoL's when /dev/zfs is missing.
    const noDaemon = /zfs-fuse daemon is running|failed to initialize ZFS library|\/dev\/zfs/i.test(error.stderr);
    if (!timedOut && !noDaemon) return undefined;
    const what = timedOut ? "did not answer in time" : `is not answering (${firstLine(error.stderr)})`;
    if (!existsSync(ZOL_MODULE) && (await which("zfs-fuse")) !== undefined) {
      return `ZFS ${what}: start zfs-fuse (run "zfs-fuse" as root), then "zfs mount -a"`;
    }
    return `ZFS ${what}: load the ZFS kernel module ("modprobe zfs")`;
  }

  // ---- datasets ----

  private dataset(kind: Kind, id: string): string {
    return `${this.location}/${kind}/${checkId(id)}`;
  }

  private snapshotName(volumeId: string, snapshotId: string): string {
    return `${this.dataset("volumes", volumeId)}@${checkId(snapshotId)}`;
  }

  /** The dataset a disk this driver returned lives in, from the layout; undefined for a foreign path. */
  private datasetOf(disk: StoredDisk): string | undefined {
    if (disk.format === "zvol") {
      const prefix = `/dev/zvol/${this.location}/`;
      return disk.hostPath.startsWith(prefix) ? `${this.location}/${disk.hostPath.slice(prefix.length)}` : undefined;
    }
    if (basename(disk.hostPath) !== DISK_FILE) return undefined;
    const id = basename(dirname(disk.hostPath));
    const kind = basename(dirname(dirname(disk.hostPath)));
    if ((kind !== "images" && kind !== "volumes") || !COMPONENT.test(id)) return undefined;
    return `${this.location}/${kind}/${id}`;
  }

  private async ensureParent(kind: Kind): Promise<void> {
    // Once made, the parents stay (nothing deletes them); a dataset deleted behind aetherd's back
    // makes the next clone fail with ZFS's "parent does not exist", and a restart recreates it.
    if (this.parentsMade.has(kind)) return;
    try {
      await this.zfs(["create", "-p", `${this.location}/${kind}`]);
      this.parentsMade.add(kind);
    } catch (error) {
      // Two first uses at once: the other one created it.
      if (!(error instanceof HostCommandError && /already exists/.test(error.stderr))) throw error;
    }
  }

  private async cloneFrom(origin: string, format: DiskFormat, target: string, sizeBytes: number): Promise<StoredDisk> {
    if (format !== "zfs-file" && format !== "zvol") throw new Error(`ZFS pool ${this.name} does not hold ${format} disks`);
    if (format === "zvol") await this.zfs(["clone", origin, target]);
    else {
      // The clone's `used` is read in the same turn of the host's ZFS lock: the answer that follows
      // reports it, and a zfs command of its own would cost about a third of the clone (zfs-recent-usage.ts).
      const made = await runZfsInOneTurn(
        this.zfsCommand,
        [
          ["clone", origin, target],
          ["get", "-Hp", "-o", "value", "used", target],
        ],
        {
          timeoutMs: ZFS_TIMEOUT_MS,
        },
      ).catch(async (error: unknown) => {
        // The clone may have been made before the get failed; a retry must start clean.
        await this.destroyDataset(target).catch(() => undefined);
        throw error;
      });
      this.recentUsage.remember(target, Number(made.stdout.trim()));
    }
    return this.cleanupOnFailure(target, async () => {
      if (format === "zvol") {
        const current = Number(await this.property(target, "volsize"));
        const size = Math.max(current, this.roundUp(sizeBytes));
        if (size > current) await this.zfs(["set", `volsize=${size}`, target]);
        return { hostPath: await this.zvolDevice(target), format, sizeBytes: size };
      }
      const file = await this.mountedFile(target, true);
      const current = (await stat(file)).size;
      const size = Math.max(current, this.roundUp(sizeBytes));
      // Growing a sparse file allocates nothing; the clone stays as thin as ZFS made it.
      if (size > current) await truncate(file, size);
      return { hostPath: file, format, sizeBytes: size };
    });
  }

  /** Runs the rest of a create/clone; if it fails, the half-made dataset goes so a retry can start clean. */
  private async cleanupOnFailure<T>(dataset: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      await this.destroyDataset(dataset).catch(() => undefined);
      throw error;
    }
  }

  /**
   * The disk file's path once the dataset is really mounted (the kernel shows the mount, and, for a
   * clone, the file is there): zfs-fuse mounts asynchronously and mounts nothing after a restart, and
   * a file written before the mount lands would be hidden in the parent dataset's directory.
   */
  private async mountedFile(dataset: string, mustExist: boolean): Promise<string> {
    // Fast path: a child inherits its mountpoint below the pool's, and zfs-fuse has usually mounted
    // a new clone by the time `zfs clone` returns; the kernel's mount table says so without asking zfs.
    const rootMount = this.rootChecked?.root.mountpoint;
    if (rootMount && dataset.startsWith(`${this.location}/`)) {
      const expected = join(rootMount, dataset.slice(this.location.length + 1));
      if ((await kernelHasMount(expected)) && (!mustExist || existsSync(join(expected, DISK_FILE)))) return join(expected, DISK_FILE);
    }
    const deadline = Date.now() + APPEAR_TIMEOUT_MS;
    let mountpoint = "";
    for (;;) {
      const props = await this.properties(dataset, ["mountpoint", "mounted"]);
      mountpoint = props.get("mountpoint") ?? "";
      if (!mountpoint.startsWith("/")) {
        throw new Error(
          `ZFS dataset ${dataset} has no mountpoint (mountpoint=${mountpoint}); set one on ${this.location} and let it inherit`,
        );
      }
      if (props.get("mounted") !== "yes") {
        try {
          await this.zfs(["mount", dataset]);
        } catch (error) {
          if (!(error instanceof HostCommandError && /already mounted/.test(error.stderr))) throw error;
        }
      } else if (await kernelHasMount(mountpoint)) {
        const file = join(mountpoint, DISK_FILE);
        if (!mustExist || existsSync(file)) return file;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `ZFS dataset ${dataset} did not appear mounted at ${mountpoint} with its ${DISK_FILE} within ${APPEAR_TIMEOUT_MS / 1000} s`,
        );
      }
      await sleep(50);
    }
  }

  /** The device node of a zvol, once udev has made it. */
  private async zvolDevice(dataset: string): Promise<string> {
    const device = `/dev/zvol/${dataset}`;
    const deadline = Date.now() + APPEAR_TIMEOUT_MS;
    while (!existsSync(device)) {
      if (Date.now() > deadline)
        throw new Error(`zvol ${dataset} has no device ${device} after ${APPEAR_TIMEOUT_MS / 1000} s: is udev running?`);
      await sleep(50);
    }
    return device;
  }

  /** Destroys a dataset with its snapshots; one already gone is not an error. */
  private async destroyDataset(dataset: string): Promise<void> {
    const deadline = Date.now() + BUSY_RETRY_MS;
    for (;;) {
      try {
        const props = await this.properties(dataset, ["type", "mounted"]);
        // Unmounting first is what makes zfs-fuse's destroy succeed at the first attempt; a
        // dataset in use (a hypervisor has the file open) fails here with the reason.
        if (props.get("type") === "filesystem" && props.get("mounted") === "yes") await this.zfs(["unmount", dataset]);
        await this.zfs(["destroy", "-r", dataset]);
        return;
      } catch (error) {
        if (isMissing(error)) return;
        const busy = error instanceof HostCommandError && /busy|not currently mounted/i.test(error.stderr);
        if (!busy || Date.now() > deadline) throw error;
        await sleep(100);
      }
    }
  }

  // ---- zfs commands ----

  private zfs(args: string[], timeoutMs = ZFS_TIMEOUT_MS) {
    // Any command but a read may change a dataset it names (a snapshot's name starts with its dataset's).
    if (args[0] !== "get") for (const arg of args) this.recentUsage.forget(arg.split("@")[0] ?? arg);
    return runZfs(this.zfsCommand, args, { timeoutMs });
  }

  private async property(dataset: string, name: string, timeoutMs = ZFS_TIMEOUT_MS): Promise<string> {
    const value = (await this.properties(dataset, [name], timeoutMs)).get(name);
    if (value === undefined) throw new Error(`zfs get ${name} ${dataset} printed no value`);
    return value;
  }

  /** Properties as exact values (-p: bytes, not "1.5G"). */
  private async properties(dataset: string, names: string[], timeoutMs = ZFS_TIMEOUT_MS): Promise<Map<string, string>> {
    const { stdout } = await this.zfs(["get", "-Hp", "-o", "property,value", names.join(","), dataset], timeoutMs);
    const props = new Map<string, string>();
    for (const line of stdout.split("\n")) {
      const tab = line.indexOf("\t");
      if (tab > 0) props.set(line.slice(0, tab), line.slice(tab + 1));
    }
    return props;
  }

  private roundUp(sizeBytes: number): number {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new Error(`${sizeBytes} is not a disk size in bytes`);
    return Math.ceil(sizeBytes / this.granularityBytes) * this.granularityBytes;
  }
}

function checkId(id: string): string {
  if (!COMPONENT.test(id)) throw new Error(`"${id}" is not a storage id (ids are server-assigned)`);
  return id;
}

/** zfs says this for a dataset or snapshot that is not there. */
function isMissing(error: unknown): boolean {
  return error instanceof HostCommandError && /dataset does not exist|could not find any snapshots to destroy/.test(error.stderr);
}

async function kernelHasMount(path: string): Promise<boolean> {
  const table = await readFile("/proc/self/mounts", "utf8");
  // /proc/self/mounts escapes spaces and other specials in paths as octal (\040).
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  return table.split("\n").some((line) => unescape(line.split(" ")[1] ?? "") === path);
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
