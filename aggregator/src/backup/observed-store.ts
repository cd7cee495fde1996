// The store as the rooms see it when backups are on: every write goes to the real store and, once
// durable, is reported (the key), so that the backup room commits a batch soon after a change.
import type { ClusterStore, Leadership, StoreEntry } from "../store/store.js";

export class ObservedStore implements ClusterStore {
  readonly description: string;

  constructor(
    private readonly inner: ClusterStore,
    private readonly written: (key: string) => void,
  ) {
    this.description = inner.description;
  }

  get(key: string): Promise<string | undefined> {
    return this.inner.get(key);
  }

  list(prefix: string): Promise<StoreEntry[]> {
    return this.inner.list(prefix);
  }

  async put(key: string, value: string): Promise<void> {
    await this.inner.put(key, value);
    this.written(key);
  }

  async delete(key: string): Promise<void> {
    await this.inner.delete(key);
    this.written(key);
  }

  campaign(candidate: string): Promise<Leadership> {
    return this.inner.campaign(candidate);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
