import assert from "node:assert/strict";
import { it } from "node:test";
import { hostTscKhz, qemuArgs } from "./qemu-args.js";
import type { VmSpec } from "./record.js";

const spec: VmSpec = {
  id: "11111111-2222-3333-4444-555555555555",
  name: "web",
  tenant: "t",
  labels: {},
  profile: "ephemeral",
  hypervisor: "qemu",
  acceleration: "auto",
  vcpus: 2,
  memoryBytes: 256 * 1024 * 1024,
  boot: "kernel",
  bootImageId: "",
  ownsBootVolume: false,
  kernelPath: "/k",
  initrdPath: "/i",
  cmdline: "quiet",
  disks: [{ path: "/d.qcow2", readOnly: true, format: "qcow2", serial: "s1", volumeId: "" }],
  nics: [{ bridge: "br0", mac: "52:54:00:01:02:03", tap: "ae11111111n0" }],
  cloudInit: { userData: "x", metaData: "", networkConfig: "" },
  cell: "",
  guestAgent: true,
  bootWatchdogMs: 1000,
  requestId: "",
  createTimeMs: 0,
};
const paths = {
  qmp: "/r/qmp",
  agent: "/r/agent",
  console: "/r/con",
  consoleLog: "/s/console.log",
  pidFile: "/s/pid",
  seed: "/shm/seed.iso",
};
const after = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

it("an ephemeral VM is a microvm with virtio-mmio devices; under TCG it is told the TSC rate", () => {
  const a = qemuArgs(spec, "tcg", paths, 2_600_000);
  assert.equal(after(a, "-M")[0], "microvm,x-option-roms=off,isa-serial=on,rtc=on");
  assert.deepEqual(after(a, "-accel"), ["tcg,tb-size=16"]);
  assert.equal(after(a, "-smp")[0], "2");
  assert.equal(after(a, "-m")[0], "256M");
  assert.match(after(a, "-append")[0] ?? "", /^console=ttyS0 panic=-1 tsc_early_khz=2600000 aether.hostname=web quiet$/);
  assert.ok(a.includes("-no-reboot"));
  assert.deepEqual(after(a, "-device"), [
    "virtio-serial-device",
    "virtserialport,chardev=agent0,name=org.qemu.guest_agent.0",
    "virtio-blk-device,drive=disk0,serial=s1",
    "virtio-blk-device,drive=seed",
    "virtio-net-device,netdev=net0,mac=52:54:00:01:02:03",
  ]);
  assert.deepEqual(after(a, "-drive"), [
    "file=/d.qcow2,if=none,id=disk0,format=qcow2,readonly=on,cache=writeback",
    "file=/shm/seed.iso,if=none,id=seed,format=raw,readonly=on",
  ]);
  assert.deepEqual(after(a, "-netdev"), ["tap,id=net0,ifname=ae11111111n0,script=no,downscript=no"]);
  assert.match(after(a, "-chardev")[0] ?? "", /socket,id=console0,path=\/r\/con,server=on,wait=off,logfile=\/s\/console.log,logappend=on/);
});

it("a persistent VM is a q35 machine with PCI devices; KVM gets the host CPU and no TSC hint", () => {
  const a = qemuArgs({ ...spec, profile: "persistent", guestAgent: false, cloudInit: undefined }, "kvm", paths, 2_600_000);
  assert.equal(after(a, "-M")[0], "q35");
  assert.deepEqual(after(a, "-cpu"), ["host"]);
  assert.deepEqual(after(a, "-accel"), ["kvm"]);
  assert.doesNotMatch(after(a, "-append")[0] ?? "", /tsc_early_khz/);
  assert.deepEqual(after(a, "-device"), [
    "pcie-root-port,id=hp0,bus=pcie.0,addr=10.0,chassis=1",
    "pcie-root-port,id=hp1,bus=pcie.0,addr=11.0,chassis=2",
    "pcie-root-port,id=hp2,bus=pcie.0,addr=12.0,chassis=3",
    "pcie-root-port,id=hp3,bus=pcie.0,addr=13.0,chassis=4",
    "virtio-blk-pci,drive=disk0,serial=s1",
    "virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03",
  ]);
});

it("a disk or NIC hot-plugged into a persistent VM keeps its root port and device id at the next start", () => {
  const a = qemuArgs(
    {
      ...spec,
      profile: "persistent",
      guestAgent: false,
      cloudInit: undefined,
      disks: [...spec.disks, { path: "/hot.qcow2", readOnly: false, format: "qcow2", serial: "", volumeId: "v", port: "hp1" }],
      nics: [...spec.nics, { bridge: "br0", mac: "52:54:00:0a:0b:0c", tap: "ae11111111n1", port: "hp0" }],
    },
    "kvm",
    paths,
  );
  const devices = after(a, "-device");
  assert.ok(devices.includes("virtio-blk-pci,drive=disk1,bus=hp1,id=dev-hp1"), devices.join(" "));
  assert.ok(devices.includes("virtio-net-pci,netdev=net1,mac=52:54:00:0a:0b:0c,bus=hp0,id=dev-hp0"), devices.join(" "));
});

it("reads the host's TSC rate from /proc/cpuinfo", () => {
  assert.equal(hostTscKhz("processor\t: 0\ncpu MHz\t\t: 2599.998\n"), 2_599_998);
  assert.equal(hostTscKhz("nothing here"), undefined);
});

it("a VM booting a disk is a PC whose firmware boots disk 0: no kernel, no microvm, bootindex on the first disk", () => {
  const disk = { path: "/pool/volumes/v.qcow2", readOnly: false, format: "qcow2" as const, serial: "boot", volumeId: "v" };
  const a = qemuArgs(
    {
      ...spec,
      boot: "disk",
      kernelPath: "",
      initrdPath: "",
      cmdline: "",
      disks: [disk],
      cloudInit: undefined,
      guestAgent: false,
      nics: [],
    },
    "tcg",
    paths,
    2_600_000,
  );
  assert.equal(after(a, "-M")[0], "q35", "even an ephemeral VM, since a microvm has no BIOS to boot a disk");
  assert.deepEqual(after(a, "-accel"), ["tcg"], "a q35 machine keeps TCG's default translation buffer");
  assert.equal(a.includes("-kernel"), false);
  assert.equal(a.includes("-append"), false);
  assert.equal(a.includes("-initrd"), false);
  assert.deepEqual(
    after(a, "-device").filter((d) => !d.startsWith("pcie-root-port")),
    ["virtio-blk-pci,drive=disk0,serial=boot,bootindex=0"],
  );
  assert.deepEqual(after(a, "-drive"), ["file=/pool/volumes/v.qcow2,if=none,id=disk0,format=qcow2,cache=writeback"]);
});
