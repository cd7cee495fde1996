// The alert thresholds: their names, defaults, ranges and what they measure. The values in force
// are, for each name, the one SetAlertThreshold stored last (alerts/thresholds in the store, so a
// new leader reads it), else the one in the configuration's [alerts] table, else the default.
import { invalidArgument } from "@aether/server";

/** What a threshold is about: one figure of a node. */
export type AlertMetric = "cpu" | "memory" | "psi_cpu" | "psi_memory" | "psi_io" | "disk_wear" | "lease_age" | "replication_lag";
export type Severity = "warning" | "critical";

export interface ThresholdSpec {
  metric: AlertMetric;
  severity: Severity;
  defaultValue: number;
  min: number;
  max: number;
  description: string;
}

const PSI = (resource: string, warning: number, critical: number) => ({
  warning: {
    defaultValue: warning,
    min: 0,
    max: 100,
    description: `share of the last 10 s some task waited for ${resource} (PSI some avg10), in percent`,
  },
  critical: {
    defaultValue: critical,
    min: 0,
    max: 100,
    description: `share of the last 10 s some task waited for ${resource}, in percent`,
  },
});

const METRICS: Record<AlertMetric, Record<Severity, Omit<ThresholdSpec, "metric" | "severity">>> = {
  cpu: {
    warning: { defaultValue: 0.8, min: 0, max: 1000, description: "1-minute load average per CPU (1.0: every CPU busy)" },
    critical: { defaultValue: 0.95, min: 0, max: 1000, description: "1-minute load average per CPU (1.0: every CPU busy)" },
  },
  memory: {
    warning: { defaultValue: 0.85, min: 0, max: 1, description: "share of the node's memory in use (1 - MemAvailable / MemTotal), 0 to 1" },
    critical: {
      defaultValue: 0.95,
      min: 0,
      max: 1,
      description: "share of the node's memory in use (1 - MemAvailable / MemTotal), 0 to 1",
    },
  },
  psi_cpu: PSI("CPU", 20, 50),
  psi_memory: PSI("memory", 10, 30),
  psi_io: PSI("I/O", 20, 50),
  disk_wear: {
    warning: { defaultValue: 80, min: 0, max: 255, description: "share of the most worn disk's rated endurance used, in percent" },
    critical: { defaultValue: 95, min: 0, max: 255, description: "share of the most worn disk's rated endurance used, in percent" },
  },
  lease_age: {
    warning: { defaultValue: 10, min: 0.1, max: 86_400, description: "seconds since the node's last heartbeat" },
    critical: { defaultValue: 15, min: 0.1, max: 86_400, description: "seconds since the node's last heartbeat" },
  },
  replication_lag: {
    warning: {
      defaultValue: 1,
      min: 0.01,
      max: 1000,
      description: "age of the node's most behind volume replica as a share of its policy's RPO (1.0: at the RPO)",
    },
    critical: {
      defaultValue: 2,
      min: 0.01,
      max: 1000,
      description: "age of the node's most behind volume replica as a share of its policy's RPO (1.0: at the RPO)",
    },
  },
};

/** Every threshold by name ("cpu_warning"), in a stable order. */
export const THRESHOLDS: ReadonlyMap<string, ThresholdSpec> = new Map(
  (Object.keys(METRICS) as AlertMetric[]).flatMap((metric) =>
    (["warning", "critical"] as const).map(
      (severity) => [`${metric}_${severity}`, { metric, severity, ...METRICS[metric][severity] }] as const,
    ),
  ),
);

export const THRESHOLD_NAMES = [...THRESHOLDS.keys()];

/** The spec of a threshold name, or INVALID_ARGUMENT naming the known ones. */
export function thresholdSpec(name: string): ThresholdSpec {
  const spec = THRESHOLDS.get(name);
  if (spec === undefined)
    throw invalidArgument(
      `there is no alert threshold named ${JSON.stringify(name.slice(0, 64))}; the thresholds are ${THRESHOLD_NAMES.join(", ")}.`,
    );
  return spec;
}

/** A value checked against its threshold's range; INVALID_ARGUMENT with the range otherwise. */
export function checkThresholdValue(name: string, value: number): number {
  const spec = thresholdSpec(name);
  if (!Number.isFinite(value) || value < spec.min || value > spec.max)
    throw invalidArgument(
      `alert threshold ${name} must be from ${spec.min} to ${spec.max} (${spec.description}); ${String(value)} is out of range.`,
    );
  return value;
}

/**
 * A warning above its critical (or a critical below its warning) would never warn first:
 * INVALID_ARGUMENT, naming both values.
 */
export function checkThresholdOrder(values: ReadonlyMap<string, number>, changed: string): void {
  const spec = thresholdSpec(changed);
  const warning = values.get(`${spec.metric}_warning`) as number;
  const critical = values.get(`${spec.metric}_critical`) as number;
  if (warning > critical) {
    const other = spec.severity === "warning" ? `${spec.metric}_critical is ${critical}` : `${spec.metric}_warning is ${warning}`;
    throw invalidArgument(
      `alert threshold ${changed} ${String(values.get(changed))} would put ${spec.metric}_warning above ${spec.metric}_critical (${other}): change the other one first.`,
    );
  }
}

/** The defaults with the configuration's [alerts] values over them (checked: names and ranges). */
export function configuredThresholds(configured: Readonly<Record<string, number>>): Map<string, number> {
  const values = new Map([...THRESHOLDS].map(([name, spec]) => [name, spec.defaultValue]));
  for (const [name, value] of Object.entries(configured)) values.set(name, checkThresholdValue(name, value));
  for (const name of Object.keys(configured)) checkThresholdOrder(values, name);
  return values;
}
