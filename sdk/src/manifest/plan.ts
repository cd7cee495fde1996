// plan: what would change to make a node match a manifest, computed against its live state (for a
// cluster manifest, against the aggregator's placements: see cluster.ts).
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "../connect.js";
import { ExecutableState, type Executable } from "../gen/aether/runtime/v1/runtime_pb.js";
import { create } from "@bufbuild/protobuf";
import { CellLimitsSchema, type Cell, type CellLimits } from "../gen/aether/cells/v1/cells_pb.js";
import { VolumeFormat, VolumeState, type Volume } from "../gen/aether/storage/v1/storage_pb.js";
import { MANIFEST_LABEL, type Manifest, type ManifestCell, type ManifestVolume } from "./define.js";
import { formatSize } from "./size.js";
import { planCluster } from "./cluster.js";
import { allPages, planOf, sameRecord } from "./common.js";
import { planVms } from "./vm-plan.js";
import type { Plan, PlannedAction } from "./types.js";

async function listAll(aether: AetherClient, manifest: Manifest): Promise<Executable[]> {
  try {
    return await allPages(async (pageToken) => {
      const page = await aether.runtime.listExecutables({ tenant: manifest.tenant, pageSize: 1000, pageToken });
      return { items: page.executables, nextPageToken: page.nextPageToken };
    });
  } catch (err) {
    // An aether-aggregator serves no ExecutableService: the manifest was probably meant for the cluster.
    if (err instanceof ConnectError && err.code === Code.Unimplemented) {
      throw new ConnectError(
        `manifest ${manifest.name} targets one node, but ${aether.address} serves no ExecutableService (an aether-aggregator, say): point AETHER_HOST at a node's aetherd, or set target: "cluster" in the manifest to have the aggregator place its executables.`,
        Code.FailedPrecondition,
      );
    }
    throw err;
  }
}

/**
 * Computes the plan for a manifest against the node behind `aether` or, for a manifest with
 * `target: "cluster"`, against the placements of the aggregator behind `aether`. Changes nothing.
 */
export async function planManifest(aether: AetherClient, manifest: Manifest): Promise<Plan> {
  if (manifest.target === "cluster") return planCluster(aether, manifest);
  // Executables first: the call that tells a node from an aggregator, before volumes or cells.
  const live = await listAll(aether, manifest);
  const actions: PlannedAction[] = await planVolumes(aether, manifest);
  if (manifest.cells.length > 0) actions.push(...(await planCells(aether, manifest)));
  const replacedCells = new Set(actions.filter((a) => a.resource === "cell" && a.kind === "replace").map((a) => a.name));
  actions.push(...(await planVms(aether, manifest, replacedCells)));
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
  return planOf(manifest, actions);
}

