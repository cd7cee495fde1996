// What aetherd keeps about replication, one JSON file per object, written atomically:
// <state>/replication/policies/<id>.json (a policy and, per volume and target, the last run's
// figures) and <state>/replication/replicas/<source volume id>.json (what a replica held here is of).
// The points themselves are named aether-repl-<ms> (ZFS snapshots, or qcow2 files in a dir pool):
// the storage is the truth of which point a side holds (a point is applied atomically; a record may
// lag it after a crash, never lead it).
import { z } from "zod";

export const POINT_PREFIX = "aether-repl-";

/** The snapshot name of a point taken at `ms`. */
export function pointName(ms: number): string {
  return `${POINT_PREFIX}${ms}`;
}

/** When a point was taken, from its name; undefined for a snapshot that is not a replication point. */
export function pointTimeMs(name: string): number | undefined {
  const m = /^aether-repl-(\d{13})$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export const TargetStatusSchema = z.object({
  lastPoint: z.string().default(""),
  lastPointMs: z.number().default(0),
  lastSentBytes: z.number().default(0),
  totalSentBytes: z.number().default(0),
  lastRunMs: z.number().default(0),
  lastError: z.string().default(""),
});
export type TargetStatus = z.infer<typeof TargetStatusSchema>;

export const PolicyRecordSchema = z.object({
  /** The id of the VM or volume it protects. */
  id: z.string(),
  tenant: z.string(),
  kind: z.enum(["vm", "volume"]),
  targets: z.array(z.string()),
  intervalMs: z.number(),
  retention: z.number(),
  rpoMs: z.number(),
  createTimeMs: z.number(),
  /** When the next run is due (kept so a restart does not run every policy at once). */
  nextRunMs: z.number(),
  /** Per volume id, per target address. */
  status: z.record(z.string(), z.record(z.string(), TargetStatusSchema)),
});
export type PolicyRecord = z.infer<typeof PolicyRecordSchema>;

export const ReplicaRecordSchema = z.object({
  sourceVolumeId: z.string(),
  volumeName: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  sizeBytes: z.number(),
  sourceNode: z.string(),
  vmId: z.string(),
  vmName: z.string(),
  workloadId: z.string(),
  /** The pool holding the replica. */
  pool: z.string(),
  /** What kind of store holds it (driver.ts): "zfs" for records written before dir pools replicated. */
  kind: z.enum(["zfs", "qcow2"]).default("zfs"),
  receivedBytes: z.number(),
  /** The volume made from the replica when its VM was started here; "" until then. */
  promotedVolume: z.string(),
});
export type ReplicaRecord = z.infer<typeof ReplicaRecordSchema>;
