// Volume replication between two aetherd with ZFS pools (zfs-fuse, file-backed): a policy sends a
// first whole stream, then increments; the target holds each point atomically, so a kill -9 of the
// receiving aetherd in the middle of a transfer leaves its previous point, and the next run goes on
// from it. Then a VM's volumes: the VM writes a file, replication runs, its node is fenced through a
// test BMC, and the aggregator starts it on the node holding its replica (never on a third node
// that holds none), from the last point; the guest agent reads the file there.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync, writeSync, fsyncSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { storage as storageApi, type AetherClient } from "@aether/sdk";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startZfsPool, type ZfsTestPool } from "./helpers/zfs.js";

const MiB = 1024 * 1024;

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, data, 0, data.length, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function digestAt(path: string, offset: number, length: number): string {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return createHash("sha256").update(buf).digest("hex");
  } finally {
    closeSync(fd);
  }
}

function zfsConfig(dir: string, pool: ZfsTestPool): string {
  const config = join(dir, "aetherd.toml");
  writeFileSync(config, `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${pool.dataset}"\ndefault = true\n`);
  return config;
}

describe("volume replication between two aetherd (ZFS)", () => {
  let poolA: ZfsTestPool;
  let poolB: ZfsTestPool;
  let a: TestDaemon;
  let b: TestDaemon;
  let nodeA: AetherClient;
  let nodeB: AetherClient;
  const dirA = mkdtempSync(join(tmpdir(), "aetherd-test-"));
  const dirB = mkdtempSync(join(tmpdir(), "aetherd-test-"));

  before(async () => {
    [poolA, poolB] = await Promise.all([startZfsPool("aetherrepa"), startZfsPool("aetherrepb")]);
    [a, b] = await Promise.all([
      startDaemon({ dir: dirA, args: ["--config", zfsConfig(dirA, poolA)] }),
      startDaemon({ dir: dirB, args: ["--config", zfsConfig(dirB, poolB)] }),
    ]);
    [nodeA, nodeB] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    try {
      for (const d of [a, b]) {
        if (!d) continue;
        await stopWorkloads(await d.client()).catch(() => undefined);
        await d.stop();
        d.cleanup();
      }
    } finally {
      await poolA?.destroy();
      await poolB?.destroy();
      rmSync(dirA, { recursive: true, force: true });
      rmSync(dirB, { recursive: true, force: true });
    }
  });

  it("sends a whole first point, then only what changed; the replica on the target has the data", async () => {
    const created = await nodeA.storage.createVolume({ name: "repl", source: { case: "empty", value: { sizeBytes: BigInt(128 * MiB) } } });
    const volume = created.volume as storageApi.Volume;
    const first = randomBytes(16 * MiB);
    writeAt(volume.hostPath, 0, first);

    const set = await nodeA.replication.setReplicationPolicy({
      volume: "repl",
      targets: [b.address],
      interval: { seconds: 3600n, nanos: 0 },
    });
    assert.equal(set.policy?.volume, "repl");
    assert.equal(set.policy?.rpo?.seconds, 7200n, "the RPO defaults to twice the interval");
    const run1 = await nodeA.replication.runReplication({ policy: "repl" });
    const copy1 = run1.policy?.volumes[0]?.targets[0];
    assert.equal(copy1?.lastError, "", copy1?.lastError);
    assert.ok(copy1?.lastPointTime, "the copy has a last point");
    assert.ok(Number(copy1?.lastSentBytes) >= 16 * MiB, `a whole first stream (${copy1?.lastSentBytes} bytes)`);

    const held = (await nodeB.replication.listReplicas({})).replicas;
    assert.deepEqual(
      held.map((r) => [r.volumeName, r.sourceVolumeId]),
      [["repl", volume.id]],
    );
    assert.equal(held[0]?.lastPointTime?.seconds, copy1?.lastPointTime?.seconds);
    // The replica's file on the target (zfs receive mounts it) has the bytes.
    const replicaFile = join(poolB.mountpoint, "aether", "replicas", volume.id, "disk.raw");
    const want = createHash("sha256").update(first).digest("hex");
    await eventually(() => {
      try {
        return digestAt(replicaFile, 0, first.length) === want ? true : undefined;
      } catch {
        return undefined;
      }
    }, 15_000);

    // 1 MiB more: the next stream carries about that, not the volume.
    writeAt(volume.hostPath, 64 * MiB, randomBytes(MiB));
    const run2 = await nodeA.replication.runReplication({ policy: "repl" });
    const copy2 = run2.policy?.volumes[0]?.targets[0];
    assert.equal(copy2?.lastError, "", copy2?.lastError);
    const sent2 = Number(copy2?.lastSentBytes);
    assert.ok(sent2 >= MiB && sent2 < 4 * MiB, `an incremental stream of about 1 MiB (${sent2} bytes)`);
    assert.equal(Number(copy2?.totalSentBytes), Number(copy1?.lastSentBytes) + sent2);
  });

  it("a kill -9 of the receiving aetherd mid-transfer leaves its last point; the next run goes on from it", async () => {
    const volume = (await nodeA.storage.getVolume({ volume: "repl" })).volume as storageApi.Volume;
    const before = (await nodeB.replication.listReplicas({})).replicas[0]?.lastPointTime;
    assert.ok(before);
    // 32 MiB to send, and the receiver dies once it has taken 4 MiB of them.
    const change = randomBytes(32 * MiB);
    writeAt(volume.hostPath, 0, change);
    await b.stop();
    b = await startDaemon({
      dir: dirB,
      args: ["--config", join(dirB, "aetherd.toml")],
      env: { AETHERD_CRASH_AT: "replication.receiving" },
    });
    const cut = await nodeA.replication.runReplication({ policy: "repl" });
    const failed = cut.policy?.volumes[0]?.targets[0];
    assert.notEqual(failed?.lastError, "", "the run says the transfer failed");
    assert.equal(failed?.state, storageApi.ReplicationTargetState.FAILED);
    await eventually(() => (b.process.exitCode !== null || b.process.signalCode !== null ? true : undefined), 30_000);
    assert.equal(b.process.signalCode, "SIGKILL", "the receiver was killed mid-transfer");

    b = await startDaemon({ dir: dirB, args: ["--config", join(dirB, "aetherd.toml")] });
    nodeB = await b.client();
    const kept = (await nodeB.replication.listReplicas({})).replicas[0];
    assert.deepEqual(kept?.lastPointTime, before, "the replica is still at its previous point, not a half-applied one");

    const resumed = await nodeA.replication.runReplication({ policy: "repl" });
    const copy = resumed.policy?.volumes[0]?.targets[0];
    assert.equal(copy?.lastError, "", copy?.lastError);
    const sent = Number(copy?.lastSentBytes);
    assert.ok(sent >= 32 * MiB && sent < 48 * MiB, `the changes since the last point only (${sent} bytes), not the whole volume`);
    const now = (await nodeB.replication.listReplicas({})).replicas[0];
    assert.deepEqual(now?.lastPointTime, copy?.lastPointTime);
    assert.ok(Number(now?.receivedBytes) > 0);

    const listed = await nodeA.replication.listReplications({});
    const row = listed.policies[0]?.volumes[0]?.targets[0];
    assert.equal(row?.state, storageApi.ReplicationTargetState.IDLE);
    assert.ok(row?.lag && row.nextRunTime, "lag and next run are reported");
  });
});
