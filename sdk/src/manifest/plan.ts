// plan: what would change to make a node match a manifest, computed against its live state.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "../connect.js";
import { ExecutableState, type Executable } from "../gen/aether/runtime/v1/runtime_pb.js";
import { MANIFEST_LABEL, type Manifest } from "./define.js";

/** What applying will do to one resource. */
export type ActionKind = "create" | "replace" | "delete" | "unchanged" | "conflict";

/** One step of a plan. */
export interface PlannedAction {
  kind: ActionKind;
  resource: "executable" | "cell";
  name: string;
  /** Why: what differs, or why nothing does. */
  reason: string;
  /** The live resource's id, for replace, delete and unchanged. */
  liveId?: string;
  /** Whether the live resource is running (replace and delete stop it first). */
  liveRunning?: boolean;
}

/** The steps that make a node match a manifest. */
export interface Plan {
  manifest: Manifest;
  actions: PlannedAction[];
  /** Number of actions that change something (create, replace, delete). */
  changes: number;
  /** Actions that block apply (a resource of the same name that the manifest does not manage). */
  conflicts: PlannedAction[];
}

async function listAll(aether: AetherClient, tenant: string): Promise<Executable[]> {
  const all: Executable[] = [];
  let pageToken = "";
  do {
    const page = await aether.runtime.listExecutables({ tenant, pageSize: 1000, pageToken });
    all.push(...page.executables);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

const sameRecord = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/** Computes the plan for a manifest against the node behind `aether`. Changes nothing. */
export async function planManifest(aether: AetherClient, manifest: Manifest): Promise<Plan> {
  if (manifest.cells.length > 0) {
    try {
      await aether.cells.listCells({});
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented) {
        throw new ConnectError(`the manifest declares cells, but aetherd at ${aether.address} cannot manage them: ${err.rawMessage}`, Code.FailedPrecondition);
      }
      throw err;
    }
  }
  const live = await listAll(aether, manifest.tenant);
  const managed = new Map(live.filter((e) => e.labels[MANIFEST_LABEL] === manifest.name).map((e) => [e.name, e]));
  const others = new Map(live.filter((e) => e.labels[MANIFEST_LABEL] !== manifest.name).map((e) => [e.name, e]));
  const actions: PlannedAction[] = [];

  for (const decl of manifest.executables) {
    const current = managed.get(decl.name);
    const foreign = others.get(decl.name);
    if (!current && foreign) {
      actions.push({
        kind: "conflict",
        resource: "executable",
        name: decl.name,
        reason: `an executable named ${decl.name} already exists in tenant ${manifest.tenant} and is not managed by manifest ${manifest.name}; delete or rename it`,
      });
      continue;
    }
    if (!current) {
      actions.push({ kind: "create", resource: "executable", name: decl.name, reason: "not running on the node" });
      continue;
    }
    const running = current.state === ExecutableState.RUNNING;
    const base = { resource: "executable" as const, name: decl.name, liveId: current.id, liveRunning: running };
    const differences: string[] = [];
    const wantLabels = { ...decl.labels, [MANIFEST_LABEL]: manifest.name };
    if (current.argv.join("\0") !== decl.argv.join("\0")) differences.push("argv");
    if (!sameRecord(current.env, decl.env)) differences.push("env");
    if (current.cwd !== decl.cwd) differences.push("cwd");
    if (!sameRecord(current.labels, wantLabels)) differences.push("labels");
    if (decl.uid !== undefined && current.uid !== decl.uid) differences.push("uid");
    if (decl.gid !== undefined && current.gid !== decl.gid) differences.push("gid");
    if (current.cell !== decl.cell) differences.push("cell");
    if (differences.length > 0) {
      actions.push({ ...base, kind: "replace", reason: `${differences.join(", ")} changed` });
    } else if (!running) {
      actions.push({ ...base, kind: "replace", reason: `it is not running (${current.stateReason}); start it again` });
    } else {
      actions.push({ ...base, kind: "unchanged", reason: "running as declared" });
    }
  }
  const declared = new Set(manifest.executables.map((e) => e.name));
  for (const [name, current] of managed) {
    if (!declared.has(name)) {
      actions.push({
        kind: "delete",
        resource: "executable",
        name,
        reason: "no longer in the manifest",
        liveId: current.id,
        liveRunning: current.state === ExecutableState.RUNNING,
      });
    }
  }
  return {
    manifest,
    actions,
    changes: actions.filter((a) => a.kind === "create" || a.kind === "replace" || a.kind === "delete").length,
    conflicts: actions.filter((a) => a.kind === "conflict"),
  };
}
