// The source side of dir (qcow2) pool replication. A point is a qcow2 file under
// <pool>/replication/<volume id>/: <point>.qcow2 holds either the whole volume or only the clusters
// written since the point before it, and <point>.json says which ({"base": ""} or the base point),
// written after the data so a crash never leaves a point whose data is missing.
//
// For a running VM the point is taken by QEMU (incremental backup): a persistent dirty bitmap named
// after the last point tracks every write since it; a new point is a drive-backup with
// sync=incremental and that bitmap, started in one transaction with the bitmap of the new point, so
// no write falls between two bitmaps. The old bitmap is dropped only once the new point's file is
// in place: a crash in between leaves the old bitmap and the old point, and the next run takes the
// increment again. The first point (or one a target cannot follow, or when the bitmap is gone or
// was left inconsistent by a QEMU killed -9) is a full backup in a transaction with the new bitmap.
// For a volume no QEMU has open, qemu-img adds the bitmap (QEMU tracks into it once the VM starts)
// and copies the whole volume.
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { DomainError, describeError, writeJsonAtomic } from "@aether/server";
import { qemuImg } from "../storage/qemu-img.js";
import type { Logger } from "pino";
import type { QmpClient } from "../vm/qmp.js";
import type { ReplicationSource, StreamStep } from "./driver.js";
import { POINT_PREFIX, pointTimeMs } from "./records.js";

/** How long one backup job may take before it is cancelled (a TCG guest writing during it slows it). */
const JOB_TIMEOUT_MS = 30 * 60_000;

interface PointMeta {
  /** "" for a whole point, else the point it is an increment over. */
  base: string;
}

export interface Qcow2Volume {
  id: string;
  name: string;
  hostPath: string;
  sizeBytes: number;
}

