// Node telemetry read straight from the kernel: /proc/loadavg, /proc/stat, /proc/meminfo,
// /proc/pressure/*, and per-device disk wear from smartctl or nvme-cli where they give a figure.
// Nothing here is ever estimated: a figure the host cannot give is reported as unavailable/unknown.
import { readdir, readFile, readlink } from "node:fs/promises";
import { cpus } from "node:os";
import { runHost, which } from "../host/command.js";

export interface PressureReading {
  resource: string;
  someAvg10: number;
  fullAvg10: number;
  available: boolean;
}

export interface DiskWearReading {
  /** Kernel device name, e.g. "nvme0n1", "sda". */
  device: string;
  /** Percentage of rated endurance used (0..100+), when known. */
  percentageUsed?: number;
  known: boolean;
  /** Where the figure came from, or why it is unknown. */
  source: string;
}

export interface TelemetrySnapshot {
  timeMs: number;
  load: [number, number, number];
  /** Runnable tasks right now: procs_running of /proc/stat (the run queue). */
  runnableTasks: number;
  cpuCount: number;
  memoryTotalBytes: number;
  memoryAvailableBytes: number;
  pressure: PressureReading[];
  disks: DiskWearReading[];
}

export interface ReadTelemetryOptions {
  /**
   * How long to wait for a disk wear refresh when the cached figures are stale (smartctl can take
   * seconds). 0: answer at once with what is cached (a bid never waits for a disk).
   */
  diskWaitMs?: number;
}

const DEFAULT_DISK_WAIT_MS = 5_000;

export async function readTelemetry(options: ReadTelemetryOptions = {}): Promise<TelemetrySnapshot> {
  const [loadavg, stat, meminfo, pressure, disks] = await Promise.all([
    readFile("/proc/loadavg", "utf8"),
    readFile("/proc/stat", "utf8"),
    readFile("/proc/meminfo", "utf8"),
    Promise.all(["cpu", "memory", "io"].map(readPressure)),
    diskWear.read(options.diskWaitMs ?? DEFAULT_DISK_WAIT_MS),
  ]);
  // /proc/loadavg: "0.52 0.58 0.59 2/345 12345".
  const [l1, l5, l15, tasks] = loadavg.trim().split(/\s+/);
  const mem = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(meminfo)?.[1] ?? 0) * 1024;
  const procsRunning = /^procs_running\s+(\d+)/m.exec(stat)?.[1];
  return {
    timeMs: Date.now(),
    load: [Number(l1), Number(l5), Number(l15)],
    runnableTasks: procsRunning !== undefined ? Number(procsRunning) : Number((tasks ?? "0/0").split("/")[0]),
    cpuCount: cpus().length,
    memoryTotalBytes: mem("MemTotal"),
    memoryAvailableBytes: mem("MemAvailable"),
    pressure,
    disks,
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

// ---- disk wear --------------------------------------------------------------------------------

/** Disk wear changes over months; reading it again every 10 minutes is plenty. */
const DISK_WEAR_TTL_MS = 10 * 60_000;
const SMARTCTL_TIMEOUT_MS = 10_000;

/**
 * The physical block devices of this host: /sys/block entries that are not virtual (loop, zram,
 * device-mapper, md and the like live below /sys/devices/virtual).
 */
export async function physicalDisks(sysBlock = "/sys/block"): Promise<string[]> {
  const names = await readdir(sysBlock).catch(() => [] as string[]);
  const out: string[] = [];
  for (const name of names) {
    const target = await readlink(`${sysBlock}/${name}`).catch(() => "");
    if (target !== "" && !target.includes("/virtual/")) out.push(name);
  }
  return out.sort();
}

type Json = { [key: string]: unknown };
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const finite = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : undefined);

/**
 * Percentage of rated endurance used from `smartctl -j -a` output, or undefined when the output
 * has no such figure (a spinning disk, a virtual disk, a device smartctl cannot read). In order:
 * smartctl's own summary (endurance_used.current_percent, smartmontools 7.4+), the NVMe SMART/health
 * log (percentage_used), and the ATA device statistics "Percentage Used Endurance Indicator".
 */
