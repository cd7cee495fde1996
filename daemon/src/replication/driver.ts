// The seam between replication's schedule and wire (policies.ts, replicas.ts, service.ts) and the
// storage that makes and applies points: one source and one replica store per pool driver. ZFS
// (zfs-driver.ts: snapshots, zfs send/receive) and dir pools (qcow2-source.ts, qcow2-replicas.ts:
// QEMU's incremental backup with a persistent dirty bitmap, qcow2 files laid over each other) are
// the two implementations; the rest of replication never asks which one it holds.
import type { Readable, Writable } from "node:stream";
import type { StoredDisk } from "../storage/pool.js";

/** What a stream's bytes are (ReplicaHeader.kind). */
export type StreamKind = "zfs" | "qcow2";

/** One stream a target is sent: from `base` ("" for a whole volume) to `point`. */
export interface StreamStep {
  base: string;
  point: string;
}

/** The source side of one volume. */
export interface ReplicationSource {
  readonly kind: StreamKind;
  /** The points this side holds, oldest first. */
  points(): Promise<string[]>;
  /**
   * Takes a new point. `held` is what each reachable target holds (its points, oldest first): a
   * driver that can only send increments along a chain (qcow2) takes a whole point when one of
   * them could not follow it.
   */
  take(point: string, held: string[][]): Promise<void>;
  /** The streams that bring a target holding `held` to `point`, in order; throws a DomainError when none can. */
  plan(held: string[], point: string): Promise<StreamStep[]>;
  /** Starts producing one step's bytes. */
  open(step: StreamStep, signal: AbortSignal): { stream: Readable; done: Promise<unknown> };
  /** Drops points no target needs any more: keeps `keep` (each target's latest) and the newest `retention`. */
  prune(keep: Set<string>, retention: number): Promise<void>;
  /** Drops every point (the policy is deleted). */
  forget(): Promise<void>;
}

/** One incoming stream being applied; its point becomes the latest only in commit(). */
export interface IncomingApply {
  sink: Writable;
  /**
   * Settles when the writer took the whole stream (after sink.end()), or earlier when the writer
   * ends first (it refused the bytes, or the signal stopped it): the caller watches it from apply() on.
   */
  done: Promise<unknown>;
  /** Makes the point the replica's latest, atomically. */
  commit(): Promise<void>;
  /** Discards what was written; the replica keeps its previous point. */
  abort(): Promise<void>;
}

/** The target side: the replicas held in one pool. */
export interface ReplicaStore {
  readonly kind: StreamKind;
  /** The pool the replicas are kept in. */
  readonly poolName: string;
  /** The points held of a volume, oldest first ([] for none). */
  points(sourceVolumeId: string): Promise<string[]>;
  /** Whether anything of the volume is held (a whole stream into it is refused by ZFS). */
  exists(sourceVolumeId: string): Promise<boolean>;
  /** Whether a whole stream may replace what is held (qcow2: yes, atomically; ZFS: no). */
  readonly wholeReplaces: boolean;
  /** Starts applying a stream. */
  apply(sourceVolumeId: string, step: StreamStep, signal: AbortSignal): Promise<IncomingApply>;
  /** Keeps the newest `retention` points. */
  prune(sourceVolumeId: string, retention: number): Promise<void>;
  /** How a volume of this node is made from the point: its format, and the maker for StorageRegistry's adopt source. */
  volumeFrom(
    sourceVolumeId: string,
    point: string,
    sizeBytes: number,
  ): Promise<{ format: StoredDisk["format"]; make: (volumeId: string) => Promise<StoredDisk> }>;
  /** Drops the replica. */
  destroy(sourceVolumeId: string): Promise<void>;
}
