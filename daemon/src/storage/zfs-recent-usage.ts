// The `used` of a dataset read together with the command that made it (a clone), kept for a moment
// so the answer that follows (CreateVolume's allocated_bytes) does not start a second zfs command
// for it. ZFS itself updates `used` only when it syncs a transaction group (every few seconds), so a
// reading under a second old is as current as asking again.

/** How long a reading stands in for a new `zfs get used`. */
export const RECENT_USAGE_MS = 1_000;

export class RecentUsage {
  private readonly readings = new Map<string, { bytes: number; at: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  remember(dataset: string, bytes: number): void {
    const at = this.now();
    for (const [name, r] of this.readings) if (at - r.at >= RECENT_USAGE_MS) this.readings.delete(name);
    if (Number.isFinite(bytes) && bytes >= 0) this.readings.set(dataset, { bytes, at });
  }

  /** The reading, once, if it is recent; undefined otherwise (then ask ZFS). */
  take(dataset: string): number | undefined {
    const r = this.readings.get(dataset);
    this.readings.delete(dataset);
    return r !== undefined && this.now() - r.at < RECENT_USAGE_MS ? r.bytes : undefined;
  }

  /** A command changed the dataset (snapshot, rollback, resize, destroy): its reading no longer stands. */
  forget(dataset: string): void {
    this.readings.delete(dataset);
  }
}
