// Live migration: total time and guest downtime of moving the test guest (TCG, 128 MiB, a 256 MiB
// qcow2 data volume with 4 MiB of data written) between two aetherd on this machine (MigrateVm, then
// WatchMigration to its end), against the same migration done by hand with QMP in the same run: two
// bare QEMUs with the very same machine arguments as aetherd's QEMU (read from its command line),
// the target with `-incoming defer -S` exporting its fresh qcow2 over NBD, the source mirroring into
// it until ready, then the memory (the guest paused for it under TCG, as aetherd does), the mirror's
// soft cancel and `cont` on the target. Runs alternate (aetherd, by hand, aetherd, ...); the aetherd
// guest goes back and forth between its two nodes, the bare one onto a fresh QEMU each time. Both
// totals include removing the source (its QEMU ended, its disk deleted), which aetherd's
// WatchMigration end includes too.
//
// Downtime is measured twice: QEMU's own `downtime` figure (query-migrate on the source), and from
// outside the guest: a loop in the guest prints a line to its serial console every ~5 ms, QEMU
// appends it to the console log, and the bench stamps each growth of the source's and the target's
// log with the host's clock; the largest gap between consecutive lines during the migration is the
// time the guest was seen doing nothing. (The guest's own clock cannot show it: under TCG its time
// stands still while the VM is paused.)
//
// BENCH_MIGRATION_RUNS (default 3) sets the runs of each way; BENCH_MIGRATION_CAPPED=1 adds a third
// way: by hand with each QEMU in a cgroup capped at the VM's vCPUs, as aetherd's cell of a VM is (it
// tells aetherd's own time from the cap's). Phase by phase, a second table shows where the time goes.
// Run alone: npx tsc -b && node --conditions=source --import tsx bench/migration.ts
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmdirSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { startDaemon, stopWorkloads, type TestDaemon } from "../test/helpers/daemon.js";
import { bootGuest, follow, ms as durationMs, sh } from "../test/helpers/migration.js";
import { QmpClient } from "../daemon/src/vm/qmp.js";
import { GuestAgent } from "../daemon/src/vm/qga.js";
import { ms, percentile } from "./stats.js";

const run = promisify(execFile);
const VM = "mig-bench";
/** What aetherd sends by default (service.ts): max downtime 300 ms, no bandwidth cap, auto-converge on. */
const DOWNTIME_LIMIT_MS = 300;
const UNCAPPED_BYTES_PER_SECOND = 100 * 1024 ** 3;
const QMP_MS = 30_000;
const POLL_MS = 20;
/** On the test guest's disk before the first move, as test/migration.test.ts does. */
const WRITE_DATA = "dd if=/dev/urandom of=/dev/vda bs=1M seek=64 count=4 conv=fsync 2>/dev/null";
/** The guest's heartbeat on its serial console, every ~5 ms (busybox's usleep), detached from the agent. */
const HEARTBEAT =
  "setsid sh -c 'i=0; while :; do i=$((i+1)); echo \"beat $i\" > /dev/ttyS0; usleep 5000; done' </dev/null >/dev/null 2>&1 &";

export interface MigrationRun {
  totalMs: number;
  downtimeMs: number;
  gapMs: number;
  /** The usual interval between the guest's lines in the same window (its median). */
  beatMs: number;
  /** aetherd's own figure of the migration's length (its runs only). */
  ownMs?: number;
  /** Time in each phase, as PHASES. */
  phasesMs: number[];
}

/** aetherd's phases (WatchMigration); by hand, the same stretches of the QMP sequence. */
const PHASES = ["prepare", "storage", "memory", "switchover", "cleanup"] as const;

export interface MigrationBenchResult {
  runs: number;
  rows: string[][];
  phaseHeader: string[];
  phaseRows: string[][];
  ratio: number;
  addedMs: number;
  aether: MigrationRun[];
  byHand: MigrationRun[];
}

interface Lane {
  how: string;
  bare: Bare;
  runs: MigrationRun[];
  cap?: () => string;
}

/**
 * Host-side stamps of a guest's console lines: when inotify reports that a console log grew, the new
 * bytes are read and each line they end is stamped (the serial port hands QEMU one byte at a time).
 */
