// The etcd election's two halves, used by EtcdStore (etcd-store.ts, which describes the recipe):
// a Candidacy (a lease, the candidate's key bound to it, the watches it waits on; it fails once and
// is released once) and the EtcdLeadership won with it (it ends once, for one reason).
import type { Etcd3, Lease, Watcher } from "etcd3";
import { NotLeaderError, type Leadership } from "./store.js";
import { describeError, LeaseUnconfirmedError } from "./etcd-errors.js";

/** What a candidacy and its leadership need of the store. */
export interface ElectionStore {
  readonly client: Etcd3;
  readonly leaseTtlSeconds: number;
  /** Runs one etcd request bounded by the call timeout, also while closing. */
  bounded<T>(what: string, run: () => Promise<T>): Promise<T>;
  /** Called once when a leadership ends. */
  leadershipEnded(leadership: EtcdLeadership): void;
}

/**
 * One candidacy: a lease, the candidate's key bound to it, and the watches it waits on. It fails
 * once (lease lost, etcd unreachable, store closed) and is released once (watches cancelled,
 * lease revoked, so its key goes at once).
 */
export class Candidacy {
  readonly lease: Lease;
  leaseId = "";
  key = "";
  createRevision = "";
  failure: Error | undefined;
  /**
   * Until when (in performance.now() ms, immune to wall-clock jumps) etcd cannot have let the
   * lease expire: a keep-alive sent at t and answered with TTL n renewed the lease when etcd
   * received it, so it lasts until t + n s at least.
   */
  confirmedUntil = 0;
  /** When each keep-alive still unanswered on the current stream was sent; answers come in order. */
  private unanswered: number[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly failListeners = new Set<(error: Error) => void>();
  private released: Promise<void> | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: ElectionStore,
    readonly candidate: string,
  ) {
    const requestedAt = performance.now();
    this.lease = store.client.lease(store.leaseTtlSeconds);
    this.lease.on("lost", (error: Error) => this.fail(error));
    // Granted when etcd received the request, after it was sent: it lasts at least the TTL from then.
    this.lease.grant().then(
      () => {
        this.confirm(requestedAt + store.leaseTtlSeconds * 1000);
        if (this.failure === undefined) this.armExpiry();
      },
      () => undefined, // reported through 'lost'
    );
    this.lease.on("keepaliveEstablished", () => {
      this.unanswered = [];
    });
    this.lease.on("keepaliveFired", () => {
      this.unanswered.push(performance.now());
    });
    this.lease.on("keepaliveSucceeded", (response) => {
      const sentAt = this.unanswered.shift();
      const ttlSeconds = Number(response.TTL);
      if (sentAt !== undefined && ttlSeconds > 0) this.confirm(sentAt + ttlSeconds * 1000);
    });
  }

  confirm(until: number): void {
    if (until > this.confirmedUntil) this.confirmedUntil = until;
  }

  /**
   * Fails the candidacy (and so any leadership won with it) once etcd has not renewed the lease
   * for so long that it may have expired (etcd unreachable, or this process stalled): by then
   * another replica may lead, and this candidate's place in the queue may be gone.
   */
  private armExpiry(): void {
    const remainingMs = this.confirmedUntil - performance.now();
    if (remainingMs <= 0) {
      this.fail(
        new LeaseUnconfirmedError(
          `etcd has not renewed the lease of "${this.candidate}" for its whole TTL (${this.store.leaseTtlSeconds} s), so it may have expired`,
        ),
      );
      return;
    }
    this.expiryTimer = setTimeout(() => this.armExpiry(), remainingMs);
  }

  fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    clearTimeout(this.expiryTimer);
    for (const listener of [...this.failListeners]) listener(error);
  }

  /** Calls listener when the candidacy fails (at once if it has); returns the unsubscribe. */
  onFail(listener: (error: Error) => void): () => void {
    if (this.failure !== undefined) {
      listener(this.failure);
      return () => undefined;
    }
    this.failListeners.add(listener);
    return () => this.failListeners.delete(listener);
  }

  /** A watch for the deletion of key, from revision on; cancelled on release at the latest. */
  watchDeletion(key: string, fromRevision: string, onDelete: () => void): Watcher {
    const watcher = this.store.client.watch().key(key).startRevision(fromRevision).only("delete").watcher();
    this.watchers.add(watcher);
    watcher.on("delete", () => onDelete());
    // A watch reconnects by itself after a disconnection; 'error' means it cannot go on.
    watcher.on("disconnected", () => undefined);
    watcher.on("error", (error: Error) => this.fail(error));
    return watcher;
  }

  /** Resolves once key is deleted; rejects when the candidacy fails first. */
  waitForDeletion(key: string, fromRevision: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const unsubscribe = this.onFail(reject);
      if (this.failure !== undefined) return;
      const watcher = this.watchDeletion(key, fromRevision, () => {
        unsubscribe();
        this.watchers.delete(watcher);
        void watcher.cancel().catch(() => undefined);
        resolve();
      });
    });
  }

  /** Cancels the watches and revokes the lease (bounded; the keep-alives stop at once either way). */
  release(what: string): Promise<void> {
    if (this.released === undefined) {
      this.fail(new NotLeaderError(`the candidacy of "${this.candidate}" was given up`));
      for (const watcher of this.watchers) void watcher.cancel().catch(() => undefined);
      this.watchers.clear();
      this.released = this.store.bounded(`${what} (its lease expires within ${this.store.leaseTtlSeconds} s anyway)`, () =>
        this.lease.revoke(),
      );
      this.released.catch(() => undefined);
    }
    return this.released;
  }
}

/** The leadership this replica holds; ends once, for one reason. */
export class EtcdLeadership implements Leadership {
  readonly lost: Promise<void>;
  /** Why leadership ended (for logs); undefined while it lasts. */
  reason: string | undefined;
  private resolveLost: () => void = () => undefined;

  constructor(
    private readonly store: ElectionStore,
    private readonly candidacy: Candidacy,
    watchFromRevision: string,
  ) {
    this.lost = new Promise<void>((resolve) => {
      this.resolveLost = resolve;
    });
    candidacy.onFail((error) => this.end(`its lease was lost: ${describeError(error)}`));
    candidacy.watchDeletion(candidacy.key, watchFromRevision, () =>
      this.end(`its election key ${candidacy.key} was deleted (lease expired or revoked)`),
    );
  }

  get candidate(): string {
    return this.candidacy.candidate;
  }

  /** The election key, absolute. */
  get key(): string {
    return this.candidacy.key;
  }

  /** The election key's create revision: the fencing token every write compares against. */
  get createRevision(): string {
    return this.candidacy.createRevision;
  }

  get ended(): boolean {
    return this.reason !== undefined;
  }

  async resign(): Promise<void> {
    if (this.ended) return;
    this.end("it resigned");
    // Revoked, the election key is gone and the next candidate leads at once.
    await this.candidacy.release(`resign the leadership of "${this.candidate}"`);
  }

  /** Ends leadership (once) and gives the lease up, so etcd does not keep a leader that no longer acts. */
  end(reason: string): void {
    if (this.ended) return;
    this.reason = reason;
    this.store.leadershipEnded(this);
    void this.candidacy.release(`give up the leadership of "${this.candidate}"`).catch(() => undefined);
    this.resolveLost();
  }
}
