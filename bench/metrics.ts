// The cost of the Prometheus metrics (issue 19, "Measured"):
//  - the exec start round trip (StartExecutable + WaitExecutable of /bin/true) on an aetherd with
//    metrics on (scraped every second, as a demanding Prometheus would) against one with metrics off,
//    interleaved in the same run (goal: < 3 % at p50);
//  - the time to render one scrape of aetherd's registry with 100 VMs and 1,000 executables tracked:
//    aetherd's own collection code, in-process, over fakes of the registries (a QMP that answers at
//    once; every VM's /proc reads are real reads of a live process), since 100 TCG guests do not fit
//    on a bench host.
import type { AetherClient } from "@aether/sdk";
import type { UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { rpcMetrics, silentLogger } from "@aether/server";
import { startDaemon } from "../test/helpers/daemon.js";
import { freePort } from "../test/helpers/net.js";
import { daemonMetrics, type DaemonMetricsDeps } from "../daemon/src/observe/metrics.js";
import type { VmRecord } from "../daemon/src/vm/record.js";
import type { QmpClient } from "../daemon/src/vm/qmp.js";
import { ms, percentile } from "./stats.js";

let started = 0;

async function startWait(aether: AetherClient): Promise<{ ms: number; id: string }> {
  const t = performance.now();
  const { executable } = await aether.runtime.startExecutable({ argv: ["/bin/true"], name: `bench-metrics-${started++}` });
  await aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
  return { ms: performance.now() - t, id: executable?.id ?? "" };
}

export async function benchMetricsCost(
  iterations: number,
): Promise<{ rows: string[][]; overheadP50: number; noiseP50: number; offP50Ms: number }> {
  const address = `127.0.0.1:${await freePort()}`;
  // Two aetherd without metrics: how far apart two identical daemons are here is the noise floor.
  const daemons = {
    off: await startDaemon({ args: ["--log-level", "warn"] }),
    off2: await startDaemon({ args: ["--log-level", "warn"] }),
    on: await startDaemon({ args: ["--log-level", "warn", "--metrics-listen", address] }),
  };
  const kinds = ["off", "off2", "on"] as const;
  let scraping = true;
  let scrapes = 0;
  const scraper = (async () => {
    while (scraping) {
      await fetch(`http://${address}/metrics`).then((r) => r.text());
      scrapes++;
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  try {
    const clients = { off: await daemons.off.client(), off2: await daemons.off2.client(), on: await daemons.on.client() };
    const samples = { off: [] as number[], off2: [] as number[], on: [] as number[] };
    const ids = { off: [] as string[], off2: [] as string[], on: [] as string[] };
    for (let i = 0; i < 20; i++) for (const k of kinds) ids[k].push((await startWait(clients[k])).id); // warm-up
    for (let i = 0; i < iterations; i++) {
      // A different order each round, so none always runs right after another.
      const order = [...kinds.slice(i % 3), ...kinds.slice(0, i % 3)];
      for (const k of order) {
        const r = await startWait(clients[k]);
        samples[k].push(r.ms);
        ids[k].push(r.id);
      }
    }
    for (const k of kinds) for (const id of ids[k]) await clients[k].runtime.deleteExecutable({ executable: id });
    const p50 = { off: percentile(samples.off, 50), off2: percentile(samples.off2, 50), on: percentile(samples.on, 50) };
    const baseline = (p50.off + p50.off2) / 2;
    return {
      rows: [
        ["metrics off (aetherd A)", ms(p50.off), ms(percentile(samples.off, 99))],
        ["metrics off (aetherd B)", ms(p50.off2), ms(percentile(samples.off2, 99))],
        [`metrics on, scraped every second (${scrapes} scrapes)`, ms(p50.on), ms(percentile(samples.on, 99))],
      ],
      overheadP50: p50.on / baseline - 1,
      noiseP50: Math.abs(p50.off2 / p50.off - 1),
      offP50Ms: baseline,
    };
  } finally {
    scraping = false;
    await scraper;
    for (const d of Object.values(daemons)) {
      await d.stop();
      d.cleanup();
    }
  }
}

/**
 * What counting one RPC costs in-process (the interceptor around a handler that answers at once),
 * free of the machine's noise: microseconds per call, with metrics and without.
 */
export async function benchInterceptor(calls: number): Promise<{ perCallMicros: number }> {
  const interceptor = rpcMetrics(new Registry());
  const req = { stream: false, service: { typeName: "aether.runtime.v1.ExecutableService" }, method: { name: "StartExecutable" } };
  const res = { stream: false } as unknown as UnaryResponse;
  const next = async () => res;
  const counted = interceptor(next as never) as unknown as (r: UnaryRequest) => Promise<UnaryResponse>;
  const time = async (call: (r: UnaryRequest) => Promise<unknown>) => {
    const t = performance.now();
    for (let i = 0; i < calls; i++) await call(req as unknown as UnaryRequest);
    return performance.now() - t;
  };
  await time(counted); // warm-up
  const bare = Math.min(await time(next), await time(next));
  const withMetrics = Math.min(await time(counted), await time(counted));
  return { perCallMicros: ((withMetrics - bare) * 1000) / calls };
}

/** A QMP that answers query-blockstats and query-cpus-fast at once, as a healthy QEMU would. */
const fakeQmp = {
  async execute(command: string) {
    if (command === "query-cpus-fast") return [{ "cpu-index": 0, "thread-id": process.pid }];
    if (command === "query-blockstats")
      return [{ device: "", qdev: "vda", stats: { rd_bytes: 4096, wr_bytes: 8192, rd_operations: 1, wr_operations: 2 } }];
    return {};
  },
} as unknown as QmpClient;

export async function benchScrapeRender(renders: number): Promise<{ rows: string[][]; p50Ms: number }> {
  const vms = Array.from(
    { length: 100 },
    (_, i) =>
      ({
        spec: {
          id: `vm-${i}`,
          name: `vm-${i}`,
          tenant: `t${i % 10}`,
          hypervisor: "qemu",
          vcpus: 2,
          memoryBytes: 512 * 1024 * 1024,
          nics: [{ bridge: "br0", mac: "", tap: `ae0000${String(i).padStart(4, "0")}n0` }],
        },
        runtime: { state: "running" },
      }) as unknown as VmRecord,
  );
  const executables = Array.from({ length: 1000 }, (_, i) => ({
    spec: { tenant: `t${i % 10}` },
    status: i % 3 === 0 ? "exited" : "running",
  }));
  const cellStats = {
    cpuUsageUsec: 1,
    cpuUserUsec: 1,
    cpuSystemUsec: 0,
    cpuThrottledUsec: 0,
    cpuPeriods: 0,
    cpuThrottledPeriods: 0,
    memoryCurrentBytes: 1,
    memoryPeakBytes: 1,
    oomKillCount: 0,
    pidsCurrent: 1,
  };
  const cells = vms.map((vm) => ({
    id: `c-${vm.spec.id}`,
    name: `vm-${vm.spec.id}`,
    tenant: vm.spec.tenant,
    phase: "ready",
    limits: { memoryMaxBytes: 1 },
  }));
  const deps = {
    supervisor: { list: () => executables },
    cells: { backendVersion: "v2", list: () => cells, stats: async () => cellStats },
    vms: { list: () => vms, pidOf: () => process.pid, qmp: () => fakeQmp },
    storage: { listVolumes: () => [], listImages: () => [] },
    bidding: { committed: () => ({ memoryBytes: 0 }), bidCounts: new Map() },
    log: silentLogger(),
  } as unknown as DaemonMetricsDeps;
  const registry = daemonMetrics(deps);
  let bytes = 0;
  for (let i = 0; i < 5; i++) bytes = (await registry.metrics()).length; // warm-up
  const samples: number[] = [];
  for (let i = 0; i < renders; i++) {
    // perScrape() keeps a reading 500 ms: each render here reads everything anew.
    await new Promise((r) => setTimeout(r, 510));
    const t = performance.now();
    bytes = (await registry.metrics()).length;
    samples.push(performance.now() - t);
  }
  const p50 = percentile(samples, 50);
  return {
    rows: [["100 VMs, 100 cells, 1,000 executables", ms(p50), ms(percentile(samples, 99)), `${(bytes / 1024).toFixed(0)} KiB`]],
    p50Ms: p50,
  };
}
