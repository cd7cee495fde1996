// VMs of a node manifest: plan compares each declared VM with the node's VM of that name (its
// volumes and image resolved to the ids aetherd reports), apply creates, starts, relabels, replaces
// and deletes them.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AetherClient } from "../connect.js";
import { Acceleration, Hypervisor, VmProfile, VmState, type Vm } from "../gen/aether/vm/v1/vm_pb.js";
import type { Volume } from "../gen/aether/storage/v1/storage_pb.js";
import { MANIFEST_LABEL, type Manifest } from "./define.js";
import { allPages, sameRecord } from "./common.js";
import { formatSize } from "./size.js";
import { createVmRequest, type ManifestVm } from "./vm-decl.js";
import type { PlannedAction } from "./types.js";

/** States in which a VM is up, or on its way up or down by someone's wish: apply leaves it be. */
const UP = new Set([VmState.STARTING, VmState.RUNNING, VmState.PAUSED, VmState.STOPPING]);

/** The coarsest unit aetherd's pools round a volume's size up to (as plan.ts). */
const POOL_ROUNDING_BYTES = 4 * 2 ** 20;

const stateName = (s: VmState) => (VmState[s] ?? String(s)).toLowerCase();

/** The labels a declared VM carries on the node. */
export const vmLabels = (manifest: Manifest, vm: ManifestVm) => ({ ...vm.labels, [MANIFEST_LABEL]: manifest.name });

async function listVms(aether: AetherClient, tenant: string): Promise<Vm[]> {
  return allPages(async (pageToken) => {
    const page = await aether.vm.listVms({ tenant, pageSize: 1000, pageToken });
    return { items: page.vms, nextPageToken: page.nextPageToken };
  });
}

/** How the names a manifest uses map to the ids aetherd reports. */
interface Resolver {
  volume(ref: string): string;
  image(ref: string): Promise<string>;
  volumeSize(id: string): number | undefined;
}

async function resolver(aether: AetherClient, tenant: string): Promise<Resolver> {
  let volumes: Volume[] = [];
  try {
    volumes = await allPages(async (pageToken) => {
      const page = await aether.storage.listVolumes({ tenant, pageSize: 1000, pageToken });
      return { items: page.volumes, nextPageToken: page.nextPageToken };
    });
  } catch (err) {
    // A node without storage: the VMs name no volume it has, and the comparison says they differ.
    if (!(err instanceof ConnectError && (err.code === Code.Unimplemented || err.code === Code.FailedPrecondition))) throw err;
  }
  const byName = new Map(volumes.map((v) => [v.name, v.id]));
  const sizes = new Map(volumes.map((v) => [v.id, Number(v.sizeBytes)]));
  const images = new Map<string, string>();
  return {
    volume: (ref) => byName.get(ref) ?? ref,
    volumeSize: (id) => sizes.get(id),
    image: async (ref) => {
      if (!images.has(ref)) {
        try {
          images.set(ref, (await aether.storage.getImage({ image: ref, tenant })).image?.id ?? ref);
        } catch (err) {
          if (!(err instanceof ConnectError && err.code === Code.NotFound)) throw err;
          images.set(ref, ref);
        }
      }
      return images.get(ref) as string;
    },
  };
}

