// Alerts: each heartbeat's telemetry (load per CPU, memory in use, pressure, disk wear) and, on the
// leader's sweep, each node's lease age are held against the thresholds (thresholds.ts). A figure
// past a threshold raises an alert (ALERT_RAISED), one back under it clears it (ALERT_CLEARED); a
// change of severity clears the old one and raises the new; an alert goes down only once its figure
// is 5 % under the threshold (hysteresis, so a figure at a threshold does not flap). The active
// alerts are records in the store (alerts/active/<node>/<metric>), written before the event, so a
// leader that takes over lists them with their since-when and clears them when the figures say so.
// Thresholds changed at runtime are the record alerts/thresholds.
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import {
  AlertSchema,
  AlertSeverity,
  AlertThresholdSchema,
  ClusterEventKind,
  type Alert,
  type AlertThreshold,
  type Node,
  type NodeTelemetry,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, invalidArgument, msOf, notFound, timestamp } from "@aether/server";
import type { ClusterStore } from "../store/store.js";
import type { NewEvent } from "../events/events.js";
import {
  THRESHOLDS,
  checkThresholdOrder,
  checkThresholdValue,
  configuredThresholds,
  thresholdSpec,
  type AlertMetric,
  type Severity,
} from "./thresholds.js";

export const ALERTS_PREFIX = "alerts/active/";
/** How far under its threshold (a share of it) a figure must go for its alert to go down: 5 %. */
export const CLEAR_MARGIN = 0.05;
const rank = (s: Severity | undefined) => (s === "critical" ? 2 : s === "warning" ? 1 : 0);
export const THRESHOLDS_KEY = "alerts/thresholds";
const alertKey = (node: string, metric: string) => `${ALERTS_PREFIX}${node}/${metric}`;

/** An active alert as its record holds it. */
interface AlertRecord {
  node: string;
  metric: AlertMetric;
  severity: Severity;
  value: number;
  threshold: number;
  sinceMs: number;
  message: string;
}

export interface AlertsDeps {
  store: ClusterStore;
  log: Logger;
  emit(event: NewEvent): Promise<unknown>;
  /** The registered nodes (the sweep's lease ages; alerts of nodes no longer registered are cleared). */
  nodes(): Node[];
  /** A node by id or name. */
  findNode(ref: string): Node | undefined;
}

const TELEMETRY_METRICS: AlertMetric[] = ["cpu", "memory", "psi_cpu", "psi_memory", "psi_io", "disk_wear", "replication_lag"];
const UNITS: Record<AlertMetric, (v: number) => string> = {
  cpu: (v) => `load per CPU ${v.toFixed(2)}`,
  memory: (v) => `memory in use ${(v * 100).toFixed(1)}%`,
  psi_cpu: (v) => `CPU pressure ${v.toFixed(1)}%`,
  psi_memory: (v) => `memory pressure ${v.toFixed(1)}%`,
  psi_io: (v) => `I/O pressure ${v.toFixed(1)}%`,
  disk_wear: (v) => `disk wear ${v.toFixed(0)}%`,
  lease_age: (v) => `${v.toFixed(1)} s since the last heartbeat`,
  replication_lag: (v) => `a volume replica ${v.toFixed(2)}× as old as its RPO`,
};

/** The figures of one heartbeat's telemetry, by metric; a figure the node cannot give is left out. */
export function figuresOf(t: NodeTelemetry): Map<AlertMetric, number> {
  const figures = new Map<AlertMetric, number>();
  if (t.cpuCount > 0) figures.set("cpu", t.load1m / t.cpuCount);
  if (t.memoryTotalBytes > 0n) figures.set("memory", 1 - Number(t.memoryAvailableBytes) / Number(t.memoryTotalBytes));
  if (t.pressureAvailable) {
    figures.set("psi_cpu", t.cpuPressureSomeAvg10);
    figures.set("psi_memory", t.memoryPressureSomeAvg10);
    figures.set("psi_io", t.ioPressureSomeAvg10);
  }
  if (t.diskWearPercent >= 0) figures.set("disk_wear", t.diskWearPercent);
  if (t.replicationLagRpoRatio > 0) figures.set("replication_lag", t.replicationLagRpoRatio);
  return figures;
}

/** Telemetry checked at the edge: finite, non-negative figures; INVALID_ARGUMENT naming the field otherwise. */
export function checkTelemetry(t: NodeTelemetry): NodeTelemetry {
  const fields: [string, number][] = [
    ["load_1m", t.load1m],
    ["cpu_pressure_some_avg10", t.cpuPressureSomeAvg10],
    ["memory_pressure_some_avg10", t.memoryPressureSomeAvg10],
    ["io_pressure_some_avg10", t.ioPressureSomeAvg10],
  ];
  if (!Number.isFinite(t.replicationLagRpoRatio) || t.replicationLagRpoRatio < -1)
    throw invalidArgument(
      `telemetry.replication_lag_rpo_ratio must be -1 (nothing replicated) or a figure of 0 or more, not ${String(t.replicationLagRpoRatio)}.`,
    );
  for (const [field, v] of fields)
    if (!Number.isFinite(v) || v < 0) throw invalidArgument(`telemetry.${field} must be a finite figure of 0 or more, not ${String(v)}.`);
  if (t.memoryAvailableBytes > t.memoryTotalBytes)
    throw invalidArgument(
      `telemetry.memory_available_bytes (${t.memoryAvailableBytes}) is more than memory_total_bytes (${t.memoryTotalBytes}).`,
    );
  if (t.diskWearPercent < -1)
    throw invalidArgument(`telemetry.disk_wear_percent must be -1 (unknown) or a percentage, not ${t.diskWearPercent}.`);
  return t;
}