class ConsoleStamps {
  readonly times: number[] = [];
  private readonly watchers: FSWatcher[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly fds: number[] = [];

  /** Watches path, once it exists (a target's log appears when its QEMU starts). */
  follow(path: string): void {
    const attach = () => {
      if (!existsSync(path)) return false;
      const fd = openSync(path, "r");
      this.fds.push(fd);
      let offset = statSync(path).size;
      const buf = Buffer.alloc(64 * 1024);
      this.watchers.push(
        watch(path, (kind) => {
          if (kind !== "change") return;
          const now = performance.now();
          for (let n; (n = readSync(fd, buf, 0, buf.length, offset)) > 0; offset += n)
            for (let i = 0; i < n; i++) if (buf[i] === 10) this.times.push(now);
        }),
      );
      return true;
    };
    if (attach()) return;
    const t = setInterval(() => attach() && clearInterval(t), 10);
    this.timers.push(t);
  }

  /** The largest gap between consecutive stamps in [from, to], and the median one. */
  gaps(from: number, to: number): { largest: number; median: number } {
    const inside = [...new Set(this.times)].filter((t) => t >= from && t <= to).sort((a, b) => a - b);
    const gaps = inside.slice(1).map((t, i) => t - (inside[i] as number));
    return { largest: gaps.length > 0 ? Math.max(...gaps) : Number.NaN, median: percentile(gaps, 50) };
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const w of this.watchers) w.close();
    for (const fd of this.fds) closeSync(fd);
  }
}

// ---- by hand: bare QEMUs and QMP ------------------------------------------------------------

interface Bare {
  dir: string;
  process: ChildProcess;
  exited: Promise<void>;
  qmp: QmpClient;
  stderr: () => string;
  /** The cgroup capping its CPU, when the lane is capped. */
  cgroup?: string;
}

/** aetherd's QEMU command line for the VM, with its paths turned into a folder of the bench's own. */
function machineArgs(pid: number, vm: vmApi.Vm, stateDir: string): { binary: string; args: (dir: string) => string[] } {
  const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  if (!argv.includes("-qmp")) throw new Error(`process ${pid} is not the VM's QEMU: ${argv.join(" ")}`);
  const [binary, ...rest] = argv as [string, ...string[]];
  const runtimeDir = dirname(vm.qmpSocketPath);
  const vmDir = join(stateDir, "vms", vm.id);
  return {
    binary,
    args: (dir) =>
      rest.map((a) =>
        a
          .split(runtimeDir)
          .join(dir)
          .split(vmDir)
          .join(dir)
          .replace(/^file=[^,]+,(if=none,id=disk0,)/, `file=${join(dir, "disk.qcow2")},$1`)
          .replace("process=aether-vm-", "process=bench-vm-"),
      ),
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A cgroup capping one QEMU's CPU as aetherd's cell of a VM does (quota = vCPUs × period; the
 * migration's own threads share it); cgroup v2, or v1's cpu controller.
 */
function cpuCap(name: string, vcpus: number): string {
  const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
  const dir = v2 ? join("/sys/fs/cgroup", name) : join("/sys/fs/cgroup/cpu", name);
  mkdirSync(dir, { recursive: true });
  if (v2) writeFileSync(join(dir, "cpu.max"), `${vcpus * 100_000} 100000`);
  else {
    writeFileSync(join(dir, "cpu.cfs_period_us"), "100000");
    writeFileSync(join(dir, "cpu.cfs_quota_us"), String(vcpus * 100_000));
  }
  return dir;
}

async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0; i < 50 && existsSync(dir); i++) {
    try {
      rmdirSync(dir);
    } catch {
      await new Promise((r) => setTimeout(r, 20)); // the process is still leaving it
    }
  }
}

async function startBare(binary: string, args: string[], dir: string, all: Set<Bare>, cgroup?: string): Promise<Bare> {
  // In a cgroup: the shell joins it, then becomes QEMU (same pid).
  const child = cgroup
    ? spawn("/bin/sh", ["-c", 'echo $$ > "$CGROUP/cgroup.procs" && exec "$0" "$@"', binary, ...args], {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, CGROUP: cgroup },
      })
    : spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const died = exited.then(() => {
    throw new Error(`the bare QEMU exited: ${stderr.trim()}`);
  });
  const partial = { dir, process: child, exited, stderr: () => stderr, cgroup };
  try {
    const qmp = await Promise.race([QmpClient.connect(join(dir, "qmp.sock"), 10_000), died]);
    const bare = { ...partial, qmp };
    all.add(bare);
    return bare;
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    if (cgroup) await removeCgroup(cgroup);
    throw err;
  }
}

