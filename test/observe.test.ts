// ObserveService beyond executable logs: lifecycle events, telemetry, and aetherd's own log.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { LogChannel, LogSource } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { collect, useDaemon } from "./helpers/daemon.js";

describe("observe: events, telemetry, daemon log", () => {
  const env = useDaemon();

  it("streams lifecycle events of the caller's tenant as they happen", async () => {
    const abort = new AbortController();
    const stream = env.aether.observe.streamEvents({ tenant: "events", kindPrefixes: ["executable."] }, { signal: abort.signal });
    const received: string[] = [];
    const reading = (async () => {
      try {
        for await (const { event } of stream) {
          received.push(`${event?.kind} ${event?.resourceName} ${event?.attributes.exit_code ?? ""}`.trim());
          if (received.length === 2) abort.abort();
        }
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      }
    })();
    await new Promise((r) => setTimeout(r, 200)); // the subscription is open
    await env.aether.runtime.startExecutable({ name: "noise", tenant: "other", argv: ["/bin/true"] });
    await env.aether.runtime.startExecutable({ name: "evented", tenant: "events", argv: ["/bin/sh", "-c", "exit 2"] });
    await reading;
    assert.deepEqual(received, ["executable.started evented", "executable.exited evented 2"]);
  });

  it("reads telemetry from the kernel", async () => {
    const { telemetry } = await env.aether.observe.getTelemetry({});
    const total = Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1]) * 1024;
    assert.equal(telemetry?.memoryTotalBytes, BigInt(total));
    assert.ok((telemetry?.memoryAvailableBytes ?? 0n) > 0n);
    assert.ok((telemetry?.loadAverage1m ?? -1) >= 0);
    assert.deepEqual(
      telemetry?.pressure.map((p) => p.resource),
      ["cpu", "memory", "io"],
    );
  });

  it("streams aetherd's own structured log", async () => {
    const logs = await collect(env.aether.observe.streamLogs({ source: LogSource.DAEMON, tailLines: 50 }));
    const lines = (logs[LogChannel.DAEMON] ?? "")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string });
    assert.ok(lines.some((l) => l.msg === "aetherd ready"));
  });
});
