// Node telemetry read straight from the kernel's /proc files.
import { readFile } from "node:fs/promises";
import { cpus } from "node:os";

export interface PressureReading {
  resource: string;
  someAvg10: number;
  fullAvg10: number;
  available: boolean;
}

export interface TelemetrySnapshot {
  timeMs: number;
  load: [number, number, number];
  runnableTasks: number;
  cpuCount: number;
  memoryTotalBytes: number;
  memoryAvailableBytes: number;
  pressure: PressureReading[];
}

export async function readTelemetry(): Promise<TelemetrySnapshot> {
  const [loadavg, meminfo] = await Promise.all([readFile("/proc/loadavg", "utf8"), readFile("/proc/meminfo", "utf8")]);
  // /proc/loadavg: "0.52 0.58 0.59 2/345 12345": the fourth field is runnable/total tasks.
  const [l1, l5, l15, tasks] = loadavg.trim().split(/\s+/);
  const mem = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(meminfo)?.[1] ?? 0) * 1024;
  const pressure = await Promise.all(["cpu", "memory", "io"].map(readPressure));
  return {
    timeMs: Date.now(),
    load: [Number(l1), Number(l5), Number(l15)],
    runnableTasks: Number((tasks ?? "0/0").split("/")[0]),
    cpuCount: cpus().length,
    memoryTotalBytes: mem("MemTotal"),
    memoryAvailableBytes: mem("MemAvailable"),
    pressure,
  };
}

async function readPressure(resource: string): Promise<PressureReading> {
  try {
    const text = await readFile(`/proc/pressure/${resource}`, "utf8");
    const avg10 = (kind: string) => Number(new RegExp(`^${kind} avg10=([\\d.]+)`, "m").exec(text)?.[1] ?? 0);
    return { resource, someAvg10: avg10("some"), fullAvg10: avg10("full"), available: true };
  } catch {
    return { resource, someAvg10: 0, fullAvg10: 0, available: false };
  }
}
