// @aether/sdk/client: the SDK without its manifest layer (and zod): connect(), targets, client
// configs, errors and the generated services. index.ts adds the manifest layer. For programs that
// start often and need no manifest, such as the aether CLI, whose start-up is most of a short
// command's time.
export { connect, type AetherClient, type ConnectOptions } from "./connect.js";
export { RolloutFailedError, type RolloutHelpers, type WaitOptions } from "./rollouts.js";
export { resolveTarget, type HttpsTarget, type Target, type TargetOptions, type TlsOptions, type UnixTarget } from "./target.js";
export { defaultClientConfigPath, defaultSocketPath, defaultStateDir } from "./address.js";
export {
  CONTEXT_FIELDS,
  DEFAULT_CONTEXT,
  readClientConfig,
  selectContext,
  type ClientConfig,
  type ClientContext,
} from "./client-config.js";
export { DNS_LABEL, DNS_LABEL_PATH, isDnsLabel, LABEL_KEY } from "./names.js";
export { Code, ConnectError } from "@connectrpc/connect";
/** Messages, enums and the service of aether.runtime.v1 (processes). */
export * as runtime from "./gen/aether/runtime/v1/runtime_pb.js";
/** Messages, enums and the service of aether.cells.v1 (cgroup slices). */
export * as cells from "./gen/aether/cells/v1/cells_pb.js";
/** Messages, enums and the service of aether.vm.v1 (virtual machines). */
export * as vm from "./gen/aether/vm/v1/vm_pb.js";
/** Messages, enums and the service of aether.storage.v1 (pools, volumes, images). */
export * as storage from "./gen/aether/storage/v1/storage_pb.js";
/** Messages, enums and the service of aether.fence.v1 (BMC power fencing). */
export * as fence from "./gen/aether/fence/v1/fence_pb.js";
/** Messages, enums and the services of aether.auction.v1 (bids and the aggregator). */
export * as auction from "./gen/aether/auction/v1/auction_pb.js";
/** Messages, enums and the service of aether.observe.v1 (logs, events, telemetry). */
export * as observe from "./gen/aether/observe/v1/observe_pb.js";
/** Messages, enums and the service of aether.node.v1 (identity, capabilities, health). */
export * as node from "./gen/aether/node/v1/node_pb.js";
/** Messages, enums and the service of aether.traffic.v1 (service endpoints run by HAProxy). */
export * as traffic from "./gen/aether/traffic/v1/traffic_pb.js";
