// One aetherd per state directory. Two daemons on one state dir would both run recovery, grab the
// same VMs' QMP sockets and rewrite each other's records, so the lock is taken before anything in
// the folder is read or written, and a second daemon stops at once naming the holder.
//
// The lock is flock(2) on <state_dir>/aetherd.lock, held through a descriptor aetherd keeps open for
// its whole life: the kernel drops it when aetherd exits in any way, kill -9 included, so a stale
// lock never blocks a restart. Node has no flock binding, so util-linux's `flock` takes it on a
// descriptor it inherits from aetherd; the lock belongs to the shared open file description and
// stays after that helper exits. The descriptor is opened close-on-exec (Node's default), so the
// processes aetherd starts later do not inherit it.
import { spawnSync } from "node:child_process";
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Raised when another process holds the state directory, or the lock cannot be taken. */
export class StateLockError extends Error {}

/** flock's exit code for "held by someone else" (-E), chosen apart from its own failures. */
const HELD = 75;

export interface StateLock {
  readonly path: string;
  /** Releases the lock (aetherd exiting releases it as well). */
  release(): void;
}

export function lockStateDir(stateDir: string, program = "aetherd"): StateLock {
  const path = join(stateDir, `${program}.lock`);
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  const result = spawnSync("flock", ["--nonblock", "--conflict-exit-code", String(HELD), "3"], {
    stdio: ["ignore", "ignore", "pipe", fd],
    encoding: "utf8",
  });
  if (result.status !== 0) {
    closeSync(fd);
    if (result.status === HELD) {
      const holder = readFileSync(path, "utf8").trim();
      throw new StateLockError(
        `another ${program} (pid ${holder || "unknown"}) is using the state directory ${stateDir}; stop it first, or give this one its own --state-dir.`,
      );
    }
    const why = result.error ? result.error.message : (result.stderr ?? "").trim() || `flock exited with ${result.status}`;
    throw new StateLockError(`could not lock the state directory ${stateDir} (${why}); util-linux's flock is needed.`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return {
    path,
    release: () => closeSync(fd),
  };
}
