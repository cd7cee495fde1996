// The VM lifecycle as virsh and qm users know it, on real TCG guests (one microVM shared by the
// tests, rebooted and restarted; a persistent VM for hot-plug; a clone): files copied in and out
// through the guest agent, a reboot that brings the agent back with the memory set while it ran, a
// reset, a disk hot-plugged into a running persistent VM and out again, a disk attached to the
// stopped VM and seen by the guest, a snapshot rolled back that undoes a write, a clone that boots on
// its own disk, and autostart after a simulated host reboot (aetherd and the QEMUs killed). Bad
// requests fail with the code and a sentence; nothing is left behind.
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, storage, vm as vmApi, type AetherClient } from "@aether/sdk";
import { eventually, isRunning, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  assert.ok(last?.agentReady, `${name}'s guest agent answers`);
  return last as vmApi.Vm;
}

async function sh(aether: AetherClient, vm: string, script: string): Promise<string> {
  const r = await aether.vm.execVm({ vm, argv: ["/bin/sh", "-c", script], timeout: { seconds: 60n } });
  assert.equal(r.exitCode, 0, `${vm}: ${script}: ${text(r.stderr)}`);
  return text(r.stdout);
}

/** MemTotal of the guest in MiB. */
async function guestMemoryMiB(aether: AetherClient, vm: string): Promise<number> {
  const kb = Number(/MemTotal:\s+(\d+) kB/.exec(await sh(aether, vm, "cat /proc/meminfo"))?.[1]);
  return kb / 1024;
}

const MARKER = "aether-lifecycle-marker";

