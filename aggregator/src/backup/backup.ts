// Backups of the cluster's state to git. The leader commits the backed-up records of its store
// (records.ts) and the configuration documents (documents.ts) to a bare git repository, one file per
// record: after a change (batched: at most one commit every batchMs), on an interval (intervalMs,
// which also retries a push that failed), and when asked (TriggerBackup). Each commit is pushed to the
// remote when one is configured. A restore (RestoreBackup) rewrites the store from a commit and has
// the rooms read it again; it is itself committed, so the history goes on.
//
// Only the leader commits: start() on taking the lead, stop() on standing down. On start it fetches
// the remote, so a replica that takes over continues the history the previous leader pushed (its own
// unpushed commits are kept as a merge parent). A store that is empty while the repository holds a
// backup (a wiped state directory) does not overwrite it by itself: automatic commits are held until
// a restore or a TriggerBackup.
//
// All git work runs one step at a time (a queue), so a commit, a push and a restore never overlap.
import type { Logger } from "pino";
import { describeError, failedPrecondition, invalidArgument, notFound, unavailable } from "@aether/server";
import { ClusterEventKind } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "../store/store.js";
import type { NewEvent } from "../events/events.js";
import { GitError, GitRepo } from "./git.js";
import { diffRecords, filesOf, isBackedUp, recordsOf, storeRecords, summarize, type ChangeKind } from "./records.js";

export const DEFAULT_BACKUP_BATCH_MS = 10_000;
export const DEFAULT_BACKUP_INTERVAL_MS = 300_000;
const DEFAULT_PAGE = 50;
const MAX_PAGE = 1000;
/** The shortest wait before a batched commit, so that a request's few writes land in one commit. */
const SETTLE_MS = 200;

export interface BackupSettings {
  /** The bare repository (created when missing). */
  repository: string;
  /** Where each commit is pushed (a path or URL git understands); unset: nowhere. */
  remote?: string;
  /** At most one automatic commit per this long (10 s). */
  batchMs?: number;
  /** A commit (when anything changed) and a push retry at least this often (5 min). */
  intervalMs?: number;
  /** The configuration documents committed beside the records (documents.ts). */
  documents?: Map<string, string>;
}

export interface BackupHost {
  readonly store: ClusterStore;
  readonly log: Logger;
  /** True while this replica leads. */
  leading(): boolean;
  /** The nodes that are live now (READY with a lease that has not run out), by name. */
  liveNodes(): string[];
  /** Stops the rooms, runs write (which rewrites the store), and has the rooms read the state again. */
  rebuild(write: () => Promise<void>): Promise<void>;
  /** Records a cluster event (a failure is only logged). */
  emit(event: NewEvent): Promise<unknown>;
}

export interface BackupInfo {
  commit: string;
  timeMs: number;
  summary: string;
  records: number;
  pushed: boolean;
}

export interface RestoreOutcome {
  commit: string;
  changes: Array<{ key: string; kind: ChangeKind }>;
  applied: boolean;
  backup?: BackupInfo;
  liveNodes: string[];
}

export class Backups {
  readonly repository: string;
  readonly remote: string;
  private readonly git: GitRepo;
  private readonly batchMs: number;
  private readonly intervalMs: number;
  private readonly documents: Map<string, string>;
  private queue: Promise<unknown> = Promise.resolve();
  private running = false;
  private ready: Promise<void> | undefined;
  private batchTimer: NodeJS.Timeout | undefined;
  private intervalTimer: NodeJS.Timeout | undefined;
  private lastCommitMs = 0;
  private head: string | undefined;
  private committed = new Map<string, string>();
  private mergeParent: string | undefined;
  private pushError = "";
  private held = "";

  constructor(
    private readonly host: BackupHost,
    settings: BackupSettings,
  ) {
    this.repository = settings.repository;
    this.remote = settings.remote ?? "";
    this.git = new GitRepo(settings.repository);
    this.batchMs = settings.batchMs ?? DEFAULT_BACKUP_BATCH_MS;
    this.intervalMs = settings.intervalMs ?? DEFAULT_BACKUP_INTERVAL_MS;
    this.documents = settings.documents ?? new Map();
  }