/** What differs between a declared VM and the live one, in the manifest's words. */
async function differences(decl: ManifestVm, live: Vm, names: Resolver): Promise<string[]> {
  const out: string[] = [];
  const boot = live.boot?.source;
  const b = decl.boot;
  if (b.kind === "kernel") {
    if (boot?.case !== "kernel") out.push("boot (kernel declared, a disk on the node)");
    else {
      if (boot.value.kernelPath !== b.kernel) out.push("kernel");
      if (boot.value.initrdPath !== b.initrd) out.push("initrd");
      if (boot.value.cmdline !== b.cmdline) out.push("cmdline");
    }
  } else if (boot?.case !== "disk") {
    out.push(`boot (${b.kind === "image" ? "image" : "bootVolume"} declared, a kernel on the node)`);
  } else if (b.kind === "image") {
    if (boot.value.image === "" || boot.value.image !== (await names.image(b.image))) out.push("image");
    else if (b.sizeBytes > 0) {
      const have = names.volumeSize(boot.value.volume);
      if (have !== undefined && (have < b.sizeBytes || have > Math.ceil(b.sizeBytes / POOL_ROUNDING_BYTES) * POOL_ROUNDING_BYTES))
        out.push(`bootSize (${formatSize(have)} on the node, ${formatSize(b.sizeBytes)} declared)`);
    }
  } else if (boot.value.image !== "" || boot.value.volume !== names.volume(b.volume)) out.push("bootVolume");
  if (live.vcpus !== decl.cpus) out.push(`cpus (${live.vcpus} on the node, ${decl.cpus} declared)`);
  if (Number(live.memoryBytes) !== decl.memoryBytes)
    out.push(`memory (${formatSize(Number(live.memoryBytes))} on the node, ${formatSize(decl.memoryBytes)} declared)`);
  const liveDisks = live.disks.map((d) => JSON.stringify([d.source.case, d.source.value, d.readOnly, d.serial]));
  const wantDisks = decl.disks.map((d) =>
    JSON.stringify(
      d.volume !== undefined ? ["volume", names.volume(d.volume), d.readOnly, d.serial] : ["hostPath", d.hostPath, d.readOnly, d.serial],
    ),
  );
  if (liveDisks.join() !== wantDisks.join()) out.push("disks");
  if (
    live.nics.length !== decl.nics.length ||
    decl.nics.some((n, i) => live.nics[i]?.bridge !== n.bridge || (n.mac !== "" && live.nics[i]?.mac.toLowerCase() !== n.mac))
  )
    out.push("nics");
  const ci = live.cloudInit;
  if ((ci?.userData ?? "") !== decl.userData) out.push("userData");
  if ((ci?.metaData ?? "") !== decl.metaData) out.push("metaData");
  if ((ci?.networkConfig ?? "") !== decl.networkConfig) out.push("networkConfig");
  if ((live.profile === VmProfile.PERSISTENT ? "persistent" : "ephemeral") !== decl.profile) out.push("profile");
  if (decl.hypervisor !== undefined && live.hypervisor !== (decl.hypervisor === "qemu" ? Hypervisor.QEMU : Hypervisor.FIRECRACKER))
    out.push("hypervisor");
  const accel = { auto: Acceleration.AUTO, kvm: Acceleration.KVM, tcg: Acceleration.TCG }[decl.acceleration];
  if (live.acceleration !== accel) out.push("acceleration");
  if (live.guestAgent !== decl.guestAgent) out.push("guestAgent");
  if (live.cell !== decl.cell) out.push("cell");
  return out;
}

