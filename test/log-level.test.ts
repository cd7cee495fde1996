// The log level at runtime: `aether node log-level debug --for 2s` turns on debug on a running
// aetherd and on the aggregator (one "rpc" line per call appears), the change is audited, and the
// configured level comes back by itself when the time is up (the lines stop). Bad levels and
// durations are refused; a tenant may not change a server's level.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@aether/sdk";
import { eventually, useDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { rejectsWith } from "./helpers/assertions.js";
import { runCommand } from "./helpers/run.js";

/** The JSON log lines of a server's stderr that match. */
const lines = (log: string, match: (l: Record<string, unknown>) => boolean) =>
  log
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter(match);
const rpcLines = (log: string, method: string) => lines(log, (l) => l.msg === "rpc" && l.method === method);

describe("log level at runtime", () => {
  const env = useDaemon();
  let agg: TestAggregator;
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address } });

  before(async () => {
    agg = await startAggregator();
  });
  after(async () => {
    if (agg) assert.equal(await agg.stop(), 0, agg.log());
  });

  it("aetherd: debug lines appear for two seconds, the change is audited, then the configured level is back", async () => {
    const shown = await aether("node", "log-level");
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /level\W+info\b/);
    assert.match(shown.stdout, /configured\W+info\b/);

    await env.aether.node.getNodeInfo({});
    assert.equal(rpcLines(env.daemon.log(), "aether.node.v1.NodeService/GetNodeInfo").length, 0, "no debug lines at info");

    const set = await aether("node", "log-level", "debug", "--for", "2s", "--json");
    assert.equal(set.code, 0, set.stderr);
    const answer = JSON.parse(set.stdout) as { level: string; previousLevel: string; configuredLevel: string; revertTime?: string };
    assert.deepEqual([answer.level, answer.previousLevel, answer.configuredLevel], ["debug", "info", "info"]);
    const revertIn = Date.parse(answer.revertTime ?? "") - Date.now();
    assert.ok(revertIn > 0 && revertIn <= 2000, `reverts within 2 s (${answer.revertTime})`);
    await env.aether.node.getNodeInfo({});
    const debug = rpcLines(env.daemon.log(), "aether.node.v1.NodeService/GetNodeInfo");
    assert.equal(debug.length, 1, "one debug line for the call");
    assert.equal(debug[0]?.code, "OK");
    assert.equal(debug[0]?.level, 20, "at debug level");
    assert.match(String(debug[0]?.caller), /^unix:uid=/);
    const changed = lines(env.daemon.log(), (l) => l.msg === "log level changed at runtime");
    assert.equal(changed.length, 1);
    assert.deepEqual([changed[0]?.from, changed[0]?.to, changed[0]?.forMs], ["info", "debug", 2000]);
    const { records } = await env.aether.observe.listAuditRecords({});
    const audited = records.find((r) => r.method.endsWith("aether.node.v1.NodeService/SetLogLevel"));
    assert.ok(audited, "the call is in the audit log");
    assert.equal(audited.result, "ok");

    await eventually(
      () => (lines(env.daemon.log(), (l) => l.msg === "log level reverted to the configured one").length === 1 ? true : undefined),
      10_000,
      "the revert",
    );
    const after = await aether("node", "log-level", "--json");
    assert.equal(after.code, 0, after.stderr);
    const json = JSON.parse(after.stdout) as { level: string; configuredLevel: string; revertTime?: string };
    assert.deepEqual([json.level, json.configuredLevel, json.revertTime], ["info", "info", undefined]);
    await env.aether.node.getNodeInfo({});
    assert.equal(rpcLines(env.daemon.log(), "aether.node.v1.NodeService/GetNodeInfo").length, 1, "no debug lines after the revert");
  });

  it("the aggregator: debug lines appear, then its configured level (warn) is back", async () => {
    await agg.client.aggregator.listNodes({});
    assert.equal(rpcLines(agg.log(), "aether.auction.v1.AggregatorService/ListNodes").length, 0);
    const set = await aether("node", "log-level", "debug", "--for", "2s", "--aggregator", `unix://${agg.socket}`);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /was\W+warn\b/);
    assert.match(set.stdout, /configured\W+warn\b/);
    assert.match(set.stdout, /reverts\W+at \d{4}-\d\d-\d\dT/);
    await agg.client.aggregator.listNodes({});
    assert.equal(rpcLines(agg.log(), "aether.auction.v1.AggregatorService/ListNodes").length, 1);
    const changed = lines(agg.log(), (l) => l.msg === "log level changed at runtime");
    assert.equal(changed[0]?.by, `unix:uid=${process.getuid?.()}`, "who changed it is in the aggregator's log");
    await eventually(
      () => (lines(agg.log(), (l) => l.msg === "log level reverted to the configured one").length === 1 ? true : undefined),
      10_000,
      "the revert",
    );
    await agg.client.aggregator.listNodes({});
    assert.equal(rpcLines(agg.log(), "aether.auction.v1.AggregatorService/ListNodes").length, 1, "no debug lines after the revert");
  });

  it("until changed again without --for; bad levels and durations are refused", async () => {
    const r = await env.aether.node.setLogLevel({ level: "warn" });
    assert.deepEqual([r.level, r.previousLevel, r.configuredLevel, r.revertTime], ["warn", "info", "info", undefined]);
    assert.equal((await env.aether.node.setLogLevel({ level: "info" })).level, "info");
    await rejectsWith(
      env.aether.node.setLogLevel({ level: "loud" }),
      Code.InvalidArgument,
      /level "loud" is not one of fatal, error, warn/,
    );
    await rejectsWith(
      env.aether.node.setLogLevel({ level: "debug", duration: { seconds: 8n * 86400n } }),
      Code.InvalidArgument,
      /longer than 7 days/,
    );
    const bad = await aether("node", "log-level", "loud");
    assert.equal(bad.code, 2, bad.stderr);
    const noLevel = await aether("node", "log-level", "--for", "1m");
    assert.equal(noLevel.code, 2, noLevel.stderr);
    assert.match(noLevel.stderr, /--for needs a level/);
  });
});