  /** This replica leads: read the repository (and the remote), then commit when the state differs. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.ready = this.enqueue(() => this.prepare());
    this.ready.catch((err: unknown) => this.host.log.error({ err: describeError(err) }, "the backup repository cannot be used"));
    this.intervalTimer = setInterval(() => void this.automatic("interval"), this.intervalMs);
    this.intervalTimer.unref();
    this.schedule();
  }

  /** This replica stands down: no more commits (one under way finishes). */
  stop(): void {
    this.running = false;
    clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    clearInterval(this.intervalTimer);
    this.intervalTimer = undefined;
  }

  /** A key of the store was written: a batched commit follows when it is backed up. */
  changed(key: string): void {
    if (this.running && isBackedUp(key)) this.schedule();
  }

  private schedule(): void {
    if (this.batchTimer !== undefined || !this.running) return;
    const delay = Math.max(SETTLE_MS, this.lastCommitMs + this.batchMs - Date.now());
    this.batchTimer = setTimeout(() => {
      this.batchTimer = undefined;
      void this.automatic("change");
    }, delay);
    this.batchTimer.unref();
  }

  private async automatic(why: "change" | "interval"): Promise<void> {
    if (!this.running || !this.host.leading()) return;
    try {
      await this.ready;
      await this.enqueue(async () => {
        if (!this.running || !this.host.leading()) return;
        // Held backups are not forgotten: said again on every interval until restored or triggered.
        if (this.held !== "" && why === "interval") this.host.log.warn({ repository: this.repository }, this.held);
        // The interval does not make a commit sooner than the batch allows: the batch timer will.
        const early = Date.now() - this.lastCommitMs < this.batchMs;
        if (this.held === "" && early) this.schedule();
        const made = this.held === "" && !early ? await this.commit({}) : { committed: false };
        if (!made.committed && why === "interval" && this.remote !== "" && this.pushError !== "" && this.head) await this.push(this.head);
      });
    } catch (err) {
      this.host.log.warn(
        { err: describeError(err) },
        "the cluster's state could not be backed up; the next change or interval tries again",
      );
    }
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.catch(() => undefined).then(work);
    this.queue = next;
    return next;
  }

  /** Opens the repository, continues the remote's history, and reads the last backup. */
  private async prepare(): Promise<void> {
    await this.git.init();
    let head = await this.git.head();
    if (this.remote !== "") {
      try {
        const remote = await this.git.fetch(this.remote);
        if (remote !== undefined && remote !== head) {
          if (head === undefined || (await this.git.isAncestor(head, remote))) {
            await this.git.setBranch(remote);
            head = remote;
          } else if (!(await this.git.isAncestor(remote, head))) {
            // Both went on (this replica's unpushed commits, another leader's pushed ones): merge.
            this.mergeParent = remote;
          }
        }
        this.pushError = "";
        // Commits a previous leader made but could not push (it was killed, the remote was away).
        if (head !== undefined && head !== remote && this.mergeParent === undefined) await this.push(head);
      } catch (err) {
        this.pushError = `the remote ${this.remote} could not be fetched: ${describeError(err)}`;
        this.host.log.warn(
          { remote: this.remote, err: describeError(err) },
          "could not fetch the backup remote; backups are committed locally",
        );
      }
    }
    this.head = head;
    this.committed = head === undefined ? new Map() : await this.git.readTree(head);
    const stored = await storeRecords(this.host.store);
    const backedUp = recordsOf(this.committed).size;
    this.held =
      stored.size === 0 && backedUp > 0
        ? `the store is empty while the last backup (${head?.slice(0, 12)}) holds ${backedUp} records: automatic backups are held so that they do not record the loss; restore it (aether backup restore ${head?.slice(0, 12)}), or record the empty state with aether backup trigger.`
        : "";
    if (this.held !== "") this.host.log.warn({ repository: this.repository }, this.held);
  }

