// The one way aetherd (and the tests) run `zfs` and `zpool`. On zfs-fuse they take a host-wide lock
// first, because zfs-fuse 0.7 deadlocks when two commands that mount or unmount run at once: its
// FUSE listener stops answering, and the next `zfs create`, `umount` or write into a dataset sleeps
// in the kernel (D state, fuse_get_req) until zfs-fuse is killed. Reproduced on this project's test
// host with two shell loops of `zfs create; zfs snapshot; zfs destroy` on two pools: a hang within
// one to three rounds; with every command under `flock` on one file, five rounds of three such
// loops (and four loops of pool create / dataset create / write / destroy) never hung. The kernel
// module (ZFS on Linux) has no such bug, so there the commands run unserialized.
//
// The lock is flock(1) with --no-fork: the command replaces flock and holds the lock itself, so a
// timeout or an abort kills the zfs command, never an orphan behind a dead parent.
import { existsSync } from "node:fs";
import { HostCommandError, runHost, spawnHost, type HostCommandResult, type StreamingHostCommand } from "./command.js";

export const ZFS_LOCK_PATH = "/run/lock/aether-zfs.lock";

// flock's exit code when it could not take the lock in time; no zfs command exits with it.
const LOCK_TIMEOUT_EXIT = 75;

let serializing: boolean | undefined;

/** For tests: make commands take turns (or not) whatever ZFS this host has. */
export function setZfsCommandsTakeTurns(value: boolean): void {
  serializing = value;
}

/** Whether ZFS here is zfs-fuse (no kernel module loaded), whose commands must take turns. */
export function zfsCommandsTakeTurns(): boolean {
  serializing ??= !existsSync("/sys/module/zfs");
  return serializing;
}

function locked(file: string, args: readonly string[], lockWaitMs: number): [string, string[]] {
  if (!zfsCommandsTakeTurns()) return [file, [...args]];
  const waitSeconds = String(Math.max(1, Math.ceil(lockWaitMs / 1000)));
  return ["flock", ["--no-fork", "-E", String(LOCK_TIMEOUT_EXIT), "-w", waitSeconds, ZFS_LOCK_PATH, file, ...args]];
}

/** Errors name the zfs command, not the flock in front of it, and say when the lock was the wait. */
function asZfsError(err: unknown, file: string, args: readonly string[], lockWaitMs: number): unknown {
  if (!(err instanceof HostCommandError) || !zfsCommandsTakeTurns()) return err;
  const command = [file, ...args].join(" ");
  if (err.exitCode === LOCK_TIMEOUT_EXIT && err.stderr === "") {
    return new HostCommandError(
      `${command} did not start: another zfs command held the host's ZFS lock (${ZFS_LOCK_PATH}) for ${Math.ceil(lockWaitMs / 1000)} s; ` +
        "check for a hung zfs or zpool process (ps -eo pid,stat,cmd | grep -E 'zfs|zpool')",
      command,
      err.stderr,
      err.exitCode,
    );
  }
  const message = err.message.startsWith("flock ")
    ? err.message.replace(/^flock .*? (did not finish|failed)/, `${command} $1`)
    : err.message;
  return new HostCommandError(message, command, err.stderr, err.exitCode);
}

/**
 * Runs `file args` (zfs, zpool, or a configured path to one) to completion. `timeoutMs` is the
 * command's own time; on zfs-fuse it may first wait as long again for the host's ZFS lock.
 */
export async function runZfs(file: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<HostCommandResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const [command, argv] = locked(file, args, timeoutMs);
  try {
    return await runHost(command, argv, { timeoutMs: zfsCommandsTakeTurns() ? 2 * timeoutMs : timeoutMs });
  } catch (err) {
    throw asZfsError(err, file, args, timeoutMs);
  }
}

/**
 * Runs zfs commands one after another in one turn of the host's ZFS lock, stopping at the first that
 * fails, and answers with the last one's output. On zfs-fuse that is one flock and one shell instead
 * of a flock per command: each command aetherd starts costs it a process start and the lock again,
 * which for a quick `zfs get` after a clone costs about as much as the get itself. Elsewhere the
 * commands simply run in order.
 */
export async function runZfsInOneTurn(
  file: string,
  commands: readonly (readonly string[])[],
  options: { timeoutMs?: number } = {},
): Promise<HostCommandResult> {
  if (!zfsCommandsTakeTurns()) {
    let last: HostCommandResult = { stdout: "", stderr: "" };
    for (const args of commands) last = await runZfs(file, args, options);
    return last;
  }
  const timeoutMs = options.timeoutMs ?? 30_000;
  // "$0" is the zfs command's path; the arguments are quoted for the shell, never interpreted.
  const script = commands
    .map((args, i) => ['"$0"', ...args.map(shellQuote), ...(i < commands.length - 1 ? [">/dev/null"] : [])].join(" "))
    .join(" && ");
  const described = commands.map((args) => [file, ...args].join(" ")).join(" && ");
  const [command, argv] = locked("sh", ["-c", script, file], timeoutMs);
  try {
    // The lock's wait, then each command's own time.
    return await runHost(command, argv, { timeoutMs: timeoutMs * (commands.length + 1) });
  } catch (err) {
    // Named as the zfs commands, not as the flock and shell in front of them.
    throw asZfsError(err, described, [], timeoutMs);
  }
}

function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

/**
 * Starts a streaming zfs command (`zfs receive`) that holds the host's ZFS lock while it runs, since
 * zfs-fuse mounts the received dataset at its end. `zfs send` must not use this: on a host that
 * both sends and receives (two aetherd on one machine), a send holding the lock would wait on the
 * receive that waits for the lock.
 */
export function spawnZfsLocked(
  file: string,
  args: readonly string[],
  options: { stdin: boolean; stdout: boolean; signal?: AbortSignal; lockWaitMs: number },
): StreamingHostCommand {
  const [command, argv] = locked(file, args, options.lockWaitMs);
  const started = spawnHost(command, argv, {
    stdin: options.stdin,
    stdout: options.stdout,
    ...(options.signal && { signal: options.signal }),
  });
  const done = started.done.catch((err: unknown) => {
    throw asZfsError(err, file, args, options.lockWaitMs);
  });
  done.catch(() => undefined);
  return { child: started.child, done };
}
