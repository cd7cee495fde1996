// The QMP commands of a live migration with local disks, each step on its own: the target's QEMU
// (started with -incoming defer -S) exports its disks over NBD and listens for the state; the source's
// QEMU mirrors every disk into those exports until the copies are in sync, then sends its memory;
// at the end the mirrors are cancelled (a ready mirror then leaves a consistent copy) and the target
// resumes. Measured by hand with QEMU 7.2 before it was written here (see test/migration.test.ts).
import type { QmpClient, QmpEvent } from "../vm/qmp.js";

/** QEMU's names for the disks of a VM: the -drive ids qemu-args.ts gives them. */
export const driveId = (index: number) => `disk${index}`;
const nbdNode = (index: number) => `mig-nbd${index}`;
const mirrorJob = (index: number) => `mig-disk${index}`;
const exportId = (index: number) => `mig-exp${index}`;
/** A QMP answer may be slow on a loaded host (TCG guests use the CPUs): a step waits this long for one. */
export const QMP_STEP_MS = 30_000;
/** What "no bandwidth cap" is sent as (QEMU's own default is 32 MiB/s). */
const UNCAPPED_BYTES_PER_SECOND = 100 * 1024 ** 3;

/** What QEMU says when a block job or a migration moves on (its "events" capability is on for migrations). */
export const JOB_EVENTS = ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR", "JOB_STATUS_CHANGE"];
export const MIGRATION_EVENTS = ["MIGRATION", "MIGRATION_PASS"];

/**
 * A wake-up for a wait loop: resolves at the first of `events` from QEMU, or after `maxMs` (progress
 * figures are still read that often). Made before the state is read, so an event that comes while it
 * is read is not missed: a step then follows QEMU at once instead of a poll interval later.
 */
export function nextEvent(qmp: QmpClient, events: readonly string[], maxMs: number): { wait: Promise<void>; cancel: () => void } {
  let done: () => void = () => {};
  const wait = new Promise<void>((resolve) => (done = resolve));
  const onEvent = (e: QmpEvent) => events.includes(e.event) && finish();
  const timer = setTimeout(() => finish(), maxMs);
  const finish = () => {
    clearTimeout(timer);
    qmp.events.off("event", onEvent);
    done();
  };
  qmp.events.on("event", onEvent);
  return { wait, cancel: finish };
}

// ---- the target ----------------------------------------------------------------------------

/** The target's TLS: its credentials object and the authorization object naming the one client it takes (tls.ts). */
export interface ServerTls {
  creds: string;
  authz: string;
}

/**
 * Exports each disk over NBD (writable) on host:port; returns the export names, in disk order. With
 * tls the server speaks only TLS and refuses, at the negotiation, a client without a certificate of
 * the cluster's CA or whose certificate is not the one tls.authz names.
 */
export async function exportDisks(qmp: QmpClient, diskCount: number, host: string, port: number, tls?: ServerTls): Promise<string[]> {
  const block = await qmp.execute<Array<{ device: string; inserted?: { "node-name": string } }>>("query-block", undefined, QMP_STEP_MS);
  await qmp.execute(
    "nbd-server-start",
    { addr: { type: "inet", data: { host, port: String(port) } }, ...(tls && { "tls-creds": tls.creds, "tls-authz": tls.authz }) },
    QMP_STEP_MS,
  );
  const names: string[] = [];
  for (let i = 0; i < diskCount; i++) {
    const node = block.find((b) => b.device === driveId(i))?.inserted?.["node-name"];
    if (node === undefined) throw new Error(`the target's QEMU has no disk ${driveId(i)}`);
    await qmp.execute(
      "block-export-add",
      { type: "nbd", id: exportId(i), "node-name": node, name: driveId(i), writable: true },
      QMP_STEP_MS,
    );
    names.push(driveId(i));
  }
  return names;
}

/** Starts listening for the incoming state (over TLS from tls.authz's client only, with tls); the disks stay inactive until the guest is resumed. */
export async function listenIncoming(qmp: QmpClient, uri: string, tls?: ServerTls): Promise<void> {
  await qmp.execute(
    "migrate-set-capabilities",
    {
      capabilities: [
        { capability: "late-block-activate", state: true },
        { capability: "events", state: true },
      ],
    },
    QMP_STEP_MS,
  );
  await qmp.execute("migrate-set-parameters", { "tls-creds": tls?.creds ?? "", "tls-authz": tls?.authz ?? "" }, QMP_STEP_MS);
  await qmp.execute("migrate-incoming", { uri }, QMP_STEP_MS);
}

/** The incoming migration's status on the target ("active", "completed", "failed"; "none" before it began). */
export async function incomingStatus(qmp: QmpClient): Promise<string> {
  return (await qmp.execute<{ status?: string }>("query-migrate", undefined, QMP_STEP_MS)).status ?? "none";
}

