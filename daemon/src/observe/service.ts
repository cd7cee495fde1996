// aether.observe.v1.ObserveService: log streams, lifecycle events and telemetry.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  AuditRecordSchema,
  EventSchema,
  LogChannel,
  LogSource,
  ObserveService,
  DiskWearSchema,
  PressureSchema,
  TelemetrySchema,
} from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { invalidArgument, paginate, reference, requireClusterWide, scopeKey, tenant as parseTenant, timestamp } from "@aether/server";
import type { AuditLog } from "./audit.js";
import { resolveExecutable } from "../runtime/resolve.js";
import type { Supervisor } from "../runtime/supervisor.js";
import type { EventBus, LifecycleEvent } from "./event-bus.js";
import { merge, offsetOfLastLines, tailFile, type LogChunk } from "./log-tail.js";
import { readTelemetry } from "./telemetry.js";

const MAX_TAIL_LINES = 1_000_000;
/** Events buffered for a slow subscriber before its stream is ended with RESOURCE_EXHAUSTED. */
const MAX_QUEUED_EVENTS = 10_000;

export interface ObserveDeps {
  supervisor: Supervisor;
  /** A VM's console log and when its current run ends, by id or name. */
  vmConsole: (target: string, tenant: string) => { path: string; ended: Promise<void> };
  events: EventBus;
  daemonLogPath: string;
  /** Resolves when aetherd shuts down: follow streams end then. */
  shutdown: Promise<void>;
  /** Memory promised to workloads (VMs, cells' memory limits, bid holds), in bytes. */
  memoryCommittedBytes?: () => number;
  /** The audit log of mutating calls. */
  audit: AuditLog;
}

export function observeService(deps: ObserveDeps): ServiceImpl<typeof ObserveService> {
  return {
    async *streamLogs(req, ctx) {
      // aetherd's own log speaks of every tenant.
      if (req.source === LogSource.DAEMON) requireClusterWide(ctx.values.get(scopeKey), "read aetherd's own log");
      if (req.tailLines !== undefined && req.tailLines > MAX_TAIL_LINES) {
        throw invalidArgument(`tail_lines ${req.tailLines} is too large; at most ${MAX_TAIL_LINES}.`);
      }
      const sources = await logSources(deps, req.source, req.target, req.tenant, req.channels);
      const streams = await Promise.all(
        sources.map(async ({ channel, path, ended }) => {
          const offset = req.tailLines === undefined ? 0 : await offsetOfLastLines(path, req.tailLines);
          const ends = Promise.race([ended, deps.shutdown]);
          return labelled(channel, tailFile(path, { offset, follow: req.follow, ended: ends, signal: ctx.signal }));
        }),
      );
      for await (const { channel, chunk } of merge(streams)) {
        yield { channel, data: chunk.data, offset: BigInt(chunk.offset), time: timestamp(Date.now()) };
      }
    },

    async *streamEvents(req, ctx) {
      const owner = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const queue: LifecycleEvent[] = [];
      let wake: (() => void) | undefined;
      let overflow = false;
      const unsubscribe = deps.events.subscribe((event) => {
        if (owner !== undefined && event.tenant !== owner) return;
        if (req.kindPrefixes.length > 0 && !req.kindPrefixes.some((p) => event.kind.startsWith(p))) return;
        if (queue.length >= MAX_QUEUED_EVENTS) overflow = true;
        else queue.push(event);
        wake?.();
      });
      const stopped = Promise.race([
        // A deadline that passed before the stream began (connect-timeout-ms: 0) fires no abort event.
        new Promise<void>((r) => (ctx.signal.aborted ? r() : ctx.signal.addEventListener("abort", () => r(), { once: true }))),
        deps.shutdown,
      ]).then(() => true);
      try {
        for (;;) {
          while (queue.length > 0) {
            const e = queue.shift() as LifecycleEvent;
            yield {
              event: create(EventSchema, {
                time: timestamp(e.timeMs),
                kind: e.kind,
                tenant: e.tenant,
                resourceId: e.resourceId,
                resourceName: e.resourceName,
                message: e.message,
                attributes: e.attributes,
              }),
            };
          }
          if (overflow) {
            throw new ConnectError(
              `the event stream fell more than ${MAX_QUEUED_EVENTS} events behind and was ended; reconnect and read faster.`,
              Code.ResourceExhausted,
            );
          }
          const done = await Promise.race([new Promise<boolean>((r) => (wake = () => r(false))), stopped]);
          wake = undefined;
          if (done) return;
        }
      } finally {
        unsubscribe();
      }
    },

    async getTelemetry() {
      const t = await readTelemetry();
      return {
        telemetry: create(TelemetrySchema, {
          time: timestamp(t.timeMs),
          loadAverage1m: t.load[0],
          loadAverage5m: t.load[1],
          loadAverage15m: t.load[2],
          runnableTasks: t.runnableTasks,
          cpuCount: t.cpuCount,
          memoryTotalBytes: BigInt(t.memoryTotalBytes),
          memoryAvailableBytes: BigInt(t.memoryAvailableBytes),
          memoryCommittedBytes: BigInt(deps.memoryCommittedBytes?.() ?? 0),
          pressure: t.pressure.map((p) =>
            create(PressureSchema, {
              resource: p.resource,
              someAvg10Percent: p.someAvg10,
              fullAvg10Percent: p.fullAvg10,
              available: p.available,
            }),
          ),
          disks: t.disks.map((d) => create(DiskWearSchema, { device: d.device, percentageUsed: d.percentageUsed, known: d.known })),
        }),
      };
    },

    async listAuditRecords(req) {
      const owner = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const entries = deps.audit.read().filter((e) => owner === undefined || e.tenant === owner);
      const { page, nextPageToken } = paginate(entries, req.pageSize, req.pageToken);
      return {
        records: page.map((e) =>
          create(AuditRecordSchema, {
            time: timestamp(e.timeMs),
            identity: e.identity,
            method: e.method,
            tenant: e.tenant,
            target: e.target,
            result: e.result,
          }),
        ),
        nextPageToken,
      };
    },
  };
}

