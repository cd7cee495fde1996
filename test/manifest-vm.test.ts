// VMs in node manifests (issue 15, item 4) against a real aetherd and a real TCG guest: plan says
// + create, apply creates and starts the VM (the guest boots and runs its user-data), a second
// apply changes nothing, a label edit is an update in place (the same guest keeps running), a memory
// edit is a replace (a new VM), a VM of the same name not managed by the manifest is a conflict, and
// deleting the manifest removes its VMs and their boot clones, nothing else. Invalid VM declarations
// name the field. One guest is booted and waited for; the replaced one and an image-booted one are
// not waited for.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  applyManifest,
  defineManifest,
  deleteManifest,
  ManifestError,
  MANIFEST_LABEL,
  planManifest,
  vm as vmApi,
  type ManifestInput,
  type VmDecl,
} from "@aether/sdk";
import { ImageFileFormat, ImageState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { eventually, useDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";

const TENANT = "mfvm";
const MiB = 2 ** 20;

function guestVm(overrides: Partial<VmDecl> = {}): VmDecl {
  const g = guestImage();
  return {
    name: "web",
    kernel: g.kernel,
    initrd: g.initrd,
    cmdline: "quiet",
    acceleration: "tcg",
    memory: "128M",
    userData: '#!/bin/sh\necho "made by the manifest" > /run/manifest-result\n',
    labels: { tier: "front" },
    ...overrides,
  };
}

const manifestOf = (vms: VmDecl[], extra: Partial<ManifestInput> = {}) => defineManifest({ name: "vms", tenant: TENANT, vms, ...extra });
const steps = (actions: Array<{ kind: string; resource: string; name: string }>) => actions.map((a) => `${a.kind} ${a.resource} ${a.name}`);

describe("VMs in node manifests", () => {
  const env = useDaemon();
  const dir = mkdtempSync(join(tmpdir(), "aether-manifest-vm-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const getVm = async (name: string) => (await env.aether.vm.getVm({ vm: name, tenant: TENANT })).vm as vmApi.Vm;
  /** `aetherscript plan` of a manifest script declaring these VMs, as a user reads it. */
  const scriptPlan = async (vms: VmDecl[]) => {
    const file = join(dir, `plan-${Date.now()}.ts`);
    writeFileSync(
      file,
      `import { defineManifest } from "@aether/sdk";\nexport default defineManifest(${JSON.stringify({ name: "vms", tenant: TENANT, vms })});\n`,
    );
    const r = await runCommand("aetherscript", ["plan", file], {
      cwd: "/",
      env: { AETHER_HOST: env.daemon.address },
    });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };

  it("plan says create; apply boots the guest with its user-data; applying again changes nothing", async () => {
    const plan = await scriptPlan([guestVm()]);
    assert.match(plan, /\+ create\s+vm\s+web\s+does not exist on the node; create it booting a kernel and start it/);

    const result = await applyManifest(env.aether, manifestOf([guestVm()]));
    assert.deepEqual(steps(result.applied), ["create vm web"]);
    let ready: vmApi.Vm | undefined;
    for await (const r of env.aether.vm.waitVmReady({ vm: "web", tenant: TENANT, timeout: { seconds: 120n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    assert.equal(ready?.labels[MANIFEST_LABEL], "vms");
    assert.equal(ready?.memoryBytes, BigInt(128 * MiB));
    const out = await env.aether.vm.execVm({
      vm: "web",
      tenant: TENANT,
      argv: ["/bin/cat", "/run/manifest-result"],
      timeout: { seconds: 30n },
    });
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "made by the manifest");

    const again = await planManifest(env.aether, manifestOf([guestVm()]));
    assert.equal(again.changes, 0, JSON.stringify(again.actions));
    assert.deepEqual(steps((await applyManifest(env.aether, manifestOf([guestVm()]))).applied), []);
  });

  it("a label edit is an update in place: the same guest keeps running", async () => {
    const before = await getVm("web");
    const relabelled = [guestVm({ labels: { tier: "back" } })];
    assert.match(await scriptPlan(relabelled), /\* update\s+vm\s+web\s+labels changed/);
    const result = await applyManifest(env.aether, manifestOf(relabelled));
    assert.deepEqual(steps(result.applied), ["update vm web"]);
    const after = await getVm("web");
    assert.equal(after.id, before.id);
    assert.equal(after.pid, before.pid, "the hypervisor was not restarted");
    assert.equal(after.state, vmApi.VmState.RUNNING);
    assert.deepEqual(after.labels, { tier: "back", [MANIFEST_LABEL]: "vms" });
    assert.equal((await planManifest(env.aether, manifestOf(relabelled))).changes, 0);
  });

  it("a memory edit is a replace: a new VM with the new memory; stopped by hand, it is started again in place", async () => {
    const before = await getVm("web");
    const bigger = [guestVm({ labels: { tier: "back" }, memory: "192M" })];
    assert.match(
      await scriptPlan(bigger),
      /~ replace\s+vm\s+web\s+memory \(128 MiB on the node, 192 MiB declared\) changed: the VM is deleted and created anew/,
    );
    const result = await applyManifest(env.aether, manifestOf(bigger), { stopGraceSeconds: 5 });
    assert.deepEqual(steps(result.applied), ["replace vm web"]);
    const after = await getVm("web");
    assert.notEqual(after.id, before.id);
    assert.equal(after.memoryBytes, BigInt(192 * MiB));
    assert.equal((await planManifest(env.aether, manifestOf(bigger))).changes, 0, "the new VM is as declared");

    // Stopped by hand: starting it again is an update in place (the same VM, its disks kept).
    await env.aether.vm.stopVm({ vm: "web", tenant: TENANT, force: true, timeout: { seconds: 5n } });
    await eventually(async () => ((await getVm("web")).state === vmApi.VmState.STOPPED ? true : undefined), 20_000, "web to stop");
    const restart = await planManifest(env.aether, manifestOf(bigger));
    assert.deepEqual(
      restart.actions.map((a) => `${a.kind} ${a.resource} ${a.name}`),
      ["update vm web"],
    );
    assert.match(restart.actions[0]?.reason ?? "", /^it is stopped.*; start it$/);
    await applyManifest(env.aether, manifestOf(bigger));
    const started = await getVm("web");
    assert.equal(started.id, after.id);
    assert.ok([vmApi.VmState.STARTING, vmApi.VmState.RUNNING].includes(started.state), vmApi.VmState[started.state]);
  });

  it("a VM booting an image: plan resolves the image's name; a VM it does not manage is a conflict; delete removes exactly its VMs and boot clones", async () => {
    await env.aether.storage.importImage({
      name: "guest",
      tenant: TENANT,
      source: { source: { case: "localPath", value: guestImage().disk } },
      sha256: createHash("sha256").update(readFileSync(guestImage().disk)).digest("hex"),
      sourceFormat: ImageFileFormat.RAW,
    });
    await eventually(
      async () =>
        (await env.aether.storage.getImage({ image: "guest", tenant: TENANT })).image?.state === ImageState.READY ? true : undefined,
      60_000,
      "the image to be READY",
    );
    const fromImage: VmDecl = { name: "disk", image: "guest", acceleration: "tcg", memory: "128M", profile: "persistent", nics: [] };
    const both = manifestOf([guestVm({ labels: { tier: "back" }, memory: "192M" }), fromImage]);
    const created = await applyManifest(env.aether, both, { stopGraceSeconds: 5 });
    assert.deepEqual(steps(created.applied), ["create vm disk"]);
    const disk = await getVm("disk");
    assert.equal(disk.boot?.source.case, "disk");
    assert.equal((await planManifest(env.aether, both)).changes, 0, "the image named by name is the clone's image");

    // Made by hand in the same tenant (never started): the manifest may not take it over, nor delete it.
    await env.aether.vm.createVm({
      name: "by-hand",
      tenant: TENANT,
      vcpus: 1,
      memoryBytes: BigInt(128 * MiB),
      boot: { source: { case: "kernel", value: { kernelPath: guestImage().kernel } } },
    });
    const taken = await planManifest(env.aether, manifestOf([guestVm({ name: "by-hand" })]));
    const conflict = taken.conflicts[0];
    assert.equal(conflict?.name, "by-hand");
    assert.match(conflict?.reason ?? "", /a VM named by-hand already exists in tenant mfvm and is not managed by manifest vms/);

    const removed = await deleteManifest(env.aether, both, { stopGraceSeconds: 5 });
    assert.deepEqual(steps(removed.applied).sort(), ["delete vm disk", "delete vm web"]);
    const left = (await env.aether.vm.listVms({ tenant: TENANT })).vms.map((v) => v.name);
    assert.deepEqual(left, ["by-hand"]);
    const volumes = (await env.aether.storage.listVolumes({ tenant: TENANT })).volumes.map((v) => v.name);
    assert.deepEqual(volumes, [], "the boot clone went with its VM");
    await env.aether.vm.deleteVm({ vm: "by-hand", tenant: TENANT });
    await env.aether.storage.deleteImage({ image: "guest", tenant: TENANT });
  });

  it("an invalid VM declaration names the field", () => {
    const invalid = (vm: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
      try {
        defineManifest({ name: "bad", vms: [vm as unknown as VmDecl], ...extra });
      } catch (err) {
        assert.ok(err instanceof ManifestError);
        return err.message;
      }
      assert.fail("accepted");
    };
    assert.equal(
      invalid({ name: "v" }),
      "invalid manifest: vms.0.image: a VM boots something: give image (a clone of an image), bootVolume (a volume) or kernel (with initrd and cmdline)",
    );
    assert.equal(
      invalid({ name: "v", kernel: "/k", memory: "32M" }),
      "invalid manifest: vms.0.memory: must be at least 64M (the guest minimum)",
    );
    assert.equal(invalid({ name: "v", kernel: "/k", cpus: 0 }), "invalid manifest: vms.0.cpus: must be at least 1");
    assert.equal(invalid({ name: "v", kernel: "vmlinuz" }), "invalid manifest: vms.0.kernel: must be an absolute path");
    assert.equal(
      invalid({ name: "v", image: "debian", bootSize: "lots" }),
      'invalid manifest: vms.0.bootSize: "lots" is not a size like "512M", "10G" or a number of bytes',
    );
    assert.equal(
      invalid({ name: "v", image: "debian", initrd: "/i" }),
      "invalid manifest: vms.0.initrd: goes with kernel (direct kernel boot): give kernel, or drop it",
    );
    assert.equal(
      invalid({ name: "v", image: "debian", nics: [{ bridge: "br0", mac: "nope" }] }).startsWith("invalid manifest: vms.0.nics.0"),
      true,
    );
    assert.equal(invalid({ name: "v", image: "debian", color: "blue" }), 'invalid manifest: vms.0: Unrecognized key: "color"');
    assert.equal(
      invalid({ name: "v", image: "debian", cell: "pod" }, { target: "cluster" }),
      'invalid manifest: vms.0.cell: a VM of a cluster manifest runs on whichever node wins its auction, outside any cell; drop cell, or apply the manifest to a node (without target "cluster")',
    );
    assert.equal(
      invalid({ name: "v", image: "debian", requirements: { nodeSelector: { zone: "a" } } }),
      'invalid manifest: vms.0.requirements: only a cluster manifest places VMs by their requirements: set target: "cluster", or drop requirements',
    );
  });
});