/** Limits as CellService takes them, from a manifest's cell. */
export function cellLimits(c: ManifestCell): CellLimits {
  const period = 100_000n;
  return create(CellLimitsSchema, {
    cpuWeight: c.cpuWeight,
    cpuMax:
      c.cpuMaxPercent === undefined
        ? undefined
        : { quotaUsec: BigInt(Math.round((c.cpuMaxPercent / 100) * Number(period))), periodUsec: period },
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
      throw new ConnectError(
        `the manifest declares cells, but aetherd at ${aether.address} cannot manage them: ${err.rawMessage}`,
        Code.FailedPrecondition,
      );
    }
    throw err;
  }
  const byName = new Map(live.map((c) => [c.name, c]));
  const declared = new Map(manifest.cells.map((c) => [c.name, c]));
  const effective = (c: ManifestCell): ManifestCell["isolation"] => {
    const parentName = c.name.split("/").slice(0, -1).join("/");
    const parent = parentName === "" ? undefined : declared.get(parentName);
    const up = parent ? effective(parent) : { pid: false, mount: false, network: false, uts: false, ipc: false };
    return {
      pid: c.isolation.pid || up.pid,
      mount: c.isolation.mount || up.mount,
      network: c.isolation.network || up.network,
      uts: c.isolation.uts || up.uts,
      ipc: c.isolation.ipc || up.ipc,
    };
  };
  const actions: PlannedAction[] = [];
  for (const decl of manifest.cells) {
    const current = byName.get(decl.name);
    if (!current) {
      actions.push({ kind: "create", resource: "cell", name: decl.name, reason: "does not exist on the node" });
      continue;
    }
    if (current.labels[MANIFEST_LABEL] !== manifest.name) {
      actions.push({
        kind: "conflict",
        resource: "cell",
        name: decl.name,
        reason: `a cell named ${decl.name} already exists in tenant ${manifest.tenant} and is not managed by manifest ${manifest.name}; free or rename it`,
      });
      continue;
    }
    const base = { resource: "cell" as const, name: decl.name, liveId: current.id };
    const want = effective(decl);
    const have = current.isolation;
    if (!have || (Object.keys(want) as Array<keyof typeof want>).some((k) => want[k] !== have[k])) {
      actions.push({
        ...base,
        kind: "replace",
        reason: "isolation changed (namespaces cannot change in place; its processes are restarted)",
      });
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

/**
 * The coarsest unit aetherd's pools round a volume's size up to (LVM thin: 4 MiB; ZFS: 1 MiB; a
 * directory: 512 bytes). A volume up to this much larger than declared was made from that
 * declaration, and is as declared.
 */
const POOL_ROUNDING_BYTES = 4 * 2 ** 20;

const FORMATS: Record<NonNullable<ManifestVolume["format"]>, VolumeFormat> = { qcow2: VolumeFormat.QCOW2, raw: VolumeFormat.RAW };

/** The format StorageService takes for a manifest's volume (unspecified: the pool's default). */
export function volumeFormat(v: ManifestVolume): VolumeFormat {
  return v.format === undefined ? VolumeFormat.UNSPECIFIED : FORMATS[v.format];
}

function listVolumes(aether: AetherClient, tenant: string): Promise<Volume[]> {
  return allPages(async (pageToken) => {
    const page = await aether.storage.listVolumes({ tenant, pageSize: 1000, pageToken });
    return { items: page.volumes, nextPageToken: page.nextPageToken };
  });
}

/** Whether `volume` is a clone of the image the declaration names (by id or name). */
async function clonesImage(aether: AetherClient, tenant: string, volume: Volume, image: string): Promise<boolean> {
  if (volume.backing?.parent.case !== "image") return false;
  if (volume.backing.parent.value === image) return true;
  try {
    return (await aether.storage.getImage({ image, tenant })).image?.id === volume.backing.parent.value;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return false;
    throw err;
  }
}

async function planVolumes(aether: AetherClient, manifest: Manifest): Promise<PlannedAction[]> {
  let live: Volume[];
  try {
    live = await listVolumes(aether, manifest.tenant);
  } catch (err) {
    if (err instanceof ConnectError && (err.code === Code.Unimplemented || err.code === Code.FailedPrecondition)) {
      // A node without storage holds no volume of this manifest to delete.
      if (manifest.volumes.length === 0) return [];
      throw new ConnectError(
        `the manifest declares volumes, but aetherd at ${aether.address} cannot manage them: ${err.rawMessage}`,
        Code.FailedPrecondition,
      );
    }
    throw err;
  }
  const byName = new Map(live.map((v) => [v.name, v]));
  const actions: PlannedAction[] = [];
  for (const decl of manifest.volumes) {
    const current = byName.get(decl.name);
    if (!current) {
      actions.push({
        kind: "create",
        resource: "volume",
        name: decl.name,
        reason: decl.image === undefined ? "does not exist on the node" : `does not exist on the node; clone image ${decl.image}`,
      });
      continue;
    }
    const base = { resource: "volume" as const, name: decl.name, liveId: current.id };
    if (current.labels[MANIFEST_LABEL] !== manifest.name) {
      actions.push({
        kind: "conflict",
        resource: "volume",
        name: decl.name,
        reason: `a volume named ${decl.name} already exists in tenant ${manifest.tenant} and is not managed by manifest ${manifest.name}; give the manifest's volume another name, or delete that volume`,
      });
      continue;
    }
    if (current.state === VolumeState.FAILED) {
      actions.push({
        ...base,
        kind: "conflict",
        reason: `volume ${decl.name} is FAILED on the node (${current.stateReason}); repair or delete it`,
      });
      continue;
    }
    // Pool, format, source and labels are fixed when a volume is created: changing them would mean
    // recreating it, and its data with it, which apply never does on its own.
    const fixed: string[] = [];
    if (decl.pool !== "" && current.pool !== decl.pool) fixed.push(`pool (${current.pool} on the node, ${decl.pool} declared)`);
    if (decl.format !== undefined && current.format !== volumeFormat(decl))
      fixed.push(`format (${VolumeFormat[current.format]?.toLowerCase()} on the node, ${decl.format} declared)`);
    if (
      decl.image === undefined
        ? current.backing?.parent.case !== undefined
        : !(await clonesImage(aether, manifest.tenant, current, decl.image))
    ) {
      fixed.push(
        decl.image === undefined
          ? "source (a clone on the node, empty declared)"
          : `source (not a clone of image ${decl.image} on the node)`,
      );
    }
    if (!sameRecord(current.labels, { ...decl.labels, [MANIFEST_LABEL]: manifest.name })) fixed.push("labels");
    if (fixed.length > 0) {
      actions.push({
        ...base,
        kind: "conflict",
        reason: `volume ${decl.name}: ${fixed.join(", ")} cannot change on an existing volume without recreating it and losing its data; declare what it has, or delete the volume for apply to create it anew`,
      });
      continue;
    }
    const have = Number(current.sizeBytes);
    const want = decl.sizeBytes;
    if (want === undefined || (have >= want && have <= Math.ceil(want / POOL_ROUNDING_BYTES) * POOL_ROUNDING_BYTES)) {
      actions.push({ ...base, kind: "unchanged", reason: "exists as declared" });
    } else if (have < want) {
      actions.push({ ...base, kind: "update", reason: `size grows from ${formatSize(have)} to ${formatSize(want)}`, sizeBytes: want });
    } else {
      actions.push({
        ...base,
        kind: "conflict",
        reason: `volume ${decl.name} is ${formatSize(have)} (${have} bytes) on the node, larger than the declared ${formatSize(want)}; volumes never shrink, since that would cut off the guest's data: declare at least ${have} bytes`,
      });
    }
  }
  const declared = new Set(manifest.volumes.map((v) => v.name));
  for (const v of live) {
    if (v.labels[MANIFEST_LABEL] === manifest.name && !declared.has(v.name)) {
      const users = v.usedBy.length === 0 ? "" : `; VM ${v.usedBy.join(", ")} uses it, so aetherd refuses until it is detached`;
      actions.push({ kind: "delete", resource: "volume", name: v.name, reason: `no longer in the manifest${users}`, liveId: v.id });
    }
  }
  return actions;
}
