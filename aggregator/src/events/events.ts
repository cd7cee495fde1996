// The cluster event log: every event gets the next sequence number, is written to the store under
// events/<sequence> and handed to live subscribers in sequence order. The newest `retention` events
// are kept (older ones are deleted from the store), so a stream can replay them or resume after a
// sequence number.
import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { ClusterEventSchema, type ClusterEvent, type ClusterEventKind } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "../store/store.js";
import { timestamp } from "@aether/server";

export const EVENTS_PREFIX = "events/";
const eventKey = (sequence: bigint) => `${EVENTS_PREFIX}${sequence.toString().padStart(20, "0")}`;

export interface NewEvent {
  kind: ClusterEventKind;
  message: string;
  node?: string;
  workloadId?: string;
  tenant?: string;
  auctionId?: string;
  attributes?: Record<string, string>;
}

export class EventLog {
  private events: ClusterEvent[] = [];
  private nextSequence = 1n;
  private readonly subscribers = new Set<(event: ClusterEvent) => void>();

  constructor(
    private readonly store: ClusterStore,
    private readonly retention: number,
    private readonly log: Logger,
  ) {}

  /** Reads the retained events from the store (on becoming the leader). */
  async load(): Promise<void> {
    const loaded: ClusterEvent[] = [];
    for (const entry of await this.store.list(EVENTS_PREFIX)) {
      try {
        loaded.push(fromJsonString(ClusterEventSchema, entry.value, { ignoreUnknownFields: true }));
      } catch (err) {
        this.log.warn({ key: entry.key, err: (err as Error).message }, "skipping an unreadable event record");
      }
    }
    loaded.sort((a, b) => (a.sequence < b.sequence ? -1 : a.sequence > b.sequence ? 1 : 0));
    this.events = loaded;
    const last = loaded.at(-1);
    this.nextSequence = last === undefined ? 1n : last.sequence + 1n;
  }

  /** Forgets everything held in memory (on losing leadership). */
  reset(): void {
    this.events = [];
    this.nextSequence = 1n;
  }

  /**
   * Appends an event: numbered and handed to subscribers at once (so they see sequence order), then
   * written to the store; resolves once it is durable.
   */
  async append(fields: NewEvent): Promise<ClusterEvent> {
    const event = create(ClusterEventSchema, {
      sequence: this.nextSequence++,
      time: timestamp(Date.now()),
      kind: fields.kind,
      node: fields.node ?? "",
      workloadId: fields.workloadId ?? "",
      tenant: fields.tenant ?? "",
      auctionId: fields.auctionId ?? "",
      message: fields.message,
      attributes: fields.attributes ?? {},
    });
    this.events.push(event);
    for (const notify of this.subscribers) notify(event);
    const dropped = this.events.length > this.retention ? this.events.splice(0, this.events.length - this.retention) : [];
    await this.store.put(eventKey(event.sequence), toJsonString(ClusterEventSchema, event));
    for (const old of dropped) {
      this.store
        .delete(eventKey(old.sequence))
        .catch((err: unknown) =>
          this.log.warn({ sequence: String(old.sequence), err: (err as Error).message }, "could not delete an old event"),
        );
    }
    return event;
  }

  /** The retained events, oldest first. */
  history(): readonly ClusterEvent[] {
    return this.events;
  }

  /** Calls fn with every new event until the returned function is called. */
  subscribe(fn: (event: ClusterEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }
}
