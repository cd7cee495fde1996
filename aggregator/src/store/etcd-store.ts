// The aggregator's highly-available store: its state in etcd, shared by several aggregator
// replicas of which one leads, chosen by an etcd election.
//
// Layout under the prefix (default "/aether/aggregator/"):
//   <prefix>data/<key>                     the store's entries (what get/list/put/delete see)
//   <prefix>election/leader/<lease, hex>   one key per candidate, bound to its lease, holding the
//                                          candidate's name; the oldest (lowest create revision)
//                                          leads. The same layout as etcd's Go client
//                                          (concurrency.Election), so `etcdctl elect --listen
//                                          <prefix>election/leader` shows the leader.
//
// The election is etcd's recipe, written here on etcd3's lease, transaction and watch primitives:
// grant a lease, create the candidate key bound to it, then wait until every older candidate key
// is deleted. (etcd3's own Campaign leaves the watch of a waiting candidate running after resign()
// and close(), so a follower could never shut down while etcd is unreachable.)
//
// Fencing: every write is a transaction "if my election key still has the create revision it had
// when I won, then write". When the leader's lease expires (killed, paused, partitioned) etcd
// deletes its election key, so a deposed leader's late write is refused by etcd itself, whatever
// the deposed replica still believes; it surfaces as NotLeaderError.
//
// Losing leadership is noticed without waiting for a write: a watch on the election key (deleted
// by a revoke, an expiry or an operator), the lease's own keep-alive errors, and a local deadline:
// a keep-alive sent at t and answered with TTL n proves the lease lives until t + n s; when that
// passes without a newer answer (etcd unreachable, this process stalled), the candidacy ends here
// too, so a partitioned leader stops acting as one by the time etcd can let another one lead, and
// a waiting follower reports the outage instead of waiting on.
//
// Every request is bounded (a gRPC deadline and a timer around the whole call, retries included):
// an unreachable etcd is reported as StoreUnavailableError, never as a hang.
import { type CallOptionsFactory, Etcd3, type IOperation, type IOptions, type IRangeResponse, Range } from "etcd3";
import { type ClusterStore, type Leadership, NotLeaderError, type StoreEntry, StoreUnavailableError } from "./store.js";
import { CallTimeoutError, describeError, isUnreachable } from "./etcd-errors.js";
import { Candidacy, EtcdLeadership } from "./etcd-election.js";

export interface EtcdStoreOptions {
  /** Where the aggregator's keys live in etcd; default "/aether/aggregator/" (a trailing "/" is added). */
  prefix?: string;
  /**
   * TTL of the leader's lease, in seconds; default 5. A leader that stops renewing it (killed,
   * paused, cut off from etcd) is replaced after at most this long. etcd raises TTLs below its
   * minimum (about 2 s with its default raft timings).
   */
  leaseTtlSeconds?: number;
  /** Upper bound on one store operation against etcd, retries included, in milliseconds; default 3000. */
  callTimeoutMs?: number;
  /**
   * TLS for https:// endpoints (PEM text): the CA etcd's certificate chains to (default: the
   * system's), and the client certificate and key etcd checks with --client-cert-auth.
   */
  tls?: { ca?: string; cert?: string; key?: string };
}

export const DEFAULT_ETCD_PREFIX = "/aether/aggregator/";
export const DEFAULT_LEASE_TTL_SECONDS = 5;
export const DEFAULT_CALL_TIMEOUT_MS = 3_000;
const ELECTION_NAME = "leader";
/** Entries fetched per range request by list(), so a large listing never exceeds gRPC's message limit. */
const LIST_PAGE_SIZE = 500;

/** Watches reconnect after 100 ms, doubling up to this; etcd3's default waits up to 30 s. */
const MAX_WATCH_BACKOFF_MS = 1_000;

type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>;

/**
 * How long a broken watch waits before reconnecting: short, so a follower sees its predecessor's
 * key go soon after etcd is back, and a closed store's last retry timer does not keep the process
 * alive for long.
 */