export function wearFromSmartctl(output: unknown): number | undefined {
  if (!isObject(output)) return undefined;
  const summary = output.endurance_used;
  if (isObject(summary) && finite(summary.current_percent) !== undefined) return finite(summary.current_percent);
  const nvme = output.nvme_smart_health_information_log;
  if (isObject(nvme) && finite(nvme.percentage_used) !== undefined) return finite(nvme.percentage_used);
  const stats = output.ata_device_statistics;
  if (isObject(stats) && Array.isArray(stats.pages)) {
    for (const page of stats.pages) {
      if (!isObject(page) || !Array.isArray(page.table)) continue;
      for (const entry of page.table) {
        if (isObject(entry) && entry.name === "Percentage Used Endurance Indicator" && finite(entry.value) !== undefined)
          return finite(entry.value);
      }
    }
  }
  return undefined;
}

/** Percentage used from `nvme smart-log -o json` (nvme-cli names it percent_used). */
export function wearFromNvmeCli(output: unknown): number | undefined {
  if (!isObject(output)) return undefined;
  return finite(output.percent_used) ?? finite(output.percentage_used);
}

async function readOneDisk(device: string, tools: { smartctl?: string; nvme?: string }): Promise<DiskWearReading> {
  if (tools.smartctl) {
    const out = await runSmartctl(tools.smartctl, device);
    const wear = out === undefined ? undefined : wearFromSmartctl(out);
    if (wear !== undefined) return { device, percentageUsed: wear, known: true, source: "smartctl" };
  }
  if (tools.nvme && device.startsWith("nvme")) {
    const out = await runHost(tools.nvme, ["smart-log", `/dev/${device}`, "-o", "json"], { timeoutMs: SMARTCTL_TIMEOUT_MS })
      .then((r) => JSON.parse(r.stdout) as unknown)
      .catch(() => undefined);
    const wear = wearFromNvmeCli(out);
    if (wear !== undefined) return { device, percentageUsed: wear, known: true, source: "nvme-cli" };
  }
  const why = !tools.smartctl && !tools.nvme ? "neither smartctl nor nvme-cli is installed" : "the device reports no endurance figure";
  return { device, known: false, source: why };
}

async function runSmartctl(smartctl: string, device: string): Promise<unknown> {
  // smartctl's exit status is a bit mask: bits 0-1 mean it could not parse its arguments or open
  // the device; the higher bits report findings (old errors in the log, a failing attribute) of a
  // disk it did read, so its JSON is used then.
  return runHost(smartctl, ["-j", "-a", `/dev/${device}`], {
    timeoutMs: SMARTCTL_TIMEOUT_MS,
    acceptExitCodes: (code) => (code & 0b11) === 0,
  })
    .then((r) => JSON.parse(r.stdout) as unknown)
    .catch(() => undefined);
}

/** Per-device wear, read in the background and cached; a reader never waits longer than it asks. */
class DiskWearCache {
  private readings: DiskWearReading[] = [];
  private readTimeMs = 0;
  private refreshing: Promise<void> | undefined;

  async read(waitMs: number): Promise<DiskWearReading[]> {
    if (Date.now() - this.readTimeMs > DISK_WEAR_TTL_MS) {
      this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined));
      if (waitMs > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.refreshing, new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
        clearTimeout(timer);
      }
    }
    return this.readings;
  }

  private async refresh(): Promise<void> {
    const devices = await physicalDisks();
    if (this.readTimeMs === 0) this.readings = devices.map((device) => ({ device, known: false, source: "not read yet" }));
    const [smartctl, nvme] = await Promise.all([which("smartctl"), which("nvme")]);
    this.readings = await Promise.all(devices.map((d) => readOneDisk(d, { smartctl, nvme })));
    this.readTimeMs = Date.now();
  }
}

const diskWear = new DiskWearCache();
