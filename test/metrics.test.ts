// Prometheus metrics, read by a real Prometheus: two aetherd and an aggregator serve /metrics on
// loopback, a Prometheus started here scrapes them every second, and its HTTP API must show the VM
// this test booted (running, its vCPU time, its memory, the bytes it read from its disk, the bytes
// it sent through its TAP) and the auction it ran (decision time counted once, two bidders, two bids answered), with
// the RPCs counted by code. A metrics address that is not loopback without TLS is refused at start
// with a sentence, by both programs; with mutual TLS, a scraper without a certificate gets nothing.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { NodeState, PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { eventually, repoRoot, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { freePort } from "./helpers/net.js";
import { createCa } from "./helpers/pki.js";
import { startPrometheus, type TestPrometheus } from "./helpers/prometheus.js";

const MiB = 1024n * 1024n;
/** A bridge of this test's own on the host (a name scripts/leftovers.mjs would report if left). */
const BRIDGE = "aether-mbr0";
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("Prometheus scrapes aetherd and the aggregator", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-metrics-"));
  let agg: TestAggregator;
  const nodes: TestDaemon[] = [];
  const metricsAddresses: string[] = [];
  let aggMetrics = "";
  let prom: TestPrometheus;
  let aether: AetherClient;

  before(async () => {
    aggMetrics = `127.0.0.1:${await freePort()}`;
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--metrics-listen", aggMetrics, "--auction-window-ms", "2000"] });
    for (const name of ["node-a", "node-b"]) {
      const address = `127.0.0.1:${await freePort()}`;
      const config = join(dir, `${name}.toml`);
      writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n\n[metrics]\nlisten = "${address}"\n`);
      mkdirSync(join(dir, name), { recursive: true });
      nodes.push(await startDaemon({ dir: join(dir, name), args: ["--config", config, "--kvm-probe-timeout-ms", "4000"] }));
      metricsAddresses.push(address);
    }
    aether = await (nodes[0] as TestDaemon).client();
    execFileSync("ip", ["link", "add", BRIDGE, "type", "bridge"]);
    execFileSync("ip", ["link", "set", BRIDGE, "up"]);
    prom = await startPrometheus([
      { job: "aetherd", targets: metricsAddresses },
      { job: "aether-aggregator", targets: [aggMetrics] },
    ]);
  });

  after(async () => {
    await prom?.stop();
    for (const d of nodes) {
      try {
        await stopWorkloads(await d.client());
        assert.equal(await d.stop(), 0);
      } finally {
        d.cleanup();
      }
    }
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
    spawnSync("ip", ["link", "delete", BRIDGE]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** The query's vector once check accepts it (Prometheus scrapes every second). */
  const settled = async (expr: string, check: (r: Awaited<ReturnType<TestPrometheus["query"]>>) => boolean, what: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await prom.query(expr);
      if (check(r)) return r;
      if (Date.now() > deadline) assert.fail(`${what}: ${expr} is ${JSON.stringify(r)} after 30 s`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  };

  it("every target is up", async () => {
    await settled('up{job="aetherd"} == 1', (r) => r.length === 2, "both aetherd are scraped");
    await settled('up{job="aether-aggregator"} == 1', (r) => r.length === 1, "the aggregator is scraped");
  });

  it("the series of a VM it booted: running, vCPU time, memory, disk reads, TAP bytes; its RPCs by code", async () => {
    const disk = join(dir, "data.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]);
    const g = guestImage();
    await aether.vm.createVm({
      name: "scraped",
      acceleration: vmApi.Acceleration.TCG,
      profile: vmApi.VmProfile.PERSISTENT,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet aether.ip=10.251.0.2/24" } } },
      nics: [{ bridge: BRIDGE }],
      disks: [{ source: { case: "hostPath", value: disk }, serial: "data1" }],
      start: true,
    });
    let ready: vmApi.Vm | undefined;
    for await (const r of aether.vm.waitVmReady({ vm: "scraped", timeout: { seconds: 90n } })) ready = r.vm;
    assert.equal(ready?.state, vmApi.VmState.RUNNING, ready?.stateReason);
    // 4 MiB read from the data disk, bypassing the guest's page cache.
    const r = await aether.vm.execVm({
      vm: "scraped",
      argv: [
        "/bin/sh",
        "-c",
        "dd if=/dev/vda of=/dev/null bs=64k count=64 iflag=direct 2>&1 || dd if=/dev/vda of=/dev/null bs=64k count=64 2>&1",
      ],
    });
    assert.equal(r.exitCode, 0, text(r.stdout) + text(r.stderr));
    // Nobody answers on the bridge: the guest's ARP requests are what it sends.
    await aether.vm.execVm({ vm: "scraped", argv: ["/bin/ping", "-c", "3", "-W", "1", "10.251.0.9"], timeout: { seconds: 30n } });
    const id = ready?.id ?? "";
    const tap = ready?.nics[0]?.tapDevice ?? "";

    // Scraped every second: the series of its earlier state (starting) may be the newest for a moment.
    const [state] = await settled(
      `aether_vm_state{vm="scraped"} == 1`,
      (v) => v.length === 1 && v[0]?.metric.state === "running",
      "the VM's state series",
    );
    assert.equal(state?.metric.vm_id, id);
    assert.equal(state?.metric.tenant, "default");
    assert.equal(state?.metric.hypervisor, "qemu");
    assert.equal(state?.metric.instance, metricsAddresses[0], "node-a reports it");
    const [memory] = await settled(`aether_vm_memory_bytes{vm="scraped"}`, (v) => v.length === 1, "the VM's memory");
    assert.equal(memory?.value, 128 * 1024 * 1024);
    await settled(`aether_vm_vcpus{vm="scraped"} == 1`, (v) => v.length === 1, "one vCPU");
    const vcpu = await settled(`aether_vm_vcpu_seconds_total{vm="scraped"} > 0`, (v) => v.length >= 1, "vCPU time above 0");
    const cpu = await settled(`aether_vm_cpu_seconds_total{vm="scraped"}`, (v) => v.length === 1, "the QEMU process's CPU time");
    assert.ok((cpu[0]?.value ?? 0) >= vcpu.reduce((s, x) => s + x.value, 0) - 0.5, "the process's CPU time includes its vCPUs'");
    const rss = await settled(`aether_vm_resident_memory_bytes{vm="scraped"}`, (v) => v.length === 1, "QEMU's resident memory");
    assert.ok((rss[0]?.value ?? 0) > 16 * 1024 * 1024);
    const reads = await settled(
      `sum(aether_vm_block_read_bytes_total{vm="scraped"})`,
      (v) => (v[0]?.value ?? 0) >= 4 * 1024 * 1024,
      "the 4 MiB read from the data disk (query-blockstats)",
    );
    assert.ok((reads[0]?.value ?? 0) < 1024 * 1024 * 1024, "and not more than the disk could give");
    const sent = await settled(
      `aether_vm_network_transmit_bytes_total{vm="scraped"} > 0`,
      (v) => v.length === 1,
      "bytes the guest sent on its NIC (its TAP's rx_bytes)",
    );
    assert.equal(sent[0]?.metric.interface, tap);
    await settled(`aether_vm_network_receive_bytes_total{vm="scraped"}`, (v) => v.length === 1, "and what it received");
    await settled(`aether_vm_block_reads_total{vm="scraped"} > 0`, (v) => v.length >= 1, "read operations");
    await settled(`aether_vms{state="running",tenant="default"} == 1`, (v) => v.length === 1, "one running VM on node-a");
    await settled(`aether_cell_memory_bytes{cell="vm-${id}"} > 0`, (v) => v.length === 1, "the VM's own cell and its memory");
    const created = await settled(
      `aether_rpc_requests_total{service="aether.vm.v1.VmService",method="CreateVm",code="OK"}`,
      (v) => v.length === 1,
      "CreateVm counted once, OK",
    );
    assert.equal(created[0]?.value, 1);
    await settled(
      `aether_rpc_duration_seconds_count{service="aether.vm.v1.VmService",method="CreateVm",code="OK"} == 1`,
      (v) => v.length === 1,
      "and its latency observed once",
    );
    await aether.vm.getVm({ vm: "no-such-vm" }).catch(() => undefined);
    await settled(
      `aether_rpc_requests_total{service="aether.vm.v1.VmService",method="GetVm",code="NOT_FOUND"} == 1`,
      (v) => v.length === 1,
      "a refused call is counted with its code",
    );
    await settled(`aether_node_memory_total_bytes > 0`, (v) => v.length === 2, "node telemetry from both nodes");
    await settled(`aether_node_load1 >= 0`, (v) => v.length === 2, "the load of both nodes");
  });

  it("the series of an auction it ran: decision time counted once, two bidders, the bids answered, the placement", async () => {
    await eventually(
      async () =>
        (await agg.client.aggregator.listNodes({})).nodes.filter((n) => n.state === NodeState.READY).length === 2 ? true : undefined,
      20_000,
      "two READY nodes",
    );
    const { placement, auction } = await agg.client.aggregator.deploy({
      spec: {
        name: "scraped-job",
        requirements: { cpuMillis: 10, memoryBytes: 1n << 20n },
        kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } },
      },
    });
    assert.equal(placement?.state, PlacementState.PLACED, placement?.stateReason);
    assert.equal(auction?.bids.length, 2);
    const decided = await settled("aether_auction_decision_seconds_count", (v) => v[0]?.value === 1, "one auction decided");
    assert.equal(decided.length, 1);
    const sum = await prom.query("aether_auction_decision_seconds_sum");
    const recorded = Number(auction?.biddingDuration?.seconds ?? 0n) + (auction?.biddingDuration?.nanos ?? 0) / 1e9;
    assert.ok((sum[0]?.value ?? 0) >= recorded, `the decision time includes the bidding time (${sum[0]?.value} ≥ ${recorded})`);
    const [bidders] = await settled("aether_auction_bidders_sum", (v) => v.length === 1, "bidders");
    assert.equal(bidders?.value, 2, "two nodes were asked");
    await settled('aether_auction_bidders_bucket{le="1"} == 0', (v) => v.length === 1, "no auction had one bidder or fewer");
    await settled('aether_auction_bidders_bucket{le="2"} == 1', (v) => v.length === 1, "the auction had two");
    await settled('aether_auctions_total{state="succeeded",trigger="deploy"} == 1', (v) => v.length === 1, "the auction succeeded");
    const bids = await settled('sum(aether_bids_total{outcome="bid"})', (v) => v[0]?.value === 2, "each node answered one bid");
    assert.equal(bids.length, 1);
    await settled('aether_placements{state="placed",tenant="default"} == 1', (v) => v.length === 1, "one placement, placed");
    await settled('aether_nodes{state="ready",lifecycle="on_duty"} == 2', (v) => v.length === 1, "two nodes ready and on duty");
    await settled("aether_aggregator_leader == 1", (v) => v.length === 1, "the aggregator leads");
    const ages = await settled("aether_node_lease_age_seconds", (v) => v.length === 2, "each node's lease age");
    assert.ok(
      ages.every((a) => a.value >= 0 && a.value < 15),
      `leases are fresh: ${JSON.stringify(ages)}`,
    );
    await settled('aether_store_errors_total{operation="put"} == 0', (v) => v.length === 1, "no store errors");
    await settled(
      'aether_rpc_requests_total{job="aether-aggregator",service="aether.auction.v1.AggregatorService",method="Deploy",code="OK"} == 1',
      (v) => v.length === 1,
      "the aggregator counted the Deploy",
    );
    await settled('aether_executables{state="running"} == 1', (v) => v.length === 1, "the job runs on one node");
  });
});

describe("the metrics listener refuses to be exposed", () => {
  it("a non-loopback address without TLS is refused at start with a sentence, by aetherd and the aggregator", () => {
    const tmp = mkdtempSync(join(tmpdir(), "aether-metrics-refused-"));
    try {
      const config = join(tmp, "aetherd.toml");
      writeFileSync(config, '[metrics]\nlisten = "0.0.0.0:9464"\n');
      const d = spawnSync(
        process.execPath,
        [
          join(repoRoot, "daemon", "bin", "aetherd.mjs"),
          "--socket",
          join(tmp, "d.sock"),
          "--state-dir",
          join(tmp, "d"),
          "--config",
          config,
          "--log-level",
          "silent",
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(d.status, 2, d.stderr);
      assert.match(d.stderr, /aetherd: \[metrics\] listen 0\.0\.0\.0:9464 is not a loopback address and no TLS is configured/);
      const a = spawnSync(
        process.execPath,
        [
          join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs"),
          "--socket",
          join(tmp, "a.sock"),
          "--state-dir",
          join(tmp, "a"),
          "--metrics-listen",
          "10.1.2.3:9465",
          "--log-level",
          "silent",
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(a.status, 2, a.stderr);
      assert.match(
        a.stderr,
        /aether-aggregator: --metrics-listen \(metrics_listen\) 10\.1\.2\.3:9465 is not a loopback address and no TLS is configured/,
      );
      const t = spawnSync(
        process.execPath,
        [
          join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs"),
          "--socket",
          join(tmp, "b.sock"),
          "--state-dir",
          join(tmp, "b"),
          "--metrics-tls",
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(t.status, 2, t.stderr);
      assert.match(t.stderr, /metrics_tls/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("with mutual TLS (the node certificate), a scraper needs a certificate of the CA", async () => {
    const ca = createCa("metrics-ca");
    const server = ca.issue("node-m", { server: true });
    const scraper = ca.issue("prometheus");
    const port = await freePort();
    const config = join(ca.dir, "aetherd.toml");
    writeFileSync(
      config,
      `[tcp]\nlisten = "127.0.0.1:${await freePort()}"\ncert = "${server.cert}"\nkey = "${server.key}"\nclient_ca = "${ca.cert}"\n\n[metrics]\nlisten = "127.0.0.1:${port}"\ntls = true\n`,
    );
    const d = await startDaemon({ args: ["--config", config] });
    try {
      const curl = (...args: string[]) =>
        spawnSync("curl", ["-sS", "--max-time", "10", "--cacert", ca.cert, ...args, `https://127.0.0.1:${port}/metrics`], {
          encoding: "utf8",
        });
      const without = curl();
      assert.notEqual(without.status, 0, "no certificate, no metrics");
      assert.doesNotMatch(without.stdout, /aether_/);
      const withCert = curl("--cert", scraper.cert, "--key", scraper.key);
      assert.equal(withCert.status, 0, withCert.stderr);
      assert.match(withCert.stdout, /^aether_node_memory_total_bytes \d+/m);
      const plain = spawnSync("curl", ["-sS", "--max-time", "10", `http://127.0.0.1:${port}/metrics`], { encoding: "utf8" });
      assert.doesNotMatch(plain.stdout, /aether_/, "plain HTTP gets nothing either");
    } finally {
      assert.equal(await d.stop(), 0);
      d.cleanup();
      rmSync(ca.dir, { recursive: true, force: true });
    }
  });
});