/** Waits until the incoming state is complete; throws when it failed or did not complete in time. */
export async function awaitIncomingComplete(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const woken = nextEvent(qmp, MIGRATION_EVENTS, 20);
    const status = await incomingStatus(qmp).catch((err: unknown) => {
      woken.cancel();
      throw err;
    });
    if (status === "completed") return woken.cancel();
    if (status === "failed" || status === "cancelled") {
      woken.cancel();
      throw new Error(`the incoming migration ${status} in the target's QEMU`);
    }
    if (Date.now() > deadline) {
      woken.cancel();
      throw new Error(`the incoming migration was not complete within ${timeoutMs} ms (it is ${status})`);
    }
    await woken.wait;
  }
}

/** Ends the NBD exports and resumes the guest. */
export async function resumeIncoming(qmp: QmpClient): Promise<void> {
  await qmp.execute("nbd-server-stop", undefined, QMP_STEP_MS).catch(() => undefined); // stopped already by an earlier attempt
  await qmp.execute("cont", undefined, QMP_STEP_MS);
}

// ---- the source ----------------------------------------------------------------------------

export interface MirrorTarget {
  host: string;
  port: number;
  exportName: string;
  /** "top" when the target's volume is a thin clone of the same base image, else "full". */
  sync: "full" | "top";
  /** The client's TLS: its credentials object and the name the target's certificate must carry (its IP SAN). */
  tls?: StreamTls;
}

export interface StreamTls {
  creds: string;
  hostname: string;
}

/** Opens each target export as a node and mirrors the disk into it. */
export async function startMirrors(qmp: QmpClient, targets: MirrorTarget[], speedBytesPerSecond: number): Promise<void> {
  for (const [i, t] of targets.entries()) {
    await qmp.execute(
      "blockdev-add",
      {
        driver: "nbd",
        "node-name": nbdNode(i),
        server: { type: "inet", host: t.host, port: String(t.port) },
        export: t.exportName,
        ...(t.tls && { "tls-creds": t.tls.creds, "tls-hostname": t.tls.hostname }),
      },
      QMP_STEP_MS,
    );
    await qmp.execute(
      "blockdev-mirror",
      {
        "job-id": mirrorJob(i),
        device: driveId(i),
        target: nbdNode(i),
        sync: t.sync,
        "auto-dismiss": false,
        ...(speedBytesPerSecond > 0 && { speed: speedBytesPerSecond }),
      },
      QMP_STEP_MS,
    );
  }
}

interface BlockJob {
  device: string;
  len: number;
  offset: number;
  ready: boolean;
  status: string;
  error?: string;
}

export interface MirrorProgress {
  transferredBytes: number;
  remainingBytes: number;
  ready: boolean;
}

/** The mirrors' progress; throws when one of them failed or is gone (the target's side died). */
export async function mirrorProgress(qmp: QmpClient, count: number): Promise<MirrorProgress> {
  const jobs = await qmp.execute<BlockJob[]>("query-block-jobs", undefined, QMP_STEP_MS);
  let transferredBytes = 0;
  let remainingBytes = 0;
  let ready = true;
  for (let i = 0; i < count; i++) {
    const job = jobs.find((j) => j.device === mirrorJob(i));
    if (!job) throw new Error(`the mirror of ${driveId(i)} ended unexpectedly`);
    if (job.error !== undefined || job.status === "concluded" || job.status === "aborting")
      throw new Error(`the mirror of ${driveId(i)} to the target failed: ${job.error ?? job.status}`);
    transferredBytes += job.offset;
    remainingBytes += Math.max(0, job.len - job.offset);
    ready &&= job.ready;
  }
  return { transferredBytes, remainingBytes, ready };
}

/**
 * Ends the mirrors: with `complete`, a soft cancel of ready mirrors (QEMU copies what is left: the
 * target then holds a consistent copy); otherwise a forced cancel. Then the NBD nodes are closed.
 * Waits for each job to conclude, then dismisses it. Throws when a completing mirror failed.
 */
