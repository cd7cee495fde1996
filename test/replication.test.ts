// Volume replication between two aetherd with ZFS pools (zfs-fuse, file-backed): a policy sends a
// first whole stream, then increments; the target holds each point atomically, so a kill -9 of the
// receiving aetherd in the middle of a transfer leaves its previous point, and the next run goes on
// from it. Then a VM's volumes: the VM writes a file, replication runs, its node is fenced through a
// test BMC, and the aggregator starts it on the node holding its replica (never on a third node
// that holds none), from the last point; the guest agent reads the file there.
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { Code, connect, storage as storageApi, vm as vmApi, type AetherClient } from "@aether/sdk";
import { ReplicaReceiverService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { ClusterEventKind, NodeState, PlacementState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { runCommand } from "./helpers/run.js";
import { rejectsWith } from "./helpers/assertions.js";
import { freePort } from "./helpers/net.js";
import { createCa } from "./helpers/pki.js";
import { eventually, isRunning, powerOffHost, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { sh, waitReady } from "./helpers/migration.js";
import { startTestBmc, type TestBmc, writeBmcRegistration } from "./helpers/test-bmc.js";
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

describe("volume replication between two aetherd (ZFS) over mutual TLS", () => {
  let poolA: ZfsTestPool;
  let poolB: ZfsTestPool;
  let a: TestDaemon;
  let b: TestDaemon;
  let nodeA: AetherClient;
  let nodeB: AetherClient;
  const dirA = mkdtempSync(join(tmpdir(), "aetherd-test-"));
  const dirB = mkdtempSync(join(tmpdir(), "aetherd-test-"));
  // Each node serves mutual TLS with its node certificate (spiffe://test/node/<name>) and calls the
  // other's https address with it: the node-to-node channel of two hosts.
  const ca = createCa("replication-ca");
  let urlB = "";
  const argsA: string[] = [];
  const argsB: string[] = [];

  before(async () => {
    [poolA, poolB] = await Promise.all([startZfsPool("aetherrepa"), startZfsPool("aetherrepb")]);
    const tls = (name: string, port: number) => {
      const pair = ca.issue(name, { server: true, client: true });
      return ["--listen", `127.0.0.1:${port}`, "--tls-cert", pair.cert, "--tls-key", pair.key, "--tls-client-ca", ca.cert];
    };
    const [portA, portB] = [await freePort(), await freePort()];
    urlB = `https://127.0.0.1:${portB}`;
    argsA.push("--config", zfsConfig(dirA, poolA), ...tls("repl-a", portA));
    argsB.push("--config", zfsConfig(dirB, poolB), ...tls("repl-b", portB));
    [a, b] = await Promise.all([startDaemon({ dir: dirA, args: argsA }), startDaemon({ dir: dirB, args: argsB })]);
    [nodeA, nodeB] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    try {
      for (const d of [a, b]) {
        if (!d) continue;
        // A daemon that died in a test answers no client: its stop and cleanup still run.
        await d
          .client()
          .then(stopWorkloads)
          .catch(() => undefined);
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
      targets: [urlB],
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

  it("the receiving side answers nodes only: a user certificate is refused", async () => {
    const user = ca.issue("ops");
    const asUser = await connect({ address: urlB, tls: { ca: ca.cert, cert: user.cert, key: user.key } });
    try {
      await rejectsWith(
        createClient(ReplicaReceiverService, asUser.transport).getReplicaPoint({ sourceVolumeId: randomUUID() }),
        Code.PermissionDenied,
        /spiffe:\/\/test\/user\/ops is not a node: ReplicaReceiverService is called by the source aetherd/,
      );
    } finally {
      asUser.close();
    }
  });

  it("a kill -9 of the receiving or the sending aetherd mid-transfer leaves the target's last point; the next run goes on from it", async () => {
    const volume = (await nodeA.storage.getVolume({ volume: "repl" })).volume as storageApi.Volume;
    const before = (await nodeB.replication.listReplicas({})).replicas[0]?.lastPointTime;
    assert.ok(before);
    // 32 MiB to send, and the receiver dies once it has taken 4 MiB of them.
    const change = randomBytes(32 * MiB);
    writeAt(volume.hostPath, 0, change);
    await b.stop();
    b = await startDaemon({
      dir: dirB,
      args: argsB,
      env: { AETHERD_CRASH_AT: "replication.receiving" },
    });
    const cut = await nodeA.replication.runReplication({ policy: "repl" });
    const failed = cut.policy?.volumes[0]?.targets[0];
    assert.notEqual(failed?.lastError, "", "the run says the transfer failed");
    assert.equal(failed?.state, storageApi.ReplicationTargetState.FAILED);
    await eventually(() => (b.process.exitCode !== null || b.process.signalCode !== null ? true : undefined), 30_000);
    assert.equal(b.process.signalCode, "SIGKILL", "the receiver was killed mid-transfer");

    b = await startDaemon({ dir: dirB, args: argsB });
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

    // And a kill -9 of the sender mid-transfer: the target keeps its point, the next run goes on from it.
    writeAt(volume.hostPath, 48 * MiB, randomBytes(24 * MiB));
    await a.stop();
    a = await startDaemon({ dir: dirA, args: argsA, env: { AETHERD_CRASH_AT: "replication.sending" } });
    nodeA = await a.client();
    await assert.rejects(nodeA.replication.runReplication({ policy: "repl" }), "the sender dies in the middle of the stream");
    await eventually(() => (a.process.signalCode === "SIGKILL" ? true : undefined), 30_000);
    const afterSenderCrash = (await nodeB.replication.listReplicas({})).replicas[0];
    assert.deepEqual(afterSenderCrash?.lastPointTime, copy?.lastPointTime, "the target is still at the last consistent point");
    a = await startDaemon({ dir: dirA, args: argsA });
    nodeA = await a.client();
    const again = (await nodeA.replication.runReplication({ policy: "repl" })).policy?.volumes[0]?.targets[0];
    assert.equal(again?.lastError, "", again?.lastError);
    const sentAgain = Number(again?.lastSentBytes);
    assert.ok(sentAgain >= 24 * MiB && sentAgain < 40 * MiB, `only the changes since that point (${sentAgain} bytes)`);
    assert.deepEqual((await nodeB.replication.listReplicas({})).replicas[0]?.lastPointTime, again?.lastPointTime);

    const listed = await nodeA.replication.listReplications({});
    const row = listed.policies[0]?.volumes[0]?.targets[0];
    assert.equal(row?.state, storageApi.ReplicationTargetState.IDLE);
    assert.ok(row?.lag && row.nextRunTime, "lag and next run are reported");

    // The same through the CLI: a row per volume and target for people, an object per copy for programs.
    const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: a.address } });
    const table = await aether("storage", "replication", "list");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /VOLUME\s+OF\s+TARGET\s+STATE\s+LAST POINT\s+LAG\s+RPO\s+NEXT RUN\s+SENT/);
    assert.match(table.stdout, /repl\s+volume\s+https:\/\/127\.0\.0\.1:\d+\s+idle\s+\d+s ago/);
    const json = await aether("storage", "replication", "list", "-o", "json");
    assert.equal(json.code, 0, json.stderr);
    const [copyJson] = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    assert.equal(copyJson?.volumeName, "repl");
    assert.equal(copyJson?.target, urlB);
    assert.equal(copyJson?.lastSentBytes, String(sentAgain));
    const usage = await aether("storage", "replication", "set", "--target", urlB);
    assert.equal(usage.code, 2, "a usage error exits 2");
    assert.match(usage.stderr, /give exactly one of --vm and --volume/);
  });

  it(
    "a stream zfs receive refuses while its sender still holds the call open is answered at once; the receiver lives on at its point",
    {
      timeout: 60_000,
    },
    async () => {
      // zfs receive fails on the first bytes, while the receiver waits for the next message: the
      // moment a sender killed mid-stream made aetherd B exit (an unobserved rejection of the
      // `zfs receive` it had stopped), now made certain rather than left to timing.
      const held = (await nodeB.replication.listReplicas({})).replicas[0];
      assert.ok(held?.lastPointTime);
      const peer = ca.issue("repl-peer", { server: true, client: true });
      const asPeer = await connect({ address: urlB, tls: { ca: ca.cert, cert: peer.cert, key: peer.key } });
      let release = () => {};
      const stillSending = new Promise<void>((resolve) => (release = resolve));
      try {
        const receiver = createClient(ReplicaReceiverService, asPeer.transport);
        const { point: base } = await receiver.getReplicaPoint({ sourceVolumeId: held.sourceVolumeId });
        const pointMs = Date.now();
        async function* messages() {
          yield {
            part: {
              case: "header" as const,
              value: {
                sourceVolumeId: held?.sourceVolumeId,
                volumeName: held?.volumeName,
                tenant: held?.tenant,
                sizeBytes: held?.sizeBytes,
                sourceNode: held?.sourceNode,
                basePoint: base,
                point: `aether-repl-${pointMs}`,
                pointTime: timestampFromMs(pointMs),
                retention: 4,
                kind: "zfs",
              },
            },
          };
          yield { part: { case: "chunk" as const, value: randomBytes(64 * 1024) } }; // not a zfs stream
          await stillSending;
        }
        await rejectsWith(
          receiver.receiveReplica(messages()),
          Code.Unavailable,
          /the stream of volume repl stopped after \d+ bytes \(zfs receive .*invalid stream.*\); the replica stays at its previous point/,
        );
      } finally {
        release();
        asPeer.close();
      }
      assert.equal(b.process.exitCode, null, `aetherd B is still running:\n${b.log().slice(-4000)}`);
      assert.equal(b.process.signalCode, null);
      const after = (await nodeB.replication.listReplicas({})).replicas[0];
      assert.deepEqual(after?.lastPointTime, held.lastPointTime, "the replica is still at its point");
    },
  );
});

describe("failover that keeps the data: a fenced node's VM starts on the node holding its replica", { timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-failover-"));
  const TTL_MS = 2000;
  let agg: TestAggregator;
  let bmc: TestBmc;
  let poolA: ZfsTestPool;
  let poolB: ZfsTestPool;
  const daemons = new Map<string, TestDaemon>();
  const clients = new Map<string, AetherClient>();
  let qemuPidOnA = 0;
  const node = (n: string) => clients.get(n) as AetherClient;

  async function startMember(name: string, pool: ZfsTestPool | undefined): Promise<void> {
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    const config = join(nodeDir, "aetherd.toml");
    const pools = pool ? `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${pool.dataset}"\ndefault = true\n` : "";
    writeFileSync(config, `${pools}[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n`);
    const daemon = await startDaemon({ dir: nodeDir, args: ["--config", config] });
    daemons.set(name, daemon);
    clients.set(name, await daemon.client());
  }

  before(async () => {
    [poolA, poolB] = await Promise.all([startZfsPool("aetherfoa"), startZfsPool("aetherfob")]);
    // The BMC's power off of fo-a: its aetherd and its VM's QEMU die at once.
    bmc = await startTestBmc({
      profile: "dmtf",
      onPowerOff: async () => {
        const a = daemons.get("fo-a");
        if (a) await powerOffHost(a, qemuPidOnA > 0 ? [qemuPidOnA] : []);
      },
    });
    const bmcs = writeBmcRegistration(dir, "fo-a", bmc);
    agg = await startAggregator({
      dir: join(dir, "agg"),
      args: ["--lease-ttl-ms", String(TTL_MS), "--bmcs", bmcs, "--fence-timeout-ms", "2000", "--fence-poll-interval-ms", "50"],
    });
    await startMember("fo-a", poolA);
    await startMember("fo-b", poolB);
    // A third node with room for the VM but no replica of it: it must never be chosen.
    await startMember("fo-c", undefined);
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({ state: NodeState.READY })).nodes.length === 3 ? true : undefined),
      20_000,
      "three READY nodes",
    );
  });

  after(async () => {
    try {
      for (const [name, d] of daemons) {
        const pid = d.process.pid;
        if (pid !== undefined && isRunning(pid)) process.kill(pid, "SIGCONT");
        if (d.process.exitCode === null && d.process.signalCode === null) {
          await stopWorkloads(node(name)).catch(() => undefined);
          await d.stop();
        }
        d.cleanup();
      }
      if (qemuPidOnA > 0 && isRunning(qemuPidOnA)) process.kill(qemuPidOnA, "SIGKILL");
      await agg?.stop();
      await bmc?.close();
    } finally {
      await poolA?.destroy();
      await poolB?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("boots the VM on the replica holder from the last point, says how old it was, and never picks the node without one", async () => {
    const nodes = (await agg.client.aggregator.listNodes({})).nodes;
    const idOf = (name: string) => nodes.find((n) => n.name === name)?.id ?? "";
    await node("fo-a").storage.createVolume({ name: "fo-data", source: { case: "empty", value: { sizeBytes: BigInt(64 * MiB) } } });
    const g = guestImage();
    // Only fo-a has the volume, so only fo-a can provision it (the others fail and the next bidder is tried).
    const { placement } = await agg.client.aggregator.deploy({
      spec: {
        name: "fo-vm",
        requirements: { memoryBytes: BigInt(128 * MiB), cpuMillis: 100 },
        kind: {
          case: "vm",
          value: {
            acceleration: vmApi.Acceleration.TCG,
            memoryBytes: BigInt(128 * MiB),
            vcpus: 1,
            guestAgent: true,
            boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
            disks: [{ source: { case: "volume", value: "fo-data" }, serial: "data" }],
          },
        },
      },
    });
    assert.equal(placement?.node, idOf("fo-a"), placement?.stateReason);
    const workloadId = placement?.workloadId ?? "";
    // While the guest boots: a volume whose copy can never be made (its target does not exist), so
    // it falls behind its 10 s RPO and fo-a's heartbeats raise the replication_lag alert.
    await node("fo-a").storage.createVolume({ name: "fo-lag", source: { case: "empty", value: { sizeBytes: BigInt(16 * MiB) } } });
    await node("fo-a").replication.setReplicationPolicy({
      volume: "fo-lag",
      targets: [`unix://${join(dir, "nowhere.sock")}`],
      interval: { seconds: 10n, nanos: 0 },
      rpo: { seconds: 10n, nanos: 0 },
    });
    qemuPidOnA = (await waitReady(node("fo-a"), "fo-vm")).pid;

    // The guest writes; replication runs; the replica holder's next heartbeat tells the aggregator.
    const read = "dd if=/dev/vda bs=1M skip=8 count=4 2>/dev/null | sha256sum";
    const digest = await sh(node("fo-a"), "fo-vm", `dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=4 conv=fsync 2>/dev/null && ${read}`);
    await node("fo-a").replication.setReplicationPolicy({
      vm: "fo-vm",
      targets: [daemons.get("fo-b")?.address ?? ""],
      interval: { seconds: 3600n, nanos: 0 },
    });
    const run = await node("fo-a").replication.runReplication({ policy: "fo-vm" });
    const copy = run.policy?.volumes[0]?.targets[0];
    assert.equal(copy?.lastError, "", copy?.lastError);
    const pointMs = timestampDate(copy?.lastPointTime as Timestamp).getTime();
    const held = (await node("fo-b").replication.listReplicas({})).replicas;
    assert.deepEqual(
      held.map((r) => [r.volumeName, r.workloadId]),
      [["fo-data", workloadId]],
    );
    const reported = Date.now();
    await eventually(
      async () => {
        const b = (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "fo-b");
        return b?.heartbeatTime && timestampDate(b.heartbeatTime).getTime() > reported ? true : undefined;
      },
      10_000,
      "a heartbeat of fo-b after the replication",
    );

    const lagging = await eventually(
      async () =>
        (await agg.client.aggregator.listAlerts({ node: "fo-a" })).alerts.find((al) => al.thresholdName.startsWith("replication_lag_")),
      30_000,
      "the replication_lag alert of fo-a",
    );
    assert.match(lagging.message, /node fo-a: a volume replica [\d.]+× as old as its RPO/);
    const lagRows = (await node("fo-a").replication.listReplications({})).policies.find((p) => p.volume === "fo-lag");
    assert.equal(lagRows?.volumes[0]?.targets[0]?.state, storageApi.ReplicationTargetState.FAILED);

    // fo-a goes silent: the aggregator fences it through its BMC and moves the VM.
    process.kill(daemons.get("fo-a")?.process.pid as number, "SIGSTOP");
    const moved = await eventually(
      async () => {
        const p = (await agg.client.aggregator.getPlacement({ workload: workloadId })).placement;
        return p?.state === PlacementState.PLACED && p.node !== idOf("fo-a") ? p : undefined;
      },
      60_000,
      "the VM placed again",
    );
    assert.equal(moved.node, idOf("fo-b"), "the node holding the replica");
    await waitReady(node("fo-b"), "fo-vm");
    assert.equal(await sh(node("fo-b"), "fo-vm", read), digest, "what the guest wrote before the last point is there");

    // The event names the data-loss window; fo-c was not even asked.
    const events: ClusterEvent[] = [];
    for await (const r of agg.client.aggregator.streamClusterEvents({})) if (r.event) events.push(r.event);
    const replaced = events.find((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED && e.workloadId === workloadId);
    assert.ok(
      events.some((e) => e.kind === ClusterEventKind.ALERT_RAISED && e.attributes.alert?.startsWith("replication_lag_")),
      "the alert is a cluster event too",
    );
    assert.ok(replaced, "a WORKLOAD_REPLACED event");
    assert.match(replaced.message, /started from the replicas of its volumes taken at .*data-loss window/);
    assert.equal(replaced.attributes.replica_point, new Date(pointMs).toISOString());
    assert.ok(Number(replaced.attributes.data_loss_window_ms) >= Number(replaced.attributes.data_loss_window_at_least_ms));
    const auction = (await agg.client.aggregator.getAuction({ auction: moved.auctionId })).auction;
    assert.deepEqual(
      auction?.bids.map((b) => b.node),
      [idOf("fo-b")],
      "only the replica holder was asked",
    );
    const onB = (await node("fo-b").storage.getVolume({ volume: "fo-data" })).volume;
    assert.equal(onB?.pool, "tank", "the replica became the VM's volume on fo-b");
  });
});
