// Where the aggregator keeps its state: the node registry, placements, auction records and the
// cluster event log, as JSON values under string keys. Two implementations: an embedded store (a
// folder of atomically written files; one aggregator) and etcd (several replicas, one leader).
// Only the leader writes; a write that cannot be made durable fails with StoreUnavailableError and
// the aggregator refuses the request rather than pretending it happened.

/** The store cannot be reached or refused a write; the sentence says what to do. */
export class StoreUnavailableError extends Error {}

/** This replica is not (or no longer) the leader; writes are refused. */
export class NotLeaderError extends Error {}

export interface StoreEntry {
  key: string;
  value: string;
}

/** Leadership of the aggregator replicas, won through the store. */
export interface Leadership {
  /** Resolves when this replica stops being the leader (lost lease, resign, store gone). */
  readonly lost: Promise<void>;
  /** Gives leadership up (on shutdown), so another replica takes over at once. */
  resign(): Promise<void>;
}

export interface ClusterStore {
  /** A short name for logs and errors ("embedded:/var/lib/aether-aggregator", "etcd:http://..."). */
  readonly description: string;
  get(key: string): Promise<string | undefined>;
  /** Every entry whose key starts with prefix, in key order. */
  list(prefix: string): Promise<StoreEntry[]>;
  /** Durable once it resolves; refused (NotLeaderError) when this replica does not lead. */
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /**
   * Waits until this replica leads (at once for the embedded store, which has one replica) and
   * returns the leadership; writes are accepted only while it lasts.
   */
  campaign(candidate: string): Promise<Leadership>;
  close(): Promise<void>;
}