interface LogSourceFile {
  channel: LogChannel;
  path: string;
  ended: Promise<void>;
}

async function logSources(
  deps: ObserveDeps,
  source: LogSource,
  target: string,
  tenantField: string,
  channels: LogChannel[],
): Promise<LogSourceFile[]> {
  const wants = (c: LogChannel) => channels.length === 0 || channels.includes(c);
  switch (source) {
    case LogSource.EXECUTABLE: {
      const exe = resolveExecutable(deps.supervisor, target, tenantField, "target");
      const bad = channels.find((c) => c !== LogChannel.STDOUT && c !== LogChannel.STDERR && c !== LogChannel.UNSPECIFIED);
      if (bad !== undefined)
        throw invalidArgument(`an executable has only the STDOUT and STDERR channels, not ${LogChannel[bad] ?? `channel number ${bad}`}.`);
      const files: LogSourceFile[] = [];
      if (wants(LogChannel.STDOUT))
        files.push({ channel: LogChannel.STDOUT, path: deps.supervisor.logPath(exe, "stdout"), ended: exe.ended });
      if (wants(LogChannel.STDERR))
        files.push({ channel: LogChannel.STDERR, path: deps.supervisor.logPath(exe, "stderr"), ended: exe.ended });
      return files;
    }
    case LogSource.DAEMON:
      return [{ channel: LogChannel.DAEMON, path: deps.daemonLogPath, ended: new Promise(() => {}) }];
    case LogSource.VM_CONSOLE: {
      const bad = channels.find((c) => c !== LogChannel.CONSOLE && c !== LogChannel.UNSPECIFIED);
      if (bad !== undefined)
        throw invalidArgument(`a VM console has only the CONSOLE channel, not ${LogChannel[bad] ?? `channel number ${bad}`}.`);
      const vm = deps.vmConsole(reference("target", target), parseTenant(tenantField));
      return [{ channel: LogChannel.CONSOLE, path: vm.path, ended: vm.ended }];
    }
    default:
      throw invalidArgument("source is unspecified: set it to EXECUTABLE, VM_CONSOLE or DAEMON.");
  }
}

async function* labelled(channel: LogChannel, chunks: AsyncGenerator<LogChunk>): AsyncGenerator<{ channel: LogChannel; chunk: LogChunk }> {
  for await (const chunk of chunks) yield { channel, chunk };
}
