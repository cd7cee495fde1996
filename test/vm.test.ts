// Real VMs under TCG: a microVM and a persistent VM boot the project's guest, run commands through the
// guest agent, read their cloud-init script's result, survive kill -9 of aetherd, ping each other on
// a bridge, and are deleted with nothing left behind. Bad input fails clearly and leaks nothing.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, observe, vm as vmApi, type AetherClient } from "@aether/sdk";
import { eventually, isRunning, startDaemon, useDaemon, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function kernelBoot(cmdline = "quiet") {
  const g = guestImage();
  return { source: { case: "kernel" as const, value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline } } };
}

async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 90n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  return last as vmApi.Vm;
}

/** QEMU processes whose command line names this VM. */
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

function leftovers(d: TestDaemon, v: vmApi.Vm): string[] {
  const found: string[] = [];
  if (qemuProcesses(v.name).length > 0) found.push(`QEMU process of ${v.name}`);
  for (const n of v.nics) if (existsSync(`/sys/class/net/${n.tapDevice}`)) found.push(`TAP ${n.tapDevice}`);
  for (const p of [v.qmpSocketPath, v.agentSocketPath]) if (p && existsSync(p)) found.push(`socket ${p}`);
  if (existsSync(`/dev/shm/aether-seeds/${v.id}.iso`)) found.push("cloud-init seed");
  if (existsSync(join(d.stateDir, "vms", v.id))) found.push("VM folder");
  return found;
}

