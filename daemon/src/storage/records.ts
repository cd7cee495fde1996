// What aetherd keeps about volumes, snapshots and images: one JSON file per object under
// <state>/storage/{volumes,snapshots,images}/<id>.json, written atomically. Clones, users and
// snapshot counts are derived from these records when asked, never stored twice.
//
// Every create and delete is written ahead: the record says "creating" or "deleting" (durably)
// before the host is touched, and is flipped or removed when the host work is done. A record still
// in one of those states when aetherd starts is a crash in the middle, which load() settles: a
// create is undone, a delete is finished.
import { z } from "zod";

const Format = z.enum(["qcow2", "raw", "zvol", "zfs-file", "lvm-thin"]);

export const VolumeRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  createTimeMs: z.number(),
  state: z.enum(["creating", "ready", "deleting", "failed"]),
  stateReason: z.string(),
  pool: z.string(),
  format: Format,
  sizeBytes: z.number(),
  hostPath: z.string(),
  /** What the volume is a thin clone of. */
  backing: z.object({ kind: z.enum(["none", "image", "snapshot"]), id: z.string() }),
  requestId: z.string(),
  /** A VM that made this volume (a boot clone of an image) and deletes it with itself; "" otherwise. */
  ownerVm: z.string(),
});
export type VolumeRecord = z.infer<typeof VolumeRecordSchema>;

export const SnapshotRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  createTimeMs: z.number(),
  /** Order among the snapshots of the volume (clock-independent). */
  seq: z.number(),
  /** "creating" only on disk, while the snapshot is being taken; such a snapshot is never listed. */
  state: z.enum(["creating", "ready", "deleting", "failed"]),
  stateReason: z.string(),
  volume: z.string(),
  sizeBytes: z.number(),
  requestId: z.string(),
  /**
   * The clone this snapshot was taken for by CloneVolume (no snapshot named), until that clone is
   * ready; "" otherwise. After a crash, a snapshot whose clone never came to be is deleted.
   */
  forClone: z.string().default(""),
});
export type SnapshotRecord = z.infer<typeof SnapshotRecordSchema>;

export const ImageRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  createTimeMs: z.number(),
  state: z.enum(["importing", "ready", "failed", "deleting"]),
  stateReason: z.string(),
  pool: z.string(),
  format: Format,
  source: z.object({ kind: z.enum(["local", "url"]), value: z.string() }),
  sha256: z.string(),
  sourceFormat: z.enum(["", "qcow2", "raw"]),
  sizeBytes: z.number(),
  importedBytes: z.number(),
  sourceBytes: z.number(),
  hostPath: z.string(),
  readyTimeMs: z.number(),
  requestId: z.string(),
});
export type ImageRecord = z.infer<typeof ImageRecordSchema>;
