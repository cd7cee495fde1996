/**
 * @aether/sdk: the standard library of Aether as typed Connect clients.
 *
 * `connect()` finds the daemon and returns a client per service; the generated message types and
 * service descriptors are under `@aether/sdk/gen/aether/<subsystem>/v1/<subsystem>_pb`.
 * @packageDocumentation
 */
export * from "./client.js";
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
export type { DeploymentDecl, ManifestDeployment, StrategyDecl, TrafficDecl } from "./manifest/deployment-decl.js";
export { isManifestFileName } from "./manifest/files.js";
export type { ActionKind, ApplyResult, PlacedWorkload, Plan, PlannedAction } from "./manifest/types.js";
