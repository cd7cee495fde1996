// apply: carries out a plan, step by step, and says exactly how far it got if a step fails. A
// cluster manifest's steps go through the aggregator (cluster.ts).
import type { AetherClient } from "../connect.js";
import { ExecutableState } from "../gen/aether/runtime/v1/runtime_pb.js";
import { MANIFEST_LABEL, type Manifest, type ManifestCell, type ManifestExecutable, type ManifestVolume } from "./define.js";
import { cellLimits, planManifest, volumeFormat } from "./plan.js";
import type { ApplyResult, Plan, PlannedAction } from "./types.js";
import { applyClusterAction } from "./cluster.js";
import { applyVm } from "./vm-plan.js";
import { applyDeployment } from "./deployment-plan.js";

/** Raised when apply stops partway: what was applied, which step failed, and why. */
export class ApplyError extends Error {
  constructor(
    message: string,
    /** Steps completed before the failure. */
    readonly applied: PlannedAction[],
    /** The step that failed. */
    readonly failed: PlannedAction,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ApplyError";
  }
}

/** Options of {@link applyManifest}. */
export interface ApplyOptions {
  /** Called before each step that changes something. */
  onStep?: (action: PlannedAction) => void;
  /** Called after each step that changed something, with its outcome (for a cluster manifest: where it was placed). */
  onApplied?: (action: PlannedAction) => void;
  /**
   * Grace period before SIGKILL when stopping an executable to replace or delete it (for a cluster
   * manifest: when releasing its placement). Default 10 s.
   */
  stopGraceSeconds?: number;
}

/**
 * Makes the node match the manifest or, for a manifest with `target: "cluster"`, has the aggregator
 * behind `aether` place, replace and release its executables. Returns the plan and the steps carried
 * out. Applying the same manifest again changes nothing.
 */
export async function applyManifest(aether: AetherClient, manifest: Manifest, options: ApplyOptions = {}): Promise<ApplyResult> {
  const plan = await planManifest(aether, manifest);
  if (plan.conflicts.length > 0) {
    const first = plan.conflicts[0] as PlannedAction;
    throw new ApplyError(`nothing was applied: ${first.reason}`, [], first);
  }
  const applied: PlannedAction[] = [];
  const grace = { seconds: BigInt(options.stopGraceSeconds ?? 10) };
  const decls = new Map(manifest.executables.map((e) => [e.name, e]));
  const cells = new Map(manifest.cells.map((c) => [c.name, c]));
  const volumes = new Map(manifest.volumes.map((v) => [v.name, v]));
  const vms = new Map(manifest.vms.map((v) => [v.name, v]));
  const deployments = new Map(manifest.deployments.map((d) => [d.name, d]));
  const depth = (a: PlannedAction) => a.name.split("/").length;
  const of = (resource: PlannedAction["resource"], ...kinds: PlannedAction["kind"][]) =>
    plan.actions.filter((a) => a.resource === resource && kinds.includes(a.kind));
  // Volumes first (what runs may need them); cells before what runs in them, parents before
  // children; starts before deletes (a renamed executable is up again before its old name goes
  // away); then cells, children first; volumes last, once nothing of the manifest uses them.
  const ordered = [
    ...of("volume", "create", "update"),
    ...of("cell", "create", "update", "replace").sort((a, b) => depth(a) - depth(b)),
    ...of("vm", "create", "replace", "update"),
    ...of("executable", "create", "replace"),
    ...of("deployment", "create", "update", "replace"),
    ...of("deployment", "delete"),
    ...of("executable", "delete"),
    ...of("vm", "delete"),
    ...of("cell", "delete").sort((a, b) => depth(b) - depth(a)),
    ...of("volume", "delete"),
  ];
  for (const action of ordered) {
    options.onStep?.(action);
    let done = action;
    try {
      if (action.resource === "deployment")
        await applyDeployment(aether, manifest, action, deployments.get(action.name), options.stopGraceSeconds ?? 10);
      else if (manifest.target === "cluster")
        done = await applyClusterAction(
          aether,
          manifest,
          action,
          action.resource === "vm" ? { vm: vms.get(action.name) } : { executable: decls.get(action.name) },
          options.stopGraceSeconds ?? 10,
        );
      else if (action.resource === "vm") await applyVm(aether, manifest, action, vms.get(action.name), options.stopGraceSeconds ?? 10);
      else if (action.resource === "volume") await applyVolume(aether, manifest, action, volumes.get(action.name));
      else if (action.resource === "cell") await applyCell(aether, manifest, action, cells.get(action.name));
      else {
        if (action.kind === "replace" || action.kind === "delete") {
          // Re-read the state: freeing a replaced cell may have stopped it since the plan was made.
          // Ids resolve within their tenant only: always name the manifest's.
          const tenant = manifest.tenant;
          const { executable } = await aether.runtime.getExecutable({ executable: action.liveId ?? "", tenant });
          if (executable?.state === ExecutableState.RUNNING)
            await aether.runtime.stopExecutable({ executable: executable.id, tenant, gracePeriod: grace });
          await aether.runtime.deleteExecutable({ executable: action.liveId ?? "", tenant });
        }
        if (action.kind === "create" || action.kind === "replace") {
          await start(aether, manifest, decls.get(action.name) as ManifestExecutable);
        }
      }
    } catch (err) {
      const done = applied.length === 0 ? "nothing" : applied.map((a) => `${a.kind} ${a.resource} ${a.name}`).join(", ");
      throw new ApplyError(
        `apply stopped at ${action.kind} ${action.resource} ${action.name}: ${(err as Error).message}; applied before that: ${done}`,
        applied,
        action,
        { cause: err },
      );
    }
    applied.push(done);
    options.onApplied?.(done);
  }
  return { ...plan, applied };
}

