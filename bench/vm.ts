// VMs: create-to-guest-ready through aetherd (a microVM and a persistent VM) against `virsh create`
// of the equivalent libvirt domain, same kernel and initramfs, interleaved (the same bzImage is given
// to both; aetherd's microVM boots the ELF inside it by its PVH entry, see daemon/src/vm/kernel-elf.ts,
// where QEMU under libvirt boots the bzImage through SeaBIOS and its decompressor); aetherd's own part of a
// start; and the memory a VM costs (QEMU per idle 128 MiB microVM, aetherd per VM tracked).
import { readFileSync } from "node:fs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import type { TestDaemon } from "../test/helpers/daemon.js";
import { guestImage } from "../test/helpers/guest.js";
import { domainXml, ensureLibvirt, libvirtCreateToReady } from "./libvirt.js";
import { mib, ms, percentile, rssBytes } from "./stats.js";

export interface VmBenchResult {
  rows: string[][];
  ratioMicro: number;
  ratioPersistent: number;
  launchP50Ms: number;
  memoryRows: string[][];
  /** QEMU's resident memory with an idle 128 MiB microVM, and the part of it that is guest RAM. */
  qemuRssBytes: number;
  qemuGuestBytes: number;
  /** The anonymous part of QEMU's own memory: what each further VM adds, the shared file pages aside. */
  qemuOwnPrivateBytes: number;
}

const GUEST_MEMORY_BYTES = 128 << 20;

/**
 * QEMU's resident memory from /proc/<pid>/smaps: the guest's RAM is the mapping exactly the guest's
 * memory size (the RAM block QEMU allocates for it), its resident part what the guest touched. The
 * rest is QEMU's own, of which the anonymous part is private to this VM (TCG's translation buffer,
 * heap, device state) and the file pages (QEMU's binary and libraries, the kernel and initramfs it
 * keeps mapped to load them again at a reset) are page cache every VM using the same files shares.
 */
function qemuMemory(pid: number): { guest: number; ownPrivate: number; ownFile: number } {
  const smaps = readFileSync(`/proc/${pid}/smaps`, "utf8");
  let guest = 0;
  let anon = 0;
  let file = 0;
  for (const block of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(block)?.[1] ?? 0) * 1024;
    const resident = kb("Rss");
    if (kb("Size") === GUEST_MEMORY_BYTES && resident > guest) {
      anon += guest; // a smaller mapping of this size counted as guest RAM before: QEMU's after all
      guest = resident;
      continue;
    }
    anon += kb("Anonymous");
    file += resident - kb("Anonymous");
  }
  return { guest, ownPrivate: anon, ownFile: file };
}

async function aetherdCreateToReady(aether: AetherClient, name: string, profile: vmApi.VmProfile): Promise<{ ms: number; pid: number }> {
  const g = guestImage();
  const t = performance.now();
  await aether.vm.createVm({
    name,
    profile,
    acceleration: vmApi.Acceleration.TCG,
    memoryBytes: BigInt(GUEST_MEMORY_BYTES),
    vcpus: 1,
    guestAgent: true,
    boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
    start: true,
  });
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) last = r.vm;
  if (last?.state !== vmApi.VmState.RUNNING) throw new Error(`${name} did not boot: ${last?.stateReason}`);
  return { ms: performance.now() - t, pid: last.pid };
}

export async function benchVms(daemon: TestDaemon, aether: AetherClient, runs: number): Promise<VmBenchResult> {
  ensureLibvirt();
  const g = guestImage();
  const xmlFile = join(mkdtempSync(join(tmpdir(), "aether-bench-libvirt-")), "domain.xml");
  const micro: number[] = [];
  const persistent: number[] = [];
  const libvirt: number[] = [];
  let qemuRss = 0;
  let qemuMem = { guest: 0, ownPrivate: 0, ownFile: 0 };
  for (let i = 0; i < runs; i++) {
    const m = await aetherdCreateToReady(aether, `bench-micro-${i}`, vmApi.VmProfile.EPHEMERAL);
    micro.push(m.ms);
    if (i === 0) {
      await new Promise((r) => setTimeout(r, 2000)); // idle
      qemuRss = rssBytes(m.pid);
      qemuMem = qemuMemory(m.pid);
    }
    await aether.vm.deleteVm({ vm: `bench-micro-${i}`, force: true });
    persistent.push((await aetherdCreateToReady(aether, `bench-q35-${i}`, vmApi.VmProfile.PERSISTENT)).ms);
    await aether.vm.deleteVm({ vm: `bench-q35-${i}`, force: true });
    libvirt.push(await libvirtCreateToReady(`aether-bench-${i}`, xmlFile, domainXml(`aether-bench-${i}`, g.kernel, g.initrd)));
  }
  const launches = daemon
    .log()
    .split("\n")
    .filter((l) => l.includes("control socket answering"))
    .map((l) => (JSON.parse(l) as { launchMs: number }).launchMs);

  // aetherd's memory per VM it tracks (created, not running: the record and its bookkeeping).
  const pid = daemon.process.pid ?? 0;
  const before = rssBytes(pid);
  for (let i = 0; i < 100; i++) {
    await aether.vm.createVm({
      name: `bench-idle-${i}`,
      vcpus: 1,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "" } } },
    });
  }
  const after = rssBytes(pid);
  for (let i = 0; i < 100; i++) await aether.vm.deleteVm({ vm: `bench-idle-${i}` });

  const p50 = (xs: number[]) => percentile(xs, 50);
  return {
    rows: [
      [
        "aetherd: ephemeral microVM (QEMU -M microvm, the kernel's ELF by PVH)",
        ms(p50(micro)),
        ms(Math.min(...micro)),
        ms(Math.max(...micro)),
      ],
      ["aetherd: persistent VM (QEMU -M q35)", ms(p50(persistent)), ms(Math.min(...persistent)), ms(Math.max(...persistent))],
      ["libvirt: virsh create (q35, same kernel/initramfs)", ms(p50(libvirt)), ms(Math.min(...libvirt)), ms(Math.max(...libvirt))],
    ],
    ratioMicro: p50(micro) / p50(libvirt),
    ratioPersistent: p50(persistent) / p50(libvirt),
    launchP50Ms: p50(launches),
    qemuRssBytes: qemuRss,
    qemuGuestBytes: qemuMem.guest,
    qemuOwnPrivateBytes: qemuMem.ownPrivate,
    memoryRows: [
      ["QEMU per idle 128 MiB microVM (RSS)", mib(qemuRss)],
      ["  of which guest RAM the guest touched (smaps)", mib(qemuMem.guest)],
      ["  of which QEMU's own (TCG buffers, code, devices)", mib(qemuRss - qemuMem.guest)],
      ["    private to this VM (anonymous: TCG buffer, heap, devices)", mib(qemuMem.ownPrivate)],
      ["    file pages shared by VMs (QEMU, libraries, kernel, initramfs)", mib(qemuMem.ownFile)],
      ["aetherd per VM tracked (100 VMs)", `${((after - before) / 100 / 1024).toFixed(1)} KiB`],
    ],
  };
}
