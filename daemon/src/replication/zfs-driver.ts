// Replication of zfs pools behind the driver seam (driver.ts): a point is a snapshot of the volume's
// dataset; a target is sent one stream, incremental from the newest point both sides hold (zfs
// send -i), received by `zfs receive` into <pool>/replicas/<source volume id>, which applies a
// stream whole or not at all.
import { DomainError } from "@aether/server";
import type { ZfsPool } from "../storage/zfs-pool.js";
import type { ReplicaStore, ReplicationSource, StreamStep } from "./driver.js";
import {
  datasetExists,
  datasetType,
  destroyDataset,
  destroyPoint,
  ensureDataset,
  listPoints,
  receive,
  send,
  takePoint,
} from "./zfs-streams.js";

export function zfsSource(dataset: string, volumeName: string): ReplicationSource {
  // A source lives for one run: the points listed at its start, with the one it took, spare plan()
  // another `zfs list` (10-80 ms under zfs-fuse, see bench/replication.ts).
  let listed: string[] | undefined;
  return {
    kind: "zfs",
    points: async () => (listed = await listPoints(dataset)),
    async take(point) {
      await takePoint(dataset, point);
      listed = listed && [...listed, point];
    },
    async plan(held, point) {
      const local = new Set(listed ?? (await listPoints(dataset)));
      // The newest point both sides hold is the base; none: the whole volume.
      const base = [...held].reverse().find((name) => local.has(name) && name !== point) ?? "";
      if (base === "" && held.length > 0)
        throw new DomainError(
          "failed_precondition",
          `the target holds points of volume ${volumeName} that this node no longer has (${held.at(-1)}); delete the replica there (DeleteReplica) to send the whole volume again.`,
        );
      return [{ base, point }];
    },
    open(step: StreamStep, signal) {
      const zfs = send(dataset, step.point, step.base, signal);
      return { stream: zfs.stream, done: zfs.done };
    },
    async prune(keep, retention) {
      const points = await listPoints(dataset).catch(() => []);
      for (const old of points.slice(0, Math.max(0, points.length - retention))) if (!keep.has(old)) await destroyPoint(dataset, old);
    },
    async forget() {
      for (const point of await listPoints(dataset).catch(() => [])) await destroyPoint(dataset, point).catch(() => undefined);
    },
  };
}

export function zfsReplicaStore(pool: ZfsPool): ReplicaStore {
  const dataset = (id: string) => pool.replicaDataset(id);
  return {
    kind: "zfs",
    poolName: pool.name,
    wholeReplaces: false,
    points: (id) => listPoints(dataset(id)),
    exists: (id) => datasetExists(dataset(id)),
    async apply(id, step, signal) {
      const ds = dataset(id);
      await ensureDataset(ds.slice(0, ds.lastIndexOf("/")));
      const abort = new AbortController();
      const onAbort = () => abort.abort();
      // A sender gone while the dataset was made: its abort has fired already, and no listener hears it.
      if (signal.aborted) abort.abort();
      else signal.addEventListener("abort", onAbort, { once: true });
      // -F for an incremental stream rolls the replica back to its last point first.
      const zfs = receive(ds, step.point, step.base !== "", abort.signal);
      const done = zfs.done.finally(() => signal.removeEventListener("abort", onAbort));
      // It may fail while nobody awaits it yet (killed when the sender went away): a rejection left
      // unobserved would end aetherd. The caller gets the failure from `done` all the same.
      done.catch(() => undefined);
      return {
        sink: zfs.sink,
        done,
        // zfs receive made the point when it exited well: nothing more to do.
        commit: async () => undefined,
        abort: async () => {
          abort.abort();
          await done.catch(() => undefined);
        },
      };
    },
    async prune(id, retention) {
      const points = await listPoints(dataset(id));
      for (const old of points.slice(0, Math.max(0, points.length - retention))) await destroyPoint(dataset(id), old);
    },
    async volumeFrom(id, point, sizeBytes) {
      const format = (await datasetType(dataset(id))) === "volume" ? "zvol" : "zfs-file";
      return { format, make: (volumeId) => pool.cloneReplica(`${dataset(id)}@${point}`, format, volumeId, sizeBytes) };
    },
    destroy: (id) => destroyDataset(dataset(id)),
  };
}