async function endBare(b: Bare, all: Set<Bare>): Promise<void> {
  b.qmp.close();
  if (b.process.exitCode === null && b.process.signalCode === null) b.process.kill("SIGKILL");
  await b.exited;
  if (b.cgroup) await removeCgroup(b.cgroup);
  rmSync(b.dir, { recursive: true, force: true });
  all.delete(b);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

interface Job {
  device: string;
  ready: boolean;
  status: string;
  error?: string;
}

/** The by-hand migration of the guest in source to a fresh QEMU; returns it with the figures. */
async function migrateByHand(
  source: Bare,
  machine: ReturnType<typeof machineArgs>,
  dir: string,
  all: Set<Bare>,
  cap?: () => string,
): Promise<{ target: Bare; totalMs: number; downtimeMs: number; phasesMs: number[] }> {
  const t0 = performance.now();
  const marks: number[] = [t0];
  mkdirSync(dir);
  await run("qemu-img", ["create", "-q", "-f", "qcow2", join(dir, "disk.qcow2"), "256M"]);
  const [nbdPort, migrationPort] = [await freePort(), await freePort()];
  const target = await startBare(machine.binary, [...machine.args(dir), "-incoming", "defer", "-S"], dir, all, cap?.());
  const t = target.qmp;
  const s = source.qmp;
  // The target: its disk exported over NBD, writable, and listening for the state.
  const block = await t.execute<Array<{ device: string; inserted?: { "node-name": string } }>>("query-block", undefined, QMP_MS);
  const node = block.find((b) => b.device === "disk0")?.inserted?.["node-name"];
  if (!node) throw new Error("the target QEMU has no disk0");
  await t.execute("nbd-server-start", { addr: { type: "inet", data: { host: "127.0.0.1", port: String(nbdPort) } } }, QMP_MS);
  await t.execute("block-export-add", { type: "nbd", id: "exp0", "node-name": node, name: "disk0", writable: true }, QMP_MS);
  await t.execute("migrate-set-capabilities", { capabilities: [{ capability: "late-block-activate", state: true }] }, QMP_MS);
  const uri = `tcp:127.0.0.1:${migrationPort}`;
  await t.execute("migrate-incoming", { uri }, QMP_MS);
  // The source: mirror the disk into the export until ready.
  marks.push(performance.now());
  await s.execute(
    "blockdev-add",
    { driver: "nbd", "node-name": "nbd0", server: { type: "inet", host: "127.0.0.1", port: String(nbdPort) }, export: "disk0" },
    QMP_MS,
  );
  await s.execute("blockdev-mirror", { "job-id": "mirror0", device: "disk0", target: "nbd0", sync: "full", "auto-dismiss": false }, QMP_MS);
  await until("the mirror ready", async () => {
    const job = (await s.execute<Job[]>("query-block-jobs", undefined, QMP_MS)).find((j) => j.device === "mirror0");
    if (!job || job.error || job.status === "concluded") throw new Error(`the mirror failed: ${job?.error ?? job?.status ?? "gone"}`);
    return job.ready ? true : undefined;
  });
  // The memory.
  marks.push(performance.now());
  await s.execute("migrate-set-capabilities", { capabilities: [{ capability: "auto-converge", state: true }] }, QMP_MS);
  await s.execute(
    "migrate-set-parameters",
    {
      "downtime-limit": DOWNTIME_LIMIT_MS,
      "max-bandwidth": UNCAPPED_BYTES_PER_SECOND,
      "cpu-throttle-initial": 20,
      "cpu-throttle-increment": 10,
    },
    QMP_MS,
  );
  // As aetherd does under TCG (outgoing.ts, tcgLiveCopy): the guest paused for the copy, as QEMU 7.2's
  // TCG misses pages a running guest writes during it; both ways then pay the same pause.
  const pausedAt = performance.now();
  await s.execute("stop", undefined, QMP_MS);
  await s.execute("migrate", { uri }, QMP_MS);
  await until("the migration complete", async () => {
    const m = await s.execute<{ status?: string; "error-desc"?: string }>("query-migrate", undefined, QMP_MS);
    if (m.status === "failed" || m.status === "cancelled") throw new Error(`the migration ${m.status}: ${m["error-desc"] ?? ""}`);
    return m.status === "completed" ? true : undefined;
  });
  // Switchover: the mirror's last writes (a soft cancel of a ready mirror), then the target resumes.
  marks.push(performance.now());
  await s.execute("block-job-cancel", { device: "mirror0" }, QMP_MS);
  await until("the mirror concluded", async () => {
    const job = (await s.execute<Job[]>("query-block-jobs", undefined, QMP_MS)).find((j) => j.device === "mirror0");
    if (job?.error) throw new Error(`the mirror's last writes failed: ${job.error}`);
    return !job || job.status === "concluded" ? true : undefined;
  });
  await s.execute("job-dismiss", { id: "mirror0" }, QMP_MS).catch(() => undefined);
  await s.execute("blockdev-del", { "node-name": "nbd0" }, QMP_MS);
  await until("the incoming state complete", async () => {
    const m = await t.execute<{ status?: string }>("query-migrate", undefined, QMP_MS);
    if (m.status === "failed" || m.status === "cancelled") throw new Error(`the incoming migration ${m.status}`);
    return m.status === "completed" ? true : undefined;
  });
  await t.execute("nbd-server-stop", undefined, QMP_MS);
  await t.execute("cont", undefined, QMP_MS);
  // Paused from the stop before the copy to the target's cont (aetherd reports its pause the same way).
  const downtimeMs = performance.now() - pausedAt;
  marks.push(performance.now());
  // The source is removed: its QEMU ends, its disk is deleted.
  await s.execute("quit", undefined, QMP_MS).catch(() => undefined);
  await source.exited;
  await endBare(source, all);
  marks.push(performance.now());
  return { target, totalMs: performance.now() - t0, downtimeMs, phasesMs: marks.slice(1).map((m, i) => m - (marks[i] as number)) };
}

// ---- the bench ------------------------------------------------------------------------------

export async function benchMigration(runs: number, capped = false): Promise<MigrationBenchResult> {
  const root = mkdtempSync(join(tmpdir(), "aether-bench-mig-"));
  const daemons: TestDaemon[] = [];
  const clients: AetherClient[] = [];
  const bares = new Set<Bare>();
  const agents: GuestAgent[] = [];
  /** Cgroups made for capped QEMUs, their root first. */
  const caps: string[] = [];
  try {
    for (const _ of [0, 1]) {
      const d = await startDaemon();
      daemons.push(d);
      clients.push(await d.client());
    }
    const [a, b] = daemons as [TestDaemon, TestDaemon];
    const [ca, cb] = clients as [AetherClient, AetherClient];

    // aetherd's guest, and the machine arguments its QEMU got.
    const booted = await bootGuest(ca, VM);
    await sh(ca, VM, WRITE_DATA);
    await sh(ca, VM, HEARTBEAT);
    const machine = machineArgs(booted.pid, booted, a.stateDir);

    // The bare guests: the same arguments, booted the same way; with BENCH_MIGRATION_CAPPED=1 a
    // second one whose QEMUs are each capped to the VM's vCPUs, as aetherd's cell of a VM caps it.
    let n = 0;
    const bareDir = () => join(root, `q${n++}`);
    const capRoot = `aether-bench-mig-${randomBytes(4).toString("hex")}`;
    const lanes: Array<Omit<Lane, "bare"> & { bare?: Bare }> = [{ how: "by hand: QMP on two bare QEMUs", runs: [] }];
    if (capped) {
      caps.push(join(existsSync("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/cpu", capRoot));
      lanes.push({
        how: `by hand, each QEMU capped at ${booted.vcpus} CPU (as aetherd's cell)`,
        runs: [],
        cap: () => {
          const dir = cpuCap(join(capRoot, `c${n}`), booted.vcpus);
          caps.push(dir);
          return dir;
        },
      });
    }
    for (const lane of lanes) {
      const first = bareDir();
      mkdirSync(first);
      await run("qemu-img", ["create", "-q", "-f", "qcow2", join(first, "disk.qcow2"), "256M"]);
      lane.bare = await startBare(machine.binary, machine.args(first), first, bares, lane.cap?.());
      const agent = new GuestAgent(join(first, "agent.sock"));
      agents.push(agent);
      await until("the bare guest's agent answering", () =>
        agent.ping(2000).then(
          () => true,
          () => undefined,
        ),
      );
      const bareSh = async (script: string) => {
        const r = await agent.exec(["/bin/sh", "-c", script], {}, new Uint8Array(), 120_000);
        if (r.exitCode !== 0) throw new Error(`${script}: ${r.stderr.toString()}`);
      };
      await bareSh(WRITE_DATA);
      await bareSh(HEARTBEAT);
      agent.close();
    }
    await new Promise((r) => setTimeout(r, 1000));

    const aether: MigrationRun[] = [];
    for (let i = 0; i < runs; i++) {
      // aetherd: MigrateVm on the node that has the guest, WatchMigration to the end.
      const [from, to, client] = i % 2 === 0 ? [a, b, ca] : [b, a, cb];
      const stamps = new ConsoleStamps();
      try {
        for (const d of [from, to]) stamps.follow(join(d.stateDir, "vms", booted.id, "console.log"));
        const t0 = performance.now();
        const { migration } = await client.vm.migrateVm({ vm: VM, target: to.address });
        const seen = new Map<number, number>();
        const last = (
          await follow(client, migration?.id ?? "", (m) => void (seen.has(m.phase) || seen.set(m.phase, performance.now())))
        ).at(-1);
        const t1 = performance.now();
        const starts = PHASES.map((p, k) =>
          k === 0 ? t0 : (seen.get(vmApi.MigrationPhase[p.toUpperCase() as keyof typeof vmApi.MigrationPhase]) ?? Number.NaN),
        );
        // A phase never reported (a switchover shorter than one report) counts in the one before.
        for (let k = starts.length - 1; k > 0; k--) if (Number.isNaN(starts[k])) starts[k] = starts[k + 1] ?? t1;
        if (last?.state !== vmApi.MigrationState.SUCCEEDED) throw new Error(`aetherd's migration ${i + 1} failed: ${last?.stateReason}`);
        await new Promise((r) => setTimeout(r, 500));
        const gaps = stamps.gaps(t0, t1 + 500);
        aether.push({
          totalMs: t1 - t0,
          downtimeMs: durationMs(last.downtime),
          gapMs: gaps.largest,
          beatMs: gaps.median,
          ownMs: durationMs(last.totalTime),
          phasesMs: starts.map((st, k) => (starts[k + 1] ?? t1) - st),
        });
      } finally {
        stamps.close();
      }

      // By hand, onto a fresh QEMU.
      for (const lane of lanes as Lane[]) {
        const dir = bareDir();
        const handStamps = new ConsoleStamps();
        try {
          handStamps.follow(join(lane.bare.dir, "console.log"));
          handStamps.follow(join(dir, "console.log"));
          const t0 = performance.now();
          const moved = await migrateByHand(lane.bare, machine, dir, bares, lane.cap);
          lane.bare = moved.target;
          await new Promise((r) => setTimeout(r, 500));
          const gaps = handStamps.gaps(t0, t0 + moved.totalMs + 500);
          lane.runs.push({
            totalMs: moved.totalMs,
            downtimeMs: moved.downtimeMs,
            gapMs: gaps.largest,
            beatMs: gaps.median,
            phasesMs: moved.phasesMs,
          });
        } finally {
          handStamps.close();
        }
      }
    }
    // The bare guests still answer on their last QEMUs.
    for (const lane of lanes as Lane[]) {
      const agent = new GuestAgent(join(lane.bare.dir, "agent.sock"));
      agents.push(agent);
      await agent.ping(10_000);
    }
    const byHand = (lanes[0] as Lane).runs;

    const p50 = (xs: number[]) => percentile(xs, 50);
    const row = (how: string, xs: MigrationRun[]) => {
      const totals = xs.map((x) => x.totalMs);
      return [
        how,
        ms(p50(totals)),
        ms(Math.min(...totals)),
        ms(Math.max(...totals)),
        ms(p50(xs.map((x) => x.downtimeMs))),
        ms(p50(xs.map((x) => x.gapMs))),
        ms(Math.max(...xs.map((x) => x.gapMs))),
        ms(p50(xs.map((x) => x.beatMs))),
      ];
    };
    const own = aether.map((x) => x.ownMs ?? Number.NaN);
    const ratio = p50(aether.map((x) => x.totalMs)) / p50(byHand.map((x) => x.totalMs));
    const addedMs = p50(aether.map((x) => x.totalMs)) - p50(byHand.map((x) => x.totalMs));
    return {
      runs,
      aether,
      byHand,
      ratio,
      addedMs,
      phaseHeader: ["phase", "aetherd", ...lanes.map((l) => (l.cap ? "by hand, capped" : "by hand")), "aetherd − by hand"],
      phaseRows: PHASES.map((p, k) => {
        const at = (xs: MigrationRun[]) => p50(xs.map((r) => r.phasesMs[k] ?? 0));
        return [p, ms(at(aether)), ...lanes.map((l) => ms(at(l.runs))), ms(at(aether) - at(byHand))];
      }),
      rows: [
        row("aetherd: MigrateVm call to WatchMigration's end", aether),
        ["  (aetherd's own total_time figure)", ms(p50(own)), ms(Math.min(...own)), ms(Math.max(...own)), "-", "-", "-", "-"],
        ...lanes.map((l) => row(l.how, l.runs)),
      ],
    };
  } finally {
    for (const g of agents) g.close();
    for (const q of [...bares]) await endBare(q, bares).catch(() => undefined);
    for (const c of caps.reverse()) await removeCgroup(c);
    for (const [i, d] of daemons.entries()) {
      await stopWorkloads(clients[i] as AetherClient).catch(() => undefined);
      clients[i]?.close();
      await d.stop();
      d.cleanup();
    }
    rmSync(root, { recursive: true, force: true });
  }
}

export const MIGRATION_HEADER = [
  "how",
  "total p50",
  "total min",
  "total max",
  "reported downtime p50",
  "guest gap p50",
  "guest gap max",
  "guest line interval",
];

/** Prints the bench's table and figures with run.ts's table(). */
export async function printMigrationBench(table: (title: string, header: string[], rows: string[][]) => void): Promise<void> {
  const runs = Number(process.env.BENCH_MIGRATION_RUNS ?? 3);
  const r = await benchMigration(runs, process.env.BENCH_MIGRATION_CAPPED === "1");
  table(
    `live migration of a TCG guest (128 MiB, 256 MiB qcow2 disk) between two aetherd vs. by hand with QMP, ${runs} runs each, alternating`,
    MIGRATION_HEADER,
    r.rows,
  );
  table(
    "live migration: where the time goes, p50 per phase (aetherd: from WatchMigration's reports as the client sees them; by hand: the same stretch of QMP commands)",
    r.phaseHeader,
    r.phaseRows,
  );
  console.log(
    `ratio aetherd/by hand at p50: ${r.ratio.toFixed(2)}x (goal < 1.2x); aetherd's own added time (its total − by hand's, p50): ${r.addedMs.toFixed(0)} ms (goal < 200 ms)`,
  );
  console.log(
    "total: call to the guest running on the target and the source removed; reported downtime: under TCG the pause from the stop before the copy to the end of the switchover (aetherd's figure; by hand to the target's cont); " +
      "guest gap: the largest gap between the guest's console lines (one every ~5 ms, stamped on the host as QEMU logs them) during the migration; " +
      "guest line interval: their usual gap (median) in the same window",
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  // Alone: the same table layout as run.ts prints.
  await printMigrationBench((title, header, rows) => {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
    console.log(`\n${title}\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}`);
    for (const r of rows) console.log(line(r));
  });
}
