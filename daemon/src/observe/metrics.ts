// aetherd's Prometheus metrics. Every figure is read from the rooms' registries and the kernel when
// Prometheus scrapes (prom-client collect() callbacks; perScrape() reads each source once per
// scrape): executables, cells, VMs, volumes and images by state; per VM its vCPU time (the QEMU or
// Firecracker vCPU threads), memory, block I/O (QMP query-blockstats) and TAP bytes; per cell its
// cgroup's CPU time, throttling, memory and OOM kills; node telemetry; the bids this node answered.
// The RPC metrics (aether_rpc_*) are counted by @aether/server's listen().
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type * as PromClient from "prom-client";
import type { Registry } from "prom-client";
import type { Logger } from "pino";
import { perScrape, serveMetrics, type MetricsEndpoint } from "@aether/server";
import type { MetricsConfig, TcpConfig } from "../config.js";
import type { Supervisor } from "../runtime/supervisor.js";
import type { CellRecord, CellRegistry } from "../cells/registry.js";
import type { CellStatsValue } from "../cells/backend.js";
import type { StorageRegistry } from "../storage/registry.js";
import type { VmRecord } from "../vm/record.js";
import type { QmpClient } from "../vm/qmp.js";
import type { Bidding } from "../auction/service.js";
import { readTelemetry } from "./telemetry.js";

export interface DaemonMetricsDeps {
  supervisor: Supervisor;
  cells: CellRegistry;
  vms: { list(): VmRecord[]; pidOf(vm: VmRecord): number; qmp(vm: VmRecord): QmpClient | undefined };
  storage: StorageRegistry;
  bidding: Bidding;
  log: Logger;
}

const CLOCK_TICKS_PER_SECOND = 100;

/**
 * A small kernel file (/proc, /sys), read at once: each takes microseconds, where the thread pool's
 * open/fstat/read/close for hundreds of them per scrape would queue behind aetherd's other file work.
 */
function kernelFile(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
const PAGE_BYTES = 4096;

/** A VM's labels on its series. */
const vmLabels = (vm: VmRecord) => ({ vm: vm.spec.name, vm_id: vm.spec.id, tenant: vm.spec.tenant });
const cellLabels = (c: CellRecord) => ({ cell: c.name, cell_id: c.id, tenant: c.tenant });

/** utime + stime of a process or thread from its stat file, in seconds; undefined when it is gone. */
async function cpuSeconds(statPath: string): Promise<number | undefined> {
  const stat = kernelFile(statPath);
  if (stat === undefined) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/**
 * The CPU time of a VM's vCPU threads: QEMU's from QMP query-cpus-fast (each vCPU's thread id; vCPUs
 * that share one thread, as single-threaded TCG runs them, are labelled together as "all"),
 * Firecracker's from its thread names ("fc_vcpu 0").
 */
async function vcpuSeconds(pid: number, qmp: QmpClient | undefined): Promise<Array<{ vcpu: string; seconds: number }>> {
  const threads = new Map<number, string[]>();
  if (qmp) {
    const cpus = await qmp.execute<Array<{ "cpu-index": number; "thread-id": number }>>("query-cpus-fast", undefined, 2000);
    for (const c of cpus) threads.set(c["thread-id"], [...(threads.get(c["thread-id"]) ?? []), String(c["cpu-index"])]);
  } else {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      // the process is gone
    }
    for (const tid of tids) {
      const comm = (kernelFile(`/proc/${pid}/task/${tid}/comm`) ?? "").trim();
      const vcpu = /^fc_vcpu (\d+)$/.exec(comm)?.[1];
      if (vcpu !== undefined) threads.set(Number(tid), [vcpu]);
    }
  }
  const out: Array<{ vcpu: string; seconds: number }> = [];
  for (const [tid, vcpus] of threads) {
    const seconds = await cpuSeconds(`/proc/${pid}/task/${tid}/stat`);
    if (seconds !== undefined) out.push({ vcpu: vcpus.length === 1 ? (vcpus[0] as string) : "all", seconds });
  }
  return out;
}

interface BlockStats {
  drive: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
}

interface VmSample {
  vm: VmRecord;
  cpuSeconds?: number;
  vcpus: Array<{ vcpu: string; seconds: number }>;
  rssBytes?: number;
  blocks: BlockStats[];
  /** From the guest's side: what it received is what the host wrote into the TAP (tx_bytes). */
  nics: Array<{ tap: string; receiveBytes: number; transmitBytes: number }>;
}

interface QmpBlockStats {
  device?: string;
  qdev?: string;
  "node-name"?: string;
  stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number };
}

