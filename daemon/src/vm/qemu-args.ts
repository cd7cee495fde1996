// The QEMU command line for a VM: -M microvm with virtio-mmio devices for ephemeral VMs (fast
// boots), -M q35 with PCI devices for persistent ones. Pure, so it is tested without QEMU.
import { readFileSync } from "node:fs";
import type { VmSpec } from "./record.js";

export interface VmPaths {
  qmp: string;
  agent: string;
  console: string;
  consoleLog: string;
  pidFile: string;
  seed: string;
}

/**
 * The host's TSC rate in kHz, from /proc/cpuinfo. Under TCG the guest's TSC ticks at the host's
 * rate, and a microVM has no HPET or ACPI PM timer to calibrate it against: now and then (about one
 * boot in twelve here) the kernel's calibration fails, it marks the TSC unusable and hangs waiting
 * for a timer tick. Telling it the rate (tsc_early_khz) skips the calibration.
 */
export function hostTscKhz(cpuinfo = readCpuinfo()): number | undefined {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  return mhz ? Math.round(Number(mhz) * 1000) : undefined;
}

function readCpuinfo(): string {
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return "";
  }
}

/**
 * PCIe root ports a q35 machine gets for hot-plug (ACPI PCI hotplug: devices on pcie.0 itself cannot
 * be hot-plugged). A device hot-plugged into a port keeps it (DiskSpec.port, NicSpec.port) at every
 * later start, and its id: a migration's target then has the same devices where the source had them.
 */
export const HOTPLUG_PORTS = ["hp0", "hp1", "hp2", "hp3"];

/**
 * TCG's translation buffer for a microVM, in MiB. QEMU's default (1 GiB, filled as the guest runs
 * new code, never given back) held 50 MiB after a boot of the test guest to its agent: mostly code
 * run once (the kernel's init). At 16 MiB QEMU keeps 38 MiB less, for a boot (of the PVH ELF)
 * 0.3-0.5 s longer than with the default (3.6-3.8 s against 3.0-3.5 s; 24 MiB: 3.2-3.6 s); smaller
 * buffers are flushed more often during the boot and its code is translated again (4.2-6.5 s at
 * 12 MiB, 6.9-7.8 s at 8). An earlier note said small buffers made two guests starting together
 * hang; that was the TSC calibration hang tsc_early_khz fixed: 27 boots in pairs or threes at
 * 16 MiB all came up.
 * Persistent (q35) VMs keep the default: their boot (SeaBIOS) was 0.5 s slower at 16 MiB, and a
 * long-lived guest's workload may need more code cached.
 */
export const MICROVM_TB_SIZE_MIB = 16;

/** The qdev id of the device on a hot-plug port (device_del names it). */
export const portDeviceId = (port: string) => `dev-${port}`;

/** ",bus=<port>,id=<device>" for a device on a hot-plug port; "" for one on the root bus. */
const onPort = (port: string | undefined) => (port ? `,bus=${port},id=${portDeviceId(port)}` : "");

/** An ephemeral VM booting a kernel is a microvm machine; firmware boots (a disk) need a PC with a BIOS. */
export const isMicroVm = (spec: VmSpec) => spec.profile === "ephemeral" && spec.boot !== "disk";

export function qemuArgs(spec: VmSpec, accel: "kvm" | "tcg", paths: VmPaths, tscKhz = hostTscKhz()): string[] {
  const micro = isMicroVm(spec);
  const timing = micro && accel === "tcg" && tscKhz ? `tsc_early_khz=${tscKhz}` : "";
  const dev = (kind: "blk" | "net" | "serial") => (micro ? `virtio-${kind}-device` : `virtio-${kind}-pci`);
  const args = [
    "-name",
    `${spec.tenant}/${spec.name},process=aether-vm-${spec.name}`,
    "-M",
    micro ? "microvm,x-option-roms=off,isa-serial=on,rtc=on" : "q35",
    "-accel",
    micro && accel === "tcg" ? `tcg,tb-size=${MICROVM_TB_SIZE_MIB}` : accel,
    "-cpu",
    accel === "kvm" ? "host" : "max",
    "-smp",
    String(spec.vcpus),
    "-m",
    `${Math.floor(spec.memoryBytes / (1024 * 1024))}M`,
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    // A guest reboot ends the VM: the test guest's shutdown is a reboot, and a crashed guest must
    // not loop; persistent VMs are restarted by aetherd, not by QEMU.
    "-no-reboot",
    "-chardev",
    `socket,id=console0,path=${paths.console},server=on,wait=off,logfile=${paths.consoleLog},logappend=on`,
    "-serial",
    "chardev:console0",
    "-qmp",
    `unix:${paths.qmp},server=on,wait=off`,
    "-pidfile",
    paths.pidFile,
  ];
  if (spec.boot !== "disk") {
    args.push(
      "-kernel",
      spec.kernelPath,
      "-append",
      ["console=ttyS0", "panic=-1", timing, `aether.hostname=${spec.name}`, spec.cmdline].filter(Boolean).join(" "),
    );
    if (spec.initrdPath) args.push("-initrd", spec.initrdPath);
  }
  // Before the devices that may sit on them, at fixed slots (0x10...) so that the other devices keep
  // the addresses QEMU gave them before these ports existed.
  if (!micro) {
    HOTPLUG_PORTS.forEach((port, i) =>
      args.push("-device", `pcie-root-port,id=${port},bus=pcie.0,addr=${(0x10 + i).toString(16)}.0,chassis=${i + 1}`),
    );
  }
  if (spec.guestAgent) {
    args.push(
      "-device",
      dev("serial"),
      "-chardev",
      `socket,id=agent0,path=${paths.agent},server=on,wait=off`,
      "-device",
      "virtserialport,chardev=agent0,name=org.qemu.guest_agent.0",
    );
  }
  spec.disks.forEach((d, i) => {
    args.push("-drive", `file=${d.path},if=none,id=disk${i},format=${d.format}${d.readOnly ? ",readonly=on" : ""},cache=writeback`);
    const bootIndex = spec.boot === "disk" && i === 0 ? ",bootindex=0" : "";
    args.push("-device", `${dev("blk")},drive=disk${i}${d.serial ? `,serial=${d.serial}` : ""}${bootIndex}${onPort(d.port)}`);
  });
  if (spec.cloudInit) {
    args.push("-drive", `file=${paths.seed},if=none,id=seed,format=raw,readonly=on`, "-device", `${dev("blk")},drive=seed`);
  }
  spec.nics.forEach((n, i) => {
    args.push(
      "-netdev",
      `tap,id=net${i},ifname=${n.tap},script=no,downscript=no`,
      "-device",
      `${dev("net")},netdev=net${i},mac=${n.mac}${onPort(n.port)}`,
    );
  });
  return args;
}