  /** Commits the state when it differs from the last backup (or always, with force). */
  private async commit(options: { summary?: string; force?: boolean }): Promise<{ committed: boolean }> {
    const records = await storeRecords(this.host.store);
    const files = filesOf(records);
    for (const [path, content] of this.documents) files.set(path, content);
    if (!options.force && this.mergeParent === undefined && sameFiles(files, this.committed)) return { committed: false };
    const changes = diffRecords(recordsOf(this.committed), records);
    const now = Date.now();
    const summary = options.summary ?? (changes.length === 0 ? "configuration documents changed" : summarize(changes));
    const sha = await this.git.commit({
      files,
      parents: [this.head, this.mergeParent].filter((p): p is string => p !== undefined),
      message: `${summary}\n\nRecords: ${records.size}\n`,
      timeMs: now,
    });
    this.head = sha;
    this.committed = files;
    this.mergeParent = undefined;
    this.lastCommitMs = now;
    this.host.log.info({ commit: sha, summary }, "cluster state backed up");
    if (this.remote !== "") await this.push(sha);
    return { committed: true };
  }

  private async push(sha: string): Promise<void> {
    try {
      await this.git.push(this.remote, sha);
      this.pushError = "";
    } catch (err) {
      this.pushError = `the push to ${this.remote} failed: ${describeError(err)}`;
      this.host.log.warn(
        { remote: this.remote, err: describeError(err) },
        "could not push the backup; the next commit or interval tries again",
      );
      // Another leader pushed meanwhile: the next commit merges its history.
      const remote = await this.git.fetch(this.remote).catch(() => undefined);
      if (remote !== undefined && !(await this.git.isAncestor(remote, sha).catch(() => true))) this.mergeParent = remote;
    }
  }

  /** The backups, newest first; page_token is the commit to continue from. */
  async list(pageSize: number, pageToken: string): Promise<{ backups: BackupInfo[]; next: string; pushError: string; held: string }> {
    const size = pageSize === 0 ? DEFAULT_PAGE : pageSize;
    if (size > MAX_PAGE) throw invalidArgument(`page_size ${pageSize} is too large: at most ${MAX_PAGE}.`);
    if (pageToken !== "" && !/^[0-9a-f]{40}$/.test(pageToken))
      throw invalidArgument("page_token is not one this aggregator gave (next_page_token of the previous page).");
    await this.whenReady();
    return this.gitCall(async () => {
      if (pageToken !== "" && (await this.git.resolve(pageToken)) === undefined)
        throw invalidArgument("page_token names no backup of this repository: start again without it.");
      const from = pageToken !== "" ? pageToken : this.head;
      if (from === undefined) return { backups: [], next: "", pushError: this.pushError, held: this.held };
      const commits = await this.git.log(from, size + 1);
      const unpushed = this.remote !== "" ? await this.git.unpushed() : undefined;
      const page = commits.slice(0, size).map((c) => ({ ...c, pushed: unpushed !== undefined && !unpushed.has(c.commit) }));
      return {
        backups: page,
        next: commits.length > size ? (commits[size] as { commit: string }).commit : "",
        pushError: this.pushError,
        held: this.held,
      };
    });
  }

  /** Commits now (TriggerBackup); answers the newest backup. */
  async trigger(): Promise<{ backup?: BackupInfo; committed: boolean; pushError: string }> {
    await this.whenReady();
    return this.gitCall(() =>
      this.enqueue(async () => {
        const { committed } = await this.commit({});
        this.held = "";
        if (!committed && this.remote !== "" && this.pushError !== "" && this.head) await this.push(this.head);
        return { backup: await this.describe(this.head), committed, pushError: this.pushError };
      }),
    );
  }