async function sampleVm(vm: VmRecord, deps: DaemonMetricsDeps): Promise<VmSample> {
  const pid = deps.vms.pidOf(vm);
  const sample: VmSample = { vm, vcpus: [], blocks: [], nics: [] };
  if (pid === 0) return sample;
  const statm = kernelFile(`/proc/${pid}/statm`);
  sample.rssBytes = statm === undefined ? undefined : Number(statm.split(" ")[1]) * PAGE_BYTES;
  sample.cpuSeconds = await cpuSeconds(`/proc/${pid}/stat`);
  const qmp = vm.spec.hypervisor === "qemu" ? deps.vms.qmp(vm) : undefined;
  if (qmp) {
    try {
      sample.vcpus = await vcpuSeconds(pid, qmp);
      const stats = await qmp.execute<QmpBlockStats[]>("query-blockstats", undefined, 2000);
      sample.blocks = stats.map((s) => ({
        drive: s.device || s.qdev || s["node-name"] || "unknown",
        readBytes: s.stats.rd_bytes,
        writeBytes: s.stats.wr_bytes,
        readOps: s.stats.rd_operations,
        writeOps: s.stats.wr_operations,
      }));
    } catch (err) {
      deps.log.debug({ vm: vm.spec.name, err: (err as Error).message }, "QMP did not answer; no vCPU or block figures in this scrape");
    }
  } else {
    sample.vcpus = await vcpuSeconds(pid, undefined);
  }
  for (const nic of vm.spec.nics) {
    const read = (file: string) => {
      const text = kernelFile(`/sys/class/net/${nic.tap}/statistics/${file}`);
      return text === undefined ? undefined : Number(text);
    };
    const [tx, rx] = [read("tx_bytes"), read("rx_bytes")];
    if (tx !== undefined && rx !== undefined) sample.nics.push({ tap: nic.tap, receiveBytes: tx, transmitBytes: rx });
  }
  return sample;
}

/** Counts of things by labels, for the "by state" gauges. */
function countBy<T>(items: T[], labels: (item: T) => Record<string, string>): Array<[Record<string, string>, number]> {
  const counts = new Map<string, [Record<string, string>, number]>();
  for (const item of items) {
    const l = labels(item);
    const key = JSON.stringify(l);
    const entry = counts.get(key) ?? [l, 0];
    entry[1]++;
    counts.set(key, entry);
  }
  return [...counts.values()];
}

