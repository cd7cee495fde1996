/**
 * @aether/sdk: the standard library of Aether as typed Connect clients.
 *
 * `connect()` finds the daemon and returns a client per service; the generated message types and
 * service descriptors are under `@aether/sdk/gen/aether/<subsystem>/v1/<subsystem>_pb`.
 * @packageDocumentation
 */
export { connect, type AetherClient, type ConnectOptions } from "./connect.js";
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
export {
  defineManifest,
  isManifest,
  ManifestError,
  MANIFEST_LABEL,
  type CellDecl,
  type ExecutableDecl,
  type Manifest,
  type ManifestCell,
  type ManifestExecutable,
  type ManifestInput,
  type ManifestRequirements,
  type ManifestTarget,
  type ManifestVolume,
  type RequirementsDecl,
  type VolumeDecl,
} from "./manifest/define.js";
export { planManifest } from "./manifest/plan.js";
export { describeSize, formatSize, parseSize } from "./manifest/size.js";
export { applyManifest, ApplyError, deleteManifest, withoutResources, type ApplyOptions } from "./manifest/apply.js";
export { ACTION_SYMBOL, describeAction, describePlacement, describePlanSummary } from "./manifest/describe.js";
export type { ManifestVm, ManifestVmBoot, VmDecl } from "./manifest/vm-decl.js";
export type { DeploymentDecl, ManifestDeployment } from "./manifest/deployment-decl.js";
export { isManifestFileName } from "./manifest/files.js";
export type { ActionKind, ApplyResult, PlacedWorkload, Plan, PlannedAction } from "./manifest/types.js";
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