export class Alerts {
  /** The thresholds in force: the configuration's over the defaults, and the stored ones over both. */
  private values: Map<string, number>;
  private readonly configured: ReadonlyMap<string, number>;
  private active = new Map<string, AlertRecord>();
  /** The last figures of each node (evaluated again when a threshold changes). */
  private readonly lastFigures = new Map<string, Map<AlertMetric, number>>();
  /** One evaluation at a time (heartbeats, the sweep and threshold changes interleave otherwise). */
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: AlertsDeps,
    configured: Readonly<Record<string, number>> = {},
    private readonly sweepMs = 1000,
  ) {
    this.configured = configuredThresholds(configured);
    this.values = new Map(this.configured);
  }

  /** Reads the stored thresholds and active alerts (on becoming the leader). */
  async load(): Promise<void> {
    const values = new Map(this.configured);
    const stored = await this.deps.store.get(THRESHOLDS_KEY);
    if (stored !== undefined) {
      for (const [name, value] of Object.entries(JSON.parse(stored) as Record<string, number>)) {
        if (THRESHOLDS.has(name) && typeof value === "number") values.set(name, value);
        else this.deps.log.warn({ name }, "ignoring an unknown stored alert threshold");
      }
    }
    this.values = values;
    const active = new Map<string, AlertRecord>();
    for (const entry of await this.deps.store.list(ALERTS_PREFIX)) {
      try {
        const record = JSON.parse(entry.value) as AlertRecord;
        active.set(alertKey(record.node, record.metric), record);
      } catch (err) {
        this.deps.log.warn({ key: entry.key, err: (err as Error).message }, "skipping an unreadable alert record");
      }
    }
    this.active = active;
  }

  /** Starts the lease-age sweep (on the leader). */
  start(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.sweep(Date.now()), this.sweepMs);
    this.timer.unref();
  }

  /** Stops the sweep and forgets what was read (on losing leadership). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.active = new Map();
    this.lastFigures.clear();
    this.values = new Map(this.configured);
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A heartbeat's telemetry: every figure held against its thresholds. */
  async observe(nodeId: string, telemetry: NodeTelemetry): Promise<void> {
    const figures = figuresOf(telemetry);
    this.lastFigures.set(nodeId, figures);
    await this.serial(async () => {
      for (const metric of TELEMETRY_METRICS) await this.evaluate(nodeId, metric, figures.get(metric));
    });
  }

  /** The leader's sweep: each node's lease age; alerts of nodes no longer registered are cleared. */
  async sweep(now: number): Promise<void> {
    await this.serial(async () => {
      const nodes = this.deps.nodes();
      const ids = new Set(nodes.map((n) => n.id));
      for (const node of nodes) {
        const age = node.heartbeatTime ? (now - msOf(node.heartbeatTime)) / 1000 : undefined;
        await this.evaluate(node.id, "lease_age", age);
      }
      for (const record of [...this.active.values()]) if (!ids.has(record.node)) await this.evaluate(record.node, record.metric, undefined);
    }).catch((err: unknown) => this.deps.log.warn({ err: describeError(err) }, "the alert sweep failed"));
  }

  /** The severity a figure is at, with the threshold crossed; undefined under both. */
  private severityOf(metric: AlertMetric, value: number): { severity: Severity; threshold: number } | undefined {
    const critical = this.values.get(`${metric}_critical`) as number;
    const warning = this.values.get(`${metric}_warning`) as number;
    if (value >= critical) return { severity: "critical", threshold: critical };
    if (value >= warning) return { severity: "warning", threshold: warning };
    return undefined;
  }

  /** Raises, clears or keeps the alert of one figure of one node (value undefined: the figure is gone). */
  private async evaluate(nodeId: string, metric: AlertMetric, value: number | undefined): Promise<void> {
    const key = alertKey(nodeId, metric);
    const current = this.active.get(key);
    let now = value === undefined ? undefined : this.severityOf(metric, value);
    // Hysteresis: an alert goes down (cleared, or critical to warning) only once the figure is under
    // its threshold by CLEAR_MARGIN of it, so a figure that hovers at a threshold does not flap.
    if (
      current !== undefined &&
      value !== undefined &&
      now?.severity !== current.severity &&
      rank(now?.severity) < rank(current.severity)
    ) {
      const threshold = this.values.get(`${metric}_${current.severity}`) as number;
      if (value >= threshold * (1 - CLEAR_MARGIN)) now = { severity: current.severity, threshold };
    }
    if (current !== undefined && now?.severity === current.severity) {
      // Still active: the figure is kept up to date in memory (the record keeps the one it was raised at).
      current.value = value as number;
      current.threshold = now.threshold;
      return;
    }
    if (current !== undefined) await this.clear(current, value);
    if (now !== undefined && value !== undefined) await this.raise(nodeId, metric, now.severity, value, now.threshold);
  }

  private nodeName(nodeId: string): string {
    return this.deps.findNode(nodeId)?.name || nodeId;
  }

  private async raise(node: string, metric: AlertMetric, severity: Severity, value: number, threshold: number): Promise<void> {
    const name = `${metric}_${severity}`;
    const message = `node ${this.nodeName(node)}: ${UNITS[metric](value)} is at or past ${name} ${threshold}.`;
    const record: AlertRecord = { node, metric, severity, value, threshold, sinceMs: Date.now(), message };
    await this.deps.store.put(alertKey(node, metric), JSON.stringify(record));
    this.active.set(alertKey(node, metric), record);
    this.deps.log.warn({ node, alert: name, value, threshold }, "alert raised");
    await this.deps.emit({
      kind: ClusterEventKind.ALERT_RAISED,
      node,
      message,
      attributes: { alert: name, metric, severity, value: String(value), threshold: String(threshold) },
    });
  }

  private async clear(record: AlertRecord, value: number | undefined): Promise<void> {
    const name = `${record.metric}_${record.severity}`;
    const threshold = this.values.get(name) as number;
    const message =
      value === undefined
        ? `node ${this.nodeName(record.node)}: ${name} cleared (the figure is no longer reported), active since ${new Date(record.sinceMs).toISOString()}.`
        : `node ${this.nodeName(record.node)}: ${UNITS[record.metric](value)} is back under ${name} ${threshold}, active since ${new Date(record.sinceMs).toISOString()}.`;
    await this.deps.store.delete(alertKey(record.node, record.metric));
    this.active.delete(alertKey(record.node, record.metric));
    this.deps.log.info({ node: record.node, alert: name, value }, "alert cleared");
    await this.deps.emit({
      kind: ClusterEventKind.ALERT_CLEARED,
      node: record.node,
      message,
      attributes: {
        alert: name,
        metric: record.metric,
        severity: record.severity,
        ...(value !== undefined && { value: String(value) }),
        threshold: String(threshold),
        since: new Date(record.sinceMs).toISOString(),
      },
    });
  }

  /** The active alerts, oldest first; only one node's when node is given (id or name). */
  list(node: string): Alert[] {
    let id: string | undefined;
    if (node !== "") {
      id = this.deps.findNode(node)?.id;
      if (id === undefined) throw notFound(`node ${node.slice(0, 64)} is not registered; aether cluster nodes lists the registered ones.`);
    }
    return [...this.active.values()]
      .filter((r) => id === undefined || r.node === id)
      .sort((a, b) => a.sinceMs - b.sinceMs)
      .map((r) =>
        create(AlertSchema, {
          node: r.node,
          metric: r.metric,
          severity: r.severity === "critical" ? AlertSeverity.CRITICAL : AlertSeverity.WARNING,
          value: r.value,
          thresholdName: `${r.metric}_${r.severity}`,
          threshold: r.threshold,
          since: timestamp(r.sinceMs),
          message: r.message,
        }),
      );
  }

  /** Every threshold with its value, default and range. */
  thresholds(): AlertThreshold[] {
    return [...THRESHOLDS].map(([name, spec]) => this.describe(name, spec.description));
  }

  private describe(name: string, description: string): AlertThreshold {
    const spec = thresholdSpec(name);
    return create(AlertThresholdSchema, {
      name,
      value: this.values.get(name) as number,
      defaultValue: this.configured.get(name) as number,
      description,
      min: spec.min,
      max: spec.max,
    });
  }

  /** Changes a threshold (stored before it is in force), then evaluates every node's last figures against it. */
  async setThreshold(name: string, value: number): Promise<AlertThreshold> {
    checkThresholdValue(name, value);
    return this.serial(async () => {
      const values = new Map(this.values);
      values.set(name, value);
      checkThresholdOrder(values, name);
      const changed: Record<string, number> = {};
      for (const [n, v] of values) if (v !== this.configured.get(n)) changed[n] = v;
      await this.deps.store.put(THRESHOLDS_KEY, JSON.stringify(changed));
      this.values = values;
      this.deps.log.info({ threshold: name, value }, "alert threshold changed");
      const spec = thresholdSpec(name);
      if (spec.metric !== "lease_age")
        for (const [node, figures] of this.lastFigures) await this.evaluate(node, spec.metric, figures.get(spec.metric));
      return this.describe(name, spec.description);
    });
  }
}
