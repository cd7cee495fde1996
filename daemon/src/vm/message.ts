// A VM record as the API's Vm message: what every VmService call that answers with a VM returns.
// Apart from service.ts so the lifecycle calls (lifecycle-service.ts) answer the same way without
// importing the service that composes them.
import { create } from "@bufbuild/protobuf";
import { Acceleration, Hypervisor as HypervisorEnum, VmProfile, VmSchema, VmState, type Vm } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { duration, timestamp } from "@aether/server";
import { pendingChanges } from "./lifecycle.js";
import type { VmManager } from "./manager.js";
import type { VmRecord } from "./record.js";

export const VM_STATES: Record<VmRecord["runtime"]["state"], VmState> = {
  created: VmState.CREATED,
  starting: VmState.STARTING,
  running: VmState.RUNNING,
  paused: VmState.PAUSED,
  stopping: VmState.STOPPING,
  stopped: VmState.STOPPED,
  failed: VmState.FAILED,
};

export function toMessage(manager: VmManager, vm: VmRecord): Vm {
  const { spec, runtime } = vm;
  const files = manager.filesOf(vm);
  const accel = { auto: Acceleration.AUTO, kvm: Acceleration.KVM, tcg: Acceleration.TCG } as const;
  return create(VmSchema, {
    id: spec.id,
    name: spec.name,
    tenant: spec.tenant,
    labels: spec.labels,
    createTime: timestamp(spec.createTimeMs),
    state: VM_STATES[runtime.state],
    stateReason: runtime.reason,
    profile: spec.profile === "persistent" ? VmProfile.PERSISTENT : VmProfile.EPHEMERAL,
    hypervisor: spec.hypervisor === "firecracker" ? HypervisorEnum.FIRECRACKER : HypervisorEnum.QEMU,
    acceleration: accel[spec.acceleration],
    effectiveAcceleration: runtime.effectiveAcceleration === "" ? Acceleration.UNSPECIFIED : accel[runtime.effectiveAcceleration],
    vcpus: spec.vcpus,
    memoryBytes: BigInt(spec.memoryBytes),
    boot:
      spec.boot === "disk"
        ? { source: { case: "disk", value: { volume: spec.disks[0]?.volumeId ?? "", image: spec.bootImageId } } }
        : { source: { case: "kernel", value: { kernelPath: spec.kernelPath, initrdPath: spec.initrdPath, cmdline: spec.cmdline } } },
    disks: spec.disks.slice(spec.boot === "disk" ? 1 : 0).map((d) => ({
      source: d.volumeId !== "" ? { case: "volume" as const, value: d.volumeId } : { case: "hostPath" as const, value: d.path },
      readOnly: d.readOnly,
      serial: d.serial,
      resolvedPath: manager.diskPath(d),
    })),
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
    autostart: spec.autostart ?? false,
    pendingChanges: pendingChanges(vm),
  });
}