export async function endMirrors(qmp: QmpClient, count: number, complete: boolean, timeoutMs = 30_000): Promise<void> {
  const jobs = await qmp.execute<BlockJob[]>("query-block-jobs", undefined, QMP_STEP_MS);
  const failures: string[] = [];
  for (let i = 0; i < count; i++) {
    const job = jobs.find((j) => j.device === mirrorJob(i));
    if (job && job.status !== "concluded")
      await qmp.execute("block-job-cancel", { device: mirrorJob(i), force: !complete }, QMP_STEP_MS).catch(() => undefined);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const woken = nextEvent(qmp, JOB_EVENTS, 20);
    const now = await qmp.execute<BlockJob[]>("query-block-jobs", undefined, QMP_STEP_MS).catch((err: unknown) => {
      woken.cancel();
      throw err;
    });
    const ours = now.filter((j) => j.device.startsWith("mig-disk"));
    if (ours.every((j) => j.status === "concluded")) {
      for (const j of ours) {
        if (j.error !== undefined) failures.push(`${j.device}: ${j.error}`);
        await qmp.execute("job-dismiss", { id: j.device }, QMP_STEP_MS).catch(() => undefined);
      }
      woken.cancel();
      break;
    }
    if (Date.now() > deadline) {
      woken.cancel();
      throw new Error(`the disk mirrors did not end within ${timeoutMs} ms`);
    }
    await woken.wait;
  }
  for (let i = 0; i < count; i++) await qmp.execute("blockdev-del", { "node-name": nbdNode(i) }, QMP_STEP_MS).catch(() => undefined);
  if (complete && failures.length > 0) throw new Error(`the last disk writes did not reach the target (${failures.join("; ")})`);
}

export interface MemoryOptions {
  maxBandwidthBytesPerSecond: number;
  maxDowntimeMs: number;
  autoConverge: boolean;
  throttleInitialPercent: number;
  throttleIncrementPercent: number;
  /** The stream over TLS; without it plain TCP (and an earlier attempt's TLS is reset). */
  tls?: StreamTls;
  /** Pause the guest before the copy begins (TCG: see OutgoingMigrations' tcgLiveCopy). */
  pauseFirst?: boolean;
}

/** Sets the migration's capabilities and parameters, then starts sending the memory to uri. */
export async function startMemory(qmp: QmpClient, uri: string, o: MemoryOptions): Promise<void> {
  await qmp.execute(
    "migrate-set-capabilities",
    {
      capabilities: [
        { capability: "auto-converge", state: o.autoConverge },
        { capability: "events", state: true },
      ],
    },
    QMP_STEP_MS,
  );
  await qmp.execute(
    "migrate-set-parameters",
    {
      "downtime-limit": o.maxDowntimeMs,
      "max-bandwidth": o.maxBandwidthBytesPerSecond > 0 ? o.maxBandwidthBytesPerSecond : UNCAPPED_BYTES_PER_SECOND,
      "cpu-throttle-initial": o.throttleInitialPercent,
      "cpu-throttle-increment": o.throttleIncrementPercent,
      "tls-creds": o.tls?.creds ?? "",
      "tls-hostname": o.tls?.hostname ?? "",
    },
    QMP_STEP_MS,
  );
  if (o.pauseFirst) await qmp.execute("stop", undefined, QMP_STEP_MS);
  await qmp.execute("migrate", { uri }, QMP_STEP_MS);
}

export interface MemoryProgress {
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  dirtyBytesPerSecond: number;
  throttlePercent: number;
  expectedDowntimeMs: number;
  downtimeMs: number;
  totalTimeMs: number;
  error: string;
}

interface QueryMigrate {
  status?: string;
  ram?: { transferred: number; remaining: number; "dirty-pages-rate"?: number; "page-size"?: number };
  "expected-downtime"?: number;
  downtime?: number;
  "total-time"?: number;
  "cpu-throttle-percentage"?: number;
  "error-desc"?: string;
}

export async function memoryProgress(qmp: QmpClient): Promise<MemoryProgress> {
  const m = await qmp.execute<QueryMigrate>("query-migrate", undefined, QMP_STEP_MS);
  return {
    status: m.status ?? "none",
    transferredBytes: m.ram?.transferred ?? 0,
    remainingBytes: m.ram?.remaining ?? 0,
    dirtyBytesPerSecond: (m.ram?.["dirty-pages-rate"] ?? 0) * (m.ram?.["page-size"] ?? 4096),
    throttlePercent: m["cpu-throttle-percentage"] ?? 0,
    expectedDowntimeMs: m["expected-downtime"] ?? 0,
    downtimeMs: m.downtime ?? 0,
    totalTimeMs: m["total-time"] ?? 0,
    error: m["error-desc"] ?? "",
  };
}

/** Cancels a memory migration under way and waits until QEMU says it is no longer active. */
export async function cancelMemory(qmp: QmpClient, timeoutMs = 10_000): Promise<void> {
  await qmp.execute("migrate_cancel", undefined, QMP_STEP_MS).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = (await memoryProgress(qmp)).status;
    if (!["active", "setup", "cancelling", "pre-switchover", "device"].includes(status)) return;
    await sleep(20);
  }
}

/** Resumes a guest the migration left paused on the source (after a failure at the very end). */
export async function resumeIfPaused(qmp: QmpClient): Promise<void> {
  const { status } = await qmp.execute<{ status: string }>("query-status", undefined, QMP_STEP_MS);
  if (status === "postmigrate" || status === "paused" || status === "finish-migrate") await qmp.execute("cont", undefined, QMP_STEP_MS);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
