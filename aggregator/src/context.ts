// What the rooms that act on placements share: the store, the node registry and the clients that
// call the nodes, the placement book, the cluster event log, and this replica's settings. The
// composition (aggregator.ts) makes one and hands it to each room.
import type { Logger } from "pino";
import type { ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "./store/store.js";
import type { NewEvent } from "./events/events.js";
import type { NodeRegistry } from "./nodes/registry.js";
import type { NodeClients } from "./nodes/node-clients.js";
import type { PlacementBook } from "./placements/book.js";

export interface Context {
  readonly store: ClusterStore;
  /** This replica's name (in records' reasons: who finished a placement). */
  readonly replica: string;
  /** How long an auction waits for bids unless the request says otherwise. */
  readonly windowMs: number;
  /** How long a node may take to provision a workload it won. */
  readonly provisionTimeoutMs: number;
  readonly log: Logger;
  readonly registry: NodeRegistry;
  readonly clients: NodeClients;
  readonly book: PlacementBook;
  /** True while this replica leads and serves. */
  leading(): boolean;
  /** Appends a cluster event and returns it; a failure is only logged (and undefined returned). */
  emit(event: NewEvent): Promise<ClusterEvent | undefined>;
}
