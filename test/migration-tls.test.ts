// Live migration between two aetherd over mutual TLS, as between two hosts: the source calls the
// target's VmMigrationService with its node certificate (its outgoing identity, from [tcp] here), the
// target checks that the caller is a node, and a user certificate is refused there even though its
// role may call everything else.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { Code, connect, vm as vmApi, type AetherClient } from "@aether/sdk";
import { VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";
import { freePort } from "./helpers/net.js";
import { createCa, type TestCa } from "./helpers/pki.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

describe("live migration over mutual TLS", () => {
  let ca: TestCa;
  let a: TestDaemon;
  let b: TestDaemon;
  let source: AetherClient;
  let target: AetherClient;
  let targetUrl = "";

  before(async () => {
    ca = createCa("migration-ca");
    const [portA, portB] = [await freePort(), await freePort()];
    targetUrl = `https://127.0.0.1:${portB}`;
    const node = (name: string, port: number) => {
      const pair = ca.issue(name, { server: true, client: true });
      return ["--listen", `127.0.0.1:${port}`, "--tls-cert", pair.cert, "--tls-key", pair.key, "--tls-client-ca", ca.cert];
    };
    [a, b] = await Promise.all([startDaemon({ args: node("node-a", portA) }), startDaemon({ args: node("node-b", portB) })]);
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