describe("VM lifecycle", () => {
  let daemon: TestDaemon;
  let aether: AetherClient;
  const work = mkdtempSync(join(tmpdir(), "aether-vm-lifecycle-"));
  const cli = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: daemon.address }, cwd: work, timeoutMs: 120_000 });
  const g = guestImage();
  const spec = {
    acceleration: vmApi.Acceleration.TCG,
    profile: vmApi.VmProfile.EPHEMERAL,
    memoryBytes: 128n * MiB,
    vcpus: 1,
    guestAgent: true,
    boot: { source: { case: "kernel" as const, value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
  };

  before(async () => {
    daemon = await startDaemon();
    aether = await daemon.client();
    await aether.vm.createVm({ ...spec, name: "web", start: true });
    // A full (q35) machine, for hot-plug: a microVM has no PCI bus.
    await aether.vm.createVm({ ...spec, name: "pvm", profile: vmApi.VmProfile.PERSISTENT, start: true });
  });

  after(async () => {
    try {
      if (aether) {
        await stopWorkloads(aether);
        for (const v of (await aether.vm.listVms({})).vms) await aether.vm.deleteVm({ vm: v.id, force: true }).catch(() => undefined);
        for (const v of (await aether.storage.listVolumes({})).volumes)
          await aether.storage.deleteVolume({ volume: v.id, deleteSnapshots: true }).catch(() => undefined);
        assert.deepEqual(
          (await aether.storage.listVolumes({})).volumes.map((v) => v.name),
          [],
          "no volume is left",
        );
      }
    } finally {
      aether?.close();
      await daemon?.stop();
      daemon?.cleanup();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it("refuses bad requests with the code and a sentence", async () => {
    await rejectsWith(aether.vm.updateVm({ vm: "web" }), Code.InvalidArgument, /nothing to change/);
    await rejectsWith(aether.vm.updateVm({ vm: "web", memoryBytes: MiB }), Code.InvalidArgument, /below the guest minimum of 64 MiB/);
    await rejectsWith(aether.vm.updateVm({ vm: "web", vcpus: 0 }), Code.InvalidArgument, /at least one virtual CPU/);
    await rejectsWith(aether.vm.updateVm({ vm: "nope", autostart: true }), Code.NotFound, /nope/);
    await rejectsWith(aether.vm.readVmFile({ vm: "web", path: "etc/hostname" }), Code.InvalidArgument, /not an absolute path in the guest/);
    await rejectsWith(aether.vm.createVmSnapshot({ vm: "web", name: "Not A Label" }), Code.InvalidArgument, /name/);
    await rejectsWith(aether.vm.attachVmDisk({ vm: "web" }), Code.InvalidArgument, /disk is required/);
    await rejectsWith(
      aether.vm.attachVmNic({ vm: "web", nic: { bridge: "no such bridge" } }),
      Code.InvalidArgument,
      /not a network device name/,
    );
    await rejectsWith(aether.vm.rebootVm({ vm: "nope" }), Code.NotFound, /nope/);
    await rejectsWith(aether.vm.cloneVm({ vm: "web", name: "web2" }), Code.FailedPrecondition, /stop it before cloning it/);
    await rejectsWith(aether.vm.createVmSnapshot({ vm: "web", name: "s0" }), Code.FailedPrecondition, /no disks .* nothing to snapshot/);
    await rejectsWith(
      aether.vm.attachVmNic({ vm: "web", nic: { bridge: "br0" } }),
      Code.FailedPrecondition,
      /web is (starting|running), and an ephemeral microVM has no PCI hotplug: stop it, attach the NIC, then start it again/,
    );
  });

  it("hot-plugs a disk into a running persistent VM and takes it out again; records where it sits", async () => {
    await waitReady(aether, "pvm");
    await aether.storage.createVolume({
      name: "hot",
      format: storage.VolumeFormat.QCOW2,
      source: { case: "empty", value: { sizeBytes: 16n * MiB } },
    });
    const attach = await cli("vm", "attach-disk", "pvm", "hot", "--serial", "hot1");
    assert.equal(attach.code, 0, attach.stderr);
    assert.match(attach.stdout, /hot attached to pvm \(hot-plugged: the guest has it now\)/);
    await eventually(
      async () => ((await sh(aether, "pvm", "cat /sys/block/vda/serial 2>/dev/null || true")).trim() === "hot1" ? true : undefined),
      30_000,
      "the guest to see the hot-plugged disk",
    );
    const { vm: withDisk } = await aether.vm.getVm({ vm: "pvm" });
    assert.equal(withDisk?.disks.length, 1);
    const detach = await cli("vm", "detach-disk", "pvm", "hot");
    assert.equal(detach.code, 0, detach.stderr);
    assert.match(detach.stdout, /hot detached from pvm \(hot-unplugged\)/);
    assert.equal((await sh(aether, "pvm", "ls /sys/block")).includes("vda"), false, "the guest released it");
    assert.deepEqual((await aether.vm.getVm({ vm: "pvm" })).vm?.disks, []);
    await aether.vm.stopVm({ vm: "pvm", force: true });
    await aether.vm.deleteVm({ vm: "pvm" });
    await aether.storage.deleteVolume({ volume: "hot" });
  });

  it("copies files in and out through the guest agent (aether vm cp), byte for byte", async () => {
    await waitReady(aether, "web");
    const data = randomBytes(1536 * 1024 + 7); // two pieces of a MiB, the last one short
    writeFileSync(join(work, "in.bin"), data);
    const put = await cli("vm", "cp", "in.bin", "web:/tmp/in.bin");
    assert.equal(put.code, 0, put.stderr);
    assert.match(await sh(aether, "web", "sha256sum /tmp/in.bin"), new RegExp(sha(data)));
    const get = await cli("vm", "cp", "web:/tmp/in.bin", "out.bin");
    assert.equal(get.code, 0, get.stderr);
    assert.ok(readFileSync(join(work, "out.bin")).equals(data), "the copy out has the same bytes");
    const host = await cli("vm", "cp", "web:/proc/sys/kernel/hostname", "-");
    assert.equal(host.stdout.trim(), "web");
    const missing = await cli("vm", "cp", "web:/no/such/file", "x");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /opening \/no\/such\/file in VM web failed/);
    const usage = await cli("vm", "cp", "a", "b");
    assert.equal(usage.code, 2, "two local paths are a usage error");
  });

  it("set --memory on a running VM waits for its next start; a reboot applies it and brings the agent back; a reset boots again", async () => {
    const before = (await aether.vm.getVm({ vm: "web" })).vm as vmApi.Vm;
    const memoryBefore = await guestMemoryMiB(aether, "web");
    assert.ok(memoryBefore < 128, `the guest has ${memoryBefore} MiB`);
    const set = await cli("vm", "set", "web", "--memory", "192M");
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /web is running, so memory 128 MiB -> 192 MiB applies at its next start: aether vm reboot web/);
    const { vm: pending } = await aether.vm.getVm({ vm: "web" });
    assert.deepEqual(pending?.pendingChanges, ["memory 128 MiB -> 192 MiB"]);
    const reboot = await cli("vm", "reboot", "web", "--wait");
    assert.equal(reboot.code, 0, reboot.stderr);
    const after = await waitReady(aether, "web");
    assert.notEqual(after.pid, before.pid, "a reboot runs a new QEMU");
    assert.deepEqual(after.pendingChanges, []);
    const memoryAfter = await guestMemoryMiB(aether, "web");
    assert.ok(memoryAfter - memoryBefore > 56, `the guest has the new memory (${memoryBefore} MiB, then ${memoryAfter} MiB)`);
    const { vm: reset } = await aether.vm.resetVm({ vm: "web" });
    assert.equal(reset?.state, vmApi.VmState.STARTING);
    const afterReset = await waitReady(aether, "web");
    assert.equal(afterReset.pid, after.pid, "a reset keeps the QEMU process");
    assert.equal((await sh(aether, "web", "hostname")).trim(), "web");
  });

  it("a disk attached to the stopped VM is seen by the guest; rolling a snapshot back undoes a write", async () => {
    await aether.storage.createVolume({
      name: "data",
      format: storage.VolumeFormat.QCOW2,
      source: { case: "empty", value: { sizeBytes: 64n * MiB } },
    });
    await rejectsWith(
      aether.vm.attachVmDisk({ vm: "web", disk: { source: { case: "volume", value: "data" } } }),
      Code.FailedPrecondition,
      /no PCI hotplug: stop it/,
    );
    await aether.vm.stopVm({ vm: "web" });
    const nic = await cli("vm", "attach-nic", "web", "br-none", "-o", "json");
    assert.equal(nic.code, 0, nic.stderr);
    const mac = (JSON.parse(nic.stdout) as { nics: Array<{ mac: string; bridge: string }> }).nics[0]?.mac ?? "";
    assert.match(mac, /^52:54:00:/);
    const unplug = await cli("vm", "detach-nic", "web", mac);
    assert.equal(unplug.code, 0, unplug.stderr);
    assert.deepEqual((await aether.vm.getVm({ vm: "web" })).vm?.nics, []);
    const attach = await cli("vm", "attach-disk", "web", "data", "--serial", "data1");
    assert.equal(attach.code, 0, attach.stderr);
    const snap = await cli("vm", "snapshot", "create", "web", "clean");
    assert.equal(snap.code, 0, snap.stderr);
    assert.match(snap.stdout, /snapshot clean of web taken \(stopped; data\)/);
    await aether.vm.startVm({ vm: "web" });
    await waitReady(aether, "web");
    assert.equal((await sh(aether, "web", "cat /sys/block/vda/serial")).trim(), "data1", "the guest sees the disk");
    await rejectsWith(
      aether.vm.createVmSnapshot({ vm: "web", name: "live" }),
      Code.FailedPrecondition,
      /data lives in a dir pool, whose snapshots swap the file under QEMU: stop the VM/,
    );
    await sh(aether, "web", `printf ${MARKER} | dd of=/dev/vda conv=fsync 2>/dev/null`);
    assert.equal(await sh(aether, "web", `head -c ${MARKER.length} /dev/vda`), MARKER);
    await rejectsWith(
      aether.vm.rollbackVmSnapshot({ vm: "web", name: "clean" }),
      Code.FailedPrecondition,
      /stop it before rolling its disks back/,
    );
    await aether.vm.stopVm({ vm: "web" });
    const rollback = await cli("vm", "snapshot", "rollback", "web", "clean");
    assert.equal(rollback.code, 0, rollback.stderr);
    const list = await cli("vm", "snapshot", "list", "web", "-o", "json");
    assert.deepEqual(
      (JSON.parse(list.stdout) as Array<{ name: string; consistency: string }>).map((s) => [s.name, s.consistency]),
      [["clean", "stopped"]],
    );
    await aether.vm.startVm({ vm: "web" });
    await waitReady(aether, "web");
    assert.notEqual(await sh(aether, "web", `head -c ${MARKER.length} /dev/vda`), MARKER, "the write is gone");
    // Kept for the clone: the source's disk has this.
    await sh(aether, "web", `printf web-data | dd of=/dev/vda conv=fsync 2>/dev/null`);
    await aether.vm.stopVm({ vm: "web" });
    await aether.vm.deleteVmSnapshot({ vm: "web", name: "clean" });
    assert.deepEqual((await aether.vm.listVmSnapshots({ vm: "web" })).snapshots, []);
  });

  it("a clone boots on a disk of its own with a new id, MAC and TAP; it starts with aetherd after a host reboot when marked autostart", async () => {
    const { vm: source } = await aether.vm.getVm({ vm: "web" });
    const clone = await cli("vm", "clone", "web", "web2", "--start", "--wait");
    assert.equal(clone.code, 0, clone.stderr);
    const web2 = await waitReady(aether, "web2");
    assert.notEqual(web2.id, source?.id);
    assert.notEqual(web2.disks[0]?.resolvedPath, source?.disks[0]?.resolvedPath, "its own volume");
    assert.equal((await sh(aether, "web2", "hostname")).trim(), "web2");
    assert.equal(await sh(aether, "web2", "head -c 8 /dev/vda"), "web-data", "the clone has the source's data");
    assert.equal((await aether.vm.getVm({ vm: "web" })).vm?.state, vmApi.VmState.STOPPED, "the source stays stopped");

    // A host reboot: aetherd and every QEMU gone; web2 is marked autostart, web is not.
    const on = await cli("vm", "autostart", "web2", "on");
    assert.equal(on.code, 0, on.stderr);
    aether.close();
    await daemon.kill9();
    process.kill(web2.pid, "SIGKILL");
    await eventually(() => (isRunning(web2.pid) ? undefined : true), 10_000, "web2's QEMU to end");
    daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    // Autostart runs once aetherd answers: web2 leaves STOPPED (its QEMU was gone), then boots.
    await eventually(
      async () => ((await aether.vm.getVm({ vm: "web2" })).vm?.state !== vmApi.VmState.STOPPED ? true : undefined),
      20_000,
      "web2 to be autostarted",
    );
    const back = await waitReady(aether, "web2");
    assert.notEqual(back.pid, web2.pid);
    assert.ok(back.autostart);
    assert.equal((await aether.vm.getVm({ vm: "web" })).vm?.state, vmApi.VmState.STOPPED, "web is not marked autostart");

    // A VM stopped by its operator stays stopped when only aetherd restarts (the same boot of the host)...
    await aether.vm.stopVm({ vm: "web2" });
    aether.close();
    await daemon.kill9();
    daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    await eventually(() => (daemon.log().includes('"msg":"autostart checked"') ? true : undefined), 20_000, "aetherd's autostart");
    assert.equal((await aether.vm.getVm({ vm: "web2" })).vm?.state, vmApi.VmState.STOPPED);
    // ...and starts at the first start of aetherd after a host reboot (a boot id aetherd has not seen).
    aether.close();
    await daemon.kill9();
    writeFileSync(join(daemon.stateDir, "vm-autostart.json"), JSON.stringify({ bootId: "an-earlier-boot" }));
    daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    await eventually(
      async () => ((await aether.vm.getVm({ vm: "web2" })).vm?.state !== vmApi.VmState.STOPPED ? true : undefined),
      20_000,
      "web2 to be autostarted after the host reboot",
    );
    await waitReady(aether, "web2");
    assert.equal(
      JSON.parse(readFileSync(join(daemon.stateDir, "vm-autostart.json"), "utf8")).bootId,
      readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(),
    );
  });
});
