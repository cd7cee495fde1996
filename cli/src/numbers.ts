// Counts and durations as options take them, checked once against the range of the proto field they
// fill. A value that field cannot hold is a usage error (commander's InvalidArgumentError: exit 2,
// one line naming the option, before aetherd is asked) instead of "serialize binary: cannot encode
// field" from deep inside the client.
import { InvalidArgumentError, Option } from "commander";

/** The integer field types options fill, and what each can hold. */
const RANGES = {
  uint32: { min: 0n, max: 2n ** 32n - 1n },
  uint64: { min: 0n, max: 2n ** 64n - 1n },
} as const;

export type IntegerField = keyof typeof RANGES;

/** The longest google.protobuf.Duration: 10,000 years. */
const MAX_DURATION_MS = 315_576_000_000 * 1000;

/** n (a double is rounded) if a field of this type holds it; otherwise says what the field holds. */
export function fitField(field: IntegerField, n: bigint | number, what = "a whole number"): bigint {
  const { min, max } = RANGES[field];
  const whole = typeof n === "bigint" ? n : Number.isFinite(n) ? BigInt(Math.round(n)) : undefined;
  if (whole === undefined || whole < min || whole > max) throw new InvalidArgumentError(`It must be ${what} from ${min} to ${max}.`);
  return whole;
}

/** A whole decimal number ("12"; not "12abc", "1.5" or "1e3") that fits the field. */
function wholeNumber(field: IntegerField, value: string): bigint {
  const text = value.trim();
  if (!/^-?\d+$/.test(text)) throw new InvalidArgumentError("It must be a whole number.");
  return fitField(field, BigInt(text));
}

/** For a uint32 field: --vcpus, --uid, --cpu-weight, --tail (lines or events)... */
export const uint32 = (value: string): number => Number(wholeNumber("uint32", value));

/** For a uint64 field: --pids, --log-limit-bytes, --tail (bytes)... */
export const uint64 = (value: string): bigint => wholeNumber("uint64", value);

const DURATION_UNITS: Record<string, number> = { "": 1000, ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * "30" or "2.5" (seconds), "500ms", "30s", "2m", "1h", "7d" → milliseconds, within what a
 * google.protobuf.Duration holds. Every duration option of every command reads through this.
 */
export function parseDurationMs(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$/i.exec(value.trim());
  const unit = DURATION_UNITS[(m?.[2] ?? "").toLowerCase()];
  if (!m || unit === undefined) throw new InvalidArgumentError("It must be a duration like 30 (seconds), 2.5s, 500ms or 2m.");
  const ms = Math.round(Number(m[1]) * unit);
  if (!(ms <= MAX_DURATION_MS))
    throw new InvalidArgumentError("It must be at most 10000 years (the longest duration a request can carry).");
  return ms;
}

/** Milliseconds as the google.protobuf.Duration a request carries. */
export const toDuration = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });

/**
 * A client-side deadline: node's timers hold at most 2^31-1 ms (about 24.8 days) and fire at once
 * beyond it, so a longer wait the server bounds itself is capped here rather than cut short.
 */
export const clientTimeoutMs = (ms: number) => Math.min(ms, 2 ** 31 - 1);

/** A duration option (read by parseDurationMs), its default shown as "10s" rather than 10000. */
export function durationOption(flags: string, description: string, defaultMs?: number): Option {
  const option = new Option(flags, description).argParser(parseDurationMs);
  return defaultMs === undefined ? option : option.default(defaultMs, defaultMs % 1000 === 0 ? `${defaultMs / 1000}s` : `${defaultMs}ms`);
}
