// apply: carries out a plan, step by step, and says exactly how far it got if a step fails.
import type { AetherClient } from "../connect.js";
import { MANIFEST_LABEL, type ExecutableDecl, type Manifest } from "./define.js";
import { planManifest, type Plan, type PlannedAction } from "./plan.js";

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
  /** Grace period before SIGKILL when stopping an executable to replace or delete it. Default 10 s. */
  stopGraceSeconds?: number;
}

/** Makes the node match the manifest. Returns the plan it carried out. */
export async function applyManifest(aether: AetherClient, manifest: Manifest, options: ApplyOptions = {}): Promise<Plan> {
  const plan = await planManifest(aether, manifest);
  if (plan.conflicts.length > 0) {
    const first = plan.conflicts[0] as PlannedAction;
    throw new ApplyError(`nothing was applied: ${first.reason}`, [], first);
  }
  const applied: PlannedAction[] = [];
  const grace = { seconds: BigInt(options.stopGraceSeconds ?? 10) };
  const decls = new Map(manifest.executables.map((e) => [e.name, e]));
  // Starts before deletes: a renamed executable is up again before its old name goes away.
  const ordered = [...plan.actions.filter((a) => a.kind === "create" || a.kind === "replace"), ...plan.actions.filter((a) => a.kind === "delete")];
  for (const action of ordered) {
    options.onStep?.(action);
    try {
      if (action.kind === "replace" || action.kind === "delete") {
        if (action.liveRunning) await aether.runtime.stopExecutable({ executable: action.liveId ?? "", gracePeriod: grace });
        await aether.runtime.deleteExecutable({ executable: action.liveId ?? "" });
      }
      if (action.kind === "create" || action.kind === "replace") {
        await start(aether, manifest, decls.get(action.name) as ExecutableDecl);
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
    applied.push(action);
  }
  return plan;
}

async function start(aether: AetherClient, manifest: Manifest, decl: ExecutableDecl): Promise<void> {
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