export function qcow2Source(
  volume: Qcow2Volume,
  o: {
    /** The pool's folder (replication/ is made in it). */
    poolLocation: string;
    /** The QMP client of the running QEMU that has the volume open; undefined when none has. */
    qmp: () => QmpClient | undefined;
    log: Logger;
  },
): ReplicationSource {
  const dir = join(o.poolLocation, "replication", volume.id);
  const data = (point: string) => join(dir, `${point}.qcow2`);
  const meta = (point: string) => join(dir, `${point}.json`);

  async function metas(): Promise<Map<string, PointMeta>> {
    const out = new Map<string, PointMeta>();
    for (const name of await readdir(dir).catch(() => [])) {
      const point = name.replace(/\.json$/, "");
      if (!name.endsWith(".json") || pointTimeMs(point) === undefined) continue;
      try {
        out.set(point, JSON.parse(await readFile(join(dir, name), "utf8")) as PointMeta);
      } catch {
        // A meta is written atomically: unreadable means someone else's file; it is no point.
      }
    }
    return new Map([...out].sort((a, b) => (pointTimeMs(a[0]) as number) - (pointTimeMs(b[0]) as number)));
  }

  const hasData = (point: string) =>
    stat(data(point)).then(
      () => true,
      () => false,
    );

  /** The steps from what a target holds to `to`, or undefined when the files to build them are gone. */
  async function chain(all: Map<string, PointMeta>, held: string[], to: string): Promise<StreamStep[] | undefined> {
    const steps: StreamStep[] = [];
    let cur = to;
    for (;;) {
      if (held.includes(cur)) return steps;
      const m = all.get(cur);
      if (!m || !(await hasData(cur))) return undefined;
      steps.unshift({ base: m.base, point: cur });
      if (m.base === "") return steps;
      cur = m.base;
    }
  }

  /** Finds the QEMU drive that has the volume's file open. */
  async function driveOf(qmp: QmpClient): Promise<string> {
    const blocks = await qmp.execute<Array<{ device: string; inserted?: { file?: string } }>>("query-block");
    const drive = blocks.find((b) => b.inserted?.file === volume.hostPath);
    if (!drive)
      throw new DomainError("failed_precondition", `the VM's QEMU does not have volume ${volume.name} open (${volume.hostPath}).`);
    return drive.device;
  }

  /** Runs a transaction that starts a backup job, and waits for the job's end. */
  async function backupJob(qmp: QmpClient, actions: Array<{ type: string; data: Record<string, unknown> }>, jobId: string): Promise<void> {
    const ended = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        stop();
        void qmp.execute("block-job-cancel", { device: jobId, force: true }).catch(() => undefined);
        reject(new DomainError("unavailable", `the backup of volume ${volume.name} took longer than ${JOB_TIMEOUT_MS / 60_000} minutes.`));
      }, JOB_TIMEOUT_MS);
      const onEvent = (e: { event: string; data: Record<string, unknown> }) => {
        if (e.data.device !== jobId) return;
        if (e.event === "BLOCK_JOB_COMPLETED") {
          stop();
          if (typeof e.data.error === "string")
            reject(new DomainError("unavailable", `QEMU's backup of volume ${volume.name} failed: ${e.data.error}`));
          else resolve();
        } else if (e.event === "BLOCK_JOB_CANCELLED") {
          stop();
          reject(new DomainError("unavailable", `QEMU's backup of volume ${volume.name} was cancelled.`));
        }
      };
      const stop = () => {
        clearTimeout(timer);
        qmp.events.off("event", onEvent);
      };
      qmp.events.on("event", onEvent);
      qmp.execute("transaction", { actions }).catch((err: unknown) => {
        stop();
        reject(err);
      });
    });
    await ended;
  }

  /** A point of a running VM; false when the increment cannot be taken (no usable bitmap). */
  async function takeRunning(qmp: QmpClient, point: string, base: string, part: string): Promise<boolean> {
    const drive = await driveOf(qmp);
    const jobId = `aether-repl-${volume.id.slice(0, 8)}`;
    const newBitmap = { type: "block-dirty-bitmap-add", data: { node: drive, name: point, persistent: true } };
    if (base !== "") {
      // The increment's clusters are laid over an empty backing file: a cluster the guest zeroed
      // is then written as a zero cluster, not left unallocated (which would show the base's data).
      const blank = join(dir, "blank.qcow2");
      await qemuImg(["create", "-q", "-f", "qcow2", blank, String(volume.sizeBytes)]);
      await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", blank, part, String(volume.sizeBytes)]);
      try {
        await backupJob(
          qmp,
          [
            newBitmap,
            {
              type: "drive-backup",
              data: {
                "job-id": jobId,
                device: drive,
                target: part,
                format: "qcow2",
                mode: "existing",
                // sync=bitmap with bitmap-mode=never (sync=incremental would clear it at once): the
                // old bitmap stays whole until the new point is in place, see take().
                sync: "bitmap",
                bitmap: base,
                "bitmap-mode": "never",
                "auto-dismiss": true,
              },
            },
          ],
          jobId,
        );
        return true;
      } catch (err) {
        await qmp.execute("block-dirty-bitmap-remove", { node: drive, name: point }).catch(() => undefined);
        // No bitmap of the base (a restarted QEMU after a crash, another file under the drive): a whole point.
        if (
          /bitmap '[^']*' (?:not found|is inconsistent)|Dirty bitmap '[^']*' not found|Bitmap '[^']*' .*inconsistent/i.test(
            describeError(err),
          )
        )
          return false;
        throw err;
      }
    }
    await qemuImg(["create", "-q", "-f", "qcow2", part, String(volume.sizeBytes)]);
    try {
      await backupJob(
        qmp,
        [
          newBitmap,
          {
            type: "drive-backup",
            data: { "job-id": jobId, device: drive, target: part, format: "qcow2", mode: "existing", sync: "full", "auto-dismiss": true },
          },
        ],
        jobId,
      );
    } catch (err) {
      await qmp.execute("block-dirty-bitmap-remove", { node: drive, name: point }).catch(() => undefined);
      throw err;
    }
    return true;
  }

  /** Drops the bitmaps of older points (each tracks writes since its point; only the newest is needed). */
  async function dropOldBitmaps(qmp: QmpClient | undefined, keep: string): Promise<void> {
    if (qmp) {
      const drive = await driveOf(qmp);
      const blocks = await qmp.execute<Array<{ device: string; inserted?: { "dirty-bitmaps"?: Array<{ name: string }> } }>>("query-block");
      const names = blocks.find((b) => b.device === drive)?.inserted?.["dirty-bitmaps"]?.map((b) => b.name) ?? [];
      for (const name of names)
        if (name.startsWith(POINT_PREFIX) && name !== keep) await qmp.execute("block-dirty-bitmap-remove", { node: drive, name });
      return;
    }
    for (const name of await bitmapsOnFile())
      if (name.startsWith(POINT_PREFIX) && name !== keep) await qemuImg(["bitmap", "--remove", volume.hostPath, name]);
  }

  async function bitmapsOnFile(): Promise<string[]> {
    const info = JSON.parse(await qemuImg(["info", "--output=json", "-U", volume.hostPath])) as {
      "format-specific"?: { data?: { bitmaps?: Array<{ name: string }> } };
    };
    return info["format-specific"]?.data?.bitmaps?.map((b) => b.name) ?? [];
  }

  return {
    kind: "qcow2",
    async points() {
      return [...(await metas()).keys()];
    },
    async take(point, held) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      for (const name of await readdir(dir)) if (name.endsWith(".part")) await rm(join(dir, name), { force: true });
      const all = await metas();
      const latest = [...all.keys()].at(-1) ?? "";
      // An increment only when every target can follow the chain to it.
      let base = latest;
      let why = latest === "" ? "the first point" : "";
      if (base !== "")
        for (const h of held)
          if ((await chain(all, h, latest)) === undefined) {
            base = "";
            why = `a target holds ${h.at(-1) ?? "nothing"}, which the kept points do not lead on from`;
          }
      const part = join(dir, `${point}.qcow2.part`);
      const qmp = o.qmp();
      try {
        if (qmp) {
          if (!(await takeRunning(qmp, point, base, part))) {
            base = "";
            why = "QEMU has no usable bitmap of the last point (restarted, or killed and left it inconsistent)";
            await rm(part, { force: true });
            await takeRunning(qmp, point, "", part);
          }
        } else {
          // No QEMU has it open: the bitmap first (a VM started during the copy tracks into it),
          // then the whole volume.
          base = "";
          why = "no QEMU has the volume open";
          await qemuImg(["bitmap", "--add", volume.hostPath, point]);
          await qemuImg(["convert", "-O", "qcow2", volume.hostPath, part], 30 * 60_000);
        }
        await rename(part, data(point));
        await writeJsonAtomic(meta(point), { base } satisfies PointMeta);
        o.log.info(
          { volume: volume.id, point, base, whole: why },
          base === "" ? "whole replication point taken" : "incremental replication point taken",
        );
      } finally {
        await rm(part, { force: true });
        await rm(join(dir, "blank.qcow2"), { force: true });
      }
      await dropOldBitmaps(qmp, point).catch(() => undefined);
    },
    async plan(held, point) {
      const steps = await chain(await metas(), held, point);
      if (!steps)
        throw new DomainError(
          "failed_precondition",
          `the points of volume ${volume.name} needed to bring the target from ${held.at(-1) ?? "nothing"} to ${point} are gone; the next run sends the whole volume.`,
        );
      return steps;
    },
    open(step, signal) {
      const stream = createReadStream(data(step.point), { highWaterMark: 1024 * 1024, signal });
      const done = new Promise((resolve, reject) => {
        stream.once("close", () => resolve(undefined));
        stream.once("error", reject);
      });
      return { stream, done };
    },
    async prune(keep, retention) {
      const all = await metas();
      const points = [...all.keys()];
      const latest = points.at(-1) ?? "";
      // The data each target still needs to reach the latest point; a point's meta stays while its
      // data does, and for the newest `retention` points (so a target's chain can be told).
      const needed = new Set<string>();
      for (const held of keep) for (const step of (await chain(all, held === "" ? [] : [held], latest)) ?? []) needed.add(step.point);
      for (const [i, point] of points.entries()) {
        if (needed.has(point)) continue;
        await rm(data(point), { force: true });
        if (i < points.length - retention && point !== latest) await rm(meta(point), { force: true });
      }
    },
    async forget() {
      await rm(dir, { recursive: true, force: true });
      await dropOldBitmaps(o.qmp(), "").catch(() => undefined);
    },
  };
}
