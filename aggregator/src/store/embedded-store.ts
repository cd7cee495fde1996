// The embedded store: the aggregator's state in a folder, one file per key, for a single replica.
// Every write goes to a temporary file that is fsynced and renamed over the old one, then the folder
// is fsynced, so a crash at any point leaves either the old value or the new one, never half of one.
// Writes under way together share the folder's fsync (one started after a rename covers it: an
// auction writes its record, its placement and its events at once), on a handle of the folder kept
// open, which halved the store's system calls per auction (issue 18).
// The whole store is read into memory when it opens (it holds the registry, placements, auction
// records and the event log of one cluster: small), so reads never touch the disk.
//
// One replica only: a lock file with the owner's pid keeps a second aggregator off the same folder,
// and campaign() resolves at once.
import { readFileSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, unlink, writeFile, type FileHandle } from "node:fs/promises";
import { join, resolve } from "node:path";
import { NotLeaderError, StoreUnavailableError, type ClusterStore, type Leadership, type StoreEntry } from "./store.js";

const LOCK = "lock";
/** Folders this process holds open, so two stores in one process cannot share one either. */
const openInThisProcess = new Set<string>();
const DATA = "store";
/** Longest encoded key: file names are limited to 255 bytes, and the temporary name adds a little. */
const MAX_ENCODED_KEY = 200;

/** Keys become file names: percent-encoded (so '/' cannot make a path), a leading '.' escaped too. */
export function encodeKey(key: string): string {
  const encoded = encodeURIComponent(key).replace(/^\./, "%2E");
  if (key === "" || encoded.length > MAX_ENCODED_KEY) {
    throw new Error(`store key ${JSON.stringify(key.slice(0, 80))} is empty or too long for the embedded store`);
  }
  return encoded;
}

export function decodeKey(fileName: string): string {
  return decodeURIComponent(fileName);
}

export class EmbeddedStore implements ClusterStore {
  readonly description: string;
  private readonly dataDir: string;
  private readonly lockPath: string;
  private readonly values = new Map<string, string>();
  /** Writes to one key run in order, so the last put wins on disk as in memory. */
  private readonly pending = new Map<string, Promise<void>>();
  private tmpCounter = 0;
  private opened = false;
  private closed = false;
  private leadership: { resolveLost: () => void; lost: Promise<void> } | undefined;
  /** The data folder, open for its fsyncs while the store is. */
  private dirHandle: FileHandle | undefined;
  /** The folder fsync running now, and the one queued after it that writes renamed since then join. */
  private dirSyncRunning: Promise<void> | undefined;
  private dirSyncQueued: Promise<void> | undefined;