/** aetherd's registry: every family below is filled when it is scraped. */
export function daemonMetrics(deps: DaemonMetricsDeps): Registry {
  // Loaded here, when metrics are asked for, not at every start of aetherd (issue 18, idle footprint):
  // prom-client brings the OpenTelemetry API, some 80 CommonJS modules.
  const { Counter, Gauge, Registry } = createRequire(import.meta.url)("prom-client") as typeof PromClient;
  const registry = new Registry();
  const registers = [registry];
  const vmSamples = perScrape(() => Promise.all(deps.vms.list().map((vm) => sampleVm(vm, deps))));
  const cellSamples = perScrape(async () => {
    const out: Array<{ cell: CellRecord; stats: CellStatsValue }> = [];
    if (deps.cells.backendVersion === undefined) return out;
    for (const cell of deps.cells.list()) {
      const stats = await deps.cells.stats(cell).catch(() => undefined);
      if (stats) out.push({ cell, stats });
    }
    return out;
  });
  const telemetry = perScrape(() => readTelemetry({ diskWaitMs: 0 }));

  // A gauge or counter whose samples are set from a reading at scrape time.
  type Samples = Array<[Record<string, string>, number]>;
  const family = (kind: "gauge" | "counter", name: string, help: string, labelNames: string[], read: () => Promise<Samples> | Samples) => {
    if (kind === "gauge")
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const samples = await read();
          this.reset();
          for (const [labels, value] of samples) this.set(labels, value);
        },
      });
    else
      new Counter({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const samples = await read();
          this.reset();
          for (const [labels, value] of samples) this.inc(labels, value);
        },
      });
  };

  // ---- inventories by state
  family("gauge", "aether_executables", "Executables aetherd tracks, by tenant and state.", ["tenant", "state"], () =>
    countBy(deps.supervisor.list(), (e) => ({ tenant: e.spec.tenant, state: e.status })),
  );
  family("gauge", "aether_cells", "Cells, by tenant and phase (creating, ready, freeing).", ["tenant", "state"], () =>
    countBy(deps.cells.list(), (c) => ({ tenant: c.tenant, state: c.phase })),
  );
  family("gauge", "aether_vms", "VMs, by tenant and state.", ["tenant", "state"], () =>
    countBy(deps.vms.list(), (vm) => ({ tenant: vm.spec.tenant, state: vm.runtime.state })),
  );
  family("gauge", "aether_volumes", "Volumes, by tenant, pool and state.", ["tenant", "pool", "state"], () =>
    countBy(deps.storage.listVolumes(), (v) => ({ tenant: v.tenant, pool: v.pool, state: v.state })),
  );
  family("gauge", "aether_images", "Images, by tenant and state.", ["tenant", "state"], () =>
    countBy(deps.storage.listImages(), (i) => ({ tenant: i.tenant, state: i.state })),
  );

  // ---- per VM
  const vmKeys = ["vm", "vm_id", "tenant"];
  family("gauge", "aether_vm_state", "1 for each VM in its current state.", [...vmKeys, "state", "hypervisor"], () =>
    deps.vms.list().map((vm) => [{ ...vmLabels(vm), state: vm.runtime.state, hypervisor: vm.spec.hypervisor }, 1]),
  );
  family("gauge", "aether_vm_vcpus", "vCPUs a VM was given.", vmKeys, () => deps.vms.list().map((vm) => [vmLabels(vm), vm.spec.vcpus]));
  family("gauge", "aether_vm_memory_bytes", "Memory a VM was given.", vmKeys, () =>
    deps.vms.list().map((vm) => [vmLabels(vm), vm.spec.memoryBytes]),
  );
  family("gauge", "aether_vm_resident_memory_bytes", "Resident memory of a running VM's hypervisor process.", vmKeys, async () =>
    (await vmSamples()).flatMap((s) => (s.rssBytes === undefined ? [] : [[vmLabels(s.vm), s.rssBytes]])),
  );
  family(
    "counter",
    "aether_vm_cpu_seconds_total",
    "CPU time of a running VM's hypervisor process (vCPUs, emulation and I/O threads).",
    vmKeys,
    async () => (await vmSamples()).flatMap((s) => (s.cpuSeconds === undefined ? [] : [[vmLabels(s.vm), s.cpuSeconds]])),
  );
  family("counter", "aether_vm_vcpu_seconds_total", "CPU time of each vCPU thread of a running VM.", [...vmKeys, "vcpu"], async () =>
    (await vmSamples()).flatMap((s) => s.vcpus.map((v): Samples[number] => [{ ...vmLabels(s.vm), vcpu: v.vcpu }, v.seconds])),
  );
  const block = (name: string, help: string, pick: (b: BlockStats) => number) =>
    family("counter", name, help, [...vmKeys, "drive"], async () =>
      (await vmSamples()).flatMap((s) => s.blocks.map((b): Samples[number] => [{ ...vmLabels(s.vm), drive: b.drive }, pick(b)])),
    );
  block("aether_vm_block_read_bytes_total", "Bytes a VM read from each drive (QMP query-blockstats).", (b) => b.readBytes);
  block("aether_vm_block_written_bytes_total", "Bytes a VM wrote to each drive (QMP query-blockstats).", (b) => b.writeBytes);
  block("aether_vm_block_reads_total", "Read operations of a VM on each drive (QMP query-blockstats).", (b) => b.readOps);
  block("aether_vm_block_writes_total", "Write operations of a VM on each drive (QMP query-blockstats).", (b) => b.writeOps);
  const nic = (name: string, help: string, pick: (n: VmSample["nics"][number]) => number) =>
    family("counter", name, help, [...vmKeys, "interface"], async () =>
      (await vmSamples()).flatMap((s) => s.nics.map((n): Samples[number] => [{ ...vmLabels(s.vm), interface: n.tap }, pick(n)])),
    );
  nic("aether_vm_network_receive_bytes_total", "Bytes a VM received on each NIC (its TAP device's tx_bytes).", (n) => n.receiveBytes);
  nic("aether_vm_network_transmit_bytes_total", "Bytes a VM sent on each NIC (its TAP device's rx_bytes).", (n) => n.transmitBytes);

  // ---- per cell
  const cellKeys = ["cell", "cell_id", "tenant"];
  const cell = (kind: "gauge" | "counter", name: string, help: string, pick: (s: CellStatsValue) => number) =>
    family(kind, name, help, cellKeys, async () => (await cellSamples()).map(({ cell, stats }) => [cellLabels(cell), pick(stats)]));
  cell("counter", "aether_cell_cpu_seconds_total", "CPU time used in a cell (its cgroup).", (s) => s.cpuUsageUsec / 1e6);
  cell(
    "counter",
    "aether_cell_cpu_throttled_seconds_total",
    "Time a cell's tasks were throttled by its cpu max.",
    (s) => s.cpuThrottledUsec / 1e6,
  );
  cell(
    "counter",
    "aether_cell_cpu_throttled_periods_total",
    "Scheduler periods in which a cell was throttled.",
    (s) => s.cpuThrottledPeriods,
  );
  cell("gauge", "aether_cell_memory_bytes", "Memory a cell uses now.", (s) => s.memoryCurrentBytes);
  cell("counter", "aether_cell_oom_kills_total", "Processes the kernel's OOM killer killed in a cell.", (s) => s.oomKillCount);
  cell("gauge", "aether_cell_pids", "Processes and threads in a cell.", (s) => s.pidsCurrent);
  family("gauge", "aether_cell_memory_max_bytes", "A cell's memory limit (memory max); cells without one have no series.", cellKeys, () =>
    deps.cells.list().flatMap((c): Samples => (c.limits.memoryMaxBytes > 0 ? [[cellLabels(c), c.limits.memoryMaxBytes]] : [])),
  );

  // ---- the node
  const node = (name: string, help: string, labelNames: string[], read: (t: Awaited<ReturnType<typeof telemetry>>) => Samples) =>
    family("gauge", name, help, labelNames, async () => read(await telemetry()));
  node("aether_node_load1", "Load average over 1 minute.", [], (t) => [[{}, t.load[0]]]);
  node("aether_node_load5", "Load average over 5 minutes.", [], (t) => [[{}, t.load[1]]]);
  node("aether_node_load15", "Load average over 15 minutes.", [], (t) => [[{}, t.load[2]]]);
  node("aether_node_runnable_tasks", "Runnable tasks now (procs_running).", [], (t) => [[{}, t.runnableTasks]]);
  node("aether_node_cpus", "CPUs of the host.", [], (t) => [[{}, t.cpuCount]]);
  node("aether_node_memory_total_bytes", "Memory of the host.", [], (t) => [[{}, t.memoryTotalBytes]]);
  node("aether_node_memory_available_bytes", "Memory available per the kernel (MemAvailable).", [], (t) => [[{}, t.memoryAvailableBytes]]);
  node("aether_node_pressure_some_ratio", "PSI 'some' over 10 s, by resource (0..1).", ["resource"], (t) =>
    t.pressure.filter((p) => p.available).map((p) => [{ resource: p.resource }, p.someAvg10 / 100]),
  );
  node("aether_node_pressure_full_ratio", "PSI 'full' over 10 s, by resource (0..1).", ["resource"], (t) =>
    t.pressure.filter((p) => p.available).map((p) => [{ resource: p.resource }, p.fullAvg10 / 100]),
  );
  node("aether_node_disk_wear_ratio", "Rated endurance used, by disk (1 = 100 %); disks of unknown wear have no series.", ["device"], (t) =>
    t.disks.flatMap((d): Samples => (d.known && d.percentageUsed !== undefined ? [[{ device: d.device }, d.percentageUsed / 100]] : [])),
  );
  family("gauge", "aether_node_memory_committed_bytes", "Memory promised to VMs, cells, workloads and bid holds.", [], () => [
    [{}, deps.bidding.committed().memoryBytes],
  ]);

  // ---- bids
  family(
    "counter",
    "aether_bids_total",
    "Bid requests answered, by outcome (bid, declined) and the kind of reason a decline gave.",
    ["outcome", "reason"],
    () => [...deps.bidding.bidCounts.values()].map((b) => [{ outcome: b.outcome, reason: b.reason }, b.count]),
  );

  // ---- aetherd itself
  family("counter", "process_cpu_seconds_total", "CPU time of aetherd.", [], () => {
    const u = process.cpuUsage();
    return [[{}, (u.user + u.system) / 1e6]];
  });
  family("gauge", "process_resident_memory_bytes", "Resident memory of aetherd.", [], () => [[{}, process.memoryUsage.rss()]]);
  return registry;
}

