// The ZFS side of replication: replication points (snapshots aether-repl-<ms>) on a volume's
// dataset, `zfs send` of a point (incremental from a base the target holds, or whole), `zfs receive`
// of such a stream on the target (atomic: a stream cut short leaves the dataset at its previous
// point), and pruning old points. Commands go through the host helper, argv only.
import type { Readable, Writable } from "node:stream";
import { HostCommandError, spawnHost, type StreamingHostCommand } from "../host/command.js";
import { runZfs, spawnZfsLocked } from "../host/zfs-command.js";
import { POINT_PREFIX, pointTimeMs } from "./records.js";

const ZFS_TIMEOUT_MS = 60_000;

/** The replication points of a dataset, oldest first; [] when the dataset does not exist. */
export async function listPoints(dataset: string): Promise<string[]> {
  try {
    const { stdout } = await runZfs("zfs", ["list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset], { timeoutMs: ZFS_TIMEOUT_MS });
    return stdout
      .split("\n")
      .filter((line) => line.startsWith(`${dataset}@${POINT_PREFIX}`))
      .map((line) => line.slice(dataset.length + 1))
      .filter((name) => pointTimeMs(name) !== undefined)
      .sort((a, b) => (pointTimeMs(a) as number) - (pointTimeMs(b) as number));
  } catch (err) {
    if (isMissing(err)) return [];
    throw err;
  }
}

export async function datasetExists(dataset: string): Promise<boolean> {
  try {
    await runZfs("zfs", ["list", "-H", "-o", "name", dataset], { timeoutMs: ZFS_TIMEOUT_MS });
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

export async function takePoint(dataset: string, point: string): Promise<void> {
  await runZfs("zfs", ["snapshot", `${dataset}@${point}`], { timeoutMs: ZFS_TIMEOUT_MS });
}

/** Destroys points; one already gone, or one a clone still needs, is left (and logged by the caller). */
export async function destroyPoint(dataset: string, point: string): Promise<void> {
  try {
    await runZfs("zfs", ["destroy", `${dataset}@${point}`], { timeoutMs: ZFS_TIMEOUT_MS });
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}

export async function ensureDataset(dataset: string): Promise<void> {
  try {
    await runZfs("zfs", ["create", "-p", dataset], { timeoutMs: ZFS_TIMEOUT_MS });
  } catch (err) {
    if (!(err instanceof HostCommandError && /already exists/.test(err.stderr))) throw err;
  }
}

export async function destroyDataset(dataset: string): Promise<void> {
  try {
    await runZfs("zfs", ["destroy", "-r", dataset], { timeoutMs: ZFS_TIMEOUT_MS });
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}

/**
 * `zfs send [-i base] dataset@point`: its stdout is the stream. Not under the host's ZFS lock (see
 * host/zfs-command.ts): it mounts nothing, and the receive it feeds may be on this same host.
 */
export function send(dataset: string, point: string, base: string, signal: AbortSignal): StreamingHostCommand & { stream: Readable } {
  const args = ["send", ...(base === "" ? [] : ["-i", `${dataset}@${base}`]), `${dataset}@${point}`];
  const cmd = spawnHost("zfs", args, { stdin: false, stdout: true, signal });
  return { ...cmd, stream: cmd.child.stdout as Readable };
}

/**
 * `zfs receive [-F] dataset@point`: its stdin takes the stream. -F for an incremental stream rolls
 * the replica back to its last point first (zfs-fuse mounts it, and a mount may touch it).
 */
export function receive(
  dataset: string,
  point: string,
  incremental: boolean,
  signal: AbortSignal,
): StreamingHostCommand & { sink: Writable } {
  const args = ["receive", ...(incremental ? ["-F"] : []), `${dataset}@${point}`];
  const cmd = spawnZfsLocked("zfs", args, { stdin: true, stdout: false, signal, lockWaitMs: ZFS_TIMEOUT_MS });
  return { ...cmd, sink: cmd.child.stdin as Writable };
}

/** The dataset's type ("filesystem" or "volume"). */
export async function datasetType(dataset: string): Promise<string> {
  const { stdout } = await runZfs("zfs", ["get", "-Hp", "-o", "value", "type", dataset], { timeoutMs: ZFS_TIMEOUT_MS });
  return stdout.trim();
}

function isMissing(err: unknown): boolean {
  return err instanceof HostCommandError && /does not exist|could not find any snapshots/.test(err.stderr);
}