describe("VMs", () => {
  // KVM exists here but nested KVM hangs guests: `auto` must find that out with a probe guest.
  const env = useDaemon({ args: ["--kvm-probe-timeout-ms", "4000"] });

  it("an ephemeral microVM and a persistent VM boot, run commands, read their cloud-init result, and go away without a trace", async () => {
    const disk = join(mkdtempSync(join(tmpdir(), "aether-disk-")), "data.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]);
    const common = {
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: kernelBoot(),
      cloudInit: { userData: '#!/bin/sh\necho "first boot of $(hostname)" > /run/first-boot-result\n' },
      start: true,
    };
    const micro = (
      await env.aether.vm.createVm({ ...common, acceleration: vmApi.Acceleration.AUTO, name: "micro", profile: vmApi.VmProfile.EPHEMERAL })
    ).vm;
    const big = (
      await env.aether.vm.createVm({
        ...common,
        name: "persist",
        profile: vmApi.VmProfile.PERSISTENT,
        disks: [{ source: { case: "hostPath", value: disk }, serial: "data1" }],
      })
    ).vm;
    assert.equal(micro?.state, vmApi.VmState.STARTING, "Create with start returns at once");
    for (const v of [micro, big]) {
      const ready = await waitReady(env.aether, v?.name ?? "");
      assert.equal(ready.hypervisor, vmApi.Hypervisor.QEMU, "QEMU runs it (no firecracker binary here)");
      const kvmBoots = ready.effectiveAcceleration === vmApi.Acceleration.KVM;
      assert.equal(
        ready.effectiveAcceleration,
        kvmBoots && ready.name === "micro" ? vmApi.Acceleration.KVM : vmApi.Acceleration.TCG,
        "auto chose what really boots",
      );
      assert.ok(ready.agentReady);
      assert.ok(ready.pid > 0);
      const r = await env.aether.vm.execVm({
        vm: ready.name,
        argv: ["/bin/sh", "-c", "cat /run/first-boot-result; ls /sys/block | tr '\\n' ' '; exit 3"],
      });
      assert.equal(r.exitCode, 3);
      const [line, blocks] = text(r.stdout).split("\n");
      assert.equal(line, `first boot of ${ready.name}`);
      assert.match(blocks ?? "", /vda/);
    }
    // The persistent VM's disk is the qcow2 file (serial data1), the seed comes after it.
    const serial = await env.aether.vm.execVm({ vm: "persist", argv: ["/bin/cat", "/sys/block/vda/serial"] });
    assert.equal(text(serial.stdout).trim(), "data1");

    const console = await (async () => {
      let out = "";
      for await (const c of env.aether.vm.streamConsole({ vm: "micro" })) out += text(c.data);
      return out;
    })();
    assert.match(console, /aether-guest: ready/);
    let observed = "";
    for await (const c of env.aether.observe.streamLogs({ source: observe.LogSource.VM_CONSOLE, target: "micro", tailLines: 20 }))
      observed += text(c.data);
    assert.match(observed, /aether-guest: ready/, "ObserveService streams VM consoles too");

    for (const v of [micro, big]) {
      const { vm: stopped } = await env.aether.vm.stopVm({ vm: v?.name ?? "", timeout: { seconds: 30n } });
      assert.equal(stopped?.state, vmApi.VmState.STOPPED);
      assert.equal(stopped?.stateReason, "stopped on request", "the guest powered off when asked");
      await env.aether.vm.deleteVm({ vm: v?.name ?? "" });
      assert.deepEqual(leftovers(env.daemon, v as vmApi.Vm), []);
    }
    assert.ok(existsSync(disk), "a host disk is the user's: delete leaves it");
  });

  it("pause and resume through QMP; stop by force; a VM gets a cell of its own for its limits", async () => {
    await env.aether.vm.createVm({
      name: "pauser",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 160n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: kernelBoot(),
      start: true,
    });
    const pauser = await waitReady(env.aether, "pauser");
    const { cells } = await env.aether.cells.listCells({});
    const own = cells.find((c) => c.name === `vm-${pauser.id}`);
    assert.ok(own, "a cell for the VM");
    assert.equal(own.limits?.memoryMaxBytes, 160n * MiB + 384n * MiB);
    assert.equal(own.processCount, 1, "QEMU runs in it");
    assert.equal((await env.aether.vm.pauseVm({ vm: "pauser" })).vm?.state, vmApi.VmState.PAUSED);
    await rejectsWith(
      env.aether.vm.execVm({ vm: "pauser", argv: ["/bin/true"] }),
      Code.FailedPrecondition,
      /paused; Exec needs a running VM/,
    );
    assert.equal((await env.aether.vm.resumeVm({ vm: "pauser" })).vm?.state, vmApi.VmState.RUNNING);

    // The interactive console: type into the guest's shell, read its answer.
    const abort = new AbortController();
    const typed = (async function* () {
      yield { vm: "pauser", input: new TextEncoder().encode("\necho console-$((6*7))\n") };
      await new Promise((r) => setTimeout(r, 30_000));
    })();
    let seen = "";
    try {
      for await (const out of env.aether.vm.attachConsole(typed, { signal: abort.signal })) {
        seen += text(out.output);
        if (seen.includes("console-42")) abort.abort();
      }
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    }
    assert.match(seen, /console-42/);
    const { vm: stopped } = await env.aether.vm.stopVm({ vm: "pauser", force: true });
    assert.equal(stopped?.state, vmApi.VmState.STOPPED);
    assert.equal(
      (await env.aether.cells.listCells({})).cells.some((c) => c.name === `vm-${pauser.id}`),
      false,
      "its cell went with it",
    );
    await env.aether.vm.deleteVm({ vm: "pauser" });
  });

  it("a guest that never becomes ready is failed by the boot watchdog, with its last console lines", async () => {
    // rdinit=/bin/sh: the kernel boots into a shell, so the guest agent never starts.
    const { vm: v } = await env.aether.vm.createVm({
      name: "silent",
      acceleration: vmApi.Acceleration.TCG,
      guestAgent: true,
      vcpus: 1,
      boot: kernelBoot("rdinit=/bin/busybox sh"),
      bootWatchdogTimeout: { seconds: 8n },
      start: true,
    });
    let last: vmApi.Vm | undefined;
    for await (const r of env.aether.vm.waitVmReady({ vm: "silent", timeout: { seconds: 60n } })) last = r.vm;
    assert.equal(last?.state, vmApi.VmState.FAILED);
    assert.match(last?.stateReason ?? "", /did not become ready within 8000 ms \(boot watchdog\); last console lines: .+/);
    await eventually(() => (qemuProcesses("silent").length === 0 ? true : undefined), 10_000, "QEMU to be gone");
    await env.aether.vm.deleteVm({ vm: "silent" });
    assert.deepEqual(leftovers(env.daemon, v as vmApi.Vm), []);
  });

  it("a guest whose kernel panics (no root file system to boot) is FAILED with the kernel's own words", async () => {
    const boot = { source: { case: "kernel" as const, value: { kernelPath: guestImage().kernel, initrdPath: "", cmdline: "" } } };
    await env.aether.vm.createVm({
      name: "starved",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot,
      start: true,
    });
    let last: vmApi.Vm | undefined;
    for await (const r of env.aether.vm.waitVmReady({ vm: "starved", timeout: { seconds: 120n } })) last = r.vm;
    assert.equal(last?.state, vmApi.VmState.FAILED);
    assert.match(last?.stateReason ?? "", /the guest kernel panicked \(Kernel panic - not syncing: VFS: Unable to mount root fs.*\)/);
    await env.aether.vm.deleteVm({ vm: "starved" });
  });

  it("a QEMU that crashes mid-run leaves the VM FAILED with the reason, and nothing behind", async () => {
    const { vm: v } = await env.aether.vm.createVm({
      name: "crashy",
      acceleration: vmApi.Acceleration.TCG,
      vcpus: 1,
      guestAgent: true,
      boot: kernelBoot(),
      start: true,
    });
    const ready = await waitReady(env.aether, "crashy");
    process.kill(ready.pid, "SIGKILL");
    const failed = await eventually(
      async () => {
        const { vm: now } = await env.aether.vm.getVm({ vm: "crashy" });
        return now?.state === vmApi.VmState.FAILED ? now : undefined;
      },
      10_000,
      "the VM to be FAILED",
    );
    assert.match(failed.stateReason, /QEMU was killed by SIGKILL/);
    await env.aether.vm.deleteVm({ vm: "crashy" });
    assert.deepEqual(leftovers(env.daemon, v as vmApi.Vm), []);
  });

  describe("bad input", () => {
    const base = { acceleration: vmApi.Acceleration.TCG, vcpus: 1, guestAgent: true };
    const cases: Array<[string, () => Promise<unknown>, Code, RegExp]> = [
      [
        "missing kernel",
        () =>
          env.aether.vm.createVm({
            ...base,
            name: "nokernel",
            boot: { source: { case: "kernel", value: { kernelPath: "/no/vmlinuz", initrdPath: "", cmdline: "" } } },
            start: true,
          }),
        Code.FailedPrecondition,
        /\/no\/vmlinuz does not exist/,
      ],
      [
        "relative kernel path",
        () =>
          env.aether.vm.createVm({
            ...base,
            name: "relk",
            boot: { source: { case: "kernel", value: { kernelPath: "vmlinuz", initrdPath: "", cmdline: "" } } },
          }),
        Code.InvalidArgument,
        /not an absolute path/,
      ],
      ["no boot source", () => env.aether.vm.createVm({ ...base, name: "noboot" }), Code.InvalidArgument, /boot is required/],
      [
        "memory below the guest minimum",
        () => env.aether.vm.createVm({ ...base, name: "tiny", memoryBytes: 16n * MiB, boot: kernelBoot() }),
        Code.InvalidArgument,
        /below the guest minimum of 64 MiB/,
      ],
      [
        "memory above the host's",
        () => env.aether.vm.createVm({ ...base, name: "huge", memoryBytes: 1n << 50n, boot: kernelBoot() }),
        Code.FailedPrecondition,
        /more than this host has/,
      ],
      [
        "0 vCPUs",
        () => env.aether.vm.createVm({ ...base, vcpus: 0, name: "zero", boot: kernelBoot() }),
        Code.InvalidArgument,
        /vcpus is 0/,
      ],
      [
        "bad name",
        () => env.aether.vm.createVm({ ...base, name: "Bad_Name", boot: kernelBoot() }),
        Code.InvalidArgument,
        /not a valid name/,
      ],
      [
        "bridge that does not exist",
        () => env.aether.vm.createVm({ ...base, name: "nobridge", boot: kernelBoot(), nics: [{ bridge: "nosuchbr0" }], start: true }),
        Code.FailedPrecondition,
        /bridge nosuchbr0 does not exist/,
      ],
      ["unknown VM", () => env.aether.vm.getVm({ vm: "ghost" }), Code.NotFound, /no VM with id or name "ghost"/],
    ];
    for (const [what, call, code, pattern] of cases) {
      it(what, async () => {
        await rejectsWith(call(), code, pattern);
      });
    }

    it("a duplicate name; Start of a running VM; Exec without an agent", async () => {
      await env.aether.vm.createVm({ ...base, guestAgent: false, name: "noagent", boot: kernelBoot(), start: true });
      await rejectsWith(env.aether.vm.createVm({ ...base, name: "noagent", boot: kernelBoot() }), Code.AlreadyExists, /already exists/);
      await rejectsWith(
        env.aether.vm.startVm({ vm: "noagent" }),
        Code.FailedPrecondition,
        /only a created, stopped or failed VM can be started/,
      );
      await rejectsWith(env.aether.vm.execVm({ vm: "noagent", argv: ["/bin/true"] }), Code.FailedPrecondition, /has no guest agent/);
      await rejectsWith(env.aether.vm.deleteVm({ vm: "noagent" }), Code.FailedPrecondition, /stop it first, or delete with force/);
      await env.aether.vm.deleteVm({ vm: "noagent", force: true });
    });

    it("leftovers of failed creates: none", async () => {
      const { vms } = await env.aether.vm.listVms({});
      const failedNames = ["nokernel", "nobridge"];
      for (const v of vms.filter((x) => failedNames.includes(x.name))) {
        assert.notEqual(v.state, vmApi.VmState.RUNNING);
        assert.deepEqual(qemuProcesses(v.name), []);
        await env.aether.vm.deleteVm({ vm: v.id });
      }
      assert.deepEqual(
        readdirSync("/dev/shm/aether-seeds").filter((f) => vms.some((v) => f.startsWith(v.id))),
        [],
      );
    });
  });
});

describe("VMs survive kill -9 of aetherd", () => {
  it("a running VM is re-adopted through its QMP socket; one whose QEMU died meanwhile is STOPPED with the reason", async () => {
    let daemon = await startDaemon();
    let aether = await daemon.client();
    const spec = { acceleration: vmApi.Acceleration.TCG, vcpus: 1, guestAgent: true, boot: kernelBoot(), start: true };
    await aether.vm.createVm({ ...spec, name: "keeper" });
    await aether.vm.createVm({ ...spec, name: "goner" });
    const keeper = await waitReady(aether, "keeper");
    const goner = await waitReady(aether, "goner");
    await daemon.kill9();
    assert.ok(isRunning(keeper.pid), "QEMU outlived aetherd");
    process.kill(goner.pid, "SIGKILL");
    await eventually(() => (isRunning(goner.pid) ? undefined : true));
    daemon = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    try {
      const { vm: k } = await aether.vm.getVm({ vm: "keeper" });
      assert.equal(k?.state, vmApi.VmState.RUNNING);
      assert.equal(k?.pid, keeper.pid, "the same QEMU");
      const r = await aether.vm.execVm({ vm: "keeper", argv: ["/bin/echo", "still here"] });
      assert.equal(text(r.stdout), "still here\n");
      const { vm: g } = await aether.vm.getVm({ vm: "goner" });
      assert.equal(g?.state, vmApi.VmState.STOPPED);
      assert.match(g?.stateReason ?? "", /QEMU process was killed by SIGKILL while aetherd was not running/);
      await aether.vm.stopVm({ vm: "keeper", force: true });
      for (const v of [k, g]) {
        await aether.vm.deleteVm({ vm: v?.id ?? "" });
        assert.deepEqual(leftovers(daemon, v as vmApi.Vm), []);
      }
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});

describe("VM networking", () => {
  const ns = `aethervm${process.pid}`;
  let daemon: TestDaemon;
  let aether: AetherClient;
  before(async () => {
    execFileSync("ip", ["netns", "add", ns]);
    execFileSync("ip", ["-n", ns, "link", "add", "br0", "type", "bridge"]);
    execFileSync("ip", ["-n", ns, "link", "set", "br0", "up"]);
    execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
    daemon = await startDaemon({ netns: ns });
    aether = await daemon.client();
  });
  after(async () => {
    await aether.vm.listVms({}).then(async ({ vms }) => {
      for (const v of vms) await aether.vm.deleteVm({ vm: v.id, force: true }).catch(() => undefined);
    });
    await daemon.stop();
    daemon.cleanup();
    execFileSync("ip", ["netns", "delete", ns]);
    rmSync(`/var/run/netns/${ns}`, { force: true });
  });

  it("two VMs on one bridge ping each other; their TAPs are named after them, MACs stable, removed on stop", async () => {
    const make = (name: string, ip: string) =>
      aether.vm.createVm({
        name,
        acceleration: vmApi.Acceleration.TCG,
        vcpus: 1,
        guestAgent: true,
        boot: kernelBoot(`quiet aether.ip=${ip}/24`),
        nics: [{ bridge: "br0" }],
        start: true,
      });
    const a = (await make("left", "10.250.0.2")).vm;
    const b = (await make("right", "10.250.0.3")).vm;
    assert.match(a?.nics[0]?.tapDevice ?? "", /^ae[0-9a-f]{8}n0$/);
    assert.match(a?.nics[0]?.mac ?? "", /^52:54:00(:[0-9a-f]{2}){3}$/);
    const links = execFileSync("ip", ["-n", ns, "-o", "link", "show", "master", "br0"], { encoding: "utf8" });
    assert.ok(links.includes(a?.nics[0]?.tapDevice ?? "?") && links.includes(b?.nics[0]?.tapDevice ?? "?"), "both TAPs on the bridge");
    await waitReady(aether, "left");
    await waitReady(aether, "right");
    const ping = await aether.vm.execVm({ vm: "left", argv: ["/bin/ping", "-c", "3", "-W", "5", "10.250.0.3"], timeout: { seconds: 30n } });
    assert.equal(ping.exitCode, 0, text(ping.stdout) + text(ping.stderr));
    assert.match(text(ping.stdout), /3 packets transmitted, 3 packets received/);

    await aether.vm.stopVm({ vm: "left", force: true });
    assert.equal(
      execFileSync("ip", ["-n", ns, "-o", "link", "show"], { encoding: "utf8" }).includes(a?.nics[0]?.tapDevice ?? "?"),
      false,
      "its TAP is gone",
    );
    // The same VM gets the same MAC on its next start.
    await aether.vm.startVm({ vm: "left" });
    assert.equal((await aether.vm.getVm({ vm: "left" })).vm?.nics[0]?.mac, a?.nics[0]?.mac);

    // A TAP name collision is refused before anything is set up.
    execFileSync("ip", ["-n", ns, "tuntap", "add", "dev", "aec0111de0n0", "mode", "tap"]);
    await rejectsWith(
      aether.vm.createVm({
        name: "collide",
        acceleration: vmApi.Acceleration.TCG,
        vcpus: 1,
        boot: kernelBoot(),
        nics: [{ bridge: "br0", tapDevice: "aec0111de0n0" }],
        start: true,
      }),
      Code.FailedPrecondition,
      /a network device named aec0111de0n0 already exists/,
    );
  });
});
