// Cluster manifests (target "cluster"): the client talks to aether-aggregator, and each executable
// and VM of the manifest is a workload the aggregator places by auction. plan compares the declared
// executables and VMs with the live placements labelled with the manifest; apply deploys, releases
// and re-deploys them. What runs on the nodes is the nodes' business: the placement is the live state.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "../connect.js";
import { PlacementState, type WorkloadPlacement } from "../gen/aether/auction/v1/auction_pb.js";
import { create, equals, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { BootSourceSchema, CloudInitSchema, CreateVmRequestSchema, DiskSchema, NicSchema } from "../gen/aether/vm/v1/vm_pb.js";
import { formatSize } from "./size.js";
import { MANIFEST_LABEL, type Manifest, type ManifestExecutable } from "./define.js";
import { createVmRequest, type ManifestVm } from "./vm-decl.js";
import { planDeployments } from "./deployment-plan.js";
import { allPages, planOf, sameRecord } from "./common.js";
import type { PlacedWorkload, Plan, PlannedAction } from "./types.js";

/** Placements that hold their name in the tenant: deploying another of that name fails until they are released. */
const LIVE = new Set([PlacementState.BIDDING, PlacementState.PROVISIONING, PlacementState.PLACED, PlacementState.REPLACING]);
/** Placements the aggregator is still deciding: release refuses them until that finishes. */
const MOVING = new Set([PlacementState.BIDDING, PlacementState.REPLACING]);

const stateName = (state: PlacementState) => PlacementState[state] ?? String(state);

/** The advice when the server behind `aether` is not an aggregator. */
function notAnAggregator(aether: AetherClient, manifest: Manifest, err: ConnectError): ConnectError {
  const what = /served by aether-aggregator/.test(err.rawMessage)
    ? "a node's aetherd, not aether-aggregator"
    : `not aether-aggregator (${err.rawMessage.replace(/\.$/, "")})`;
  return new ConnectError(
    `manifest ${manifest.name} targets the cluster, but ${aether.address} is ${what}: point AETHER_HOST at the aggregator (its socket, e.g. unix:///run/aether/aggregator.sock, or its https address) and run again.`,
    Code.FailedPrecondition,
  );
}

/** Every placement labelled with the manifest, newest first (live ones and the history). */
async function listManaged(aether: AetherClient, manifest: Manifest): Promise<WorkloadPlacement[]> {
  try {
    return await allPages(async (pageToken) => {
      const page = await aether.aggregator.listPlacements({
        tenant: manifest.tenant,
        filter: `${MANIFEST_LABEL}=${manifest.name}`,
        pageSize: 1000,
        pageToken,
      });
      return { items: page.placements, nextPageToken: page.nextPageToken };
    });
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Unimplemented) throw notAnAggregator(aether, manifest, err);
    throw err;
  }
}

/** The live placement of another owner that holds `name` in the tenant, if any. */
async function foreignHolder(aether: AetherClient, manifest: Manifest, name: string): Promise<WorkloadPlacement | undefined> {
  try {
    const { placement } = await aether.aggregator.getPlacement({ workload: name, tenant: manifest.tenant });
    return placement && LIVE.has(placement.state) && placement.labels[MANIFEST_LABEL] !== manifest.name ? placement : undefined;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
    throw err;
  }
}

/** A workload a cluster manifest declares: one of its executables or VMs. */
export type DeclaredWorkload = { executable: ManifestExecutable; vm?: undefined } | { vm: ManifestVm; executable?: undefined };

/** The labels a placement of `decl` carries. */
const labelsOf = (manifest: Manifest, decl: { labels: Record<string, string> }) => ({ ...decl.labels, [MANIFEST_LABEL]: manifest.name });