/**
 * The metrics endpoint of the [metrics] configuration, when there is one: the registry (listen()
 * counts the RPCs in it too) and the open endpoint. A non-loopback address without TLS is refused
 * (ListenError) before anything is served.
 */
export async function openMetrics(
  config: { metrics?: MetricsConfig; tcp?: TcpConfig },
  deps: DaemonMetricsDeps,
): Promise<{ registry: Registry; endpoint: MetricsEndpoint } | undefined> {
  const m = config.metrics;
  if (m === undefined) return undefined;
  const tls =
    m.tls && config.tcp ? { cert: config.tcp.cert, key: config.tcp.key, client_ca: config.tcp.client_ca, crl: config.tcp.crl } : {};
  const registry = daemonMetrics(deps);
  const endpoint = await serveMetrics(
    {
      listen: m.listen,
      ...tls,
      ...(m.cert !== undefined && { cert: m.cert }),
      ...(m.key !== undefined && { key: m.key }),
      ...(m.client_ca !== undefined && { client_ca: m.client_ca }),
      ...(m.crl !== undefined && { crl: m.crl }),
      program: "aetherd",
      setting: "[metrics] listen",
      tlsSetting: "[metrics] tls = true (the [tcp] node certificate, key and client CA) or [metrics] cert, key and client_ca",
    },
    registry,
    deps.log,
  );
  return { registry, endpoint };
}
