// Conversions between protobuf time types and milliseconds, with the checks every handler needs.
// Requests' durations become whole milliseconds (what timers and stored records take); what servers
// answer keeps sub-millisecond precision (records made in one millisecond still sort, and auction
// timings are that short), and nanos are always a whole number in 0..999,999,999.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "./errors.js";

/** Whole milliseconds of an optional Duration field; `fallback` when unset. Negative or absurd values are refused. */
export function durationMs(field: string, value: Duration | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = Number(value.seconds) * 1000 + Math.floor(value.nanos / 1e6);
  if (!Number.isFinite(ms) || ms < 0 || value.nanos < 0) {
    throw invalidArgument(`${field} must not be negative.`);
  }
  if (ms > 366 * 24 * 3600 * 1000) throw invalidArgument(`${field} is longer than a year; give a shorter duration.`);
  return ms;
}

/** A Timestamp from milliseconds since the epoch, keeping sub-millisecond precision. */
export function timestamp(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
  return create(TimestampSchema, { seconds: BigInt(seconds), nanos });
}

let lastPreciseMs = 0;

/**
 * Now, in milliseconds with microseconds, strictly increasing within this process: records created
 * in the same millisecond still sort in the order they were made ("newest first" lists).
 */
export function preciseNow(): number {
  const now = Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000;
  lastPreciseMs = now > lastPreciseMs ? now : lastPreciseMs + 0.001;
  return lastPreciseMs;
}

/** Milliseconds since the epoch of a Timestamp; 0 when unset. */
export function msOf(value: { seconds: bigint; nanos: number } | undefined): number {
  return value === undefined ? 0 : Number(value.seconds) * 1000 + value.nanos / 1e6;
}

/** A Duration from milliseconds, keeping sub-millisecond precision; a negative one is 0. */
export function duration(ms: number): Duration {
  const clamped = Math.max(0, ms);
  const seconds = Math.floor(clamped / 1000);
  const nanos = Math.min(999_999_999, Math.round((clamped - seconds * 1000) * 1e6));
  return create(DurationSchema, { seconds: BigInt(seconds), nanos });
}