/** What differs between a declared VM and the CreateVmRequest its live placement was deployed with. */
function vmDifferences(manifest: Manifest, decl: ManifestVm, placement: WorkloadPlacement): string[] {
  const kind = placement.spec?.kind;
  if (kind?.case !== "vm") return [`kind (the placement is ${kind?.case ?? "empty"}, not a VM)`];
  const have = kind.value;
  const want = create(CreateVmRequestSchema, createVmRequest(decl, manifest.tenant, {}));
  const out: string[] = [];
  const sameList = <T extends DescMessage>(schema: T, a: MessageShape<T>[], b: MessageShape<T>[]) =>
    a.length === b.length && a.every((x, i) => equals(schema, x, b[i] as MessageShape<T>));
  const sameOne = <T extends DescMessage>(schema: T, a: MessageShape<T> | undefined, b: MessageShape<T> | undefined) =>
    a === undefined || b === undefined ? a === b : equals(schema, a, b);
  if (!sameOne(BootSourceSchema, have.boot, want.boot)) out.push("boot (image, bootVolume or kernel)");
  if (have.vcpus !== want.vcpus) out.push(`cpus (${have.vcpus} placed, ${want.vcpus} declared)`);
  if (have.memoryBytes !== want.memoryBytes)
    out.push(`memory (${formatSize(Number(have.memoryBytes))} placed, ${formatSize(Number(want.memoryBytes))} declared)`);
  if (!sameList(DiskSchema, have.disks, want.disks)) out.push("disks");
  if (!sameList(NicSchema, have.nics, want.nics)) out.push("nics");
  if (!sameOne(CloudInitSchema, have.cloudInit, want.cloudInit)) out.push("userData/metaData/networkConfig");
  if (have.profile !== want.profile) out.push("profile");
  if (have.hypervisor !== want.hypervisor) out.push("hypervisor");
  if (have.acceleration !== want.acceleration) out.push("acceleration");
  if (have.guestAgent !== want.guestAgent) out.push("guestAgent");
  if (!sameRecord(placement.labels, labelsOf(manifest, decl))) out.push("labels (a placement keeps the labels it was deployed with)");
  if (!sameRecord(placement.spec?.requirements?.nodeSelector ?? {}, decl.requirements?.nodeSelector ?? {})) out.push("requirements");
  return out;
}

/** What differs between a declared executable and the spec its live placement was deployed with. */
function differences(manifest: Manifest, workload: DeclaredWorkload, placement: WorkloadPlacement): string[] {
  if (workload.vm !== undefined) return vmDifferences(manifest, workload.vm, placement);
  const decl = workload.executable;
  const kind = placement.spec?.kind;
  if (kind?.case !== "executable") return [`kind (the placement is ${kind?.case ?? "empty"}, not an executable)`];
  const have = kind.value;
  const out: string[] = [];
  if (have.argv.join("\0") !== decl.argv.join("\0")) out.push("argv");
  if (!sameRecord(have.env, decl.env)) out.push("env");
  if ((have.cwd || "/") !== decl.cwd) out.push("cwd");
  if (!sameRecord(placement.labels, labelsOf(manifest, decl))) out.push("labels");
  // The spec says exactly what was asked for: an id no longer declared is a change too.
  if (have.uid !== decl.uid) out.push("uid");
  if (have.gid !== decl.gid) out.push("gid");
  const req = placement.spec?.requirements;
  const want = decl.requirements;
  if (
    (req?.cpuMillis ?? 0) !== (want?.cpuMillis ?? 0) ||
    Number(req?.memoryBytes ?? 0n) !== (want?.memoryBytes ?? 0) ||
    !sameRecord(req?.nodeSelector ?? {}, want?.nodeSelector ?? {})
  ) {
    out.push("requirements");
  }
  return out;
}

/**
 * The plan for a cluster manifest: each declared executable against the live placement of its name
 * that carries the manifest's label, and a delete for each such placement no longer declared.
 */
