// aether.vm.v1.VmService: validates requests into VM specs and translates records to messages.
import { availableParallelism, totalmem } from "node:os";
import { isAbsolute } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  Acceleration,
  Hypervisor as HypervisorEnum,
  VmProfile,
  VmSchema,
  VmService,
  VmState,
  type CreateVmRequest,
  type Vm,
} from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { formatSize } from "@aether/sdk/size";
import {
  type CallerScope,
  clip,
  deadlineExceeded,
  dnsLabel,
  duration,
  durationMs,
  failedPrecondition,
  invalidArgument,
  labelFilter,
  labels,
  matchesFilter,
  paginate,
  reference,
  requireClusterWide,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import type { TenancyConfig } from "../config.js";
import { tailFile } from "../observe/log-tail.js";
import { fileSize, signalName } from "../runtime/supervisor.js";
import { attachConsole } from "./console.js";
import type { VmManager } from "./manager.js";
import type { LifecycleRpcs } from "./lifecycle-service.js";
import { toMessage, VM_STATES } from "./message.js";
import { GuestExecTimeout } from "./qga.js";
import { stableMac } from "./network.js";
import type { VmRecord, VmSpec } from "./record.js";
import { checkTenantBridge, tenantKernelPath } from "./tenancy.js";

const MIN_MEMORY_BYTES = 64 * 1024 * 1024;
const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
const DEFAULT_WATCHDOG_MS = 120_000;
const DEFAULT_STOP_TIMEOUT_MS = 30_000;

/** [tenancy] rules with none of them granted: a tenant boots images and volumes and joins no bridge. */
const NO_TENANCY: TenancyConfig = {
  id_base: 1_000_000_000,
  ids_per_tenant: 65_536,
  kernel_roots: [],
  networks: {},
  image_url_prefixes: [],
  allow_private_urls: false,
};

/** MigrateVm and WatchMigration, served by the migration room (daemon/src/migration). */
export type MigrationRpcs = Pick<ServiceImpl<typeof VmService>, "migrateVm" | "watchMigration">;

const NO_MIGRATION: MigrationRpcs = {
  migrateVm: () => Promise.reject(failedPrecondition("live migration is not set up on this aetherd.")),
  watchMigration: () => Promise.reject(failedPrecondition("live migration is not set up on this aetherd.")) as never,
};

export function vmService(
  manager: VmManager,
  tenancy: TenancyConfig = NO_TENANCY,
  migration: MigrationRpcs = NO_MIGRATION,
): Omit<ServiceImpl<typeof VmService>, keyof LifecycleRpcs> {
  const resolve = (ref: string, tenantField: string) => manager.resolve(reference("vm", ref), parseTenant(tenantField));

  return {
    ...migration,
    async createVm(req, ctx) {
      // A host path is any file or device of the host: tenants attach volumes of their own instead.
      const scope = ctx.values.get(scopeKey);
      if (req.disks.some((d) => d.source.case === "hostPath")) requireClusterWide(scope, "attach host paths as disks (use volumes)");
      const { spec, bootImage } = validateCreate(req, manager, scope, tenancy);
      const record = await manager.create(spec, bootImage, req.start);
      return { vm: toMessage(manager, record) };
    },
    async startVm(req) {
      const vm = resolve(req.vm, req.tenant);
      if (req.requestId !== "" && vm.runtime.state !== "created" && vm.runtime.state !== "stopped" && vm.runtime.state !== "failed") {
        return { vm: toMessage(manager, vm) }; // a retried start of a VM already started
      }
      return { vm: toMessage(manager, await manager.start(vm)) };
    },
    async stopVm(req) {
      const timeoutMs = durationMs("timeout", req.timeout, DEFAULT_STOP_TIMEOUT_MS);
      return { vm: toMessage(manager, await manager.stop(resolve(req.vm, req.tenant), timeoutMs, req.force)) };
    },
    async pauseVm(req) {
      return { vm: toMessage(manager, await manager.pause(resolve(req.vm, req.tenant))) };
    },
    async resumeVm(req) {
      return { vm: toMessage(manager, await manager.resume(resolve(req.vm, req.tenant))) };
    },
    async deleteVm(req) {
      await manager.delete(resolve(req.vm, req.tenant), req.force);
      return {};
    },
    async getVm(req) {
      return { vm: toMessage(manager, resolve(req.vm, req.tenant)) };
    },
    async listVms(req) {
      const owner = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const matching = manager
        .list()
        .filter((v) => owner === undefined || v.spec.tenant === owner)
        .filter((v) => matchesFilter(v.spec.labels, terms))
        .filter((v) => req.state === VmState.UNSPECIFIED || VM_STATES[v.runtime.state] === req.state)
        .sort((a, b) => b.spec.createTimeMs - a.spec.createTimeMs);
      const { page, nextPageToken } = paginate(matching, req.pageSize, req.pageToken);
      return { vms: page.map((v) => toMessage(manager, v)), nextPageToken };
    },
    async *streamConsole(req, ctx) {
      const vm = resolve(req.vm, req.tenant);
      const path = manager.filesOf(vm).consoleLog;
      const offset = req.tailBytes === undefined ? 0 : Math.max(0, fileSize(path) - Number(req.tailBytes));
      for await (const chunk of tailFile(path, { offset, follow: req.follow, ended: manager.ended(vm), signal: ctx.signal })) {
        yield { data: chunk.data, offset: BigInt(chunk.offset), time: timestamp(Date.now()) };
      }
    },
    attachConsole(requests, ctx) {
      return attachConsole(manager, requests, ctx.signal, resolve);
    },
    async execVm(req) {
      const vm = resolve(req.vm, req.tenant);
      if (req.argv.length === 0 || !isAbsolute(req.argv[0] ?? "")) {
        throw invalidArgument('argv must start with the absolute path of a program in the guest, e.g. ["/bin/sh", "-c", "uname -a"].');
      }
      const agent = manager.agentOf(vm);
      const timeoutMs = durationMs("timeout", req.timeout, 60_000);
      const started = Date.now();
      try {
        const r = await agent.exec(req.argv, req.env, req.stdin, timeoutMs);
        return {
          exitCode: r.exitCode,
          signal: r.signal === undefined ? "" : signalName(r.signal),
          stdout: r.stdout,
          stderr: r.stderr,
          stdoutTruncated: r.stdoutTruncated,
          stderrTruncated: r.stderrTruncated,
          pid: r.pid,
          duration: duration(Date.now() - started),
        };
      } catch (err) {
        if (err instanceof GuestExecTimeout) throw deadlineExceeded(`${err.message} in VM ${vm.spec.name}.`);
        throw failedPrecondition(`exec in VM ${vm.spec.name} failed: ${(err as Error).message}`);
      }
    },
    async *waitVmReady(req, ctx) {
      const vm = resolve(req.vm, req.tenant);
      const timeoutMs = durationMs("timeout", req.timeout, 0);
      const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
      const ready = () => vm.runtime.state === "running" && (vm.runtime.agentReady || !vm.spec.guestAgent);
      const terminal = () => ready() || ["stopped", "failed", "created"].includes(vm.runtime.state);
      let last = "";
      const report = () => {
        const key = `${vm.runtime.state}/${vm.runtime.agentReady}`;
        if (key === last) return undefined;
        last = key;
        return { vm: toMessage(manager, vm), time: timestamp(Date.now()), ready: ready(), message: describe(vm) };
      };
      const first = report();
      if (first) yield first;
      while (!terminal()) {
        if (Date.now() > deadline)
          throw deadlineExceeded(`VM ${vm.spec.name} was not ready after ${timeoutMs} ms (it is ${vm.runtime.state}).`);
        await new Promise<void>((r) => {
          const onChange = (id: string) => id === vm.spec.id && done();
          const timer = setTimeout(() => done(), 500);
          const done = () => {
            clearTimeout(timer);
            manager.changes.off("change", onChange);
            ctx.signal.removeEventListener("abort", done);
            r();
          };
          manager.changes.on("change", onChange);
          ctx.signal.addEventListener("abort", done, { once: true });
        });
        if (ctx.signal.aborted) return;
        const next = report();
        if (next) yield next;
      }
    },
  };
}

function describe(vm: VmRecord): string {
  const { state, agentReady, reason } = vm.runtime;
  if (state === "running") return agentReady ? "running; the guest agent answers" : "running";
  return reason ? `${state}: ${reason}` : state;
}

interface ValidatedCreate {
  spec: Omit<VmSpec, "id" | "createTimeMs">;
  /** An image to clone into the VM's boot volume once the VM has an id. */
  bootImage?: { imageId: string; sizeBytes: number };
}

function validateCreate(req: CreateVmRequest, manager: VmManager, scope: CallerScope, tenancy: TenancyConfig): ValidatedCreate {
  const name = dnsLabel("name", req.name);
  const tenant = parseTenant(req.tenant);
  const vcpus = req.vcpus;
  if (vcpus === 0) throw invalidArgument("vcpus is 0: a VM needs at least one virtual CPU.");
  if (vcpus > availableParallelism() * 4)
    throw invalidArgument(`vcpus ${vcpus} is more than 4 per host CPU (${availableParallelism()} here).`);
  const memory = req.memoryBytes === 0n ? DEFAULT_MEMORY_BYTES : Number(req.memoryBytes);
  if (memory < MIN_MEMORY_BYTES) throw invalidArgument(`memory_bytes ${memory} is below the guest minimum of 64 MiB.`);
  if (memory > totalmem()) throw failedPrecondition(`memory_bytes ${memory} is more than this host has (${formatSize(totalmem())}).`);
  const profile = req.profile === VmProfile.PERSISTENT ? ("persistent" as const) : ("ephemeral" as const);
  const requested = req.hypervisor === HypervisorEnum.QEMU ? "qemu" : req.hypervisor === HypervisorEnum.FIRECRACKER ? "firecracker" : "";
  const boot = req.boot?.source;
  if (boot?.case !== "kernel" && boot?.case !== "disk") {
    throw invalidArgument(
      "boot is required: give boot.kernel (kernel_path, optional initrd_path and cmdline) or boot.disk (a volume or an image).",
    );
  }
  // Booting through firmware needs QEMU; without a hypervisor named, a disk boot picks it.
  const hypervisor = boot.case === "disk" && requested === "" ? "qemu" : manager.hypervisorFor(profile, requested);
  if (hypervisor === "firecracker" && profile === "persistent")
    throw invalidArgument("Firecracker runs ephemeral microVMs only; use QEMU for a persistent VM.");
  if (hypervisor === "firecracker" && boot.case === "disk")
    throw invalidArgument("Firecracker boots a kernel only; to boot a disk through firmware, use hypervisor QEMU.");
  if (hypervisor === "firecracker" && req.guestAgent) {
    throw invalidArgument(
      "the guest agent needs a virtio-serial port, which Firecracker does not have; create the VM with hypervisor QEMU, or without guest_agent (Exec then is unavailable).",
    );
  }
  const absolute = (field: string, p: string) => {
    if (p.includes("\0") || !isAbsolute(p)) throw invalidArgument(`${field} ${JSON.stringify(clip(p))} is not an absolute path.`);
    return p;
  };
  const volumeDisk = (field: string, ref: string, readOnly: boolean, serial: string) => {
    const volume = manager.attachableVolume(reference(field, ref), tenant);
    if (hypervisor === "firecracker" && volume.format === "qcow2") {
      throw invalidArgument(
        `${field}: volume ${volume.name} is qcow2, and Firecracker opens raw disks only; use hypervisor QEMU or a raw volume.`,
      );
    }
    return {
      path: volume.hostPath,
      readOnly,
      format: volume.format === "qcow2" ? ("qcow2" as const) : ("raw" as const),
      serial,
      volumeId: volume.id,
    };
  };
  let kernel = { kernelPath: "", initrdPath: "", cmdline: "" };
  const disks: VmSpec["disks"] = [];
  let bootImage: ValidatedCreate["bootImage"];
  if (boot.case === "kernel") {
    // A tenant's paths are checked against the published kernels before anything asks whether they exist.
    const hostFile = (field: string, p: string) =>
      scope.tenant === undefined ? absolute(field, p) : tenantKernelPath(field, absolute(field, p), tenancy, scope.tenant);
    kernel = {
      kernelPath: hostFile("boot.kernel.kernel_path", boot.value.kernelPath),
      initrdPath: boot.value.initrdPath === "" ? "" : hostFile("boot.kernel.initrd_path", boot.value.initrdPath),
      cmdline: boot.value.cmdline,
    };
    if (/[\0\n]/.test(kernel.cmdline) || kernel.cmdline.length > 2048)
      throw invalidArgument("boot.kernel.cmdline must be one line of at most 2048 characters.");
  } else {
    const d = boot.value;
    if ((d.volume === "") === (d.image === ""))
      throw invalidArgument(
        "boot.disk needs exactly one of volume (an existing volume) or image (aetherd clones it into a boot volume for this VM).",
      );
    if (d.volume !== "") {
      if (d.sizeBytes !== 0n)
        throw invalidArgument("boot.disk.size_bytes applies to a clone of an image; resize the volume with ResizeVolume instead.");
      disks.push(volumeDisk("boot.disk.volume", d.volume, false, "boot"));
    } else {
      const image = manager.bootableImage(reference("boot.disk.image", d.image), tenant);
      if (d.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("boot.disk.size_bytes is too large.");
      bootImage = { imageId: image.id, sizeBytes: Number(d.sizeBytes) };
    }
  }
  req.disks.forEach((d, i) => {
    const serial = d.serial.replace(/[^A-Za-z0-9-]/g, "").slice(0, 20);
    if (d.source.case === "volume") {
      disks.push(volumeDisk(`disks[${i}].volume`, d.source.value, d.readOnly, serial));
    } else if (d.source.case === "hostPath") {
      const path = absolute(`disks[${i}].host_path`, d.source.value);
      disks.push({ path, readOnly: d.readOnly, format: path.endsWith(".qcow2") ? "qcow2" : "raw", serial, volumeId: "" });
    } else {
      throw invalidArgument(`disks[${i}] has no source: give volume (a volume's id or name) or host_path.`);
    }
  });
  const volumeIds = disks.map((d) => d.volumeId).filter((v) => v !== "");
  if (new Set(volumeIds).size !== volumeIds.length) throw invalidArgument("the same volume is attached twice; attach each volume once.");
  const taps = new Set<string>();
  const nics = req.nics.map((n, i) => {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(n.bridge))
      throw invalidArgument(`nics[${i}].bridge ${JSON.stringify(clip(n.bridge))} is not a network device name.`);
    if (n.mac !== "" && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(n.mac))
      throw invalidArgument(`nics[${i}].mac ${JSON.stringify(clip(n.mac))} is not a MAC address like 52:54:00:12:34:56.`);
    if (n.tapDevice !== "" && !/^[A-Za-z0-9_.-]{1,15}$/.test(n.tapDevice))
      throw invalidArgument(`nics[${i}].tap_device is not a network device name (at most 15 characters).`);
    if (n.tapDevice !== "" && taps.has(n.tapDevice)) throw invalidArgument(`nics[${i}].tap_device ${n.tapDevice} is used twice.`);
    if (scope.tenant !== undefined) {
      checkTenantBridge(`nics[${i}].bridge`, n.bridge, tenancy, scope.tenant);
      // A host network device name is the host's: aetherd names a tenant's TAPs after the VM.
      if (n.tapDevice !== "")
        requireClusterWide(scope, `name a TAP device (nics[${i}].tap_device); leave it empty and aetherd names it after the VM`);
    }
    taps.add(n.tapDevice);
    return { bridge: n.bridge, mac: n.mac.toLowerCase(), tap: n.tapDevice };
  });
  const acceleration = req.acceleration === Acceleration.KVM ? "kvm" : req.acceleration === Acceleration.TCG ? "tcg" : "auto";
  const ci = req.cloudInit;
  const cloudInit =
    ci && (ci.userData !== "" || ci.metaData !== "" || ci.networkConfig !== "")
      ? { userData: ci.userData, metaData: ci.metaData, networkConfig: ci.networkConfig }
      : undefined;
  if (cloudInit && cloudInit.userData.length + cloudInit.metaData.length + cloudInit.networkConfig.length > 1024 * 1024) {
    throw invalidArgument("cloud_init is larger than 1 MiB.");
  }
  const spec: ValidatedCreate["spec"] = {
    name,
    tenant,
    labels: labels(req.labels),
    profile,
    hypervisor,
    acceleration,
    vcpus,
    memoryBytes: memory,
    boot: boot.case,
    bootImageId: bootImage?.imageId ?? "",
    ownsBootVolume: bootImage !== undefined,
    ...kernel,
    disks,
    nics: nics.map((n, i) => ({ ...n, mac: n.mac || stableMac(`${req.tenant}/${name}`, i) })),
    cloudInit,
    cell: req.cell,
    confined: scope.tenant !== undefined,
    guestAgent: req.guestAgent,
    bootWatchdogMs: durationMs("boot_watchdog_timeout", req.bootWatchdogTimeout, DEFAULT_WATCHDOG_MS) || DEFAULT_WATCHDOG_MS,
    requestId: req.requestId,
  };
  return { spec, bootImage };
}
