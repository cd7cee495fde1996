// Live migrations cut short by kill -9 of an aetherd, for real under TCG with two aetherd on this
// machine: a restarted source cancels the migration it was running (the guest runs on in the same
// QEMU, the target removes its copy); a killed target is noticed by the source before the switchover
// (the guest keeps running), and the restarted target removes the incoming copy it held. A source
// dead once it handed the state over asks the target which copy lives: the target had not resumed
// it (the guest resumes in the source's QEMU), had resumed it and it answers there (the migration
// commits, what is left on the source goes), or had committed it. A target dead while the guest runs
// there unconfirmed leaves the source paused in doubt; restarted, it removes its copy and the guest
// resumes in the source's QEMU.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { eventually, isRunning, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { bootGuest, follow, MiB, readDiskMark, sh, vmsNamed, volumesNamed, writeDiskMark } from "./helpers/migration.js";

describe("live migration: kill -9 of either aetherd", () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let source: AetherClient;
  let target: AetherClient;

  before(async () => {
    [a, b] = await Promise.all([startDaemon(), startDaemon()]);
    [source, target] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    for (const d of [a, b]) {
      if (!d) continue;
      await stopWorkloads(await d.client()).catch(() => undefined);
      assert.equal(await d.stop(), 0, "aetherd exits 0 on SIGTERM");
      d.cleanup();
    }
  });

  for (const [point, outcome, name] of [
    ["migration.switching", "source", "doubt"],
    ["migration.confirming", "target", "unsure"],
    ["migration.committed", "target", "late"],
  ] as const) {
    it(`a source aetherd dead at ${point} settles on one running copy, on the ${outcome}`, async () => {
      // The source runs with the crash point for this VM's migration only: a daemon of its own.
      await stopWorkloads(source);
      assert.equal(await a.stop(), 0);
      a = await startDaemon({ dir: join(a.stateDir, ".."), cgroupRoot: a.cgroupRoot, env: { AETHERD_CRASH_AT: point } });
      source = await a.client();
      const before = await bootGuest(source, name);
      const bootId = await sh(source, name, "cat /proc/sys/kernel/random/boot_id");
      const digest = await writeDiskMark(source, name, 0, 2);
      const { migration } = await source.vm.migrateVm({ vm: name, target: b.address });
      await follow(source, migration?.id ?? "").catch(() => undefined); // the stream ends with the source aetherd
      await eventually(() => (a.process.exitCode !== null || a.process.signalCode !== null ? true : undefined), 60_000, "the crash point");
      await a.kill9();

      a = await startDaemon({ dir: join(a.stateDir, ".."), cgroupRoot: a.cgroupRoot });
      source = await a.client();
      const [on, other] = outcome === "source" ? [source, target] : [target, source];
      const running = await eventually(
        async () => {
          const v = (await vmsNamed(on, name))[0];
          return v?.state === vmApi.VmState.RUNNING && v.agentReady && (await vmsNamed(other, name)).length === 0 ? v : undefined;
        },
        90_000,
        `one running copy of ${name}, on the ${outcome}`,
      );
      if (outcome === "source") assert.equal(running.pid, before.pid, "the guest resumed in the source's own QEMU");
      assert.equal(await sh(on, name, "cat /proc/sys/kernel/random/boot_id"), bootId, "the same guest, never rebooted");
      assert.equal(await readDiskMark(on, name, 0, 2), digest, "its disk as it wrote it");
      assert.deepEqual(await volumesNamed(other, name), [], "nothing of it on the other node");
      await on.vm.deleteVm({ vm: name, force: true });
      await on.storage.deleteVolume({ volume: `${name}-data` });
    });
  }

  it("kill -9 of the target aetherd while the guest runs there unconfirmed: the source waits paused, the restarted target removes its copy, the guest resumes on the source", async () => {
    await stopWorkloads(target);
    assert.equal(await b.stop(), 0);
    b = await startDaemon({
      dir: join(b.stateDir, ".."),
      cgroupRoot: b.cgroupRoot,
      env: { AETHERD_CRASH_AT: "migration.incoming-resumed" },
    });
    target = await b.client();
    const before = await bootGuest(source, "orphan");
    const bootId = await sh(source, "orphan", "cat /proc/sys/kernel/random/boot_id");
    const digest = await writeDiskMark(source, "orphan", 0, 2);
    const { migration } = await source.vm.migrateVm({ vm: "orphan", target: b.address });
    const last = (await follow(source, migration?.id ?? "")).at(-1);
    await eventually(() => (b.process.exitCode !== null || b.process.signalCode !== null ? true : undefined), 60_000, "the crash point");
    await b.kill9();
    assert.equal(last?.state, vmApi.MigrationState.FAILED);
    assert.match(last?.stateReason ?? "", /in doubt .*the guest stays paused here until/);
    assert.match((await source.vm.getVm({ vm: "orphan" })).vm?.stateReason ?? "", /in doubt/);

    b = await startDaemon({ dir: join(b.stateDir, ".."), cgroupRoot: b.cgroupRoot });
    target = await b.client();
    const running = await eventually(
      async () => {
        const v = (await vmsNamed(source, "orphan"))[0];
        return v?.state === vmApi.VmState.RUNNING && v.agentReady && /resumed here/.test(v.stateReason) ? v : undefined;
      },
      90_000,
      "the guest resumed on the source",
    );
    assert.equal(running.pid, before.pid, "the guest resumed in the source's own QEMU");
    assert.equal(await sh(source, "orphan", "cat /proc/sys/kernel/random/boot_id"), bootId, "the same guest, never rebooted");
    assert.equal(await readDiskMark(source, "orphan", 0, 2), digest, "its disk as it wrote it");
    assert.deepEqual(await vmsNamed(target, "orphan"), [], "no VM on the target");
    assert.deepEqual(await volumesNamed(target, "orphan"), [], "no volume on the target");
    assert.equal(existsSync(join(b.stateDir, "vms", before.id)), false, "no VM folder on the target");
    await source.vm.deleteVm({ vm: "orphan", force: true });
    await source.storage.deleteVolume({ volume: "orphan-data" });
  });

  it("kill -9 of the source aetherd mid-mirror: its restart cancels the migration, the guest runs on, the target is cleaned", async () => {
    const before = await bootGuest(source, "crashy");
    await sh(source, "crashy", "dd if=/dev/urandom of=/dev/vda bs=1M count=16 conv=fsync 2>/dev/null");
    const { migration } = await source.vm.migrateVm({ vm: "crashy", target: b.address, options: { maxBandwidthBytesPerSecond: 1n * MiB } });
    let killing: Promise<void> | undefined;
    await follow(source, migration?.id ?? "", (m) => {
      if (m.phase === vmApi.MigrationPhase.STORAGE && !killing) killing = a.kill9();
    }).catch(() => undefined); // the stream ends with the source aetherd
    await killing;
    assert.ok(isRunning(before.pid), "the guest's QEMU outlived its aetherd");
    assert.equal((await vmsNamed(target, "crashy")).length, 1, "the target held the incoming copy when the source died");

    a = await startDaemon({ dir: join(a.stateDir, ".."), cgroupRoot: a.cgroupRoot });
    source = await a.client();
    const settled = await eventually(
      async () => {
        const v = (await source.vm.getVm({ vm: "crashy" })).vm;
        return /cancelled: aetherd restarted/.test(v?.stateReason ?? "") ? v : undefined;
      },
      90_000,
      "the restarted source to settle the migration",
    );
    assert.equal(settled.state, vmApi.VmState.RUNNING);
    assert.equal(settled.pid, before.pid, "the same QEMU runs the guest");
    assert.equal(await sh(source, "crashy", "echo alive"), "alive", "the guest answers on the source");
    await eventually(async () => ((await vmsNamed(target, "crashy")).length === 0 ? true : undefined), 60_000, "the target's copy to go");
    assert.deepEqual(await volumesNamed(target, "crashy"), [], "no volume on the target");
    // The mirror is gone from the source's QEMU: a new migration works.
    const again = await source.vm.migrateVm({ vm: "crashy", target: b.address });
    assert.equal((await follow(source, again.migration?.id ?? "")).at(-1)?.state, vmApi.MigrationState.SUCCEEDED);
    await target.vm.deleteVm({ vm: "crashy", force: true });
    await target.storage.deleteVolume({ volume: "crashy-data" });
  });

  it("kill -9 of the target aetherd mid-mirror: the guest keeps running on the source; the restarted target removes its copy", async () => {
    const before = await bootGuest(source, "orphan");
    await sh(source, "orphan", "dd if=/dev/urandom of=/dev/vda bs=1M count=16 conv=fsync 2>/dev/null");
    const { migration } = await source.vm.migrateVm({
      vm: "orphan",
      target: b.address,
      options: { maxBandwidthBytesPerSecond: 1n * MiB },
    });
    let incomingPid = 0;
    let killing: Promise<void> | undefined;
    const reports = await follow(source, migration?.id ?? "", (m) => {
      if (m.phase !== vmApi.MigrationPhase.STORAGE || killing) return;
      killing = target.vm.getVm({ vm: "orphan" }).then(async ({ vm }) => {
        incomingPid = vm?.pid ?? 0;
        await b.kill9();
      });
    });
    await killing;
    const last = reports.at(-1);
    assert.ok(incomingPid > 0, "the target's QEMU ran when its aetherd was killed");
    assert.equal(last?.state, vmApi.MigrationState.FAILED);
    assert.match(last?.stateReason ?? "", /the target aetherd stopped answering/);
    const vm = (await source.vm.getVm({ vm: "orphan" })).vm;
    assert.equal(vm?.state, vmApi.VmState.RUNNING);
    assert.equal(vm?.pid, before.pid, "the same QEMU runs the guest");
    assert.equal(await sh(source, "orphan", "echo alive"), "alive", "the guest answers on the source");

    // The target's QEMU outlived its aetherd (by design); the restarted aetherd removes the incoming copy.
    assert.ok(isRunning(incomingPid), "the incoming QEMU outlived the target aetherd");
    b = await startDaemon({ dir: join(b.stateDir, ".."), cgroupRoot: b.cgroupRoot });
    target = await b.client();
    assert.deepEqual(await vmsNamed(target, "orphan"), [], "no VM on the restarted target");
    assert.deepEqual(await volumesNamed(target, "orphan"), [], "no volume on the restarted target");
    assert.equal(isRunning(incomingPid), false, "the incoming QEMU was ended");
    assert.equal(existsSync(join(b.stateDir, "vms", before.id)), false, "no VM folder on the target");

    await source.vm.deleteVm({ vm: "orphan", force: true });
    await source.storage.deleteVolume({ volume: "orphan-data" });
  });
});