export async function planCluster(aether: AetherClient, manifest: Manifest): Promise<Plan> {
  const managed = await listManaged(aether, manifest);
  const live = new Map<string, WorkloadPlacement>();
  const latest = new Map<string, WorkloadPlacement>();
  for (const p of managed) {
    // A deployment's instances are its own (deployment-plan.ts), whatever labels their template gives them.
    if (p.deployment !== "") continue;
    if (LIVE.has(p.state) && !live.has(p.name)) live.set(p.name, p);
    if (!latest.has(p.name)) latest.set(p.name, p);
  }
  const actions: PlannedAction[] = [];
  const workloads: Array<{ name: string; resource: "executable" | "vm"; workload: DeclaredWorkload }> = [
    ...manifest.executables.map((e) => ({ name: e.name, resource: "executable" as const, workload: { executable: e } })),
    ...manifest.vms.map((v) => ({ name: v.name, resource: "vm" as const, workload: { vm: v } })),
  ];
  for (const decl of workloads) {
    const current = live.get(decl.name);
    if (!current) {
      const foreign = await foreignHolder(aether, manifest, decl.name);
      if (foreign) {
        const owner = foreign.labels[MANIFEST_LABEL];
        actions.push({
          kind: "conflict",
          resource: decl.resource,
          name: decl.name,
          reason: `a workload named ${decl.name} is already placed in tenant ${manifest.tenant} (workload ${foreign.workloadId} on node ${foreign.node || "-"}) and is ${owner === undefined ? "not managed by a manifest" : `managed by manifest ${owner}`}, not ${manifest.name}; release or rename it`,
        });
        continue;
      }
      const last = latest.get(decl.name);
      const history = last
        ? `; its last placement is ${stateName(last.state)}${last.stateReason ? ` (${last.stateReason.replace(/\.$/, "")})` : ""}`
        : "";
      actions.push({ kind: "create", resource: decl.resource, name: decl.name, reason: `not placed in the cluster${history}` });
      continue;
    }
    const base = { resource: decl.resource, name: decl.name, liveId: current.workloadId, node: current.node || undefined };
    const changed = differences(manifest, decl.workload, current);
    if (MOVING.has(current.state)) {
      const doing = `the aggregator is placing it right now (${stateName(current.state)}${current.stateReason ? `: ${current.stateReason.replace(/\.$/, "")}` : ""})`;
      if (changed.length > 0)
        actions.push({ ...base, kind: "conflict", reason: `${changed.join(", ")} changed, but ${doing}; apply again once it is PLACED` });
      else actions.push({ ...base, kind: "unchanged", reason: `as declared; ${doing}` });
    } else if (changed.length > 0) {
      actions.push({ ...base, kind: "replace", reason: `${changed.join(", ")} changed` });
    } else {
      actions.push({
        ...base,
        kind: "unchanged",
        reason: `${current.state === PlacementState.PLACED ? "placed" : "being provisioned"} on node ${current.node} as declared`,
      });
    }
  }
  const declared = new Set(workloads.map((w) => w.name));
  for (const [name, current] of live) {
    if (!declared.has(name)) {
      actions.push({
        kind: "delete",
        resource: current.spec?.kind.case === "vm" ? "vm" : "executable",
        name,
        reason: "no longer in the manifest",
        liveId: current.workloadId,
        node: current.node || undefined,
      });
    }
  }
  actions.push(...(await planDeployments(aether, manifest)));
  return planOf(manifest, actions);
}

/**
 * Carries out one step of a cluster plan: release the live placement (replace, delete), then deploy
 * the declared executable (create, replace). Returns the step with where it was placed.
 */
export async function applyClusterAction(
  aether: AetherClient,
  manifest: Manifest,
  action: PlannedAction,
  workload: { executable?: ManifestExecutable; vm?: ManifestVm },
  graceSeconds: number,
): Promise<PlannedAction> {
  if (action.kind === "replace" || action.kind === "delete") {
    // The workload name is unique among live placements: the old one goes before the new one comes.
    await aether.aggregator.releasePlacement({
      workload: action.liveId ?? "",
      tenant: manifest.tenant,
      gracePeriod: { seconds: BigInt(graceSeconds) },
    });
  }
  if (action.kind !== "create" && action.kind !== "replace") return action;
  const { executable: decl, vm } = workload;
  let spec;
  if (vm !== undefined) {
    const labels = labelsOf(manifest, vm);
    spec = {
      name: vm.name,
      tenant: manifest.tenant,
      labels,
      requirements: vm.requirements && { nodeSelector: vm.requirements.nodeSelector },
      kind: { case: "vm" as const, value: createVmRequest(vm, manifest.tenant, labels) },
    };
  } else if (decl !== undefined) {
    const requirements = decl.requirements && {
      cpuMillis: decl.requirements.cpuMillis,
      memoryBytes: BigInt(decl.requirements.memoryBytes),
      nodeSelector: decl.requirements.nodeSelector,
    };
    spec = {
      name: decl.name,
      tenant: manifest.tenant,
      labels: labelsOf(manifest, decl),
      requirements,
      kind: { case: "executable" as const, value: { argv: decl.argv, env: decl.env, cwd: decl.cwd, uid: decl.uid, gid: decl.gid } },
    };
  } else return action;
  const { placement, auction } = await aether.aggregator.deploy({ spec });
  const placed: PlacedWorkload = {
    workloadId: placement?.workloadId ?? "",
    node: placement?.node ?? "",
    resourceId: placement?.resourceId ?? "",
    auctionId: auction?.id ?? placement?.auctionId ?? "",
  };
  return { ...action, placed };
}
