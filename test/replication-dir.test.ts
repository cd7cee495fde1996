// Volume replication of a dir (qcow2) pool between two aetherd: the VM's QEMU takes the points (a
// full backup first, then incremental backups with a persistent dirty bitmap), the target lays each
// over its copy and makes it the latest only once whole. A kill -9 of the receiving aetherd in the
// middle of a transfer leaves its previous point; the next run goes on from it. Then the VM's node
// is fenced through a test BMC, the aggregator starts the VM on the replica holder from the last
// point, the guest agent reads what the guest wrote, and the event names the data-loss window.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { storage as storageApi, vm as vmApi, type AetherClient } from "@aether/sdk";
import { ClusterEventKind, NodeState, PlacementState, type ClusterEvent } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { eventually, isRunning, powerOffHost, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { sh, waitReady } from "./helpers/migration.js";
import { startTestBmc, type TestBmc, writeBmcRegistration } from "./helpers/test-bmc.js";

const MiB = 1024 * 1024;

describe(
  "dir pool replication: QEMU incremental backups, a receiver killed mid-transfer, failover to the replica holder",
  { timeout: 240_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-repl-dir-"));
    const TTL_MS = 2000;
    let agg: TestAggregator;
    let bmc: TestBmc;
    const daemons = new Map<string, TestDaemon>();
    const clients = new Map<string, AetherClient>();
    const configs = new Map<string, string>();
    let qemuPidOnA = 0;
    const node = (n: string) => clients.get(n) as AetherClient;

    async function startMember(name: string, env?: Record<string, string>): Promise<void> {
      const nodeDir = join(dir, name);
      mkdirSync(join(nodeDir, "pool"), { recursive: true });
      const config = join(nodeDir, "aetherd.toml");
      writeFileSync(
        config,
        `[[pools]]\nname = "files"\ndriver = "dir"\nlocation = "${join(nodeDir, "pool")}"\ndefault = true\n[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n`,
      );
      configs.set(name, config);
      const daemon = await startDaemon({ dir: nodeDir, args: ["--config", config], env });
      daemons.set(name, daemon);
      clients.set(name, await daemon.client());
    }

    before(async () => {
      bmc = await startTestBmc({
        profile: "dmtf",
        onPowerOff: async () => {
          const a = daemons.get("dr-a");
          if (a) await powerOffHost(a, qemuPidOnA > 0 ? [qemuPidOnA] : []);
        },
      });
      const bmcs = writeBmcRegistration(dir, "dr-a", bmc);
      agg = await startAggregator({
        dir: join(dir, "agg"),
        args: ["--lease-ttl-ms", String(TTL_MS), "--bmcs", bmcs, "--fence-timeout-ms", "2000", "--fence-poll-interval-ms", "50"],
      });
      await startMember("dr-a");
      await startMember("dr-b");
      await eventually(
        async () => ((await agg.client.aggregator.listNodes({ state: NodeState.READY })).nodes.length === 2 ? true : undefined),
        20_000,
        "two READY nodes",
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
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("replicates a running VM's qcow2 volume incrementally, survives a receiver killed mid-transfer, and fails over with the data", async () => {
      const nodes = (await agg.client.aggregator.listNodes({})).nodes;
      const idOf = (name: string) => nodes.find((n) => n.name === name)?.id ?? "";
      const created = await node("dr-a").storage.createVolume({
        name: "dr-data",
        source: { case: "empty", value: { sizeBytes: BigInt(64 * MiB) } },
      });
      assert.equal(created.volume?.format, storageApi.VolumeFormat.QCOW2);
      const g = guestImage();
      const { placement } = await agg.client.aggregator.deploy({
        spec: {
          name: "dr-vm",
          requirements: { memoryBytes: BigInt(128 * MiB), cpuMillis: 100 },
          kind: {
            case: "vm",
            value: {
              acceleration: vmApi.Acceleration.TCG,
              memoryBytes: BigInt(128 * MiB),
              vcpus: 1,
              guestAgent: true,
              boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
              disks: [{ source: { case: "volume", value: "dr-data" }, serial: "data" }],
            },
          },
        },
      });
      assert.equal(placement?.node, idOf("dr-a"), placement?.stateReason);
      const workloadId = placement?.workloadId ?? "";
      qemuPidOnA = (await waitReady(node("dr-a"), "dr-vm")).pid;

      const write = (seekMiB: number, countMiB: number) =>
        sh(
          node("dr-a"),
          "dr-vm",
          `dd if=/dev/urandom of=/dev/vda bs=1M seek=${seekMiB} count=${countMiB} conv=fsync 2>/dev/null && echo ok`,
        );
      const read = "dd if=/dev/vda bs=1M skip=8 count=32 2>/dev/null | sha256sum";
      await write(8, 16);
      await node("dr-a").replication.setReplicationPolicy({
        vm: "dr-vm",
        targets: [daemons.get("dr-b")?.address ?? ""],
        interval: { seconds: 3600n, nanos: 0 },
      });
      const full = (await node("dr-a").replication.runReplication({ policy: "dr-vm" })).policy?.volumes[0]?.targets[0];
      assert.equal(full?.lastError, "", full?.lastError);
      const fullBytes = Number(full?.lastSentBytes);
      assert.ok(fullBytes >= 16 * MiB, `a whole first point (${fullBytes} bytes)`);

      // 1 MiB more: the next point is QEMU's incremental backup, about that much.
      await write(24, 1);
      const inc = (await node("dr-a").replication.runReplication({ policy: "dr-vm" })).policy?.volumes[0]?.targets[0];
      assert.equal(inc?.lastError, "", inc?.lastError);
      const incBytes = Number(inc?.lastSentBytes);
      assert.ok(incBytes >= MiB && incBytes < 4 * MiB, `an increment of about 1 MiB (${incBytes} bytes), not the 64 MiB disk`);
      const replica = (await node("dr-b").replication.listReplicas({})).replicas[0];
      assert.equal(replica?.volumeName, "dr-data");
      assert.deepEqual(replica?.lastPointTime, inc?.lastPointTime);

      // The receiver is killed -9 once it has taken 4 MiB of an 8 MiB increment: its point stays.
      await write(30, 8);
      await daemons.get("dr-b")?.stop();
      await startMember("dr-b", { AETHERD_CRASH_AT: "replication.receiving" });
      const cut = (await node("dr-a").replication.runReplication({ policy: "dr-vm" })).policy?.volumes[0]?.targets[0];
      assert.notEqual(cut?.lastError, "", "the run says the transfer failed");
      const b = daemons.get("dr-b") as TestDaemon;
      await eventually(() => (b.process.signalCode !== null || b.process.exitCode !== null ? true : undefined), 30_000);
      assert.equal(b.process.signalCode, "SIGKILL", "the receiver was killed mid-transfer");
      await startMember("dr-b");
      const kept = (await node("dr-b").replication.listReplicas({})).replicas[0];
      assert.deepEqual(kept?.lastPointTime, inc?.lastPointTime, "the replica is still at its previous point, not a half-applied one");
      const resumed = (await node("dr-a").replication.runReplication({ policy: "dr-vm" })).policy?.volumes[0]?.targets[0];
      assert.equal(resumed?.lastError, "", resumed?.lastError);
      const resumedBytes = Number(resumed?.lastSentBytes);
      assert.ok(resumedBytes >= 8 * MiB && resumedBytes < 16 * MiB, `the changes since the held point only (${resumedBytes} bytes)`);
      const pointMs = timestampDate(resumed?.lastPointTime as Timestamp).getTime();
      const digest = await sh(node("dr-a"), "dr-vm", read);
      await eventually(
        async () => {
          const hb = (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "dr-b")?.heartbeatTime;
          return hb && timestampDate(hb).getTime() > pointMs + 100 ? true : undefined;
        },
        10_000,
        "a heartbeat of dr-b after the last point",
      );

      // dr-a goes silent: the aggregator fences it through its BMC and starts the VM on dr-b.
      process.kill(daemons.get("dr-a")?.process.pid as number, "SIGSTOP");
      const moved = await eventually(
        async () => {
          const p = (await agg.client.aggregator.getPlacement({ workload: workloadId })).placement;
          return p?.state === PlacementState.PLACED && p.node !== idOf("dr-a") ? p : undefined;
        },
        60_000,
        "the VM placed again",
      );
      assert.equal(moved.node, idOf("dr-b"), "the node holding the replica");
      await waitReady(node("dr-b"), "dr-vm");
      assert.equal(await sh(node("dr-b"), "dr-vm", read), digest, "what the guest wrote before the last point is there");

      const events: ClusterEvent[] = [];
      for await (const r of agg.client.aggregator.streamClusterEvents({})) if (r.event) events.push(r.event);
      const replaced = events.find((e) => e.kind === ClusterEventKind.WORKLOAD_REPLACED && e.workloadId === workloadId);
      assert.ok(replaced, "a WORKLOAD_REPLACED event");
      assert.match(replaced.message, /started from the replicas of its volumes taken at .*data-loss window/);
      assert.equal(replaced.attributes.replica_point, new Date(pointMs).toISOString());
      const onB = (await node("dr-b").storage.getVolume({ volume: "dr-data" })).volume;
      assert.equal(onB?.pool, "files", "the replica became the VM's volume on dr-b");
    });
  },
);
