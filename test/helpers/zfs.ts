// Gives a test a real ZFS pool: a file-backed pool on zfs-fuse (or on ZFS on Linux where the module
// is loaded), with a dataset for the driver, destroyed afterwards. A test that needs ZFS never skips:
// when zfs-fuse cannot be started, the test fails with zfs-fuse's own error.
import { existsSync, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { HostCommandError, runHost, which } from "../../daemon/src/host/command.js";
import { runZfs } from "../../daemon/src/host/zfs-command.js";

export interface ZfsTestPool {
  pool: string;
  /** `<pool>/aether`, created and mounted, for a ZfsPool to use. */
  dataset: string;
  /** Where the pool's root dataset is mounted. */
  mountpoint: string;
  destroy(): Promise<void>;
}

// The Debian init script's pidfile, so a zfs-fuse started here and one started by the package's
// script are recognized as the same daemon.
const PIDFILE = "/run/zfs-fuse.pid";
const READY_TIMEOUT_MS = 20_000;

/** Whether a ZFS daemon (zfs-fuse, or the ZoL kernel module) answers. */
async function zfsAnswers(): Promise<boolean> {
  try {
    await runZfs("zpool", ["list", "-H"], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts zfs-fuse unless ZFS already answers, and waits until `zpool list` does. */
export async function ensureZfsDaemon(): Promise<void> {
  if (await zfsAnswers()) return;
  if ((await which("zfs-fuse")) === undefined) {
    throw new Error("ZFS is not answering and zfs-fuse is not installed: run scripts/setup-host.sh (it installs zfs-fuse) as root");
  }
  if (!existsSync("/dev/fuse")) {
    throw new Error(
      "zfs-fuse needs /dev/fuse, which this machine lacks: load the fuse module (modprobe fuse) or give the container /dev/fuse",
    );
  }
  // zfs-fuse exits 1 without a word when its pidfile names a process that is gone (a crashed or
  // killed earlier run); the pidfile is only ours to clear when its process is really dead.
  if (existsSync(PIDFILE)) {
    const pid = Number(readFileSync(PIDFILE, "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) await rm(PIDFILE, { force: true });
  }
  // A zfs-fuse that is still shutting down holds its socket and makes the new one exit; wait it out.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = "";
  let started = false;
  while (Date.now() < deadline) {
    if (!started) {
      try {
        // Forks into the background once its socket is up; it outlives the test run like a service would.
        await runHost("zfs-fuse", ["--pidfile", PIDFILE], { timeoutMs: 15_000 });
        started = true;
      } catch (error) {
        lastError = error instanceof HostCommandError ? error.message : String(error);
        if (existsSync(PIDFILE) && !pidAlive(Number(readFileSync(PIDFILE, "utf8").trim()))) await rm(PIDFILE, { force: true });
      }
    }
    if (await zfsAnswers()) return;
    await sleep(100);
  }
  throw new Error(`zfs-fuse did not start answering within ${READY_TIMEOUT_MS / 1000} s${lastError === "" ? "" : `: ${lastError}`}`);
}

async function poolExists(pool: string): Promise<boolean> {
  try {
    await runZfs("zpool", ["list", "-H", "-o", "name", pool], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * A fresh 2 GiB file-backed pool named `name` (a leftover one from a crashed run is destroyed first),
 * mounted under /var/tmp, with the dataset `<name>/aether`.
 */
export async function startZfsPool(name: string): Promise<ZfsTestPool> {
  if (!/^[a-z][a-z0-9]*$/.test(name)) throw new Error(`"${name}" is not a test pool name (lowercase letters and digits)`);
  await ensureZfsDaemon();
  const file = `/var/tmp/aether-zfs-${name}.img`;
  const mountpoint = `/var/tmp/aether-zfs-${name}-mnt`;
  const remove = async () => {
    // zfs-fuse answers "pool is busy" while it is still unmounting the pool's datasets, which takes
    // longer on a loaded host (5 s of retries once ran out at load 12): retry for up to 30 s.
    const deadline = Date.now() + 30_000;
    while (await poolExists(name)) {
      try {
        await runZfs("zpool", ["destroy", "-f", name], { timeoutMs: 60_000 });
      } catch (err) {
        if (Date.now() > deadline || !(err instanceof HostCommandError && /busy/.test(err.stderr))) throw err;
        await sleep(250);
      }
    }
    await rm(file, { force: true });
    // Only once the pool is gone: before that, this would delete the pool's own files.
    await rm(mountpoint, { recursive: true, force: true });
  };
  await remove();
  await runHost("truncate", ["-s", "2G", file]);
  // A file vdev needs no options on zfs-fuse; -f because the file may carry an old pool's label.
  await runZfs("zpool", ["create", "-f", "-m", mountpoint, name, file], { timeoutMs: 60_000 });
  const dataset = `${name}/aether`;
  await runZfs("zfs", ["create", dataset]);
  return { pool: name, dataset, mountpoint, destroy: remove };
}
