// The target side of dir (qcow2) pool replication: a replica is <pool>/replicas/<source volume id>/
// <point>.qcow2, one whole qcow2 file of its latest point. A stream is written to <point>.qcow2.part
// and becomes the latest point only by a rename, after fsync: a transfer cut short (the source gone,
// this aetherd killed -9) leaves a .part that is thrown away, and the previous point untouched.
// An increment (only the clusters written since the base) is laid over the base by
// `qemu-img rebase -u` before its rename, so from that instant <point>.qcow2 reads as the whole
// point; then `qemu-img commit` folds it into the base file and the base file is renamed onto
// <point>.qcow2. A crash during the fold leaves the overlay on a partly folded base, which still
// reads as the point (the overlay holds every cluster the fold writes), and settle() finishes it.
// Only the latest point is kept: the source sends increments from the point the target holds.
import { createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { DomainError } from "@aether/server";
import type { DirPool } from "../storage/dir-pool.js";
import { qemuImg, qemuImgInfo } from "../storage/qemu-img.js";
import type { ReplicaStore } from "./driver.js";
import { pointTimeMs } from "./records.js";

async function fsyncPath(path: string): Promise<void> {
  const fd = await open(path, "r");
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

export function qcow2ReplicaStore(pool: DirPool): ReplicaStore {
  const dirOf = (id: string) => join(pool.location, "replicas", id);
  const file = (id: string, point: string) => join(dirOf(id), `${point}.qcow2`);

  /** The complete points' files, oldest first. */
  async function files(id: string): Promise<string[]> {
    return (await readdir(dirOf(id)).catch(() => []))
      .filter((n) => n.endsWith(".qcow2") && pointTimeMs(n.slice(0, -6)) !== undefined)
      .map((n) => n.slice(0, -6))
      .sort((a, b) => (pointTimeMs(a) as number) - (pointTimeMs(b) as number));
  }

  /** Finishes a fold a crash interrupted, and drops the older files: one whole file of the latest point remains. */
  async function settle(id: string): Promise<string | undefined> {
    const points = await files(id);
    const latest = points.at(-1);
    if (latest === undefined) return undefined;
    const info = await qemuImgInfo(file(id, latest), "qcow2");
    if (info.backingFile !== "") {
      const base = points.find((p) => file(id, p) === info.backingFile);
      if (base === undefined)
        throw new DomainError("internal", `the replica of ${id} at ${latest} is laid over ${info.backingFile}, which is gone.`);
      await qemuImg(["commit", "-q", "-d", "-f", "qcow2", file(id, latest)], 30 * 60_000);
      await fsyncPath(file(id, base));
      await rename(file(id, base), file(id, latest));
      await fsyncPath(dirOf(id));
    }
    for (const old of points.slice(0, -1)) await rm(file(id, old), { force: true });
    return latest;
  }

  return {
    kind: "qcow2",
    poolName: pool.name,
    wholeReplaces: true,
    async points(id) {
      const latest = (await files(id)).at(-1);
      return latest === undefined ? [] : [latest];
    },
    async exists(id) {
      return (await files(id)).length > 0;
    },
    async apply(id, step, signal) {
      await mkdir(dirOf(id), { recursive: true, mode: 0o700 });
      for (const name of await readdir(dirOf(id))) if (name.endsWith(".part")) await rm(join(dirOf(id), name), { force: true });
      const latest = await settle(id);
      if (step.base !== "" && step.base !== latest)
        throw new DomainError(
          "failed_precondition",
          `the increment is over point ${step.base}, and this node holds ${latest ?? "no point"} of the volume; the source sends the whole volume next.`,
        );
      const part = `${file(id, step.point)}.part`;
      const sink = createWriteStream(part, { mode: 0o600, signal });
      const done = new Promise<void>((resolve, reject) => {
        sink.once("finish", resolve);
        sink.once("error", reject);
      });
      return {
        sink,
        done,
        async commit() {
          // What a node sent is checked before it is opened as a disk: a qcow2 of the volume's
          // size whose data is inside it (no external data file; its backing is set here).
          const info = await qemuImgInfo(part, "qcow2");
          if (info.format !== "qcow2" || info.dataFile !== "")
            throw new DomainError("invalid_argument", "the stream is not a self-contained qcow2 image.");
          if (step.base === "" && info.backingFile !== "")
            throw new DomainError("invalid_argument", "a whole point must not have a backing file.");
          if (step.base !== "") await qemuImg(["rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", file(id, step.base), part]);
          await fsyncPath(part);
          await rename(part, file(id, step.point));
          await fsyncPath(dirOf(id));
          await settle(id);
        },
        async abort() {
          sink.destroy();
          await rm(part, { force: true });
        },
      };
    },
    async prune(id) {
      await settle(id);
    },
    async volumeFrom(id, point, sizeBytes) {
      const latest = await settle(id);
      if (latest !== point)
        throw new DomainError("failed_precondition", `the replica of ${id} holds ${latest ?? "no point"}, not ${point}.`);
      return {
        format: "qcow2",
        // A thin overlay on the replica's file: the replica then takes no more points (receive refuses).
        make: (volumeId) => pool.cloneImage({ id, hostPath: file(id, point), format: "qcow2", sizeBytes }, volumeId, sizeBytes),
      };
    },
    async destroy(id) {
      await rm(dirOf(id), { recursive: true, force: true });
    },
  };
}
