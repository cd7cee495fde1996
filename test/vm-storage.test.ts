// VMs on volumes, for real under TCG: a VM created from an image boots its own thin clone through
// the firmware (SeaBIOS → SYSLINUX → the guest), a data volume shows up as a guest disk with the
// bytes written to it, and storage refuses what would pull a disk from under a VM.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Code, vm as vmApi, type AetherClient } from "@aether/sdk";
import { ImageState, VolumeFormat } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";
import { MiB, sha256, writePattern } from "./helpers/disks.js";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  return last as vmApi.Vm;
}

describe("VMs on volumes", () => {
  const env = useDaemon({ args: ["--kvm-probe-timeout-ms", "4000"] });
  const work = mkdtempSync(join(tmpdir(), "aether-vmvol-"));
  after(() => rmSync(work, { recursive: true, force: true }));

  it("a VM created from an image boots its own clone through the firmware, with a data volume attached", async () => {
    const s = env.aether.storage;
    const disk = guestImage().disk;
    await s.importImage({ name: "debian", source: { source: { case: "localPath", value: disk } }, sha256: sha256(disk) });
    for await (const u of s.watchImage({ image: "debian" })) assert.notEqual(u.image?.state, ImageState.FAILED, u.image?.stateReason);
    const image = (await s.getImage({ image: "debian" })).image;
    assert.equal(image?.state, ImageState.READY);

    const data = (
      await s.createVolume({ name: "data", format: VolumeFormat.RAW, source: { case: "empty", value: { sizeBytes: BigInt(16 * MiB) } } })
    ).volume;
    writePattern(data?.hostPath ?? "", "raw", MiB, 512, 0x5a);

    const created = (
      await env.aether.vm.createVm({
        name: "fromimage",
        acceleration: vmApi.Acceleration.TCG,
        memoryBytes: BigInt(192 * MiB),
        vcpus: 1,
        guestAgent: true,
        boot: { source: { case: "disk", value: { image: "debian", sizeBytes: BigInt(64 * MiB) } } },
        disks: [{ source: { case: "volume", value: "data" }, serial: "data" }],
        start: true,
      })
    ).vm;
    assert.equal(created?.boot?.source.case, "disk");
    const bootVolumeId = created?.boot?.source.case === "disk" ? created.boot.source.value.volume : "";
    const boot = (await s.getVolume({ volume: bootVolumeId })).volume;
    assert.equal(boot?.name, "fromimage-boot");
    assert.equal(boot?.backing?.parent.value, image?.id, "the boot disk is a clone of the image");
    assert.equal(boot?.sizeBytes, BigInt(64 * MiB));
    assert.deepEqual(boot?.usedBy, [created?.id]);
    assert.equal(created?.disks[0]?.source.value, data?.id);
    assert.equal(created?.disks[0]?.resolvedPath, data?.hostPath);

    const ready = await waitReady(env.aether, "fromimage");
    assert.ok(ready.agentReady);
    const console = (await env.aether.vm.getVm({ vm: "fromimage" })).vm;
    assert.ok(console);
    // vda: the boot clone (64 MiB); vdb: the data volume, with the bytes written from the host.
    const r = await env.aether.vm.execVm({
      vm: "fromimage",
      argv: [
        "/bin/sh",
        "-c",
        "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vdb/serial; echo; dd if=/dev/vdb bs=512 skip=2048 count=1 2>/dev/null | od -An -tx1 | head -1",
      ],
    });
    const [vda, vdb, serial, bytes] = text(r.stdout)
      .split("\n")
      .map((l) => l.trim());
    assert.equal(Number(vda) * 512, 64 * MiB);
    assert.equal(Number(vdb) * 512, 16 * MiB);
    assert.equal(serial, "data");
    assert.match(bytes ?? "", /^(5a ){15}5a$/);

    // Storage protects what a VM uses.
    await rejectsWith(s.deleteVolume({ volume: "data" }), Code.FailedPrecondition, /attached to VM/);
    await rejectsWith(s.deleteVolume({ volume: "fromimage-boot" }), Code.FailedPrecondition, /attached to VM/);
    await rejectsWith(s.deleteImage({ image: "debian" }), Code.FailedPrecondition, /fromimage-boot/);
    await rejectsWith(s.resizeVolume({ volume: "data", sizeBytes: BigInt(32 * MiB) }), Code.FailedPrecondition, /running VM/);
    await rejectsWith(s.snapshotVolume({ volume: "fromimage-boot" }), Code.FailedPrecondition, /running VM.*stop the VM first/);
    await rejectsWith(s.rollbackVolume({ volume: "data", snapshot: "x" }), Code.NotFound, /no snapshot/);
    // A volume is attached to one VM at a time.
    await rejectsWith(
      env.aether.vm.createVm({ name: "thief", vcpus: 1, boot: { source: { case: "disk", value: { volume: "data" } } } }),
      Code.FailedPrecondition,
      /already attached to VM/,
    );

    await env.aether.vm.deleteVm({ vm: "fromimage", force: true });
    await rejectsWith(s.getVolume({ volume: "fromimage-boot" }), Code.NotFound, /no volume/);
    const after = (await s.getVolume({ volume: "data" })).volume;
    assert.deepEqual(after?.usedBy, [], "the data volume outlives the VM");
    await s.deleteVolume({ volume: "data" });
    await s.deleteImage({ image: "debian" });
  });

  it("refuses volume mistakes at create: unknown volume, the same volume twice, both volume and image, Firecracker disk boot", async () => {
    const s = env.aether.storage;
    await s.createVolume({ name: "twice", source: { case: "empty", value: { sizeBytes: BigInt(MiB) } } });
    const g = guestImage();
    const kernel = { source: { case: "kernel" as const, value: { kernelPath: g.kernel, initrdPath: g.initrd } } };
    await rejectsWith(
      env.aether.vm.createVm({ name: "a", vcpus: 1, boot: kernel, disks: [{ source: { case: "volume", value: "nope" } }] }),
      Code.NotFound,
      /no volume .*nope/,
    );
    await rejectsWith(
      env.aether.vm.createVm({
        name: "a",
        vcpus: 1,
        boot: kernel,
        disks: [{ source: { case: "volume", value: "twice" } }, { source: { case: "volume", value: "twice" } }],
      }),
      Code.InvalidArgument,
      /attached twice/,
    );
    await rejectsWith(
      env.aether.vm.createVm({ name: "a", vcpus: 1, boot: { source: { case: "disk", value: { volume: "twice", image: "x" } } } }),
      Code.InvalidArgument,
      /exactly one of volume/,
    );
    await rejectsWith(
      env.aether.vm.createVm({ name: "a", vcpus: 1, boot: { source: { case: "disk", value: { image: "nope" } } } }),
      Code.NotFound,
      /no image/,
    );
    await rejectsWith(
      env.aether.vm.createVm({
        name: "a",
        vcpus: 1,
        hypervisor: vmApi.Hypervisor.FIRECRACKER,
        boot: { source: { case: "disk", value: { volume: "twice" } } },
      }),
      Code.InvalidArgument,
      /Firecracker boots a kernel only/,
    );
    await rejectsWith(
      env.aether.vm.createVm({ name: "a", vcpus: 1, disks: [{ source: { case: "volume", value: "twice" } }] }),
      Code.InvalidArgument,
      /boot is required/,
    );
    assert.deepEqual((await env.aether.vm.listVms({})).vms, [], "nothing was created");
    assert.deepEqual((await s.getVolume({ volume: "twice" })).volume?.usedBy, []);
    await s.deleteVolume({ volume: "twice" });
  });
});
