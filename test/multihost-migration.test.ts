// Live migration between hosts (issues 14 and 21): two aetherd, each in its own network namespace
// with its own 10.x address, pools and state, and nothing shared but the bridge. The operator asks
// the source node over mutual TLS; the source prepares the target over mutual TLS with its node
// certificate; QEMU's NBD export and migration stream go between the two namespaces' addresses,
// over TLS with the nodes' certificates: a client without one is refused by the target's NBD export
// while the migration runs. The guest moves with its disk and never notices; nothing of it is left
// on the source.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, vm as vmApi, type AetherClient } from "@aether/sdk";
import { VolumeFormat } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { guestImage } from "./helpers/guest.js";
import { eventually } from "./helpers/daemon.js";
import { createNetnsCluster, type NetnsAggregator, type NetnsCluster, type NetnsNode } from "./helpers/netns-cluster.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

/** The target's NBD port of a migration, from the line its aetherd logs once prepared. */
async function preparedLine(node: NetnsNode, migrationId: string): Promise<{ nbdPort: number; tls: boolean }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    for (const line of node.daemon.log().split("\n")) {
      if (!line.includes(migrationId) || !line.includes("prepared for an incoming migration")) continue;
      const entry = JSON.parse(line) as { nbdPort: number; tls: boolean };
      return { nbdPort: entry.nbdPort, tls: entry.tls };
    }
    if (Date.now() > deadline) throw new Error(`the target did not log that it prepared migration ${migrationId}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function sh(aether: AetherClient, vm: string, script: string): Promise<string> {
  const r = await aether.vm.execVm({ vm, argv: ["/bin/sh", "-c", script], timeout: { seconds: 30n } });
  assert.equal(r.exitCode, 0, `${script}: ${text(r.stderr)}`);
  return text(r.stdout);
}

async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 90n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  return last as vmApi.Vm;
}

describe("live migration between hosts (network namespaces, mutual TLS only)", () => {
  let cluster: NetnsCluster;
  let agg: NetnsAggregator;
  let n1: NetnsNode;
  let n2: NetnsNode;
  let source: AetherClient; // an operator's certificate, on n1's TCP address
  let target: AetherClient; // the same operator, on n2's

  before(async () => {
    cluster = createNetnsCluster(2);
    agg = await cluster.startAggregator();
    [n1, n2] = [await cluster.startNode(cluster.nodeHosts[0]!), await cluster.startNode(cluster.nodeHosts[1]!)];
    const operator = cluster.user("operator");
    [source, target] = [await cluster.client(n1.url, operator), await cluster.client(n2.url, operator)];
  });

  after(async () => {
    source?.close();
    target?.close();
    await cluster?.teardown();
  });

  it("a running guest and its disk move from one host to the other: same boot, same data, nothing left behind", async () => {
    const g = guestImage();
    await source.storage.createVolume({
      name: "web-data",
      format: VolumeFormat.QCOW2,
      source: { case: "empty", value: { sizeBytes: 256n * MiB } },
    });
    await source.vm.createVm({
      name: "web",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      disks: [{ source: { case: "volume", value: "web-data" }, serial: "data" }],
      start: true,
    });
    const before = await waitReady(source, "web");
    const bootId = await sh(source, "web", "cat /proc/sys/kernel/random/boot_id");
    const digest = await sh(
      source,
      "web",
      "dd if=/dev/urandom of=/dev/vda bs=1M seek=32 count=4 conv=fsync 2>/dev/null && dd if=/dev/vda bs=1M skip=32 count=4 2>/dev/null | sha256sum",
    );

    const { migration } = await source.vm.migrateVm({ vm: "web", target: n2.url });
    const id = migration?.id ?? "";
    // While the disk is being copied, a plain NBD client (no TLS, no certificate) asks the target's
    // export for the disk, as anyone on the network could: QEMU refuses it at the negotiation.
    const probe = preparedLine(n2, id).then(async ({ nbdPort, tls }) => {
      const uri = `nbd://${n2.host.address}:${nbdPort}/disk0`;
      const refusal = await promisify(execFile)("qemu-img", ["info", uri], { timeout: 15_000 }).then(
        (r) => assert.fail(`a plain NBD client read ${uri}: ${r.stdout}`),
        (e: { stderr?: string; message: string }) => e.stderr ?? e.message,
      );
      return { tls, refusal, uri };
    });
    probe.catch(() => undefined); // awaited below, once the migration ended
    let last: vmApi.Migration | undefined;
    for await (const r of source.vm.watchMigration({ migration: id })) last = r.migration ?? last;
    assert.equal(last?.state, vmApi.MigrationState.SUCCEEDED, last?.stateReason);
    const { tls, refusal, uri } = await probe;
    assert.equal(tls, true, "the target prepared the streams over TLS");
    // "TLS" in the refusal: the export was there and demanded TLS (a stopped server refuses the connection).
    assert.match(refusal, /TLS/i, `a plain NBD client was refused by ${uri} for want of TLS`);
    for (const n of [n1, n2]) {
      const creds = join(n.daemon.stateDir, "migration-tls");
      assert.deepEqual(existsSync(creds) ? readdirSync(creds) : [], [], `no TLS credentials are left in ${creds}`);
    }
    assert.ok((last?.diskTransferredBytes ?? 0n) >= 4n * MiB, `the disk's data crossed hosts (${last?.diskTransferredBytes} B)`);

    const moved = await waitReady(target, "web");
    assert.equal(moved.id, before.id, "the VM keeps its id");
    assert.equal(await sh(target, "web", "cat /proc/sys/kernel/random/boot_id"), bootId, "same boot id: no reboot");
    assert.equal(await sh(target, "web", "dd if=/dev/vda bs=1M skip=32 count=4 2>/dev/null | sha256sum"), digest, "the data is there");
    await assert.rejects(source.vm.getVm({ vm: "web" }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    assert.deepEqual((await source.storage.listVolumes({})).volumes, [], "nothing of it is left on the source host");
    assert.deepEqual(
      (await target.storage.listVolumes({})).volumes.map((v) => v.name),
      ["web-data"],
    );

    // And back with the CLI, naming the node as operators do: its address comes from the aggregator.
    const operator = cluster.user("cli-operator");
    const home = join(cluster.dir, "cli-home");
    mkdirSync(join(home, "aether"), { recursive: true });
    writeFileSync(join(home, "aether", "config.toml"), `ca = "${cluster.ca.cert}"\ncert = "${operator.cert}"\nkey = "${operator.key}"\n`);
    const env = { XDG_CONFIG_HOME: home, AETHER_HOST: n2.url, AETHER_AGGREGATOR: agg.url };
    await eventually(
      async () =>
        (await runCommand("aether", ["cluster", "nodes", "--json"], { env })).stdout.match(/"name": "n\d"/g)?.length === 2
          ? true
          : undefined,
      20_000,
      "both nodes registered",
    );
    const unknown = await runCommand("aether", ["vm", "migrate", "web", "--to", "n9"], { env });
    assert.equal(unknown.code, 3, unknown.stderr);
    assert.match(unknown.stderr, /knows no node n9 \(its nodes: n1, n2\)/);
    const back = await runCommand("aether", ["vm", "migrate", "web", "--to", "n1", "--json"], { env, timeoutMs: 120_000 });
    assert.equal(back.code, 0, back.stderr);
    assert.equal((JSON.parse(back.stdout) as { target: string }).target, n1.url, "n1's address, from the aggregator");
    await waitReady(source, "web");
    assert.equal(await sh(source, "web", "cat /proc/sys/kernel/random/boot_id"), bootId, "still the same boot");
    assert.deepEqual((await target.vm.listVms({})).vms, [], "nothing left on n2");

    await source.vm.deleteVm({ vm: "web", force: true });
    await source.storage.deleteVolume({ volume: "web-data" });
  });
});