/** The plan's steps for the VMs of a node manifest. */
export async function planVms(
  aether: AetherClient,
  manifest: Manifest,
  replacedCells: ReadonlySet<string> = new Set(),
): Promise<PlannedAction[]> {
  let live: Vm[];
  try {
    live = await listVms(aether, manifest.tenant);
  } catch (err) {
    if (err instanceof ConnectError && (err.code === Code.Unimplemented || err.code === Code.FailedPrecondition)) {
      // A node that runs no VMs holds none of this manifest to delete.
      if (manifest.vms.length === 0) return [];
      throw new ConnectError(
        `the manifest declares VMs, but aetherd at ${aether.address} cannot run them: ${err.rawMessage}`,
        Code.FailedPrecondition,
      );
    }
    throw err;
  }
  const byName = new Map(live.map((v) => [v.name, v]));
  const names = manifest.vms.length > 0 ? await resolver(aether, manifest.tenant) : undefined;
  const actions: PlannedAction[] = [];
  for (const decl of manifest.vms) {
    const current = byName.get(decl.name);
    if (!current) {
      const boot =
        decl.boot.kind === "image"
          ? `a clone of image ${decl.boot.image}`
          : decl.boot.kind === "volume"
            ? `volume ${decl.boot.volume}`
            : "a kernel";
      actions.push({
        kind: "create",
        resource: "vm",
        name: decl.name,
        reason: `does not exist on the node; create it booting ${boot} and start it`,
      });
      continue;
    }
    if (current.labels[MANIFEST_LABEL] !== manifest.name) {
      actions.push({
        kind: "conflict",
        resource: "vm",
        name: decl.name,
        reason: `a VM named ${decl.name} already exists in tenant ${manifest.tenant} and is not managed by manifest ${manifest.name}; delete or rename it`,
      });
      continue;
    }
    const running = UP.has(current.state);
    const base = { resource: "vm" as const, name: decl.name, liveId: current.id, liveRunning: running };
    const changed = await differences(decl, current, names as Resolver);
    const cellReplaced = changed.length === 0 && decl.cell !== "" && replacedCells.has(decl.cell);
    if (changed.length > 0 || cellReplaced) {
      const clone = current.boot?.source.case === "disk" && current.boot.source.value.image !== "" ? " and its boot clone" : "";
      const why = cellReplaced ? `its cell ${decl.cell} is replaced` : `${changed.join(", ")} changed`;
      actions.push({ ...base, kind: "replace", reason: `${why}: the VM${clone} is deleted and created anew` });
      continue;
    }
    const updates: string[] = [];
    if (!sameRecord(current.labels, vmLabels(manifest, decl))) updates.push("labels changed");
    if (!running)
      updates.push(
        `it is ${stateName(current.state)}${current.stateReason ? ` (${current.stateReason.replace(/\.$/, "")})` : ""}; start it`,
      );
    if (updates.length > 0) actions.push({ ...base, kind: "update", reason: updates.join("; ") });
    else actions.push({ ...base, kind: "unchanged", reason: `${stateName(current.state)} as declared` });
  }
  const declared = new Set(manifest.vms.map((v) => v.name));
  for (const v of live) {
    if (v.labels[MANIFEST_LABEL] === manifest.name && !declared.has(v.name)) {
      actions.push({
        kind: "delete",
        resource: "vm",
        name: v.name,
        reason: "no longer in the manifest",
        liveId: v.id,
        liveRunning: UP.has(v.state),
      });
    }
  }
  return actions;
}

/** Carries out one VM step of a node plan. */
export async function applyVm(
  aether: AetherClient,
  manifest: Manifest,
  action: PlannedAction,
  decl: ManifestVm | undefined,
  graceSeconds: number,
): Promise<void> {
  const tenant = manifest.tenant;
  const vm = action.liveId ?? "";
  if (action.kind === "replace" || action.kind === "delete") {
    // Deleting a running VM needs force; a graceful stop first gives the guest its shutdown.
    const { vm: current } = await aether.vm.getVm({ vm, tenant });
    if (current && (current.state === VmState.RUNNING || current.state === VmState.PAUSED || current.state === VmState.STARTING))
      await aether.vm.stopVm({ vm, tenant, timeout: { seconds: BigInt(graceSeconds) } }).catch((err: unknown) => {
        // It may have stopped on its own meanwhile; delete with force says the rest.
        if (!(err instanceof ConnectError && err.code === Code.FailedPrecondition)) throw err;
      });
    await aether.vm.deleteVm({ vm, tenant, force: true });
  }
  if ((action.kind === "create" || action.kind === "replace") && decl) {
    await aether.vm.createVm(createVmRequest(decl, tenant, vmLabels(manifest, decl)));
    return;
  }
  if (action.kind === "update" && decl) {
    const { vm: current } = await aether.vm.getVm({ vm, tenant });
    if (current && !sameRecord(current.labels, vmLabels(manifest, decl)))
      await aether.vm.updateVm({ vm, tenant, labels: vmLabels(manifest, decl), replaceLabels: true });
    if (current && !UP.has(current.state)) await aether.vm.startVm({ vm, tenant });
  }
}
