// Leadership: this replica campaigns through the store (ClusterStore.campaign; at once with the
// embedded store, an etcd election with several replicas). Once it wins, the rooms take over (read
// their state from the store), the replica records itself under "leader" so that standbys can name
// it, and it leads until its leadership is lost or it stops; then the rooms stand down (forget what
// they read) and it campaigns again. A standby answers UNAVAILABLE with standbySentence().
import type { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { describeError, unavailable } from "@aether/server";
import type { ClusterStore, Leadership } from "../store/store.js";
import { sleep } from "../util.js";

const LEADER_KEY = "leader";

interface LeaderRecord {
  replica: string;
  advertise: string;
  since: string;
}

/** What the rooms do as leadership comes and goes. */
export interface LeaderDuties {
  /** Reads what the leader acts on from the store (this replica won; it does not lead yet). */
  takeOver(now: number): Promise<void>;
  /** Starts acting: this replica leads now. */
  lead(): void;
  /** Finishes what a previous leader left unfinished (after whenLeading() resolves). */
  resume(): void;
  /** Stops acting and forgets what was read (leadership lost, a failed take-over, shutdown). */
  standDown(why: ConnectError | undefined): void;
}

export class Election {
  private advertise: string;
  private leadership: Leadership | undefined;
  private leading = false;
  private stopping = false;
  private started = false;
  private leadingWaiters: Array<() => void> = [];
  /** Why requests are refused while suspend() runs. */
  private suspended: string | undefined;

  constructor(
    private readonly store: ClusterStore,
    private readonly replica: string,
    advertise: string,
    private readonly log: Logger,
    private readonly duties: LeaderDuties,
  ) {
    this.advertise = advertise;
  }

  /** Starts campaigning in the background; see whenLeading(). */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.leadLoop();
  }

  /** Sets where clients reach this replica (before start(); the bound TCP port is known only after listening). */
  setAdvertise(address: string): void {
    this.advertise = address;
  }

  /** True while this replica leads and serves. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** True once stop() was called. */
  get isStopping(): boolean {
    return this.stopping;
  }

  /** Resolves once this replica leads. */
  whenLeading(): Promise<void> {
    if (this.leading) return Promise.resolve();
    return new Promise((resolve) => this.leadingWaiters.push(resolve));
  }

  private async leadLoop(): Promise<void> {
    while (!this.stopping) {
      let leadership: Leadership;
      try {
        leadership = await this.store.campaign(this.replica);
      } catch (err) {
        if (this.stopping) break;
        this.log.warn({ err: describeError(err) }, "campaign for leadership failed; retrying");
        await sleep(1000);
        continue;
      }
      if (this.stopping) {
        await leadership.resign().catch(() => undefined);
        break;
      }
      try {
        await this.becomeLeader(leadership);
      } catch (err) {
        this.log.error({ err: describeError(err) }, "could not take over as leader; resigning and campaigning again");
        this.becomeStandby(unavailable(`this replica could not take over: ${describeError(err)}`));
        await leadership.resign().catch(() => undefined);
        await sleep(1000);
        continue;
      }
      await leadership.lost;
      if (this.leadership === leadership) {
        this.log.warn("leadership lost; this replica is a standby now");
        this.becomeStandby(
          unavailable("this replica lost its leadership; reconnect: another replica leads within seconds (resume with after_sequence)."),
        );
      }
    }
  }

  private async becomeLeader(leadership: Leadership): Promise<void> {
    const now = Date.now();
    await this.duties.takeOver(now);
    const record: LeaderRecord = { replica: this.replica, advertise: this.advertise, since: new Date(now).toISOString() };
    await this.store.put(LEADER_KEY, JSON.stringify(record));
    this.leadership = leadership;
    this.leading = true;
    this.duties.lead();
    for (const resolve of this.leadingWaiters.splice(0)) resolve();
    this.duties.resume();
  }

  private becomeStandby(why: ConnectError | undefined): void {
    this.leading = false;
    this.leadership = undefined;
    this.duties.standDown(why);
  }

  /** The sentence a standby answers with. */
  async standbySentence(): Promise<string> {
    let leader: LeaderRecord | undefined;
    try {
      const raw = await this.store.get(LEADER_KEY);
      if (raw !== undefined) leader = JSON.parse(raw) as LeaderRecord;
    } catch {
      leader = undefined;
    }
    if (this.suspended !== undefined && !this.stopping) return this.suspended;
    if (this.stopping)
      return `this replica (${this.replica}) is shutting down; retry against another replica, which takes over within seconds.`;
    if (leader && leader.replica !== this.replica) {
      return `this replica (${this.replica}) is a standby; the leader is ${leader.replica}${leader.advertise ? ` at ${leader.advertise}` : ""} (since ${leader.since}): send requests there, or retry here, since a standby takes over within seconds when the leader is gone.`;
    }
    return `this replica (${this.replica}) is a standby and no leader is known yet (an election is under way, or the store ${this.store.description} cannot be reached): retry in a few seconds.`;
  }

  /**
   * Runs work while this replica leads but serves nothing (a restore rebuilding the rooms from the
   * store): requests are answered UNAVAILABLE with `why`, then the rooms resume what they find. A
   * failure gives leadership up, so that the next take-over reads the store afresh.
   */
  async suspend(why: string, work: () => Promise<void>): Promise<void> {
    if (!this.leading) throw unavailable(await this.standbySentence());
    const leadership = this.leadership;
    this.leading = false;
    this.suspended = why;
    try {
      await work();
    } catch (err) {
      this.suspended = undefined;
      if (leadership && this.leadership === leadership) await leadership.resign().catch(() => undefined);
      throw err;
    }
    this.suspended = undefined;
    if (this.leadership !== leadership || this.stopping) return;
    this.leading = true;
    this.duties.resume();
  }

  /** Stops leading for good: the rooms stand down, and leadership is resigned so that another replica takes over at once. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const leadership = this.leadership;
    this.becomeStandby(
      unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`),
    );
    if (leadership)
      await leadership.resign().catch((err: unknown) => this.log.warn({ err: describeError(err) }, "resigning leadership failed"));
  }
}
