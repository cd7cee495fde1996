// Hostile cases for VMs (issue 22): a tenant over mTLS cannot boot host files or join host bridges;
// long names do not share a cell; a create that cannot start leaves nothing (and no supervisor
// records); a QEMU aetherd cannot talk to is still stopped, deleted and holds its volume; a kill -9 of
// aetherd in the middle of `create --start` is finished or undone by the next aetherd.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, connect, vm as vmApi, type AetherClient } from "@aether/sdk";
import { VolumeFormat } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { eventually, isRunning, startDaemon, useDaemon, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";
import { freePort } from "./helpers/net.js";
import { createCa } from "./helpers/pki.js";

const MiB = 1024n * 1024n;
const SEEDS = "/dev/shm/aether-seeds";

function kernelBoot(kernelPath = guestImage().kernel, initrdPath = guestImage().initrd) {
  return { source: { case: "kernel" as const, value: { kernelPath, initrdPath, cmdline: "quiet" } } };
}

/** A VM that counts as running once QEMU answers (no guest agent to wait for). */
const quick = { acceleration: vmApi.Acceleration.TCG, vcpus: 1, memoryBytes: 128n * MiB, guestAgent: false };

function qemuProcesses(name: string): number[] {
  try {
    return execFileSync("pgrep", ["-f", `aether-vm-${name}(,|$| )`], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** The supervisor records of hypervisor processes: which VM (label) and the QEMU command line's -name. */
function processRecords(d: TestDaemon): Array<{ vm: string; name: string }> {
  const dir = join(d.stateDir, "vms", "executables");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((e) => {
    const spec = JSON.parse(readFileSync(join(dir, e, "record.json"), "utf8")) as { labels: Record<string, string>; argv: string[] };
    return { vm: spec.labels["aether.io/vm"] ?? "", name: /process=aether-vm-([^,\s]+)/.exec(spec.argv.join(" "))?.[1] ?? "" };
  });
}

/** Everything a VM (by name and id) may leave on the host. */
async function leftovers(d: TestDaemon, aether: AetherClient, name: string, id: string, taps: string[] = []): Promise<string[]> {
  const found: string[] = [];
  if (qemuProcesses(name).length > 0) found.push(`QEMU process of ${name}`);
  for (const t of taps) if (existsSync(`/sys/class/net/${t}`)) found.push(`TAP ${t}`);
  // Each aetherd's seeds are in a folder of their own below SEEDS (one per state folder).
  if (id !== "" && existsSync(SEEDS) && readdirSync(SEEDS, { recursive: true }).some((f) => basename(String(f)).startsWith(id)))
    found.push("cloud-init seed");
  if (id !== "" && existsSync(join(d.stateDir, "vms", id))) found.push("VM folder");
  const { cells } = await aether.cells.listCells({ pageSize: 1000 });
  for (const c of cells.filter((x) => x.labels["aether.io/vm"] === id || x.name.includes(name))) found.push(`cell ${c.name}`);
  const records = processRecords(d).filter((r) => r.vm === id || r.name === name);
  if (records.length > 0) found.push(`${records.length} hypervisor process record(s)`);
  return found;
}

async function waitState(aether: AetherClient, name: string, state: vmApi.VmState, timeoutMs = 60_000): Promise<vmApi.Vm> {
  return eventually(
    async () => {
      const { vm } = await aether.vm.getVm({ vm: name });
      return vm?.state === state ? vm : undefined;
    },
    timeoutMs,
    `VM ${name} to be ${vmApi.VmState[state]}`,
  );
}

describe("hostile VMs: one aetherd", () => {
  const env = useDaemon();
  const junkDir = mkdtempSync(join(tmpdir(), "aether-junk-kernel-"));
  const junkKernel = join(junkDir, "vmlinuz");
  before(() => writeFileSync(junkKernel, "this is not a kernel\n".repeat(64)));
  after(() => rmSync(junkDir, { recursive: true, force: true }));

  it("13: two VMs whose names share their first 62 characters get cells of their own (named from their ids)", async () => {
    const prefix = "a".repeat(60);
    const names = [`${prefix}-x1`, `${prefix}-x2`];
    const vms = [];
    for (const name of names) vms.push((await env.aether.vm.createVm({ ...quick, name, boot: kernelBoot(), start: true })).vm as vmApi.Vm);
    const { cells } = await env.aether.cells.listCells({ pageSize: 1000 });
    for (const v of vms) {
      const own = cells.filter((c) => c.labels["aether.io/vm"] === v.id);
      assert.equal(own.length, 1, `a cell for ${v.name}`);
      assert.equal(own[0]?.name, `vm-${v.id}`);
    }
    for (const v of vms) {
      await env.aether.vm.deleteVm({ vm: v.id, force: true });
      assert.deepEqual(await leftovers(env.daemon, env.aether, v.name, v.id), []);
    }
  });

  it("12 and 11: a create with start that cannot start leaves no VM, seed, cell or process record; a retry is not ALREADY_EXISTS", async () => {
    const request = {
      ...quick,
      name: "nostart",
      boot: kernelBoot(junkKernel, ""),
      cloudInit: { userData: "#!/bin/sh\ntrue\n" },
      start: true,
    };
    const err = await env.aether.vm.createVm(request).then(
      () => assert.fail("a junk kernel cannot start"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.match(err.rawMessage, /^VM nostart was not created, because it could not start: .*QEMU/, "the error says why");
    await rejectsWith(env.aether.vm.getVm({ vm: "nostart" }), Code.NotFound, /no VM/);
    assert.deepEqual(await leftovers(env.daemon, env.aether, "nostart", ""), []);
    assert.deepEqual(
      readdirSync(join(env.daemon.stateDir, "vms")).filter((f) => f !== "executables"),
      [],
      "no VM record",
    );
    const { vm } = await env.aether.vm.createVm({ ...request, boot: kernelBoot() });
    assert.ok(vm?.state === vmApi.VmState.STARTING || vm?.state === vmApi.VmState.RUNNING, "the retry creates and starts the VM");
    await env.aether.vm.deleteVm({ vm: "nostart", force: true });
    assert.deepEqual(await leftovers(env.daemon, env.aether, "nostart", vm?.id ?? ""), []);
  });

  it("11: failed starts leave no supervisor records behind", async () => {
    const { vm } = await env.aether.vm.createVm({ ...quick, name: "badkernel", boot: kernelBoot(junkKernel, "") });
    for (let i = 0; i < 3; i++) await rejectsWith(env.aether.vm.startVm({ vm: "badkernel" }), Code.FailedPrecondition, /QEMU/);
    assert.deepEqual(
      processRecords(env.daemon).filter((r) => r.vm === vm?.id),
      [],
      "no record per failed launch",
    );
    await env.aether.vm.deleteVm({ vm: "badkernel" });
    assert.deepEqual(await leftovers(env.daemon, env.aether, "badkernel", vm?.id ?? ""), []);
  });
});

describe("hostile VMs: tenants over mTLS", () => {
  let daemon: TestDaemon;
  let admin: AetherClient;
  let alice: AetherClient; // tenant a
  const dir = mkdtempSync(join(tmpdir(), "aether-hostile-vm-"));
  const kroot = join(dir, "kernels");

  before(async () => {
    const ca = createCa("cluster-ca", join(dir));
    const server = ca.issue("aetherd", { server: true });
    const port = await freePort();
    execFileSync("mkdir", ["-p", kroot]);
    copyFileSync(guestImage().kernel, join(kroot, "vmlinuz"));
    copyFileSync(guestImage().initrd, join(kroot, "initrd"));
    symlinkSync("/etc/shadow", join(kroot, "shadow-link"));
    const config = join(dir, "aetherd.toml");
    writeFileSync(config, `[tenancy]\nkernel_roots = ["${kroot}"]\n[tenancy.networks]\na = ["brha0"]\n`);
    daemon = await startDaemon({
      args: [
        "--config",
        config,
        "--listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
      ],
    });
    admin = await daemon.client();
    const pair = ca.issue("alice", { uri: "spiffe://test/tenant/a/user/alice" });
    alice = await connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, cert: pair.cert, key: pair.key } });
  });
  after(async () => {
    alice?.close();
    if (daemon) {
      assert.equal(await daemon.stop(), 0);
      daemon.cleanup();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("4: a tenant's kernel and initrd lie below [tenancy] kernel_roots, and whether a host file exists is not revealed", async () => {
    const refusal = async (kernelPath: string, initrdPath = "") => {
      const err = await alice.vm.createVm({ ...quick, name: "peek", boot: kernelBoot(kernelPath, initrdPath) }).then(
        () => assert.fail(`${kernelPath} / ${initrdPath} was accepted`),
        (e: unknown) => ConnectError.from(e),
      );
      assert.equal(err.code, Code.PermissionDenied, err.rawMessage);
      return err.rawMessage.replace(/"[^"]*"/, "PATH");
    };
    const shadow = await refusal("/etc/shadow");
    assert.match(shadow, /kernel_roots/);
    assert.equal(await refusal("/etc/no-such-file-here"), shadow, "the same sentence whether the file exists or not");
    assert.equal(await refusal("/root/.no-such-secret"), shadow);
    assert.equal(await refusal(`${kroot}/../../../../etc/shadow`), shadow, "no way out by ..");
    assert.equal(await refusal(join(kroot, "shadow-link")), shadow, "links are resolved first");
    assert.equal(await refusal(join(kroot, "missing")), shadow);
    assert.match(await refusal(join(kroot, "vmlinuz"), "/etc/shadow"), /initrd_path PATH/);
    const { vm } = await alice.vm.createVm({
      ...quick,
      name: "published",
      boot: kernelBoot(join(kroot, "vmlinuz"), join(kroot, "initrd")),
    });
    assert.equal(vm?.tenant, "a");
    await alice.vm.deleteVm({ vm: "published" });
    // A cluster-wide caller is not bound by it.
    await admin.vm.createVm({ ...quick, name: "operator", boot: kernelBoot("/etc/hostname", "") });
    await admin.vm.deleteVm({ vm: "operator" });
  });

  it("4: a tenant's NIC joins only its tenant's networks, and cannot name a host device as its TAP", async () => {
    await rejectsWith(
      alice.vm.createVm({
        ...quick,
        name: "nic",
        boot: kernelBoot(join(kroot, "vmlinuz"), join(kroot, "initrd")),
        nics: [{ bridge: "br0" }],
      }),
      Code.PermissionDenied,
      /br0.*not a network tenant a may join; its networks are brha0/,
    );
    await rejectsWith(
      alice.vm.createVm({
        ...quick,
        name: "nic",
        boot: kernelBoot(join(kroot, "vmlinuz"), join(kroot, "initrd")),
        nics: [{ bridge: "brha0", tapDevice: "eth0" }],
      }),
      Code.PermissionDenied,
      /tap_device/,
    );
    const { vm } = await alice.vm.createVm({
      ...quick,
      name: "nic",
      boot: kernelBoot(join(kroot, "vmlinuz"), join(kroot, "initrd")),
      nics: [{ bridge: "brha0" }],
    });
    assert.equal(vm?.nics[0]?.bridge, "brha0");
    await alice.vm.deleteVm({ vm: "nic" });
    const { vms } = await admin.vm.listVms({ tenant: "a" });
    assert.deepEqual(vms, [], "nothing of tenant a is left");
  });
});

describe("hostile VMs: QEMU that aetherd cannot reach, and kill -9 of aetherd mid-create", () => {
  const bridge = `aehb${process.pid % 100000}`;
  before(() => execFileSync("ip", ["link", "add", bridge, "type", "bridge"]));
  after(() => execFileSync("ip", ["link", "delete", bridge]));

  it("8: a VM whose QMP socket is gone is not FAILED while its QEMU lives: stop and delete --force end it, and its volume cannot be deleted meanwhile", async () => {
    let daemon = await startDaemon();
    let aether = await daemon.client();
    try {
      for (const name of ["vol-stop", "vol-del"]) {
        await aether.storage.createVolume({ name, format: VolumeFormat.RAW, source: { case: "empty", value: { sizeBytes: 8n * MiB } } });
      }
      const started = [];
      for (const name of ["mute-stop", "mute-del"]) {
        const volume = name === "mute-stop" ? "vol-stop" : "vol-del";
        await aether.vm.createVm({
          ...quick,
          name,
          boot: kernelBoot(),
          disks: [{ source: { case: "volume", value: volume }, serial: "data" }],
          start: true,
        });
        started.push(await waitState(aether, name, vmApi.VmState.RUNNING));
      }
      await daemon.kill9();
      // QEMU keeps running, but nobody can reach its QMP socket any more.
      for (const v of started) rmSync(v.qmpSocketPath);
      daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
      aether = await daemon.client();
      for (const v of started) {
        const { vm } = await aether.vm.getVm({ vm: v.name });
        assert.equal(vm?.state, vmApi.VmState.RUNNING, `${v.name} is not FAILED: ${vm?.stateReason}`);
        assert.match(vm?.stateReason ?? "", /cannot reach this VM's QMP socket.*tries again/);
        assert.equal(vm?.pid, v.pid, "the same QEMU, still managed");
        assert.ok(isRunning(v.pid));
      }
      await rejectsWith(aether.storage.deleteVolume({ volume: "vol-stop" }), Code.FailedPrecondition, /attached to VM/);
      await rejectsWith(aether.vm.startVm({ vm: "mute-stop" }), Code.FailedPrecondition, /running/);
      const { vm: stopped } = await aether.vm.stopVm({ vm: "mute-stop", timeout: { seconds: 5n } });
      assert.equal(stopped?.state, vmApi.VmState.STOPPED);
      assert.equal(isRunning(started[0]?.pid ?? 0), false, "its QEMU was killed");
      await aether.vm.deleteVm({ vm: "mute-del", force: true });
      assert.equal(isRunning(started[1]?.pid ?? 0), false, "delete --force killed its QEMU");
      await aether.storage.deleteVolume({ volume: "vol-del" });
      await aether.vm.deleteVm({ vm: "mute-stop" });
      await aether.storage.deleteVolume({ volume: "vol-stop" });
      for (const v of started) assert.deepEqual(await leftovers(daemon, aether, v.name, v.id), []);
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });

  /** kill -9 of aetherd once `when` sees the create get that far; the next aetherd must leave nothing half-done. */
  async function crashDuringCreate(name: string, when: (d: TestDaemon, vmId: string) => boolean): Promise<void> {
    let daemon = await startDaemon();
    let aether = await daemon.client();
    try {
      const creating = aether.vm
        .createVm({ ...quick, name, boot: kernelBoot(), cloudInit: { userData: "#!/bin/sh\ntrue\n" }, nics: [{ bridge }], start: true })
        .catch(() => undefined);
      const vmsDir = join(daemon.stateDir, "vms");
      const id = await eventually(
        () => (existsSync(vmsDir) ? readdirSync(vmsDir).find((f) => f !== "executables") : undefined),
        30_000,
        "the VM's record",
      );
      const d = daemon;
      await eventually(() => (when(d, id) ? true : undefined), 30_000, "the create to get that far");
      await daemon.kill9();
      await creating;
      const tap = `ae${id.replace(/-/g, "").slice(0, 8)}n0`;
      daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
      aether = await daemon.client();
      const { vms } = await aether.vm.listVms({});
      for (const v of vms) {
        // Finished (its start got recorded) or undone: never CREATED with a QEMU of its own running.
        assert.notEqual(v.state, vmApi.VmState.CREATED, `${v.name}: ${v.stateReason}`);
        await aether.vm.deleteVm({ vm: v.id, force: true });
      }
      assert.deepEqual(await leftovers(daemon, aether, name, id, [tap]), []);
      // The name is free and the host clean: the same create works now.
      const { vm } = await aether.vm.createVm({ ...quick, name, boot: kernelBoot(), nics: [{ bridge }], start: true });
      await aether.vm.deleteVm({ vm: name, force: true });
      assert.deepEqual(await leftovers(daemon, aether, name, vm?.id ?? "", [tap]), []);
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  }

  it("7: kill -9 of aetherd after the seed, TAP and cell exist, before QEMU", async () => {
    await crashDuringCreate(
      "crash-cell",
      (d) => existsSync(join(d.stateDir, "cells")) && readdirSync(join(d.stateDir, "cells")).length > 0,
    );
  });

  it("7: kill -9 of aetherd once QEMU runs", async () => {
    await crashDuringCreate("crash-qemu", () => qemuProcesses("crash-qemu").length > 0);
  });
});
