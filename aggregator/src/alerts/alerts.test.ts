// The alerts room on a real embedded store: raised at a threshold, kept while the figure stays within
// the clear margin (no flapping), cleared under it; a change of severity clears the old alert and
// raises the new; a threshold set at runtime is stored, checked and applied to the last figures at
// once; a new leader (load()) lists the same alerts with the same since-when and the stored
// thresholds; the lease-age sweep; [alerts] from the configuration checked by name, range and order.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { AlertSeverity, ClusterEventKind, NodeSchema, NodeTelemetrySchema, type Node } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { silentLogger, timestamp } from "@aether/server";
import { EmbeddedStore } from "../store/embedded-store.js";
import type { NewEvent } from "../events/events.js";
import { Alerts, checkTelemetry } from "./alerts.js";
import { configuredThresholds } from "./thresholds.js";

const telemetry = (load1m: number, cpuCount = 2) =>
  create(NodeTelemetrySchema, { load1m, cpuCount, memoryTotalBytes: 1000n, memoryAvailableBytes: 900n, diskWearPercent: -1 });

describe("alerts room", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-alerts-unit-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const room = async (name: string, nodes: Node[] = [], configured: Record<string, number> = {}) => {
    const store = await EmbeddedStore.open(join(dir, name));
    await store.campaign("unit");
    const events: NewEvent[] = [];
    const make = () =>
      new Alerts(
        {
          store,
          log: silentLogger(),
          emit: async (e) => void events.push(e),
          nodes: () => nodes,
          findNode: (ref) => nodes.find((n) => n.id === ref || n.name === ref),
        },
        configured,
      );
    const alerts = make();
    await alerts.load();
    return { store, events, alerts, make };
  };
  const kinds = (events: NewEvent[]) => events.map((e) => `${ClusterEventKind[e.kind]} ${e.attributes?.alert}`);

  it("a volume replica older than its RPO raises replication_lag (a cluster event and an alert), cleared once it is fresh again", async () => {
    const n = create(NodeSchema, { id: "id-r", name: "nr" });
    const { events, alerts } = await room("replication", [n]);
    const lag = (ratio: number) =>
      create(NodeTelemetrySchema, { ...telemetry(0.2), replicationLagRpoRatio: ratio, replicationLagCopy: "data to b" });
    await alerts.observe("id-r", lag(-1)); // replicates nothing
    await alerts.observe("id-r", lag(0.4));
    assert.deepEqual(alerts.list(""), []);
    await alerts.observe("id-r", lag(1.3)); // 1.3x its RPO: warning
    const [raised] = alerts.list("nr");
    assert.equal(raised?.thresholdName, "replication_lag_warning");
    assert.match(raised?.message ?? "", /node nr: a volume replica 1\.30× as old as its RPO is at or past replication_lag_warning 1/);
    await alerts.observe("id-r", lag(0.1)); // a run caught up
    assert.deepEqual(alerts.list(""), []);
    assert.deepEqual(kinds(events), ["ALERT_RAISED replication_lag_warning", "ALERT_CLEARED replication_lag_warning"]);
    assert.throws(() => checkTelemetry(lag(Number.NaN)), /replication_lag_rpo_ratio/);
  });

  it("raises at a threshold, keeps the alert within the clear margin, clears it under; severity changes clear and raise", async () => {
    const n1 = create(NodeSchema, { id: "id-1", name: "n1" });
    const { store, events, alerts } = await room("raise", [n1]);
    await alerts.observe("id-1", telemetry(1.0)); // 0.5 per CPU
    assert.deepEqual(alerts.list(""), []);
    await alerts.observe("id-1", telemetry(1.7)); // 0.85: warning
    const [raised] = alerts.list("n1");
    assert.equal(raised?.severity, AlertSeverity.WARNING);
    assert.equal(raised?.thresholdName, "cpu_warning");
    assert.match(raised?.message ?? "", /node n1: load per CPU 0\.85 is at or past cpu_warning 0\.8/);
    await alerts.observe("id-1", telemetry(1.58)); // 0.79: under 0.8 but within 5 %: kept
    assert.equal(alerts.list("").length, 1);
    await alerts.observe("id-1", telemetry(2.0)); // 1.0: critical
    assert.equal(alerts.list("")[0]?.severity, AlertSeverity.CRITICAL);
    await alerts.observe("id-1", telemetry(1.0)); // 0.5: cleared
    assert.deepEqual(alerts.list(""), []);
    assert.deepEqual(kinds(events), [
      "ALERT_RAISED cpu_warning",
      "ALERT_CLEARED cpu_warning",
      "ALERT_RAISED cpu_critical",
      "ALERT_CLEARED cpu_critical",
    ]);
    assert.deepEqual(await store.list("alerts/active/"), []);
    await store.close();
  });

  it("a threshold set at runtime is checked, stored and applied to the last figures; a new leader reads alerts and thresholds", async () => {
    const n1 = create(NodeSchema, { id: "id-1", name: "n1" });
    const { store, events, alerts, make } = await room("runtime", [n1]);
    await alerts.observe("id-1", telemetry(1.0)); // 0.5 per CPU
    await assert.rejects(alerts.setThreshold("cpu_warn", 1), /no alert threshold named "cpu_warn"/);
    await assert.rejects(alerts.setThreshold("cpu_warning", -1), /must be from 0 to 1000/);
    await assert.rejects(alerts.setThreshold("cpu_warning", Number.NaN), /out of range/);
    await assert.rejects(alerts.setThreshold("cpu_warning", 0.99), /would put cpu_warning above cpu_critical/);
    const set = await alerts.setThreshold("cpu_warning", 0.4);
    assert.equal(set.value, 0.4);
    assert.equal(set.defaultValue, 0.8);
    const [alert] = alerts.list("");
    assert.equal(alert?.threshold, 0.4);
    assert.deepEqual(JSON.parse((await store.get("alerts/thresholds")) ?? "{}"), { cpu_warning: 0.4 });

    const next = make();
    await next.load();
    assert.deepEqual(next.list("id-1"), [alert]);
    assert.equal(next.thresholds().find((t) => t.name === "cpu_warning")?.value, 0.4);
    await next.observe("id-1", telemetry(0.2));
    assert.deepEqual(next.list(""), []);
    assert.deepEqual(kinds(events), ["ALERT_RAISED cpu_warning", "ALERT_CLEARED cpu_warning"]);
    assert.throws(() => next.list("n9"), /node n9 is not registered/);
    await store.close();
  });

  it("the sweep holds each node's lease age against lease_age_*, and clears the alerts of nodes no longer registered", async () => {
    const nodes = [create(NodeSchema, { id: "id-1", name: "n1", heartbeatTime: timestamp(Date.now() - 12_000) })];
    const { store, events, alerts } = await room("lease", nodes);
    await alerts.sweep(Date.now());
    assert.equal(alerts.list("")[0]?.thresholdName, "lease_age_warning");
    await alerts.sweep(Date.now() + 5_000);
    assert.equal(alerts.list("")[0]?.thresholdName, "lease_age_critical");
    nodes.length = 0;
    await alerts.sweep(Date.now());
    assert.deepEqual(alerts.list(""), []);
    assert.deepEqual(kinds(events), [
      "ALERT_RAISED lease_age_warning",
      "ALERT_CLEARED lease_age_warning",
      "ALERT_RAISED lease_age_critical",
      "ALERT_CLEARED lease_age_critical",
    ]);
    await store.close();
  });

  it("checks the configuration's thresholds and the heartbeat's telemetry", () => {
    assert.equal(configuredThresholds({ cpu_warning: 0.7 }).get("cpu_warning"), 0.7);
    assert.throws(() => configuredThresholds({ cpu_warnin: 0.7 }), /no alert threshold named "cpu_warnin"/);
    assert.throws(() => configuredThresholds({ memory_critical: 2 }), /memory_critical must be from 0 to 1/);
    assert.throws(() => configuredThresholds({ psi_io_warning: 60 }), /would put psi_io_warning above psi_io_critical/);
    assert.throws(() => checkTelemetry(telemetry(Number.POSITIVE_INFINITY)), /telemetry\.load_1m must be a finite figure/);
    assert.throws(
      () => checkTelemetry(create(NodeTelemetrySchema, { memoryTotalBytes: 1n, memoryAvailableBytes: 2n })),
      /memory_available_bytes \(2\) is more than memory_total_bytes \(1\)/,
    );
  });
});
