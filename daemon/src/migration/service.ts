// The RPC edge of live migration: VmService.MigrateVm and WatchMigration (checked into typed values
// here, then OutgoingMigrations decides), and VmMigrationService, the target side, which only nodes
// may call (a node certificate over mutual TLS, or the unix socket).
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { requireNodeCaller } from "../api/node-caller.js";
import {
  IncomingState,
  MigrationPhase,
  MigrationSchema,
  MigrationState,
  type MigrateVmRequest,
  type Migration as MigrationMessage,
  type VmMigrationService,
  type VmService,
} from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import {
  clip,
  duration,
  durationMs,
  invalidArgument,
  reference,
  requireClusterWide,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import type { VmRecord } from "../vm/record.js";
import type { IncomingMigrations } from "./incoming.js";
import type { Migration, MigrationOptionsValue, OutgoingMigrations } from "./outgoing.js";

const DEFAULT_DOWNTIME_MS = 300;
const DEFAULT_TIMEOUT_MS = 600_000;
// QEMU's own defaults for auto-converge's steps.
const DEFAULT_THROTTLE_INITIAL = 20;
const DEFAULT_THROTTLE_INCREMENT = 10;
const MIN_BANDWIDTH = 1024 * 1024;
const WATCH_INTERVAL_MS = 250;

type MigrationRpcs = Pick<ServiceImpl<typeof VmService>, "migrateVm" | "watchMigration">;

/** MigrateVm and WatchMigration. `self` are this node's own addresses (a VM is not migrated to where it is). */
export function migrationRpcs(
  outgoing: OutgoingMigrations,
  resolve: (ref: string, tenant: string) => VmRecord,
  self: string[],
): MigrationRpcs {
  return {
    async migrateVm(req, ctx) {
      requireClusterWide(ctx.values.get(scopeKey), "choose the node a VM runs on (live migration is an operator's or the aggregator's)");
      const target = checkTarget(req.target, self);
      const options = checkOptions(req);
      if (req.requestId.length > 128) throw invalidArgument("request_id is longer than 128 characters.");
      const vm = resolve(reference("vm", req.vm), parseTenant(req.tenant));
      return { migration: toMessage(outgoing.start(vm, target, options, req.requestId)) };
    },
    async *watchMigration(req, ctx) {
      if (req.migration === "") throw invalidArgument("migration is empty: give the id MigrateVm returned.");
      const m = outgoing.get(reference("migration", req.migration), parseTenant(req.tenant));
      // What the client was last told: a phase or state it has not seen yet is sent at once.
      let told = { phase: m.phase, state: m.state };
      const news = () => m.phase !== told.phase || m.state !== told.state;
      yield { migration: toMessage(m), time: timestamp(Date.now()) };
      // Until the client has seen the end (one that came while a message was being sent too).
      while (told.state === "running" && !ctx.signal.aborted) {
        if (!news()) await nextChange(outgoing, m.id, ctx, news);
        told = { phase: m.phase, state: m.state };
        yield { migration: toMessage(m), time: timestamp(Date.now()) };
      }
    },
  };
}

/**
 * Waits for a change of the migration: a new phase or its end (`urgent`) at once, new figures at most
 * every 250 ms (so a client that waits for the end learns it as soon as it happens).
 */
function nextChange(outgoing: OutgoingMigrations, id: string, ctx: HandlerContext, urgent: () => boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      outgoing.changes.off("change", onChange);
      ctx.signal.removeEventListener("abort", done);
      resolve();
    };
    const onChange = (changed: string) => {
      if (changed !== id) return;
      if (urgent()) return done();
      timer ??= setTimeout(done, Math.max(0, WATCH_INTERVAL_MS - (Date.now() - started)));
    };
    outgoing.changes.on("change", onChange);
    ctx.signal.addEventListener("abort", done, { once: true });
  });
}

function checkTarget(target: string, self: string[]): string {
  if (target === "") throw invalidArgument("target is empty: give the target aetherd's address, unix:///path.sock or https://host:port.");
  if (!/^(unix:\/\/\/[^\s\0]+|https:\/\/[^\s/]+:\d{1,5}\/?)$/.test(target) || target.length > 512)
    throw invalidArgument(`target ${JSON.stringify(clip(target))} is not an aetherd address: give unix:///path.sock or https://host:port.`);
  if (self.includes(target.replace(/\/$/, ""))) throw invalidArgument(`target ${target} is this node itself; give another node's address.`);
  return target.replace(/\/$/, "");
}

