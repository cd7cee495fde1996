// The rollout book: the leader's copy of every rollout record (rollouts/<id> in the store), read on
// take-over and written before memory changes, so a new leader continues a rollout from the stage the
// last one recorded; lookups by id or by deployment; and the listeners WatchRollout waits on.
import { clone, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { RolloutPhase, RolloutSchema, type Rollout } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, msOf } from "@aether/server";
import type { ClusterStore } from "../store/store.js";

export const ROLLOUTS_PREFIX = "rollouts/";
/** Ended rollouts kept per deployment (the newest); older ones are removed from the store. */
export const ENDED_KEPT = 10;

const ACTIVE = new Set([RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.ROLLING_BACK]);

/** Whether a rollout still acts on its deployment. */
export function isActive(r: Rollout): boolean {
  return ACTIVE.has(r.phase);
}

export class RolloutBook {
  rollouts = new Map<string, Rollout>();
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly store: ClusterStore,
    private readonly log: Logger,
  ) {}

  async load(): Promise<void> {
    const rollouts = new Map<string, Rollout>();
    for (const entry of await this.store.list(ROLLOUTS_PREFIX)) {
      try {
        const r = fromJsonString(RolloutSchema, entry.value, { ignoreUnknownFields: true });
        rollouts.set(r.id, r);
      } catch (err) {
        this.log.warn({ key: entry.key, err: describeError(err) }, "skipping an unreadable rollout record");
      }
    }
    this.rollouts = rollouts;
    this.changed();
  }

  reset(): void {
    this.rollouts = new Map();
    this.changed();
  }

  async save(rollout: Rollout): Promise<void> {
    const r = clone(RolloutSchema, rollout);
    await this.store.put(`${ROLLOUTS_PREFIX}${r.id}`, toJsonString(RolloutSchema, r));
    this.rollouts.set(r.id, r);
    this.changed();
    if (!isActive(r)) await this.prune(r.deploymentId);
  }

  /** Removes every rollout of a deployment that is gone. */
  async removeOf(deploymentId: string): Promise<void> {
    for (const r of this.of(deploymentId)) {
      await this.store.delete(`${ROLLOUTS_PREFIX}${r.id}`);
      this.rollouts.delete(r.id);
    }
    this.changed();
  }

  /** The deployment's rollout that still acts on it, if any (at most one: a new one supersedes it). */
  activeOf(deploymentId: string): Rollout | undefined {
    for (const r of this.rollouts.values()) if (r.deploymentId === deploymentId && isActive(r)) return r;
    return undefined;
  }

  /** The deployment's rollouts, newest first. */
  of(deploymentId: string): Rollout[] {
    return [...this.rollouts.values()].filter((r) => r.deploymentId === deploymentId).sort(newestFirst);
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(): void {
    for (const listener of this.listeners) listener();
  }

  private async prune(deploymentId: string): Promise<void> {
    const ended = this.of(deploymentId).filter((r) => !isActive(r));
    for (const old of ended.slice(ENDED_KEPT)) {
      await this.store.delete(`${ROLLOUTS_PREFIX}${old.id}`);
      this.rollouts.delete(old.id);
    }
  }
}

export function newestFirst(a: Rollout, b: Rollout): number {
  return msOf(b.createTime) - msOf(a.createTime) || (a.id < b.id ? 1 : -1);
}