function watchBackoff(durationMs: number): WatchBackoff {
  return {
    duration: durationMs,
    next: () => watchBackoff(Math.min(Math.max(100, durationMs * 2), MAX_WATCH_BACKOFF_MS)),
  };
}

/**
 * The cluster store in etcd: entries under a prefix, leadership through an etcd election, writes
 * fenced by the leader's election key. Several aggregator replicas share one etcd; each
 * campaign()s, one leads and writes, the others wait and take over when it goes.
 */
export class EtcdStore implements ClusterStore {
  readonly description: string;
  /** @internal */
  readonly client: Etcd3;
  /** @internal */
  readonly leaseTtlSeconds: number;
  private readonly endpoints: string[];
  private readonly prefix: string;
  private readonly dataPrefix: string;
  private readonly electionPrefix: string;
  private readonly callTimeoutMs: number;
  private leader: EtcdLeadership | undefined;
  private pendingCampaign: Promise<Leadership> | undefined;
  private readonly candidacies = new Set<Candidacy>();
  private closed = false;

  constructor(endpoints: string[], options: EtcdStoreOptions = {}) {
    if (endpoints.length === 0) {
      throw new Error("EtcdStore needs at least one etcd endpoint (for example http://127.0.0.1:2379)");
    }
    for (const endpoint of endpoints) {
      if (!/^https?:\/\/[^/\s]+$/.test(endpoint)) {
        throw new Error(`etcd endpoint "${endpoint}" is not a URL like http://127.0.0.1:2379 (scheme, host and port, no path)`);
      }
    }
    const prefix = options.prefix ?? DEFAULT_ETCD_PREFIX;
    if (prefix === "" || prefix === "/") {
      throw new Error(
        `etcd prefix "${prefix}" would spread the aggregator's keys over the whole keyspace; use one like ${DEFAULT_ETCD_PREFIX}`,
      );
    }
    const ttl = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    if (!Number.isInteger(ttl) || ttl < 1) {
      throw new Error(`leaseTtlSeconds must be a whole number of seconds, at least 1 (got ${ttl})`);
    }
    const callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    if (!Number.isFinite(callTimeoutMs) || callTimeoutMs <= 0) {
      throw new Error(`callTimeoutMs must be a positive number of milliseconds (got ${callTimeoutMs})`);
    }
    this.endpoints = [...endpoints];
    this.prefix = prefix.endsWith("/") ? prefix : `${prefix}/`;
    this.dataPrefix = `${this.prefix}data/`;
    this.electionPrefix = `${this.prefix}election/${ELECTION_NAME}/`;
    this.leaseTtlSeconds = ttl;
    this.callTimeoutMs = callTimeoutMs;
    this.description = `etcd:${this.endpoints.join(",")}`;
    // Unary calls get a deadline; streams (watches, lease keep-alives) live on and reconnect.
    const defaultCallOptions: CallOptionsFactory = (context) => (context.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs });
    const tls = options.tls ?? {};
    if ((tls.cert === undefined) !== (tls.key === undefined))
      throw new Error("an etcd client certificate needs its key, and a key its certificate");
    const secure = this.endpoints.every((e) => e.startsWith("https://"));
    if (!secure && (tls.ca ?? tls.cert) !== undefined) {
      throw new Error(
        `TLS settings were given for etcd, but its endpoints (${this.endpoints.join(", ")}) are plain http://: use https:// endpoints`,
      );
    }
    const credentials =
      secure && (tls.ca ?? tls.cert) !== undefined
        ? {
            // null: gRPC's default roots (etcd3's type says Buffer, but passes it to createSsl, which takes null).
            rootCertificate: (tls.ca !== undefined ? Buffer.from(tls.ca) : null) as Buffer,
            ...(tls.cert !== undefined && { certChain: Buffer.from(tls.cert), privateKey: Buffer.from(tls.key ?? "") }),
          }
        : undefined;
    this.client = new Etcd3({
      hosts: this.endpoints,
      ...(credentials && { credentials }),
      defaultCallOptions,
      faultHandling: { watchBackoff: watchBackoff(0) },
    });
  }

  async get(key: string): Promise<string | undefined> {
    checkKey(key);
    const value = await this.call(`read "${key}"`, () => this.client.get(this.dataPrefix + key).string());
    return value ?? undefined;
  }

  async list(prefix: string): Promise<StoreEntry[]> {
    const range = Range.prefix(this.dataPrefix + prefix);
    const entries: StoreEntry[] = [];
    let start = range.start;
    // Later pages are read at the first page's revision: one consistent snapshot.
    let revision: string | undefined;
    for (;;) {
      const from = start;
      const atRevision = revision;
      const page: IRangeResponse = await this.call(`list "${prefix}"`, () => {
        const builder = this.client.getAll().inRange(new Range(from, range.end)).limit(LIST_PAGE_SIZE);
        if (atRevision !== undefined) builder.revision(atRevision);
        return builder.exec();
      });
      revision ??= page.header.revision;
      for (const kv of page.kvs) {
        entries.push({ key: kv.key.toString().slice(this.dataPrefix.length), value: kv.value.toString() });
      }
      const last = page.kvs.at(-1);
      if (!page.more || last === undefined) return entries;
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  async put(key: string, value: string): Promise<void> {
    checkKey(key);
    await this.fencedWrite(`write "${key}"`, this.client.put(this.dataPrefix + key).value(value));
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.fencedWrite(`delete "${key}"`, this.client.delete().key(this.dataPrefix + key));
  }

  /**
   * Waits until this replica leads. Rejects with StoreUnavailableError when etcd cannot be reached
   * (at once, or while waiting, as soon as etcd has not renewed the candidate's lease for its TTL),
   * and with NotLeaderError when the store is closed meanwhile. While this replica leads, calling
   * it again returns the same leadership; once it has lost, call it again to stand again.
   */
  campaign(candidate: string): Promise<Leadership> {
    if (candidate.trim() === "") {
      return Promise.reject(new Error("campaign needs a candidate name (the replica's id or address)"));
    }
    if (this.closed) return Promise.reject(this.closedError("campaign"));
    if (this.leader !== undefined) return Promise.resolve(this.leader);
    if (this.pendingCampaign === undefined) {
      this.pendingCampaign = this.runCampaign(candidate).finally(() => {
        this.pendingCampaign = undefined;
      });
    }
    return this.pendingCampaign;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const leader = this.leader;
    try {
      if (leader !== undefined) await leader.resign();
    } catch {
      // etcd unreachable: the lease's keep-alives have stopped, so it expires within its TTL.
    }
    await Promise.all([...this.candidacies].map((candidacy) => candidacy.release("withdraw a campaign").catch(() => undefined)));
    this.client.close();
  }

  /** @internal Runs one etcd request bounded by the call timeout; failures become StoreUnavailableError. */
  async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    if (this.closed) throw this.closedError(what);
    return this.bounded(what, run);
  }

  /** @internal Like call(), also while closing. */
  async bounded<T>(what: string, run: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CallTimeoutError(`no answer within ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
    });
    try {
      return await Promise.race([run(), timeout]);
    } catch (error) {
      throw this.translate(what, error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** @internal */
  leadershipEnded(leadership: EtcdLeadership): void {
    if (this.leader === leadership) this.leader = undefined;
  }

  private async fencedWrite(what: string, operation: IOperation): Promise<void> {
    const leader = this.leader;
    if (this.closed) throw this.closedError(what);
    if (leader === undefined) {
      throw new NotLeaderError(
        `cannot ${what}: this aggregator replica does not lead (it has not won the election in ${this.description}, or lost it); only the leader writes`,
      );
    }
    const response = await this.call(what, () =>
      this.client.if(leader.key, "Create", "==", leader.createRevision).then(operation).commit(),
    );
    if (!response.succeeded) {
      const reason = `etcd refused to ${what}: its election key ${leader.key} (create revision ${leader.createRevision}) no longer exists, so its lease expired or was revoked and another replica may lead`;
      leader.end(reason);
      throw new NotLeaderError(`aggregator replica "${leader.candidate}" is no longer the leader: ${reason}`);
    }
  }

  private async runCampaign(candidate: string): Promise<Leadership> {
    for (;;) {
      const candidacy = new Candidacy(this, candidate);
      this.candidacies.add(candidacy);
      // Giving a candidacy up is best effort and bounded; nobody waits for it but close().
      const giveUp = (what: string): void => {
        void candidacy
          .release(what)
          .catch(() => undefined)
          .finally(() => this.candidacies.delete(candidacy));
      };
      try {
        const leadership = await this.contest(candidacy);
        if (leadership !== undefined) {
          this.candidacies.delete(candidacy);
          this.leader = leadership;
          return leadership;
        }
        // Won, then the lease was gone before leadership could be confirmed: campaign again.
        giveUp("drop an expired campaign");
      } catch (error) {
        giveUp("withdraw a failed campaign");
        if (this.closed)
          throw new NotLeaderError(`the campaign of "${candidate}" ended because the store (${this.description}) was closed`);
        if (error instanceof NotLeaderError || error instanceof StoreUnavailableError) throw error;
        throw this.translate(`campaign as "${candidate}"`, error);
      }
    }
  }

  /** etcd's election recipe: a key bound to a fresh lease, then wait until every older candidate's key is gone. */
  private async contest(candidacy: Candidacy): Promise<EtcdLeadership | undefined> {
    const what = `campaign as "${candidacy.candidate}"`;
    const failed = new Promise<never>((_, reject) => candidacy.onFail(reject));
    failed.catch(() => undefined);
    const step = <T>(run: () => Promise<T>): Promise<T> => this.call(what, () => Promise.race([run(), failed]));

    candidacy.leaseId = await step(() => candidacy.lease.grant());
    candidacy.key = this.electionPrefix + BigInt(candidacy.leaseId).toString(16);
    const created = await step(() =>
      this.client
        .if(candidacy.key, "Create", "==", 0)
        .then(this.client.put(candidacy.key).value(candidacy.candidate).lease(candidacy.leaseId))
        .else(this.client.get(candidacy.key))
        .commit(),
    );
    const existing = created.responses[0]?.response_range?.kvs[0];
    candidacy.createRevision = created.succeeded || existing === undefined ? created.header.revision : existing.create_revision;

    for (;;) {
      // The youngest candidate older than this one; once none is left, this one leads.
      const older = await step(() =>
        this.client
          .getAll()
          .prefix(this.electionPrefix)
          .maxCreateRevision((BigInt(candidacy.createRevision) - 1n).toString())
          .sort("Create", "Descend")
          .limit(1)
          .exec(),
      );
      const predecessor = older.kvs[0];
      if (predecessor === undefined) break;
      // No bound here: a follower waits as long as the leader leads.
      await Promise.race([candidacy.waitForDeletion(predecessor.key.toString(), (BigInt(older.header.revision) + 1n).toString()), failed]);
    }

    const range = await step(() => this.client.get(candidacy.key).exec());
    const kv = range.kvs[0];
    if (kv === undefined || kv.create_revision !== candidacy.createRevision) return undefined;
    if (this.closed) throw this.closedError(what);
    return new EtcdLeadership(this, candidacy, (BigInt(range.header.revision) + 1n).toString());
  }

  private closedError(what: string): StoreUnavailableError {
    return new StoreUnavailableError(`cannot ${what}: the store ${this.description} is closed (the aggregator is shutting down)`);
  }

  private translate(what: string, error: unknown): Error {
    if (error instanceof StoreUnavailableError || error instanceof NotLeaderError) return error;
    const where = `etcd at ${this.endpoints.join(", ")}`;
    if (this.closed && !(error instanceof CallTimeoutError)) return this.closedError(what);
    if (isUnreachable(error)) {
      return new StoreUnavailableError(
        `${where} is unreachable (${what}: ${describeError(error)}); the aggregator refuses writes until it is back`,
      );
    }
    return new StoreUnavailableError(
      `${where} refused to ${what}: ${describeError(error)}; the aggregator refuses writes until this is fixed`,
    );
  }
}

function checkKey(key: string): void {
  if (key === "") throw new TypeError("store keys must not be empty");
}
