// plan: what would change to make a node match a manifest, computed against its live state.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "../connect.js";
import { ExecutableState, type Executable } from "../gen/aether/runtime/v1/runtime_pb.js";
import { create } from "@bufbuild/protobuf";
import { CellLimitsSchema, type Cell, type CellLimits } from "../gen/aether/cells/v1/cells_pb.js";
import { MANIFEST_LABEL, type Manifest, type ManifestCell } from "./define.js";

/** What applying will do to one resource. */
export type ActionKind = "create" | "update" | "replace" | "delete" | "unchanged" | "conflict";

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
  /** Number of actions that change something (create, update, replace, delete). */
  changes: number;
  /** Actions that block apply (a resource of the same name that the manifest does not manage). */
  conflicts: PlannedAction[];
}

/** Every item of a paged List call. */
async function allPages<T>(list: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>): Promise<T[]> {
  const all: T[] = [];
  let pageToken = "";
  do {
    const page = await list(pageToken);
    all.push(...page.items);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

function listAll(aether: AetherClient, tenant: string): Promise<Executable[]> {
  return allPages(async (pageToken) => {
    const page = await aether.runtime.listExecutables({ tenant, pageSize: 1000, pageToken });
    return { items: page.executables, nextPageToken: page.nextPageToken };
  });
}

const sameRecord = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/** Computes the plan for a manifest against the node behind `aether`. Changes nothing. */
export async function planManifest(aether: AetherClient, manifest: Manifest): Promise<Plan> {
  const actions: PlannedAction[] = manifest.cells.length > 0 ? await planCells(aether, manifest) : [];
  const replacedCells = new Set(actions.filter((a) => a.kind === "replace").map((a) => a.name));
  const live = await listAll(aether, manifest.tenant);
  const managed = new Map(live.filter((e) => e.labels[MANIFEST_LABEL] === manifest.name).map((e) => [e.name, e]));
  const others = new Map(live.filter((e) => e.labels[MANIFEST_LABEL] !== manifest.name).map((e) => [e.name, e]));

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
    } else if (replacedCells.has(decl.cell)) {
      actions.push({ ...base, kind: "replace", reason: `its cell ${decl.cell} is replaced` });
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
    changes: actions.filter((a) => a.kind === "create" || a.kind === "update" || a.kind === "replace" || a.kind === "delete").length,
    conflicts: actions.filter((a) => a.kind === "conflict"),
  };
}

/** Limits as CellService takes them, from a manifest's cell. */
export function cellLimits(c: ManifestCell): CellLimits {
  const period = 100_000n;
  return create(CellLimitsSchema, {
    cpuWeight: c.cpuWeight,
    cpuMax: c.cpuMaxPercent === undefined ? undefined : { quotaUsec: BigInt(Math.round((c.cpuMaxPercent / 100) * Number(period))), periodUsec: period },
    cpusetCpus: c.cpusetCpus ?? "",
    memoryMaxBytes: BigInt(c.memoryMaxBytes ?? 0),
    pidsMax: BigInt(c.pidsMax ?? 0),
  });
}

function listCells(aether: AetherClient, tenant: string): Promise<Cell[]> {
  return allPages(async (pageToken) => {
    const page = await aether.cells.listCells({ tenant, pageSize: 1000, pageToken });
    return { items: page.cells, nextPageToken: page.nextPageToken };
  });
}

async function planCells(aether: AetherClient, manifest: Manifest): Promise<PlannedAction[]> {
  let live: Cell[];
  try {
    live = await listCells(aether, manifest.tenant);
  } catch (err) {
    if (err instanceof ConnectError && (err.code === Code.Unimplemented || err.code === Code.FailedPrecondition)) {
      throw new ConnectError(`the manifest declares cells, but aetherd at ${aether.address} cannot manage them: ${err.rawMessage}`, Code.FailedPrecondition);
    }
    throw err;
  }
  const byName = new Map(live.map((c) => [c.name, c]));
  const declared = new Map(manifest.cells.map((c) => [c.name, c]));
  const effective = (c: ManifestCell): ManifestCell["isolation"] => {
    const parentName = c.name.split("/").slice(0, -1).join("/");
    const parent = parentName === "" ? undefined : declared.get(parentName);
    const up = parent ? effective(parent) : { pid: false, mount: false, network: false, uts: false, ipc: false };
    return { pid: c.isolation.pid || up.pid, mount: c.isolation.mount || up.mount, network: c.isolation.network || up.network, uts: c.isolation.uts || up.uts, ipc: c.isolation.ipc || up.ipc };
  };
  const actions: PlannedAction[] = [];
  for (const decl of manifest.cells) {
    const current = byName.get(decl.name);
    if (!current) {
      actions.push({ kind: "create", resource: "cell", name: decl.name, reason: "does not exist on the node" });
      continue;
    }
    if (current.labels[MANIFEST_LABEL] !== manifest.name) {
      actions.push({ kind: "conflict", resource: "cell", name: decl.name, reason: `a cell named ${decl.name} already exists in tenant ${manifest.tenant} and is not managed by manifest ${manifest.name}; free or rename it` });
      continue;
    }
    const base = { resource: "cell" as const, name: decl.name, liveId: current.id };
    const want = effective(decl);
    const have = current.isolation;
    if (!have || (Object.keys(want) as Array<keyof typeof want>).some((k) => want[k] !== have[k])) {
      actions.push({ ...base, kind: "replace", reason: "isolation changed (namespaces cannot change in place; its processes are restarted)" });
      continue;
    }
    const limits = cellLimits(decl);
    const l = current.limits;
    const differences: string[] = [];
    if ((l?.cpuWeight ?? 100) !== (limits.cpuWeight ?? 100)) differences.push("cpu weight");
    if ((l?.cpuMax?.quotaUsec ?? 0n) !== (limits.cpuMax?.quotaUsec ?? 0n)) differences.push("cpu max");
    if ((l?.cpusetCpus ?? "") !== limits.cpusetCpus) differences.push("cpuset");
    if ((l?.memoryMaxBytes ?? 0n) !== limits.memoryMaxBytes) differences.push("memory max");
    if ((l?.pidsMax ?? 0n) !== limits.pidsMax) differences.push("pids max");
    const wantLabels = { ...decl.labels, [MANIFEST_LABEL]: manifest.name };
    if (differences.length > 0) actions.push({ ...base, kind: "update", reason: `${differences.join(", ")} changed` });
    else if (!sameRecord(current.labels, wantLabels)) actions.push({ ...base, kind: "replace", reason: "labels changed" });
    else actions.push({ ...base, kind: "unchanged", reason: "exists as declared" });
  }
  for (const c of live) {
    if (c.labels[MANIFEST_LABEL] === manifest.name && !declared.has(c.name)) {
      actions.push({ kind: "delete", resource: "cell", name: c.name, reason: "no longer in the manifest", liveId: c.id });
    }
  }
  return actions;
}