  /** Rebuilds the store from a commit (RestoreBackup). */
  async restore(commitArg: string, force: boolean, dryRun: boolean): Promise<RestoreOutcome> {
    const wanted = commitArg.trim().toLowerCase();
    if (!/^[0-9a-f]{7,40}$/.test(wanted))
      throw invalidArgument(
        `commit ${JSON.stringify(commitArg.slice(0, 80))} is not a backup's commit: give its hash, 7 to 40 hexadecimal digits, as aether backup list shows it.`,
      );
    await this.whenReady();
    return this.gitCall(() =>
      this.enqueue(async () => {
        const sha = await this.git.resolve(wanted);
        if (sha === undefined) {
          const { stdout } = await this.git.run(["rev-parse", `--disambiguate=${wanted}`], undefined, { allowFail: true });
          if (
            stdout
              .trim()
              .split("\n")
              .filter((l) => l !== "").length > 1
          )
            throw invalidArgument(`commit ${wanted} is ambiguous in ${this.repository}: give more of its hash.`);
          throw notFound(`there is no backup ${wanted} in ${this.repository}: aether backup list lists the backups.`);
        }
        const target = recordsOf(await this.git.readTree(sha));
        const current = await storeRecords(this.host.store);
        const changes = diffRecords(current, target);
        const liveNodes = this.host.liveNodes();
        if (dryRun) return { commit: sha, changes, applied: false, liveNodes };
        if (liveNodes.length > 0 && !force)
          throw failedPrecondition(
            `node${liveNodes.length > 1 ? "s" : ""} ${liveNodes.join(", ")} ${liveNodes.length > 1 ? "are" : "is"} live (READY, heartbeating): restoring ${sha.slice(0, 12)} would rewrite the cluster's state under ${liveNodes.length > 1 ? "them" : "it"}. Stop ${liveNodes.length > 1 ? "them" : "it"} or let the lease run out, or restore with --force (--dry-run shows the ${changes.length} records it would change). Nothing was changed.`,
          );
        if (changes.length > 0) {
          await this.host.rebuild(async () => {
            for (const { key, kind } of changes) {
              if (kind === "removed") await this.host.store.delete(key);
              else await this.host.store.put(key, target.get(key) as string);
            }
          });
        }
        this.held = "";
        await this.commit({ summary: `restored from ${sha.slice(0, 12)}: ${summarize(changes)}`, force: true });
        const count = (kind: ChangeKind) => String(changes.filter((c) => c.kind === kind).length);
        await this.host.emit({
          kind: ClusterEventKind.STATE_RESTORED,
          message: `the cluster's state was restored from backup ${sha.slice(0, 12)} (${summarize(changes)})${liveNodes.length > 0 ? `, forced over the live nodes ${liveNodes.join(", ")}` : ""}; recorded as backup ${this.head?.slice(0, 12)}.`,
          attributes: {
            commit: sha,
            added: count("added"),
            changed: count("changed"),
            removed: count("removed"),
            ...(liveNodes.length > 0 && { forced_over: liveNodes.join(",") }),
            ...(this.head !== undefined && { backup: this.head }),
          },
        });
        this.host.log.warn({ commit: sha, changes: changes.length, forced: liveNodes }, "the cluster's state was restored from a backup");
        return { commit: sha, changes, applied: true, backup: await this.describe(this.head), liveNodes };
      }),
    );
  }

  private async describe(sha: string | undefined): Promise<BackupInfo | undefined> {
    if (sha === undefined) return undefined;
    const [info] = await this.git.log(sha, 1);
    if (!info) return undefined;
    const unpushed = this.remote !== "" ? await this.git.unpushed() : undefined;
    return { ...info, pushed: unpushed !== undefined && !unpushed.has(info.commit) };
  }

  private async whenReady(): Promise<void> {
    if (!this.running || this.ready === undefined) throw unavailable("backups are not running on this replica (it does not lead).");
    await this.gitCall(() => this.ready as Promise<void>);
  }

  /** git's failures as UNAVAILABLE sentences; the rest as they are. */
  private async gitCall<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof GitError) throw unavailable(`the backup repository ${this.repository} cannot be used: ${err.message}.`);
      throw err;
    }
  }
}

function sameFiles(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