async function applyCell(aether: AetherClient, manifest: Manifest, action: PlannedAction, decl: ManifestCell | undefined): Promise<void> {
  if (action.kind === "update" && decl) {
    await aether.cells.updateCell({ cell: action.liveId ?? "", tenant: manifest.tenant, limits: cellLimits(decl) });
    return;
  }
  if (action.kind === "replace" || action.kind === "delete") {
    await aether.cells.freeCell({ cell: action.liveId ?? "", tenant: manifest.tenant, stopExecutables: true });
  }
  if ((action.kind === "create" || action.kind === "replace") && decl) {
    await aether.cells.allocateCell({
      name: decl.name,
      tenant: manifest.tenant,
      labels: { ...decl.labels, [MANIFEST_LABEL]: manifest.name },
      limits: cellLimits(decl),
      isolation: decl.isolation,
    });
  }
}

async function applyVolume(
  aether: AetherClient,
  manifest: Manifest,
  action: PlannedAction,
  decl: ManifestVolume | undefined,
): Promise<void> {
  if (action.kind === "update") {
    await aether.storage.resizeVolume({ volume: action.liveId ?? "", tenant: manifest.tenant, sizeBytes: BigInt(action.sizeBytes ?? 0) });
  } else if (action.kind === "delete") {
    // Snapshots are not the manifest's: a volume that has some is refused, and apply says so.
    await aether.storage.deleteVolume({ volume: action.liveId ?? "", tenant: manifest.tenant });
  } else if (action.kind === "create" && decl) {
    const size = BigInt(decl.sizeBytes ?? 0);
    await aether.storage.createVolume({
      name: decl.name,
      tenant: manifest.tenant,
      labels: { ...decl.labels, [MANIFEST_LABEL]: manifest.name },
      pool: decl.pool,
      format: volumeFormat(decl),
      source:
        decl.image === undefined
          ? { case: "empty", value: { sizeBytes: size } }
          : { case: "image", value: { image: decl.image, sizeBytes: size } },
    });
  }
}

async function start(aether: AetherClient, manifest: Manifest, decl: ManifestExecutable): Promise<void> {
  await aether.runtime.startExecutable({
    name: decl.name,
    tenant: manifest.tenant,
    labels: { ...decl.labels, [MANIFEST_LABEL]: manifest.name },
    argv: decl.argv,
    env: decl.env ?? {},
    cwd: decl.cwd ?? "/",
    uid: decl.uid,
    gid: decl.gid,
    cell: decl.cell ?? "",
  });
}

/** The same manifest declaring nothing: planning or applying it deletes everything the manifest manages. */
export function withoutResources(manifest: Manifest): Manifest {
  return { ...manifest, executables: [], cells: [], volumes: [], vms: [], deployments: [] };
}

/**
 * Deletes everything the manifest created (what carries its `aether.io/manifest` label in its
 * tenant, on the node or, for a cluster manifest, among the aggregator's placements), and nothing
 * else. Returns the steps carried out; deleting again changes nothing.
 */
export function deleteManifest(aether: AetherClient, manifest: Manifest, options: ApplyOptions = {}): Promise<ApplyResult> {
  return applyManifest(aether, withoutResources(manifest), options);
}
