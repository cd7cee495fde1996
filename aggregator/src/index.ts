// @aether/aggregator: the cluster-side node registry and auction, as a library.
export * from "./store.js";
export { EmbeddedStore } from "./embedded-store.js";
export {
  Aggregator,
  normalizeSpec,
  DEFAULT_AUCTION_WINDOW_MS,
  DEFAULT_EVENT_RETENTION,
  DEFAULT_LEASE_TTL_MS,
  DEFAULT_PROVISION_TIMEOUT_MS,
  type AggregatorOptions,
} from "./aggregator.js";
export {
  classifyAnswer,
  collectBids,
  decide,
  diskWearOf,
  whyNoBid,
  DECLINE_SCORE,
  DISK_WEAR_FACTOR,
  MAX_SCORE,
  MIN_SCORE,
  type BidAnswer,
  type BidTarget,
  type Bidding,
  type Contender,
  type Decision,
  type TieBreakRule,
} from "./auction.js";
export { NodeRegistry } from "./registry.js";
export { EventLog, type NewEvent } from "./events.js";
export { NodeClients, type NodeTls } from "./node-clients.js";
export { aggregatorRoutes, aggregatorService, healthService } from "./service.js";
export { listen, ListenError, type Listeners, type ListenOptions } from "./server.js";
export { loadConfig, ConfigError, defaultAggregatorSocket, defaultAggregatorStateDir, type Config, type ConfigFlags } from "./config.js";
