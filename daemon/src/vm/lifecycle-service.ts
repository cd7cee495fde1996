// The VM lifecycle RPCs of aether.vm.v1.VmService beyond create/start/stop (reboot, reset, settings,
// devices, snapshots, clones, guest files): each validates its request and hands checked values to
// the rooms beside the manager (lifecycle.ts, devices.ts, snapshots.ts, clone.ts, guest-files.ts).
import { isAbsolute } from "node:path";
import type { ServiceImpl } from "@connectrpc/connect";
import type { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import {
  clip,
  dnsLabel,
  durationMs,
  failedPrecondition,
  invalidArgument,
  labels as parseLabels,
  reference,
  requireClusterWide,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import type { TenancyConfig } from "../config.js";
import type { StorageRegistry } from "../storage/registry.js";
import { VmCloner } from "./clone.js";
import { VmDevices } from "./devices.js";
import { MAX_CHUNK_BYTES, readGuestFile, writeGuestFile } from "./guest-files.js";
import { VmLifecycle } from "./lifecycle.js";
import type { VmManager } from "./manager.js";
import type { VmRecord } from "./record.js";
import { toMessage } from "./message.js";
import { VmSnapshots, type VmSnapshotView } from "./snapshots.js";
import { checkTenantBridge } from "./tenancy.js";

export type LifecycleRpcs = Pick<
  ServiceImpl<typeof VmService>,
  | "rebootVm"
  | "resetVm"
  | "updateVm"
  | "attachVmDisk"
  | "detachVmDisk"
  | "attachVmNic"
  | "detachVmNic"
  | "createVmSnapshot"
  | "listVmSnapshots"
  | "deleteVmSnapshot"
  | "rollbackVmSnapshot"
  | "cloneVm"
  | "readVmFile"
  | "writeVmFile"
>;

const DEFAULT_STOP_TIMEOUT_MS = 30_000;
const DEFAULT_CHUNK_BYTES = 1024 * 1024;

function snapshotMessage(s: VmSnapshotView) {
  return {
    name: s.name,
    vm: s.vmId,
    createTime: timestamp(s.createTimeMs),
    consistency: s.consistency,
    disks: s.parts.map((p) => ({ volume: p.volumeId, volumeName: p.volumeName, snapshot: p.snapshotId })),
    problem: s.problem,
  };
}

function guestPath(path: string): string {
  if (path === "" || path.includes("\0") || !path.startsWith("/"))
    throw invalidArgument(`path ${JSON.stringify(clip(path))} is not an absolute path in the guest, e.g. /etc/hostname.`);
  return path;
}

export function vmLifecycleRpcs(manager: VmManager, storage: StorageRegistry, tenancy: TenancyConfig): LifecycleRpcs {
  const hooks = manager.lifecycleHooks();
  const lifecycle = new VmLifecycle(manager, hooks);
  const devices = new VmDevices(manager, storage, hooks);
  const snapshots = new VmSnapshots(storage, hooks);
  const cloner = new VmCloner(storage, hooks);
  const resolve = (ref: string, tenantField: string): VmRecord => manager.resolve(reference("vm", ref), parseTenant(tenantField));
  const message = (vm: VmRecord) => toMessage(manager, vm);
  const snapshotName = (name: string) => dnsLabel("name", name);
  const agentFor = (vm: VmRecord, what: string) => {
    if (!vm.spec.guestAgent)
      throw failedPrecondition(`VM ${vm.spec.name} has no guest agent (it was created without one); ${what} needs it.`);
    const agent = hooks.agent(vm);
    if (!agent)
      throw failedPrecondition(
        `VM ${vm.spec.name} is ${vm.runtime.state}${vm.runtime.state === "running" ? " but its guest agent does not answer" : ""}; ${what} needs a running VM whose guest agent answers.`,
      );
    return agent;
  };

  return {
    async rebootVm(req) {
      const timeoutMs = durationMs("timeout", req.timeout, DEFAULT_STOP_TIMEOUT_MS);
      return { vm: message(await lifecycle.reboot(resolve(req.vm, req.tenant), timeoutMs)) };
    },
    async resetVm(req) {
      return { vm: message(await lifecycle.reset(resolve(req.vm, req.tenant))) };
    },
    async updateVm(req) {
      const vm = resolve(req.vm, req.tenant);
      if (req.memoryBytes === undefined && req.vcpus === undefined && req.autostart === undefined && !req.replaceLabels)
        throw invalidArgument("nothing to change: set memory_bytes, vcpus, autostart or labels (with replace_labels).");
      if (!req.replaceLabels && Object.keys(req.labels).length > 0)
        throw invalidArgument("labels are given but replace_labels is false; set replace_labels to replace the VM's labels with them.");
      if (req.memoryBytes !== undefined && req.memoryBytes > BigInt(Number.MAX_SAFE_INTEGER))
        throw invalidArgument("memory_bytes is too large.");
      const updated = await lifecycle.update(vm, {
        memoryBytes: req.memoryBytes === undefined ? undefined : Number(req.memoryBytes),
        vcpus: req.vcpus,
        autostart: req.autostart,
        labels: req.replaceLabels ? parseLabels(req.labels) : undefined,
      });
      return { vm: message(updated) };
    },
    async attachVmDisk(req, ctx) {
      const vm = resolve(req.vm, req.tenant);
      const d = req.disk;
      if (!d) throw invalidArgument("disk is required: give disk.volume (a volume's id or name) or disk.host_path.");
      const serial = d.serial.replace(/[^A-Za-z0-9-]/g, "").slice(0, 20);
      if (d.source.case === "volume") {
        const r = await devices.attachDisk(vm, { kind: "volume", ref: reference("disk.volume", d.source.value) }, d.readOnly, serial);
        return { vm: message(r.vm), live: r.live };
      }
      if (d.source.case === "hostPath") {
        requireClusterWide(ctx.values.get(scopeKey), "attach host paths as disks (use volumes)");
        const path = d.source.value;
        if (path.includes("\0") || !isAbsolute(path))
          throw invalidArgument(`disk.host_path ${JSON.stringify(clip(path))} is not an absolute path.`);
        const r = await devices.attachDisk(vm, { kind: "hostPath", path }, d.readOnly, serial);
        return { vm: message(r.vm), live: r.live };
      }
      throw invalidArgument("disk has no source: give disk.volume (a volume's id or name) or disk.host_path.");
    },
    async detachVmDisk(req) {
      const vm = resolve(req.vm, req.tenant);
      if (req.disk === "") throw invalidArgument("disk is required: its volume (id or name), host path or serial.");
      const r = await devices.detachDisk(vm, req.disk);
      return { vm: message(r.vm), live: r.live };
    },
    async attachVmNic(req, ctx) {
      const vm = resolve(req.vm, req.tenant);
      const n = req.nic;
      if (!n || n.bridge === "") throw invalidArgument("nic.bridge is required: the host bridge the NIC's TAP device joins.");
      if (!/^[A-Za-z0-9_.-]{1,15}$/.test(n.bridge))
        throw invalidArgument(`nic.bridge ${JSON.stringify(clip(n.bridge))} is not a network device name.`);
      if (n.mac !== "" && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(n.mac))
        throw invalidArgument(`nic.mac ${JSON.stringify(clip(n.mac))} is not a MAC address like 52:54:00:12:34:56.`);
      if (n.tapDevice !== "") throw invalidArgument("nic.tap_device is chosen by aetherd for an attached NIC; leave it empty.");
      const scope = ctx.values.get(scopeKey);
      if (scope.tenant !== undefined) checkTenantBridge("nic.bridge", n.bridge, tenancy, scope.tenant);
      const r = await devices.attachNic(vm, n.bridge, n.mac.toLowerCase());
      return { vm: message(r.vm), live: r.live };
    },
    async detachVmNic(req) {
      const vm = resolve(req.vm, req.tenant);
      if (req.nic === "") throw invalidArgument("nic is required: its MAC address or TAP device.");
      const r = await devices.detachNic(vm, req.nic);
      return { vm: message(r.vm), live: r.live };
    },
    async createVmSnapshot(req) {
      const vm = resolve(req.vm, req.tenant);
      return { snapshot: snapshotMessage(await snapshots.create(vm, snapshotName(req.name))) };
    },
    async listVmSnapshots(req) {
      return { snapshots: snapshots.list(resolve(req.vm, req.tenant)).map(snapshotMessage) };
    },
    async deleteVmSnapshot(req) {
      const vm = resolve(req.vm, req.tenant);
      await snapshots.delete(vm, snapshotName(req.name));
      return {};
    },
    async rollbackVmSnapshot(req) {
      const vm = resolve(req.vm, req.tenant);
      return { vm: message(await snapshots.rollback(vm, snapshotName(req.name), req.destroyNewer)) };
    },
    async cloneVm(req) {
      const vm = resolve(req.vm, req.tenant);
      const name = dnsLabel("name", req.name);
      const labels = Object.keys(req.labels).length > 0 ? parseLabels(req.labels) : undefined;
      return { vm: message(await cloner.clone(vm, name, labels, req.start)) };
    },
    async readVmFile(req) {
      const vm = resolve(req.vm, req.tenant);
      const path = guestPath(req.path);
      if (req.maxBytes > MAX_CHUNK_BYTES)
        throw invalidArgument(`max_bytes ${req.maxBytes} is more than ${MAX_CHUNK_BYTES} (2 MiB); read in pieces.`);
      if (req.offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("offset is too large.");
      const agent = agentFor(vm, "reading guest files");
      return readGuestFile(agent, vm.spec.name, path, Number(req.offset), req.maxBytes || DEFAULT_CHUNK_BYTES);
    },
    async writeVmFile(req) {
      const vm = resolve(req.vm, req.tenant);
      const path = guestPath(req.path);
      if (req.data.length > MAX_CHUNK_BYTES)
        throw invalidArgument(
          `data is ${req.data.length} bytes, more than ${MAX_CHUNK_BYTES} (2 MiB) per call; append the rest with further calls.`,
        );
      const agent = agentFor(vm, "writing guest files");
      return { written: BigInt(await writeGuestFile(agent, vm.spec.name, path, req.data, req.append)) };
    },
  };
}
