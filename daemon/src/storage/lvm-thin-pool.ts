// The lvm-thin pool: every volume, image and snapshot is a thin LV in one LVM thin pool ("vg/pool").
//
// Why LVM thin and how its semantics map onto the StoragePool contract:
// - A thin LV has a virtual size and takes pool blocks only as they are written; a thin snapshot
//   shares every block with its origin and costs nothing until one of them is written. Snapshots
//   of snapshots are just as cheap and independent of each other: removing any thin LV (even the
//   origin of others) never changes what another thin LV contains. That independence is what makes
//   deleteSnapshot a plain lvremove and lets rollback swap LVs by name.
// - LV names derive ONLY from server-assigned ids (see lvNames): a user's name never reaches LVM.
//     aether-v-<volume id>   a volume; the hypervisor opens /dev/<vg>/aether-v-<id>
//     aether-i-<image id>    an imported image, the origin of its clones
//     aether-s-<snapshot id> a frozen snapshot of a volume (kept inactive, see below)
//     aether-r-<volume id>   a rollback in progress (exists only between two commands of rollback)
// - Thin snapshots are created with LVM's "activation skip" flag, so `vgchange -ay` at boot and a
//   plain `lvchange -ay` leave them inactive (no /dev node, no device-mapper table). That is right
//   for frozen snapshots, so snapshot() sets it explicitly (lvm.conf can turn the default off). A
//   clone, however, is a volume a VM opens after every reboot, so clones are created with
//   `--setactivationskip n` and then activated with `--activate y --ignoreactivationskip` (-ay -K),
//   which activates the LV whatever the flag says.
// - Sizes are passed in bytes with LVM's "b" suffix, rounded up to 4 MiB, LVM's default extent
//   size: a thin LV's virtual size is a whole number of the VG's extents, so rounding ourselves
//   keeps the size we report equal to the size the guest sees. probe() refuses a VG whose extent
//   size does not divide 4 MiB, where LVM would round further than we do.
//
// All host commands are argv arrays built by lvmThinCommands (pure, unit-tested) and run through
// runHost; the runner, `which` and the device-mapper control path are injectable so the tests can
// check every argv on machines without device-mapper.
import { access, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { runHost, which as whichOnPath, type HostCommandResult } from "../host/command.js";
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

/** One host command as an argv array: never a shell string. */
export interface HostCommand {
  file: string;
  args: string[];
}

/** Runs a host command; runHost's signature, injectable so tests capture argv instead. */
export type HostRunner = (file: string, args: readonly string[], options: { timeoutMs?: number }) => Promise<HostCommandResult>;

/** LVM's default physical extent size; every size this driver passes to LVM is a multiple of it. */
export const LVM_THIN_GRANULARITY = 4 * 1024 * 1024;

/** LVM metadata commands (they wait for udev, and may queue behind other LVM commands' locks). */
const LVM_TIMEOUT_MS = 120_000;
/** Writing a whole image into its LV runs at disk speed: tens of GiB may take many minutes. */
const CONVERT_TIMEOUT_MS = 3 * 60 * 60 * 1000;
const INFO_TIMEOUT_MS = 60_000;

/** Characters LVM allows in VG and LV names; a name may not start with "-" (lvm(8), "VALID NAMES"). */
const LVM_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/;
/** LVM's limit on an LV name (NAME_LEN 128 including the terminating NUL). */
const LV_NAME_MAX = 127;
/**
 * Server-assigned ids (UUIDs): letters, digits and "-". No "_" (LVM reserves suffixes such as
 * "_tdata", "_tmeta", "_rimage") and no "." (so no id can collide with another prefix's name).
 */
const ID = /^[A-Za-z0-9][A-Za-z0-9-]*$/;

function lvName(prefix: string, id: string): string {
  const name = `${prefix}${id}`;
  if (!ID.test(id) || name.length > LV_NAME_MAX) {
    throw new Error(
      `"${id}" is not a server-assigned id usable in an LVM name (letters, digits and "-", at most ${LV_NAME_MAX - prefix.length} characters)`,
    );
  }
  return name;
}

/** LV names, derived only from ids. */
export const lvNames = {
  volume: (volumeId: string) => lvName("aether-v-", volumeId),
  image: (imageId: string) => lvName("aether-i-", imageId),
  snapshot: (snapshotId: string) => lvName("aether-s-", snapshotId),
  /** The replacement LV a rollback builds before it takes the volume's name. */
  rollback: (volumeId: string) => lvName("aether-r-", volumeId),
};

function bytes(sizeBytes: number): string {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new Error(`${sizeBytes} is not a size in bytes`);
  // Lower-case "b" is bytes for LVM size arguments (all size suffixes are powers of 1024 there).
  return `${sizeBytes}b`;
}

export function roundUpToGranularity(sizeBytes: number): number {
  return Math.ceil(sizeBytes / LVM_THIN_GRANULARITY) * LVM_THIN_GRANULARITY;
}

function checkLvmName(kind: string, name: string): void {
  if (!LVM_NAME.test(name) || name === "." || name === ".." || name.length > LV_NAME_MAX) {
    throw new Error(`"${name}" is not a valid LVM ${kind} name (letters, digits and + _ . -, not starting with "-")`);
  }
}

/**
 * The argv of every command the driver runs, for the thin pool `vg/thinPool`. Pure: building a
 * command runs nothing. Arguments are LV names (see lvNames), never paths or user input.
 */
export function lvmThinCommands(vg: string, thinPool: string) {
  checkLvmName("volume group", vg);
  checkLvmName("thin pool", thinPool);
  const check = (name: string) => {
    checkLvmName("logical volume", name);
    return name;
  };
  const lv = (name: string) => `${vg}/${check(name)}`;
  const report = ["--reportformat", "json", "--units", "b", "--nosuffix"];
  return {
    /** The device node of an LV: udev's /dev/<vg>/<lv> link, present while the LV is active. */
    devicePath: (name: string): string => `/dev/${lv(name)}`,

    /**
     * A new, empty thin LV. Unprovisioned thin blocks read as zeros, so it needs no wiping; --yes
     * answers any prompt (e.g. about overprovisioning) instead of hanging on stdin.
     */
    createThin: (name: string, sizeBytes: number): HostCommand => ({
      file: "lvcreate",
      args: ["--type", "thin", "--virtualsize", bytes(sizeBytes), "--thinpool", `${vg}/${thinPool}`, "--name", check(name), "--yes"],
    }),

    /**
     * A frozen thin snapshot (-s of a thin LV, no size: LVM makes a thin snapshot in the origin's
     * pool). Activation skip is set explicitly so it stays inactive across reboots; nothing opens it
     * except as the origin of a clone or a rollback, which are thin snapshots of it in turn.
     */
    snapshot: (origin: string, name: string): HostCommand => ({
      file: "lvcreate",
      args: ["--snapshot", "--setactivationskip", "y", "--name", check(name), lv(origin)],
    }),

    /**
     * A writable thin clone of an image or a snapshot (cloneImage, cloneSnapshot, rollback): a thin
     * snapshot WITHOUT the activation skip flag, so it is activated at boot like any volume.
     */
    clone: (origin: string, name: string): HostCommand => ({
      file: "lvcreate",
      args: ["--snapshot", "--setactivationskip", "n", "--name", check(name), lv(origin), "--yes"],
    }),

    /** -ay -K: activates the LV even if it carries the activation skip flag; a no-op if active. */
    activate: (name: string): HostCommand => ({
      file: "lvchange",
      args: ["--activate", "y", "--ignoreactivationskip", lv(name)],
    }),

    /** Grows a thin LV's virtual size (-L with an absolute size; LVM refuses an equal size). */
    extend: (name: string, sizeBytes: number): HostCommand => ({
      file: "lvextend",
      args: ["--size", bytes(sizeBytes), lv(name)],
    }),

    rename: (from: string, to: string): HostCommand => ({ file: "lvrename", args: [vg, check(from), check(to)] }),

    /**
     * Removes thin LVs. --yes answers "remove active logical volume?"; LVM still refuses an LV that
     * is open (a running VM), which is the error we want.
     */
    remove: (names: string[]): HostCommand => ({
      file: "lvremove",
      args: ["--yes", ...names.map(lv)],
    }),

    /**
     * The pool's data size and how full it is, plus what probe() checks: that the LV really is a thin
     * pool, and the VG's extent size.
     */
    poolReport: (): HostCommand => ({
      file: "lvs",
      args: [...report, "-o", "lv_size,data_percent,segtype,vg_extent_size", `${vg}/${thinPool}`],
    }),

    /** A thin LV's virtual size and the share of it that is provisioned (empty while inactive). */
    lvReport: (name: string): HostCommand => ({
      file: "lvs",
      args: [...report, "-o", "lv_size,data_percent", lv(name)],
    }),

    /** Every LV name in the VG; deletes use it to skip LVs that are already gone. */
    listLvs: (): HostCommand => ({
      file: "lvs",
      args: ["--reportformat", "json", "-o", "lv_name", vg],
    }),

    /** An image's virtual size, with the format pinned so a raw file is never probed as qcow2. */
    imageInfo: (path: string, format: "qcow2" | "raw"): HostCommand => ({
      file: "qemu-img",
      args: ["info", "--output=json", "-f", format, path],
    }),

    /**
     * Writes an image into an existing LV (-n: do not create the target). --target-is-zero (qemu
     * 5.0+) tells qemu-img that the fresh thin LV already reads as zeros, so it skips zero areas
     * instead of writing them, which dm-thin would provision block by block: the image's LV takes
     * only the space of its data.
     */
    writeImage: (stagedPath: string, format: "qcow2" | "raw", name: string): HostCommand => ({
      file: "qemu-img",
      args: ["convert", "-n", "--target-is-zero", "-f", format, "-O", "raw", stagedPath, `/dev/${lv(name)}`],
    }),
  };
}

export type LvmThinCommands = ReturnType<typeof lvmThinCommands>;

/** The rows of an `lvs --reportformat json` report: `{"report":[{"lv":[{field: value}]}]}`. */
export function parseLvsReport(stdout: string): Record<string, string>[] {
  const parsed = JSON.parse(stdout) as { report?: { lv?: Record<string, string>[] }[] };
  return (parsed.report ?? []).flatMap((r) => r.lv ?? []);
}

/** data_percent as a fraction; "" (an inactive LV) is unknown, reported as 0. */
function fraction(percent: string | undefined): number {
  // lvs prints the percentage with the locale's decimal separator.
  const value = Number((percent ?? "").trim().replace(",", "."));
  return (percent ?? "").trim() === "" || !Number.isFinite(value) ? 0 : value / 100;
}

export interface LvmThinPoolOptions {
  /** Where imports are staged: the pool has no file system, so staged files live here. */
  stagingDir: string;
  run?: HostRunner;
  which?: (name: string) => Promise<string | undefined>;
  /** The device-mapper control node whose absence means no device-mapper (tests point it elsewhere). */
  mapperControlPath?: string;
}

export class LvmThinPool implements StoragePool {
  readonly driver = "lvm-thin" as const;
  readonly granularityBytes = LVM_THIN_GRANULARITY;

  private readonly run: HostRunner;
  private readonly which: (name: string) => Promise<string | undefined>;
  private readonly mapperControlPath: string;
  private readonly stagingDir: string;
  /** Built from the location; undefined when the location is not "vg/thinpool" (probe says so). */
  private readonly cmd: LvmThinCommands | undefined;
  private readonly locationError: string;
  private readonly vg: string;
  /**
   * The last probe that found the pool available (or one in flight). Only a success is kept: an
   * unavailable pool is probed again on the next operation, so fixing the host (loading
   * dm_thin_pool, installing lvm2, creating the pool) takes effect without restarting aetherd.
   */
  private availability: Promise<PoolStatus> | undefined;

  /**
   * @param name the pool's name in aetherd's configuration
   * @param location the thin pool as "vg/thinpool"
   */
  constructor(
    readonly name: string,
    readonly location: string,
    options: LvmThinPoolOptions,
  ) {
    this.run = options.run ?? runHost;
    this.which = options.which ?? whichOnPath;
    this.mapperControlPath = options.mapperControlPath ?? "/dev/mapper/control";
    this.stagingDir = options.stagingDir;
    const [vg = "", pool = "", ...rest] = location.split("/");
    this.vg = vg;
    let cmd: LvmThinCommands | undefined;
    let locationError = "";
    try {
      if (rest.length > 0 || vg === "" || pool === "") throw new Error('expected "vg/thinpool"');
      cmd = lvmThinCommands(vg, pool);
    } catch (err) {
      // Not thrown here: a bad pool in the configuration must not stop aetherd from starting; the
      // pool reports itself unavailable with the reason instead.
      locationError = `the lvm-thin pool's location "${location}" is not a thin pool as "vg/thinpool" (${(err as Error).message}): fix the pool in aetherd's configuration`;
    }
    this.cmd = cmd;
    this.locationError = locationError;
  }

  formats(): DiskFormat[] {
    return ["lvm-thin"];
  }

  async probe(): Promise<PoolStatus> {
    const status = await this.check().catch((err: unknown) =>
      unavailable(`probing the lvm-thin pool ${this.location} failed: ${(err as Error).message}`),
    );
    this.availability = status.available ? Promise.resolve(status) : undefined;
    return status;
  }

  /** From the last probe that found the pool available (see need()), else a new probe. */
  async capacity(): Promise<PoolCapacity> {
    this.availability ??= this.probe();
    const { available, reason, capacityBytes } = await this.availability;
    if (!available) this.availability = undefined;
    return { available, reason, capacityBytes };
  }

  private async check(): Promise<PoolStatus> {
    if (this.cmd === undefined) return unavailable(this.locationError);
    try {
      await access(this.mapperControlPath);
    } catch {
      return unavailable(
        `device-mapper is not available on this host (no ${this.mapperControlPath}): load the dm_thin_pool module (modprobe dm_thin_pool) or use a dir or zfs pool`,
      );
    }
    const missing: string[] = [];
    for (const tool of ["lvcreate", "lvs"]) if ((await this.which(tool)) === undefined) missing.push(tool);
    if (missing.length > 0) {
      return unavailable(
        `the LVM tools are not installed (${missing.join(" and ")} not found on PATH): install lvm2 (apt-get install lvm2, or dnf install lvm2)`,
      );
    }
    const pool = this.location;
    let rows: Record<string, string>[];
    try {
      rows = parseLvsReport((await this.exec(this.cmd.poolReport())).stdout);
    } catch (err) {
      const message = (err as Error).message;
      if (/not found|failed to find/i.test(message)) {
        return unavailable(
          `the thin pool ${pool} does not exist (${message}): create it (e.g. lvcreate --type thin-pool -L 100G -n ${pool.slice(this.vg.length + 1)} ${this.vg}) or fix the pool's location in aetherd's configuration`,
        );
      }
      return unavailable(`lvs could not read the thin pool ${pool} (${message}): aetherd needs root and a working LVM setup`);
    }
    const row = rows[0];
    if (row === undefined) return unavailable(`lvs reported nothing for ${pool}: check that the thin pool exists (lvs ${pool})`);
    if (row.segtype !== "thin-pool") {
      return unavailable(
        `${pool} is a ${row.segtype ?? "unknown"} LV, not a thin pool: point the pool's location at a thin pool (lvs -o lv_name,segtype ${this.vg})`,
      );
    }
    const extent = Number(row.vg_extent_size);
    if (!(extent > 0) || LVM_THIN_GRANULARITY % extent !== 0) {
      return unavailable(
        `the volume group ${this.vg} has an extent size of ${row.vg_extent_size ?? "?"} bytes; aetherd sizes thin LVs in 4 MiB steps and needs an extent size that divides 4 MiB (the LVM default): use a thin pool in such a volume group`,
      );
    }
    const capacityBytes = Number(row.lv_size);
    return { available: true, reason: "", capacityBytes, usedBytes: Math.round(capacityBytes * fraction(row.data_percent)) };
  }

  /** Throws PoolUnavailableError with probe's reason unless the pool is (still known to be) usable. */
  private async need(): Promise<LvmThinCommands> {
    this.availability ??= this.probe();
    const status = await this.availability;
    if (!status.available || this.cmd === undefined) {
      this.availability = undefined;
      throw new PoolUnavailableError(status.reason || this.locationError);
    }
    return this.cmd;
  }

  private exec(command: HostCommand, timeoutMs = LVM_TIMEOUT_MS): Promise<HostCommandResult> {
    return this.run(command.file, command.args, { timeoutMs });
  }

  private disk(cmd: LvmThinCommands, name: string, sizeBytes: number): StoredDisk {
    return { hostPath: cmd.devicePath(name), format: "lvm-thin", sizeBytes };
  }

  async createVolume(volumeId: string, sizeBytes: number, format: DiskFormat): Promise<StoredDisk> {
    const cmd = await this.need();
    if (format !== "lvm-thin") throw new Error(`an lvm-thin pool stores thin LVs (format lvm-thin), not ${format}`);
    const name = lvNames.volume(volumeId);
    const size = roundUpToGranularity(sizeBytes);
    await this.exec(cmd.createThin(name, size));
    return this.disk(cmd, name, size);
  }

  /**
   * A clone is a thin snapshot of its origin, made an ordinary volume (no activation skip),
   * activated, and grown when asked to be larger: a thin snapshot starts at its origin's size.
   */
  private async cloneFrom(cmd: LvmThinCommands, origin: string, name: string, originSize: number, sizeBytes: number): Promise<StoredDisk> {
    const size = Math.max(roundUpToGranularity(sizeBytes), originSize);
    await this.exec(cmd.clone(origin, name));
    try {
      await this.exec(cmd.activate(name));
      if (size > originSize) await this.exec(cmd.extend(name, size));
    } catch (err) {
      await this.exec(cmd.remove([name])).catch(() => undefined);
      throw err;
    }
    return this.disk(cmd, name, size);
  }

  async cloneImage(image: Disk, volumeId: string, sizeBytes: number): Promise<StoredDisk> {
    const cmd = await this.need();
    return this.cloneFrom(cmd, lvNames.image(image.id), lvNames.volume(volumeId), image.sizeBytes, sizeBytes);
  }

  async snapshot(volume: Disk, snapshotId: string): Promise<void> {
    const cmd = await this.need();
    // LVM suspends the origin for the instant of the snapshot, so even a running VM's volume gets a
    // crash-consistent snapshot; the volume's LV (and host path) is untouched.
    await this.exec(cmd.snapshot(lvNames.volume(volume.id), lvNames.snapshot(snapshotId)));
  }

  /** Snapshot LV names are unique by snapshot id alone, so the volume is not needed. */
  async cloneSnapshot(_volume: Disk, snapshotId: string, newVolumeId: string, sizeBytes: number): Promise<StoredDisk> {
    const cmd = await this.need();
    const snap = lvNames.snapshot(snapshotId);
    // The snapshot has the size the volume had when it was taken (the volume may have grown since):
    // read it rather than trust the volume's current size.
    const row = parseLvsReport((await this.exec(cmd.lvReport(snap))).stdout)[0];
    const snapSize = Number(row?.lv_size);
    if (!(snapSize > 0)) throw new Error(`lvs did not report the size of snapshot ${snapshotId} (${this.vg}/${snap})`);
    return this.cloneFrom(cmd, snap, lvNames.volume(newVolumeId), snapSize, sizeBytes);
  }

  /**
   * Rollback by swapping LVs, not with `lvconvert --merge`: merging a thin snapshot consumes it
   * (the snapshot must survive a rollback), and when the volume is open LVM silently defers the
   * merge to the volume's next activation, leaving the old contents in place meanwhile. Instead:
   *   1. a new thin clone of the snapshot is made under the temporary name aether-r-<volume>;
   *   2. the volume's LV is removed: LVM refuses if it is open, and the clone is removed again, so
   *      a volume in use is never half rolled back;
   *   3. the clone takes the volume's name (so its host path is unchanged) and is activated;
   *   4. the snapshots newer than the target are removed. Thin LVs are independent, so the older
   *      snapshots and the target keep their contents although their origin LV is gone.
   * The volume gets the snapshot's size, as it was when the snapshot was taken. A crash between 2
   * and 3 leaves the rolled-back data under aether-r-<volume> (deleteVolume removes that name too).
   */
  async rollback(volume: Disk, snapshotId: string, newer: SnapshotRef[]): Promise<void> {
    const cmd = await this.need();
    const live = lvNames.volume(volume.id);
    const next = lvNames.rollback(volume.id);
    const doomed = newer.map((s) => lvNames.snapshot(s.id));
    await this.exec(cmd.clone(lvNames.snapshot(snapshotId), next));
    try {
      await this.exec(cmd.remove([live]));
    } catch (err) {
      await this.exec(cmd.remove([next])).catch(() => undefined);
      throw err;
    }
    await this.exec(cmd.rename(next, live));
    await this.exec(cmd.activate(live));
    if (doomed.length > 0) await this.exec(cmd.remove(doomed));
  }

  async deleteSnapshot(_volume: Disk, snapshotId: string, _newer: SnapshotRef | undefined, _older: SnapshotRef | undefined): Promise<void> {
    const cmd = await this.need();
    // Unlike qcow2 chains, thin snapshots hold no layer the volume or newer snapshots read through:
    // removing one only frees the blocks no other thin LV shares.
    await this.removePresent(cmd, [lvNames.snapshot(snapshotId)]);
  }

  async resize(volume: Disk, sizeBytes: number): Promise<void> {
    const cmd = await this.need();
    const size = roundUpToGranularity(sizeBytes);
    // lvextend fails on an unchanged size; growing the virtual size allocates nothing.
    if (size > volume.sizeBytes) await this.exec(cmd.extend(lvNames.volume(volume.id), size));
  }

  async deleteVolume(volume: Disk, snapshots: SnapshotRef[]): Promise<void> {
    const cmd = await this.need();
    // Clones made from these snapshots are independent thin LVs and keep their contents.
    await this.removePresent(cmd, [
      lvNames.volume(volume.id),
      lvNames.rollback(volume.id),
      ...snapshots.map((s) => lvNames.snapshot(s.id)),
    ]);
  }

  /** Removes those of `names` that exist, in one lvremove; LVs already gone are not an error. */
  private async removePresent(cmd: LvmThinCommands, names: string[]): Promise<void> {
    const existing = new Set(parseLvsReport((await this.exec(cmd.listLvs())).stdout).map((row) => row.lv_name));
    const present = names.filter((n) => existing.has(n));
    if (present.length > 0) await this.exec(cmd.remove(present));
  }

  private stagedFile(imageId: string): string {
    lvNames.image(imageId); // the same id rules keep the file name inside the staging directory
    return join(this.stagingDir, `${imageId}.part`);
  }

  async stagingPath(imageId: string): Promise<string> {
    await this.need();
    await mkdir(this.stagingDir, { recursive: true, mode: 0o700 });
    return this.stagedFile(imageId);
  }

  async finishImport(imageId: string, stagedPath: string, sourceFormat: "qcow2" | "raw"): Promise<StoredDisk> {
    const cmd = await this.need();
    const name = lvNames.image(imageId);
    const info = JSON.parse((await this.exec(cmd.imageInfo(stagedPath, sourceFormat), INFO_TIMEOUT_MS)).stdout) as {
      "virtual-size"?: number;
    };
    const virtualSize = info["virtual-size"];
    if (typeof virtualSize !== "number" || !(virtualSize > 0))
      throw new Error(`qemu-img reported no virtual size for the staged image ${stagedPath}`);
    const size = roundUpToGranularity(virtualSize);
    await this.exec(cmd.createThin(name, size));
    try {
      await this.exec(cmd.writeImage(stagedPath, sourceFormat, name), CONVERT_TIMEOUT_MS);
    } catch (err) {
      // A half-written image must not become an origin; the staged file stays for the registry.
      await this.exec(cmd.remove([name])).catch(() => undefined);
      throw err;
    }
    await rm(stagedPath, { force: true });
    return this.disk(cmd, name, size);
  }

  async deleteImage(imageId: string): Promise<void> {
    // The staged file is ours to remove even while LVM is unavailable.
    await rm(this.stagedFile(imageId), { force: true });
    const cmd = await this.need();
    await this.removePresent(cmd, [lvNames.image(imageId)]);
  }

  async allocatedBytes(disk: StoredDisk): Promise<number> {
    const cmd = await this.need();
    const prefix = `/dev/${this.vg}/`;
    if (!disk.hostPath.startsWith(prefix)) return 0;
    try {
      const row = parseLvsReport((await this.exec(cmd.lvReport(disk.hostPath.slice(prefix.length)))).stdout)[0];
      // A thin LV's data_percent is the provisioned share of its virtual size. Blocks it shares
      // with its origin or snapshots are counted for each of them.
      return Math.round(Number(row?.lv_size ?? 0) * fraction(row?.data_percent)) || 0;
    } catch {
      return 0;
    }
  }
}

function unavailable(reason: string): PoolStatus {
  return { available: false, reason, capacityBytes: 0, usedBytes: 0 };
}
