/**
 * @aether/sdk: the standard library of Aether as typed Connect clients.
 *
 * `connect()` finds the daemon and returns a client per service; the generated message types and
 * service descriptors are under `@aether/sdk/gen/aether/<subsystem>/v1/<subsystem>_pb`.
 * @packageDocumentation
 */
export { connect, resolveTarget, type AetherClient, type ConnectOptions, type Target, type TlsOptions } from "./connect.js";
export { defaultClientConfigPath, defaultSocketPath, defaultStateDir } from "./address.js";
export { Code, ConnectError } from "@connectrpc/connect";
export { defineManifest, isManifest, ManifestError, MANIFEST_LABEL, type CellDecl, type ExecutableDecl, type Manifest, type ManifestInput } from "./manifest/define.js";
export { planManifest, type ActionKind, type Plan, type PlannedAction } from "./manifest/plan.js";
export { applyManifest, ApplyError, type ApplyOptions } from "./manifest/apply.js";
export * as runtime from "./gen/aether/runtime/v1/runtime_pb.js";
export * as cells from "./gen/aether/cells/v1/cells_pb.js";
export * as vm from "./gen/aether/vm/v1/vm_pb.js";
export * as storage from "./gen/aether/storage/v1/storage_pb.js";
export * as fence from "./gen/aether/fence/v1/fence_pb.js";
export * as auction from "./gen/aether/auction/v1/auction_pb.js";
export * as observe from "./gen/aether/observe/v1/observe_pb.js";
export * as node from "./gen/aether/node/v1/node_pb.js";
