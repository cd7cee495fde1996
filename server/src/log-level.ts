// The log level at runtime, for aetherd and aether-aggregator alike (NodeService.SetLogLevel): an
// operator turns on debug on one server without restarting it, for a while (it reverts to the
// configured level by itself) or until changed again. Who changed it, from what to what and for how
// long is written to the log itself, at the more verbose of the two levels while that one is in
// effect, so the line is there whichever way the level went (aetherd's audit log records the call too).
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { Logger } from "pino";
import { SetLogLevelResponseSchema, type SetLogLevelRequest, type SetLogLevelResponse } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { requireClusterWide, scopeKey } from "./authorize.js";
import { invalidArgument } from "./errors.js";
import { setLogLevel } from "./logger.js";
import { durationMs, timestamp } from "./time.js";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Longest time a changed level holds before reverting (a forgotten debug fills disks). */
export const MAX_LOG_LEVEL_DURATION_MS = 7 * 24 * 3600_000;

/** Higher is more verbose: fatal 0 … trace 5; silent -1. */
const verbosity = (level: string) => (level === "silent" ? -1 : LOG_LEVELS.indexOf(level as LogLevel));

export class RuntimeLogLevel {
  private timer: NodeJS.Timeout | undefined;
  private revertAtMs: number | undefined;

  /** root: the logger createLogger made; configured: the level of the configuration. */
  constructor(
    private readonly root: Logger,
    readonly configured: string,
  ) {}

  get level(): string {
    return this.root.level;
  }

  /** When the level goes back to the configured one; undefined when it does not by itself. */
  get revertAt(): number | undefined {
    return this.revertAtMs;
  }

  /** Sets the level now; with durationMs > 0 the configured level is back after it. */
  set(level: LogLevel, durationMs: number, by: string): { previous: string } {
    const previous = this.level;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.revertAtMs = undefined;
    this.apply(level, { by, from: previous, to: level, ...(durationMs > 0 && { forMs: durationMs }) }, "log level changed at runtime");
    if (durationMs > 0) {
      this.revertAtMs = Date.now() + durationMs;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.revertAtMs = undefined;
        this.apply(this.configured, { by, from: this.level, to: this.configured }, "log level reverted to the configured one");
      }, durationMs);
      this.timer.unref();
    }
    return { previous };
  }

  private apply(level: string, fields: Record<string, unknown>, message: string): void {
    const previous = this.level;
    // Written at the more verbose of the two levels, while that one is in effect; never as a fatal
    // line (between fatal and silent there is nowhere to write it: aetherd's audit log still has it).
    const line = (at: string) => {
      if (at !== "silent" && at !== "fatal") this.root[at as Exclude<LogLevel, "silent">]({ ...fields, logLevelChange: true }, message);
    };
    const before = verbosity(previous) >= verbosity(level);
    if (before) line(previous);
    setLogLevel(this.root, level);
    if (!before) line(level);
  }

  close(): void {
    clearTimeout(this.timer);
  }
}

/** NodeService.SetLogLevel, as both servers answer it. */
export function setLogLevelRpc(runtime: RuntimeLogLevel, req: SetLogLevelRequest, ctx: HandlerContext): SetLogLevelResponse {
  const scope = ctx.values.get(scopeKey);
  requireClusterWide(scope, "change the server's log level");
  let previous = runtime.level;
  if (req.level !== "") {
    if (!(LOG_LEVELS as readonly string[]).includes(req.level))
      throw invalidArgument(`level ${JSON.stringify(req.level.slice(0, 40))} is not one of ${LOG_LEVELS.join(", ")}.`);
    const ms = durationMs("duration", req.duration, 0);
    if (ms > MAX_LOG_LEVEL_DURATION_MS)
      throw invalidArgument("duration is longer than 7 days: a level changed for longer belongs in the configuration (log_level).");
    previous = runtime.set(req.level as LogLevel, ms, scope.identity).previous;
  }
  const revertAt = runtime.revertAt;
  return create(SetLogLevelResponseSchema, {
    level: runtime.level,
    previousLevel: previous,
    configuredLevel: runtime.configured,
    ...(revertAt !== undefined && { revertTime: timestamp(revertAt) }),
  });
}