function checkOptions(req: MigrateVmRequest): MigrationOptionsValue {
  const o = req.options;
  const bandwidth = Number(o?.maxBandwidthBytesPerSecond ?? 0n);
  if (bandwidth !== 0 && bandwidth < MIN_BANDWIDTH)
    throw invalidArgument(
      `options.max_bandwidth_bytes_per_second ${bandwidth} is below 1 MiB/s, too slow to move a VM; give 0 for no cap or at least 1048576.`,
    );
  if (bandwidth > 1024 ** 4) throw invalidArgument("options.max_bandwidth_bytes_per_second is above 1 TiB/s; give 0 for no cap.");
  const downtime = durationMs("options.max_downtime", o?.maxDowntime, DEFAULT_DOWNTIME_MS);
  if (downtime < 1 || downtime > 120_000)
    throw invalidArgument(
      `options.max_downtime ${downtime} ms is outside 1 ms .. 2 min; QEMU pauses the guest at most this long at the switchover.`,
    );
  const timeout = durationMs("options.timeout", o?.timeout, DEFAULT_TIMEOUT_MS);
  if (timeout < 1000 || timeout > 24 * 3600_000)
    throw invalidArgument(`options.timeout ${timeout} ms is outside 1 s .. 24 h; give the longest the migration may take.`);
  const autoConverge = o?.autoConverge ?? true;
  const step = (field: string, value: number | undefined, unset: number) => {
    if (value === undefined) return unset;
    if (!autoConverge)
      throw invalidArgument(
        `options.${field} is given with auto_converge false: the vCPUs are throttled only by auto-converge; drop it or turn auto_converge on.`,
      );
    if (value < 1 || value > 99) throw invalidArgument(`options.${field} ${value} is outside 1 .. 99 (a percentage of the vCPUs' time).`);
    return value;
  };
  return {
    maxBandwidthBytesPerSecond: bandwidth,
    maxDowntimeMs: downtime,
    autoConverge,
    throttleInitialPercent: step("cpu_throttle_initial_percent", o?.cpuThrottleInitialPercent, DEFAULT_THROTTLE_INITIAL),
    throttleIncrementPercent: step("cpu_throttle_increment_percent", o?.cpuThrottleIncrementPercent, DEFAULT_THROTTLE_INCREMENT),
    timeoutMs: timeout,
  };
}

const PHASES = {
  prepare: MigrationPhase.PREPARE,
  storage: MigrationPhase.STORAGE,
  memory: MigrationPhase.MEMORY,
  switchover: MigrationPhase.SWITCHOVER,
  cleanup: MigrationPhase.CLEANUP,
} as const;
const STATES = { running: MigrationState.RUNNING, succeeded: MigrationState.SUCCEEDED, failed: MigrationState.FAILED } as const;

export function toMessage(m: Migration): MigrationMessage {
  const ended = m.endMs > 0;
  return create(MigrationSchema, {
    id: m.id,
    vmId: m.vmId,
    vmName: m.vmName,
    tenant: m.tenant,
    target: m.target,
    phase: PHASES[m.phase],
    state: STATES[m.state],
    stateReason: m.reason,
    options: {
      maxBandwidthBytesPerSecond: BigInt(m.options.maxBandwidthBytesPerSecond),
      maxDowntime: duration(m.options.maxDowntimeMs),
      autoConverge: m.options.autoConverge,
      // The steps mean something only with auto-converge: without it they are left unset.
      ...(m.options.autoConverge && {
        cpuThrottleInitialPercent: m.options.throttleInitialPercent,
        cpuThrottleIncrementPercent: m.options.throttleIncrementPercent,
      }),
      timeout: duration(m.options.timeoutMs),
    },
    startTime: timestamp(m.startMs),
    endTime: ended ? timestamp(m.endMs) : undefined,
    diskTransferredBytes: BigInt(m.diskTransferredBytes),
    diskRemainingBytes: BigInt(m.diskRemainingBytes),
    memoryTransferredBytes: BigInt(m.memory.transferredBytes),
    memoryRemainingBytes: BigInt(m.memory.remainingBytes),
    dirtyRateBytesPerSecond: BigInt(Math.round(m.memory.dirtyBytesPerSecond)),
    cpuThrottlePercent: m.memory.throttlePercent,
    expectedDowntime: duration(m.memory.expectedDowntimeMs),
    downtime: m.state === "succeeded" ? duration(m.memory.downtimeMs) : undefined,
    totalTime: ended ? duration(m.endMs - m.startMs) : undefined,
  });
}

