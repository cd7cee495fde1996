// Live migration between two aetherd over mutual TLS, as between two hosts: the source calls the
// target's VmMigrationService with its node certificate (its outgoing identity, from [tcp] here), the
// target checks that the caller is a node, and a user certificate is refused there even though its
// role may call everything else. The target's NBD export (and its incoming migration, with the same
// authorization object) takes only the calling node's certificate: another node's, of the same CA,
// is refused at the TLS negotiation. A tenant's VM is held to the target's own [tenancy]: node-a
// publishes the guest's kernel to tenants, node-b does not, so node-b refuses to take it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { Code, connect, vm as vmApi, type AetherClient } from "@aether/sdk";
import { VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";
import { freePort } from "./helpers/net.js";
import { createCa, type Pair, type TestCa } from "./helpers/pki.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

describe("live migration over mutual TLS", () => {
  let ca: TestCa;
  let a: TestDaemon;
  let b: TestDaemon;
  let source: AetherClient;
  let target: AetherClient;
  let targetUrl = "";
  let sourceUrl = "";
  const pairs = new Map<string, Pair>();

  before(async () => {
    ca = createCa("migration-ca");
    const [portA, portB] = [await freePort(), await freePort()];
    targetUrl = `https://127.0.0.1:${portB}`;
    sourceUrl = `https://127.0.0.1:${portA}`;
    // node-a publishes the guest's kernel and initrd to tenants; node-b publishes nothing.
    const tenancy = join(mkdtempSync(join(tmpdir(), "migration-tls-")), "node-a.toml");
    writeFileSync(tenancy, `[tenancy]\nkernel_roots = [${JSON.stringify(dirname(guestImage().kernel))}]\n`);
    const node = (name: string, port: number) => {
      const pair = ca.issue(name, { server: true, client: true });
      pairs.set(name, pair);
      return ["--listen", `127.0.0.1:${port}`, "--tls-cert", pair.cert, "--tls-key", pair.key, "--tls-client-ca", ca.cert];
    };
    [a, b] = await Promise.all([
      startDaemon({ args: [...node("node-a", portA), "--config", tenancy] }),
      startDaemon({ args: node("node-b", portB) }),
    ]);
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

  it("moves a running guest to https://target with the source's node certificate", async () => {
    const g = guestImage();
    await source.storage.createVolume({ name: "tls-data", source: { case: "empty", value: { sizeBytes: 32n * MiB } } });
    await source.vm.createVm({
      name: "over-tls",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      disks: [{ source: { case: "volume", value: "tls-data" } }],
      start: true,
    });
    for await (const r of source.vm.waitVmReady({ vm: "over-tls", timeout: { seconds: 90n } })) void r;
    const bootId = text((await source.vm.execVm({ vm: "over-tls", argv: ["/bin/cat", "/proc/sys/kernel/random/boot_id"] })).stdout);

    const { migration } = await source.vm.migrateVm({ vm: "over-tls", target: targetUrl });
    let last: vmApi.Migration | undefined;
    for await (const r of source.vm.watchMigration({ migration: migration?.id ?? "" })) last = r.migration;
    assert.equal(last?.state, vmApi.MigrationState.SUCCEEDED, last?.stateReason);
    const moved = (await target.vm.getVm({ vm: "over-tls" })).vm;
    assert.equal(moved?.state, vmApi.VmState.RUNNING, moved?.stateReason);
    assert.equal(text((await target.vm.execVm({ vm: "over-tls", argv: ["/bin/cat", "/proc/sys/kernel/random/boot_id"] })).stdout), bootId);
    await target.vm.deleteVm({ vm: "over-tls", force: true });
    await target.storage.deleteVolume({ volume: "tls-data" });
  });

  it("the target's NBD export takes only the source node's certificate, not another node's of the same CA", async () => {
    const g = guestImage();
    await source.storage.createVolume({ name: "authz-data", source: { case: "empty", value: { sizeBytes: 32n * MiB } } });
    const { vm } = await source.vm.createVm({
      name: "authz",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 64n * MiB,
      vcpus: 1,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      disks: [{ source: { case: "volume", value: "authz-data" } }],
    });
    // node-a prepares node-b for this VM as its aetherd would (its own certificate), without moving it.
    const spec = (JSON.parse(readFileSync(join(a.stateDir, "vms", vm?.id ?? "", "vm.json"), "utf8")) as { spec: unknown }).spec;
    const nodeA = pairs.get("node-a") as Pair;
    const asNodeA = await connect({ address: targetUrl, tls: { ca: ca.cert, cert: nodeA.cert, key: nodeA.key } });
    const migration = createClient(VmMigrationService, asNodeA.transport);
    const migrationId = randomUUID();
    try {
      const prepared = await migration.prepareIncoming({
        migrationId,
        sourceNode: "node-a",
        vmSpecJson: JSON.stringify(spec),
        disks: [{ sizeBytes: 32n * MiB, volumeName: "authz-probe" }],
        timeout: { seconds: 120n },
      });
      // qemu-img as an NBD client over TLS with a node's certificate (QEMU's files in a folder of their own).
      const readExport = async (node: string) => {
        const dir = join(a.stateDir, "..", `nbd-client-${node}`);
        mkdirSync(dir, { recursive: true });
        const pair = pairs.get(node) ?? ca.issue(node, { server: true, client: true });
        copyFileSync(ca.cert, join(dir, "ca-cert.pem"));
        copyFileSync(pair.cert, join(dir, "client-cert.pem"));
        copyFileSync(pair.key, join(dir, "client-key.pem"));
        const opts = `driver=nbd,host=${prepared.nbdHost},port=${prepared.nbdPort},export=disk0,tls-creds=tls0`;
        return promisify(execFile)(
          "qemu-img",
          ["info", "--object", `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`, "--image-opts", opts],
          { timeout: 15_000 },
        ).then(
          (r) => ({ ok: true, out: r.stdout }),
          (e: { stderr?: string; message: string }) => ({ ok: false, out: e.stderr ?? e.message }),
        );
      };
      const other = await readExport("node-c");
      assert.equal(other.ok, false, `another node's certificate read the export: ${other.out}`);
      assert.match(other.out, /TLS/, "refused at the TLS negotiation");
      // The source's own certificate, right after: the export was there all along and lets it in.
      const own = await readExport("node-a");
      assert.equal(own.ok, true, `the source node's certificate was refused: ${own.out}`);
      assert.match(own.out, /file format: nbd/);
    } finally {
      await migration.abortIncoming({ migrationId, reason: "the test only probed the export" });
      asNodeA.close();
    }
    await eventually(async () => ((await target.vm.listVms({})).vms.length === 0 ? true : undefined), 30_000, "the target's copy to go");
    await source.vm.deleteVm({ vm: "authz", force: true });
    await source.storage.deleteVolume({ volume: "authz-data" });
  });

  it("a tenant's VM is held to the target's [tenancy]: node-b, which publishes no kernel to tenants, refuses it", async () => {
    const g = guestImage();
    // Tenant team-a's own call on node-a, which publishes the kernel: the VM is confined.
    const alice = ca.issue("alice-team-a", { uri: "spiffe://test/tenant/team-a/user/alice" });
    const asAlice = await connect({ address: sourceUrl, tls: { ca: ca.cert, cert: alice.cert, key: alice.key } });
    const nodeA = pairs.get("node-a") as Pair;
    const asNodeA = await connect({ address: targetUrl, tls: { ca: ca.cert, cert: nodeA.cert, key: nodeA.key } });
    const migration = createClient(VmMigrationService, asNodeA.transport);
    try {
      const { vm } = await asAlice.vm.createVm({
        name: "confined",
        tenant: "team-a",
        acceleration: vmApi.Acceleration.TCG,
        memoryBytes: 64n * MiB,
        vcpus: 1,
        boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      });
      const record = JSON.parse(readFileSync(join(a.stateDir, "vms", vm?.id ?? "", "vm.json"), "utf8")) as {
        spec: { confined?: boolean; kernelPath: string };
      };
      assert.equal(record.spec.confined, true, "a tenant's own VM is recorded as confined");
      const prepare = (spec: unknown) =>
        migration.prepareIncoming({
          migrationId: randomUUID(),
          sourceNode: "node-a",
          vmSpecJson: JSON.stringify(spec),
          disks: [],
          timeout: { seconds: 60n },
        });
      await rejectsWith(
        prepare(record.spec),
        Code.PermissionDenied,
        /this node does not take VM confined of tenant team-a by live migration: kernel_path .* is not a kernel published to tenants: tenant team-a may boot kernels and initrds that exist below \(none here\)/,
      );
      // Not the tenant's (an operator's VM), but its kernel is not on node-b: a precondition, said so.
      await rejectsWith(
        prepare({ ...record.spec, confined: false, kernelPath: "/nonexistent/vmlinuz" }),
        Code.FailedPrecondition,
        /this node cannot run VM confined of tenant team-a: its boot file \/nonexistent\/vmlinuz is not on this node/,
      );
      assert.deepEqual((await target.vm.listVms({ tenant: "team-a" })).vms, [], "node-b made nothing");
      await asAlice.vm.deleteVm({ vm: "confined", tenant: "team-a", force: true });
    } finally {
      asAlice.close();
      asNodeA.close();
    }
  });

  it("refuses the node-to-node calls to a user certificate, and names who may call them", async () => {
    const alice = ca.issue("alice");
    const user = await connect({ address: targetUrl, tls: { ca: ca.cert, cert: alice.cert, key: alice.key } });
    try {
      // The user may call VmService (the default policy makes users operators) but not VmMigrationService.
      await user.vm.listVms({});
      const node = createClient(VmMigrationService, user.transport);
      await rejectsWith(
        node.queryIncoming({ migrationId: "00000000-0000-0000-0000-000000000000" }),
        Code.PermissionDenied,
        /spiffe:\/\/test\/user\/alice is not a node: VmMigrationService is called by the source aetherd/,
      );
      await rejectsWith(
        node.prepareIncoming({ migrationId: "00000000-0000-0000-0000-000000000000", sourceNode: "x" }),
        Code.PermissionDenied,
        /is not a node/,
      );
    } finally {
      user.close();
    }
  });
});
