// @aether/aggregator: the cluster-side node registry and auction, as a library.
export * from "./store/store.js";
export { EmbeddedStore, decodeKey, encodeKey } from "./store/embedded-store.js";
export {
  Aggregator,
  DEFAULT_AUCTION_WINDOW_MS,
  DEFAULT_EVENT_RETENTION,
  DEFAULT_LEASE_TTL_MS,
  DEFAULT_PROVISION_TIMEOUT_MS,
  type AggregatorOptions,
} from "./aggregator.js";
export { normalizeSpec } from "./auction/deploy.js";
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
} from "./auction/auction.js";
export { NodeRegistry, INCARNATION_LABEL, type Rejoin } from "./nodes/registry.js";
export { Deadman } from "./fencing/deadman.js";
export {
  restartPolicy,
  DEFAULT_FENCE_POLL_INTERVAL_MS,
  DEFAULT_FENCE_RETRY_MS,
  DEFAULT_FENCE_TIMEOUT_MS,
  MAX_FENCE_RETRY_MS,
  RESTART_LABEL,
  type DeadmanHost,
  type DeadmanOptions,
  type FencingRecord,
  type RestartPolicy,
} from "./fencing/deadman-model.js";
export {
  BmcRegistry,
  RedfishFencer,
  describeBmc,
  fenceTargetOf,
  positionOf,
  type BmcEntry,
  type BmcPlacement,
  type FenceOptions,
  type FenceOutcome,
  type FenceTarget,
  type Fencer,
  type LocatedBmc,
  type Location,
  type RedfishFenceClient,
  type RedfishTarget,
} from "./fencing/fencing.js";
export { EventLog, type NewEvent } from "./events/events.js";
export { NodeClients, type NodeTls } from "./nodes/node-clients.js";
export { aggregatorRoutes, aggregatorService, healthService } from "./service/service.js";
export { Backups, DEFAULT_BACKUP_BATCH_MS, DEFAULT_BACKUP_INTERVAL_MS, type BackupHost, type BackupSettings } from "./backup/backup.js";
export { BACKED_UP, backedUpValue, isBackedUp, recordFile, recordOf } from "./backup/records.js";
export { listen, ListenError, type Listeners, type ListenOptions } from "@aether/server";
export {
  loadConfig,
  readBmcEntries,
  ConfigError,
  defaultAggregatorSocket,
  defaultAggregatorStateDir,
  type BmcConfig,
  type Config,
  type ConfigFlags,
} from "./config.js";