  /** The state directory (absolute). */
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.description = `embedded:${this.dir}`;
    this.dataDir = join(this.dir, DATA);
    this.lockPath = join(this.dir, LOCK);
  }

  /** Opens (locks and loads) the store in dir. */
  static async open(dir: string): Promise<EmbeddedStore> {
    const store = new EmbeddedStore(dir);
    await store.open();
    return store;
  }

  async open(): Promise<void> {
    if (this.opened) return;
    try {
      await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StoreUnavailableError(
        `cannot create the state directory ${this.dir}: ${(err as Error).message}; give a writable --state-dir.`,
      );
    }
    await this.lock();
    try {
      for (const name of await readdir(this.dataDir)) {
        // Temporary files of a write that never reached its rename: the old value stands.
        if (name.startsWith(".")) {
          await rm(join(this.dataDir, name), { force: true });
          continue;
        }
        this.values.set(decodeKey(name), await readFile(join(this.dataDir, name), "utf8"));
      }
      this.dirHandle = await open(this.dataDir, "r");
    } catch (err) {
      await this.unlock();
      throw new StoreUnavailableError(`cannot read the aggregator's state in ${this.dataDir}: ${(err as Error).message}.`);
    }
    this.opened = true;
  }

  private async lock(): Promise<void> {
    if (openInThisProcess.has(this.dir)) {
      throw new StoreUnavailableError(`the state directory ${this.dir} is already open in this process; close that store first.`);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(this.lockPath, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
        openInThisProcess.add(this.dir);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new StoreUnavailableError(`cannot lock the state directory ${this.dir}: ${(err as Error).message}.`);
        }
      }
      const owner = ownerPid(this.lockPath);
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
        throw new StoreUnavailableError(
          `the state directory ${this.dir} is in use by another aether-aggregator (pid ${owner}); stop it, or give this one another --state-dir (several replicas need --store etcd).`,
        );
      }
      // The owner is gone (or it is us, from a store that was not closed): the lock is stale.
      await rm(this.lockPath, { force: true });
    }
    throw new StoreUnavailableError(`cannot lock the state directory ${this.dir}: another process keeps taking the lock.`);
  }

  private async unlock(): Promise<void> {
    openInThisProcess.delete(this.dir);
    if (ownerPid(this.lockPath) === process.pid) await rm(this.lockPath, { force: true });
  }

  private check(): void {
    if (this.closed) throw new StoreUnavailableError(`the store ${this.description} is closed (the aggregator is shutting down).`);
    if (!this.opened) throw new StoreUnavailableError(`the store ${this.description} is not open.`);
  }

  async get(key: string): Promise<string | undefined> {
    this.check();
    return this.values.get(key);
  }

  async list(prefix: string): Promise<StoreEntry[]> {
    this.check();
    const out: StoreEntry[] = [];
    for (const [key, value] of this.values) if (key.startsWith(prefix)) out.push({ key, value });
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async put(key: string, value: string): Promise<void> {
    this.checkWrite();
    const file = encodeKey(key);
    await this.serialize(key, async () => {
      const tmp = join(this.dataDir, `.${file}.${process.pid}.${++this.tmpCounter}.tmp`);
      try {
        const fh = await open(tmp, "w", 0o600);
        try {
          await fh.writeFile(value);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, join(this.dataDir, file));
        await this.syncDir();
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => undefined);
        throw new StoreUnavailableError(
          `cannot write ${key} to ${this.dataDir}: ${(err as Error).message}; nothing was changed. Free space or fix the folder's permissions.`,
        );
      }
      this.values.set(key, value);
    });
  }

  async delete(key: string): Promise<void> {
    this.checkWrite();
    const file = encodeKey(key);
    await this.serialize(key, async () => {
      try {
        await unlink(join(this.dataDir, file));
        await this.syncDir();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
          throw new StoreUnavailableError(`cannot delete ${key} from ${this.dataDir}: ${(err as Error).message}.`);
        }
      }
      this.values.delete(key);
    });
  }

  /** One replica: leadership is granted at once and lasts until resign() or close(). */
  async campaign(_candidate: string): Promise<Leadership> {
    this.check();
    if (this.leadership) return this.leadershipHandle(this.leadership);
    let resolveLost: () => void = () => {};
    const lost = new Promise<void>((resolve) => (resolveLost = resolve));
    this.leadership = { resolveLost, lost };
    return this.leadershipHandle(this.leadership);
  }

  private leadershipHandle(state: { resolveLost: () => void; lost: Promise<void> }): Leadership {
    return {
      lost: state.lost,
      resign: async () => {
        if (this.leadership === state) this.leadership = undefined;
        state.resolveLost();
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending.values()]);
    this.leadership?.resolveLost();
    this.leadership = undefined;
    await Promise.allSettled([this.dirSyncRunning, this.dirSyncQueued]);
    await this.dirHandle?.close().catch(() => undefined);
    this.dirHandle = undefined;
    if (this.opened) await this.unlock();
  }

  private checkWrite(): void {
    this.check();
    if (!this.leadership)
      throw new NotLeaderError(
        `this replica does not lead (it has not campaigned, or resigned); the write to ${this.description} was refused.`,
      );
  }

  private async serialize(key: string, work: () => Promise<void>): Promise<void> {
    const previous = this.pending.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    this.pending.set(key, next);
    try {
      await next;
    } finally {
      if (this.pending.get(key) === next) this.pending.delete(key);
    }
  }

  /**
   * Makes the folder's entries (renames, unlinks) done before this call durable. An fsync that starts
   * after the caller's rename covers it, so callers join the fsync queued behind the running one;
   * the running one may have started before their rename, so they never join it.
   */
  private syncDir(): Promise<void> {
    if (this.dirSyncQueued) return this.dirSyncQueued;
    const queued = (this.dirSyncRunning ?? Promise.resolve())
      .catch(() => undefined)
      .then(async () => {
        this.dirSyncQueued = undefined;
        const handle = this.dirHandle;
        if (!handle) throw new Error("the store's folder is closed");
        const running = handle.sync();
        this.dirSyncRunning = running;
        try {
          await running;
        } finally {
          if (this.dirSyncRunning === running) this.dirSyncRunning = undefined;
        }
      });
    this.dirSyncQueued = queued;
    return queued;
  }
}

function ownerPid(lockPath: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lockPath, "utf8").trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
