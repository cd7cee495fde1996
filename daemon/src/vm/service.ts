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
import { deadlineExceeded, failedPrecondition, invalidArgument } from "../api/errors.js";
import { duration, durationMs, timestamp } from "../api/time.js";
import { clip, dnsLabel, labelFilter, labels, matchesFilter, paginate, reference, tenant as parseTenant } from "../api/validate.js";
import { tailFile } from "../observe/log-tail.js";
import { fileSize, signalName } from "../runtime/supervisor.js";
import { attachConsole } from "./console.js";
import type { VmManager } from "./manager.js";
import { GuestExecTimeout } from "./qga.js";
import { stableMac } from "./network.js";
import type { VmRecord, VmSpec } from "./record.js";

const MIN_MEMORY_BYTES = 64 * 1024 * 1024;
const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
const DEFAULT_WATCHDOG_MS = 120_000;
const DEFAULT_STOP_TIMEOUT_MS = 30_000;
const STATES: Record<VmRecord["runtime"]["state"], VmState> = {
  created: VmState.CREATED,
  starting: VmState.STARTING,
  running: VmState.RUNNING,
  paused: VmState.PAUSED,
  stopping: VmState.STOPPING,
  stopped: VmState.STOPPED,
  failed: VmState.FAILED,
};

export function vmService(manager: VmManager): ServiceImpl<typeof VmService> {
  const resolve = (ref: string, tenantField: string) => manager.resolve(reference("vm", ref), parseTenant(tenantField));

  return {
    async createVm(req) {
      const record = await manager.create(validateCreate(req, manager));
      if (req.start) await manager.start(record);
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
        .filter((v) => req.state === VmState.UNSPECIFIED || STATES[v.runtime.state] === req.state)
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
        throw invalidArgument("argv must start with the absolute path of a program in the guest, e.g. [\"/bin/sh\", \"-c\", \"uname -a\"].");
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
        if (Date.now() > deadline) throw deadlineExceeded(`VM ${vm.spec.name} was not ready after ${timeoutMs} ms (it is ${vm.runtime.state}).`);
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

function validateCreate(req: CreateVmRequest, manager: VmManager): Omit<VmSpec, "id" | "createTimeMs"> {
  const name = dnsLabel("name", req.name);
  const vcpus = req.vcpus;
  if (vcpus === 0) throw invalidArgument("vcpus is 0: a VM needs at least one virtual CPU.");
  if (vcpus > availableParallelism() * 4) throw invalidArgument(`vcpus ${vcpus} is more than 4 per host CPU (${availableParallelism()} here).`);
  const memory = req.memoryBytes === 0n ? DEFAULT_MEMORY_BYTES : Number(req.memoryBytes);
  if (memory < MIN_MEMORY_BYTES) throw invalidArgument(`memory_bytes ${memory} is below the guest minimum of 64 MiB.`);
  if (memory > totalmem()) throw failedPrecondition(`memory_bytes ${memory} is more than this host has (${totalmem()} bytes).`);
  const boot = req.boot?.source;
  if (boot?.case !== "kernel") {
    throw invalidArgument(boot?.case === "disk" ? "booting from a disk image needs the storage subsystem, which this aetherd does not have yet; boot a kernel." : "boot is required: give boot.kernel (kernel_path, optional initrd_path and cmdline).");
  }
  const absolute = (field: string, p: string) => {
    if (p.includes("\0") || !isAbsolute(p)) throw invalidArgument(`${field} ${JSON.stringify(clip(p))} is not an absolute path.`);
    return p;
  };
  const kernelPath = absolute("boot.kernel.kernel_path", boot.value.kernelPath);
  const initrdPath = boot.value.initrdPath === "" ? "" : absolute("boot.kernel.initrd_path", boot.value.initrdPath);
  if (/[\0\n]/.test(boot.value.cmdline) || boot.value.cmdline.length > 2048) throw invalidArgument("boot.kernel.cmdline must be one line of at most 2048 characters.");
  const disks = req.disks.map((d, i) => {
    if (d.source.case !== "hostPath") throw invalidArgument(`disks[${i}]: volumes need the storage subsystem, which this aetherd does not have yet; give host_path.`);
    const path = absolute(`disks[${i}].host_path`, d.source.value);
    return { path, readOnly: d.readOnly, format: path.endsWith(".qcow2") ? ("qcow2" as const) : ("raw" as const), serial: d.serial.replace(/[^A-Za-z0-9-]/g, "").slice(0, 20) };
  });
  const taps = new Set<string>();
  const nics = req.nics.map((n, i) => {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(n.bridge)) throw invalidArgument(`nics[${i}].bridge ${JSON.stringify(clip(n.bridge))} is not a network device name.`);
    if (n.mac !== "" && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(n.mac)) throw invalidArgument(`nics[${i}].mac ${JSON.stringify(clip(n.mac))} is not a MAC address like 52:54:00:12:34:56.`);
    if (n.tapDevice !== "" && !/^[A-Za-z0-9_.-]{1,15}$/.test(n.tapDevice)) throw invalidArgument(`nics[${i}].tap_device is not a network device name (at most 15 characters).`);
    if (n.tapDevice !== "" && taps.has(n.tapDevice)) throw invalidArgument(`nics[${i}].tap_device ${n.tapDevice} is used twice.`);
    taps.add(n.tapDevice);
    return { bridge: n.bridge, mac: n.mac.toLowerCase(), tap: n.tapDevice };
  });
  const profile = req.profile === VmProfile.PERSISTENT ? ("persistent" as const) : ("ephemeral" as const);
  const requested = req.hypervisor === HypervisorEnum.QEMU ? "qemu" : req.hypervisor === HypervisorEnum.FIRECRACKER ? "firecracker" : "";
  const hypervisor = manager.hypervisorFor(profile, requested);
  if (hypervisor === "firecracker" && profile === "persistent") throw invalidArgument("Firecracker runs ephemeral microVMs only; use QEMU for a persistent VM.");
  if (hypervisor === "firecracker" && req.guestAgent) {
    throw invalidArgument("the guest agent needs a virtio-serial port, which Firecracker does not have; create the VM with hypervisor QEMU, or without guest_agent (Exec then is unavailable).");
  }
  const acceleration = req.acceleration === Acceleration.KVM ? "kvm" : req.acceleration === Acceleration.TCG ? "tcg" : "auto";
  const ci = req.cloudInit;
  const cloudInit = ci && (ci.userData !== "" || ci.metaData !== "" || ci.networkConfig !== "") ? { userData: ci.userData, metaData: ci.metaData, networkConfig: ci.networkConfig } : undefined;
  if (cloudInit && cloudInit.userData.length + cloudInit.metaData.length + cloudInit.networkConfig.length > 1024 * 1024) {
    throw invalidArgument("cloud_init is larger than 1 MiB.");
  }
  return {
    name,
    tenant: parseTenant(req.tenant),
    labels: labels(req.labels),
    profile,
    hypervisor,
    acceleration,
    vcpus,
    memoryBytes: memory,
    kernelPath,
    initrdPath,
    cmdline: boot.value.cmdline,
    disks,
    nics: nics.map((n, i) => ({ ...n, mac: n.mac || stableMac(`${req.tenant}/${name}`, i) })),
    cloudInit,
    cell: req.cell,
    guestAgent: req.guestAgent,
    bootWatchdogMs: durationMs("boot_watchdog_timeout", req.bootWatchdogTimeout, DEFAULT_WATCHDOG_MS) || DEFAULT_WATCHDOG_MS,
    requestId: req.requestId,
  };
}

function toMessage(manager: VmManager, vm: VmRecord): Vm {
  const { spec, runtime } = vm;
  const files = manager.filesOf(vm);
  const accel = { auto: Acceleration.AUTO, kvm: Acceleration.KVM, tcg: Acceleration.TCG } as const;
  return create(VmSchema, {
    id: spec.id,
    name: spec.name,
    tenant: spec.tenant,
    labels: spec.labels,
    createTime: timestamp(spec.createTimeMs),
    state: STATES[runtime.state],
    stateReason: runtime.reason,
    profile: spec.profile === "persistent" ? VmProfile.PERSISTENT : VmProfile.EPHEMERAL,
    hypervisor: spec.hypervisor === "firecracker" ? HypervisorEnum.FIRECRACKER : HypervisorEnum.QEMU,
    acceleration: accel[spec.acceleration],
    effectiveAcceleration: runtime.effectiveAcceleration === "" ? Acceleration.UNSPECIFIED : accel[runtime.effectiveAcceleration],
    vcpus: spec.vcpus,
    memoryBytes: BigInt(spec.memoryBytes),
    boot: { source: { case: "kernel", value: { kernelPath: spec.kernelPath, initrdPath: spec.initrdPath, cmdline: spec.cmdline } } },
    disks: spec.disks.map((d) => ({ source: { case: "hostPath" as const, value: d.path }, readOnly: d.readOnly, serial: d.serial, resolvedPath: d.path })),
    nics: spec.nics.map((n) => ({ bridge: n.bridge, mac: n.mac, tapDevice: n.tap })),
    cloudInit: spec.cloudInit ? { ...spec.cloudInit, seedPath: runtime.seedPath } : undefined,
    cell: spec.cell,
    guestAgent: spec.guestAgent,
    agentReady: runtime.agentReady,
    bootWatchdogTimeout: duration(spec.bootWatchdogMs),
    consoleLogPath: files.consoleLog,
    pid: manager.pidOf(vm),
    qmpSocketPath: spec.hypervisor === "qemu" ? files.qmp : "",
    apiSocketPath: spec.hypervisor === "firecracker" ? files.api : "",
    agentSocketPath: spec.guestAgent ? files.agent : "",
    startTime: runtime.startTimeMs ? timestamp(runtime.startTimeMs) : undefined,
    stopTime: runtime.stopTimeMs ? timestamp(runtime.stopTimeMs) : undefined,
  });
}
