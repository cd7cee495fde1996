// Traffic layer (issue 16): the switch time of a blue-green style weight change (SetWeights through
// aetherd, HAProxy's runtime API, until a client sees only the new version) against the floor of the
// same `set weight` commands sent straight to HAProxy's admin socket; and requests per second through
// the endpoint's HAProxy against straight to the one backend it sends to, in the same run (the proxy's
// own cost). One real aetherd, Debian's HAProxy, two python3 services on loopback.
import type { AetherClient } from "@aether/sdk";
import { startDaemon, type TestDaemon } from "../test/helpers/daemon.js";
import { freePort } from "../test/helpers/net.js";
import { get, startLoad, startVersionService, tally, type Load, type VersionService } from "../test/helpers/traffic.js";
import { runtimeCommand } from "../daemon/src/traffic/runtime-api.js";
import { ms, percentile } from "./stats.js";

export interface TrafficBenchResult {
  switchRows: string[][];
  throughputRows: string[][];
  switchP50Ms: number;
  directSwitchP50Ms: number;
  throughputRatio: number;
}

/** From t0, how long until every request sent afterwards answered `to`: the last request sent that answered otherwise, relative to t0. */
function switchedAfter(load: Load, t0: number, to: string): number | undefined {
  const after = load.answers.filter((a) => a.sentAt >= t0);
  if (after.filter((a) => a.body === to).length < 40) return undefined;
  const lastOld = Math.max(t0, ...after.filter((a) => a.body !== to).map((a) => a.at));
  return lastOld - t0;
}

async function waitSwitched(load: Load, t0: number, to: string): Promise<number> {
  for (;;) {
    const t = switchedAfter(load, t0, to);
    if (t !== undefined) return t;
    if (performance.now() - t0 > 10_000) throw new Error(`the client did not see only ${to} within 10 s of the switch`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Requests per second from `concurrency` loops over durationMs. */
async function rate(url: string, durationMs: number, concurrency: number): Promise<{ perSecond: number; failures: number }> {
  const load = startLoad(url, { concurrency });
  const start = performance.now();
  await new Promise((r) => setTimeout(r, durationMs));
  const answers = await load.stop();
  const seconds = (performance.now() - start) / 1000;
  return { perSecond: answers.length / seconds, failures: tally(answers).failures.length };
}

export async function benchTraffic(switches: number, seconds: number): Promise<TrafficBenchResult> {
  let daemon: TestDaemon | undefined;
  let aether: AetherClient | undefined;
  const services: VersionService[] = [];
  try {
    daemon = await startDaemon();
    aether = await daemon.client();
    const [v1, v2] = await Promise.all([startVersionService("v1"), startVersionService("v2")]);
    services.push(v1, v2);
    const listen = `127.0.0.1:${await freePort()}`;
    const url = `http://${listen}/`;
    const spec = {
      name: "bench",
      listen,
      backends: [
        { id: "v1", address: v1.address, weight: 100 },
        { id: "v2", address: v2.address, weight: 0 },
      ],
      healthCheck: { kind: { case: "http" as const, value: { path: "/healthz" } }, intervalMs: 1000 },
    };
    const put = await aether.traffic.putEndpoint({ spec });
    const socket = put.endpoint?.proxy?.adminSocket ?? "";
    while ((await get(url).catch(() => "")) !== "v1") await new Promise((r) => setTimeout(r, 50));

    // Switches back and forth, through aetherd and straight to the admin socket, interleaved.
    const through: number[] = [];
    const rpc: number[] = [];
    const direct: number[] = [];
    let current = "v1";
    const load = startLoad(url, { concurrency: 4 });
    try {
      for (let i = 0; i < switches; i++) {
        for (const how of ["aetherd", "direct"] as const) {
          const to = current === "v1" ? "v2" : "v1";
          const weights = { [to]: 100, [current]: 0 };
          const t0 = performance.now();
          if (how === "aetherd") {
            await aether.traffic.setWeights({ name: "bench", weights });
            rpc.push(performance.now() - t0);
          } else {
            await runtimeCommand(socket, `set weight pool/${to} 100`);
            await runtimeCommand(socket, `set weight pool/${current} 0`);
          }
          (how === "aetherd" ? through : direct).push(await waitSwitched(load, t0, to));
          current = to;
          load.answers.length = 0;
        }
      }
    } finally {
      const failed = tally(await load.stop()).failures.length;
      if (failed > 0) throw new Error(`${failed} requests failed during the switches`);
    }
    // The direct switches left aetherd's record behind: PutEndpoint compares with what HAProxy runs.
    await aether.traffic.putEndpoint({ spec });

    // Throughput: the endpoint (all to v1) vs v1 itself, interleaved, twice each.
    const proxied: number[] = [];
    const straight: number[] = [];
    for (let round = 0; round < 2; round++) {
      proxied.push((await rate(url, (seconds * 1000) / 2, 8)).perSecond);
      straight.push((await rate(`http://${v1.address}/`, (seconds * 1000) / 2, 8)).perSecond);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const switchP50Ms = percentile(through, 50);
    const directSwitchP50Ms = percentile(direct, 50);
    await aether.traffic.deleteEndpoint({ name: "bench" });
    return {
      switchRows: [
        [
          "SetWeights through aetherd, until only the new version answers",
          ms(switchP50Ms),
          ms(percentile(through, 99)),
          ms(Math.max(...through)),
        ],
        ["  the SetWeights call itself (aetherd's round trip)", ms(percentile(rpc, 50)), ms(percentile(rpc, 99)), ms(Math.max(...rpc))],
        [
          "`set weight` x2 straight to HAProxy's admin socket (floor)",
          ms(directSwitchP50Ms),
          ms(percentile(direct, 99)),
          ms(Math.max(...direct)),
        ],
      ],
      throughputRows: [
        ["through the endpoint's HAProxy", mean(proxied).toFixed(0)],
        ["straight to the backend", mean(straight).toFixed(0)],
      ],
      switchP50Ms,
      directSwitchP50Ms,
      throughputRatio: mean(proxied) / mean(straight),
    };
  } finally {
    await aether?.traffic.deleteEndpoint({ name: "bench" }).catch(() => undefined);
    await Promise.all(services.map((s) => s.kill()));
    if (daemon) {
      await daemon.stop();
      daemon.cleanup();
    }
  }
}
