// @aether/server: what aetherd and aether-aggregator both serve with. The listeners (unix socket,
// mutual TLS and loopback h2c TCP, HTTP/2 limits, TLS reload), who calls (peer identity, SPIFFE),
// the authorization policy and its interceptor, request validation, errors, protobuf time, the
// logger, the atomic state file and the state-directory lock. It imports no program package.
export { listen, splitHostPort, ListenError, type Listeners, type ListenOptions } from "./listen.js";
export type { TcpOptions } from "./tls-material.js";
export { outgoingConnectOptions, outgoingTls, type OutgoingTls, type TlsSource } from "./outgoing-tls.js";
export { callerOf, callerOfRequest, peerContextIn, peerKey, requireVerifiedPeer, type Peer, type PeerOptions } from "./peer.js";
export { certificateCaller, certificateTrustDomain, spiffeRefusal, tenantOf, trustDomainOf, uriSans, type Caller } from "./identity.js";
export { Authorizer, holdToTenant, methodsOf, requireClusterWide, scopeKey, type CallerScope } from "./authorize.js";
export {
  decide,
  defaultPolicy,
  glob,
  loadPolicy,
  parsePolicy,
  PolicyError,
  ROLES,
  type Decision,
  type Policy,
  type RoleName,
} from "./policy.js";
export {
  clip,
  DEFAULT_TENANT,
  dnsLabel,
  isLoopbackHost,
  labelFilter,
  labels,
  matchesFilter,
  nextPageToken,
  pageOffset,
  pageSize,
  paginate,
  reference,
  tenant,
} from "./validate.js";
export {
  alreadyExists,
  deadlineExceeded,
  describeError,
  DomainError,
  type ErrorKind,
  failedPrecondition,
  internal,
  invalidArgument,
  notFound,
  permissionDenied,
  resourceExhausted,
  rpcCode,
  rpcError,
  unavailable,
  unimplemented,
} from "./errors.js";
export {
  findByIdOrName,
  findByIdPrefix,
  MIN_ID_PREFIX,
  resolveIdPrefix,
  resolveInTenant,
  type ById,
  type Described,
  type Identity,
} from "./lookup.js";
export { duration, durationMs, msOf, preciseNow, timestamp } from "./time.js";
export { ConfigError, parseConfig, readToml } from "./config.js";
export { createLogger, setLogLevel, silentLogger } from "./logger.js";
export { LOG_LEVELS, MAX_LOG_LEVEL_DURATION_MS, RuntimeLogLevel, setLogLevelRpc, type LogLevel } from "./log-level.js";
export { perScrape, serveMetrics, type MetricsEndpoint, type MetricsListenOptions } from "./metrics.js";
export { codeName, LATENCY_BUCKETS_SECONDS, rpcDebugLog, rpcMetrics } from "./rpc-metrics.js";
export { writeFileAtomic, writeJsonAtomic, writeJsonAtomicSync, type WriteOptions } from "./atomic-file.js";
export { lockStateDir, StateLockError, type StateLock } from "./state-lock.js";
