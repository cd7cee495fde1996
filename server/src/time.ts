// Conversions between protobuf time types and milliseconds, with the checks every handler needs.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "./errors.js";

/** Milliseconds of an optional Duration field; `fallback` when unset. Negative or absurd values are refused. */
export function durationMs(field: string, value: Duration | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = Number(value.seconds) * 1000 + Math.floor(value.nanos / 1e6);
  if (!Number.isFinite(ms) || ms < 0 || value.nanos < 0) {
    throw invalidArgument(`${field} must not be negative.`);
  }
  if (ms > 366 * 24 * 3600 * 1000) throw invalidArgument(`${field} is longer than a year; give a shorter duration.`);
  return ms;
}

export function timestamp(ms: number): Timestamp {
  return timestampFromMs(ms);
}

export function duration(ms: number): Duration {
  return create(DurationSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });
}