/** The calling node's name, or "" for the unix socket; any other caller is refused. */
const requireNode = (ctx: HandlerContext) => requireNodeCaller(ctx, "VmMigrationService", "a live migration");

const INCOMING_STATES = {
  absent: IncomingState.ABSENT,
  prepared: IncomingState.PREPARED,
  resumed: IncomingState.RESUMED,
  finished: IncomingState.FINISHED,
} as const;
/** The bounds of FinishIncoming's confirm_within. */
const MAX_CONFIRM_MS = 600_000;

export function vmMigrationService(incoming: IncomingMigrations): ServiceImpl<typeof VmMigrationService> {
  const id = (value: string) => {
    if (!/^[0-9a-f-]{36}$/.test(value))
      throw invalidArgument(`migration_id ${JSON.stringify(clip(value))} is not a migration id (a UUID).`);
    return value;
  };
  return {
    async prepareIncoming(req, ctx) {
      const caller = requireNode(ctx);
      const timeoutMs = durationMs("timeout", req.timeout, 0);
      if (timeoutMs < 1000) throw invalidArgument("timeout must be at least 1 s: the target removes its copy when it passes.");
      if (req.sourceNode === "" || req.sourceNode.length > 512)
        throw invalidArgument("source_node must name the source (1..512 characters).");
      const prepared = await incoming.prepare({
        migrationId: id(req.migrationId),
        sourceNode: req.sourceNode,
        sourceNodeId: clip(req.sourceNodeId),
        specJson: req.vmSpecJson,
        disks: req.disks.map((d, i) => {
          if (d.sizeBytes === 0n || d.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER))
            throw invalidArgument(`disks[${i}].size_bytes is out of range.`);
          if (!/^[0-9a-f]{64}$|^$/.test(d.baseImageSha256)) throw invalidArgument(`disks[${i}].base_image_sha256 is not a SHA-256 in hex.`);
          return { sizeBytes: Number(d.sizeBytes), volumeName: d.volumeName, baseImageSha256: d.baseImageSha256, labels: d.labels };
        }),
        timeoutMs,
        // A node certificate over mutual TLS: the source is another host, the streams take TLS too.
        // Only the calling node's certificate is let into those streams.
        tls: !ctx.values.get(scopeKey).identity.startsWith("unix:"),
        peerNode: caller,
      });
      return prepared;
    },
    async finishIncoming(req, ctx) {
      requireNode(ctx);
      const figure = (field: string, d: typeof req.elapsed) => {
        const ms = durationMs(field, d, 0);
        if (ms < 0 || ms > 7 * 24 * 3600_000) throw invalidArgument(`${field} is out of range (0 .. 7 days).`);
        return ms;
      };
      const confirmWithinMs = durationMs("confirm_within", req.confirmWithin, 0);
      if (req.confirmWithin && (confirmWithinMs < 1000 || confirmWithinMs > MAX_CONFIRM_MS))
        throw invalidArgument(
          `confirm_within ${confirmWithinMs} ms is outside 1 s .. 10 min: give how long the guest has to answer on this node, or leave it unset to commit at once.`,
        );
      await incoming.finish(
        id(req.migrationId),
        { elapsedMs: figure("elapsed", req.elapsed), downtimeMs: figure("downtime", req.downtime) },
        confirmWithinMs,
      );
      return {};
    },
    async confirmIncoming(req, ctx) {
      requireNode(ctx);
      return incoming.confirm(id(req.migrationId));
    },
    async abortIncoming(req, ctx) {
      requireNode(ctx);
      await incoming.abort(id(req.migrationId), clip(req.reason) || "the source cancelled it");
      return {};
    },
    async queryIncoming(req, ctx) {
      requireNode(ctx);
      return { state: INCOMING_STATES[incoming.state(id(req.migrationId))] };
    },
  };
}
