// Sizes and CPU amounts as people type them on a command line. A value that does not parse, or that
// its proto field (uint64) cannot hold, is a usage error (commander's InvalidArgumentError: exit 2,
// said before aetherd is asked).
import { InvalidArgumentError } from "commander";
import { fitField } from "./numbers.js";

const UNITS: Record<string, number> = {
  "": 1,
  k: 2 ** 10,
  ki: 2 ** 10,
  m: 2 ** 20,
  mi: 2 ** 20,
  g: 2 ** 30,
  gi: 2 ** 30,
  t: 2 ** 40,
  ti: 2 ** 40,
};

/** "64M", "1.5G", "512Ki", "1048576" → bytes (binary units). */
export function parseBytes(value: string): bigint {
  const m = /^(\d+)(?:\.(\d+))?\s*([kmgt]i?)?b?$/i.exec(value.trim());
  const unit = UNITS[(m?.[3] ?? "").toLowerCase()];
  if (!m || unit === undefined) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a size like 64M, 1.5G or 1048576`);
  // The whole part in exact arithmetic (a byte count near 2^64 does not fit a double); a fraction rounds to the byte.
  const bytes = BigInt(m[1] ?? "0") * BigInt(unit) + BigInt(Math.round(Number(`0.${m[2] ?? "0"}`) * unit));
  return fitField("uint64", bytes, "a size in bytes");
}

/** "20%" (of one CPU), "1.5" (CPUs) or "20000/100000" (quota/period in µs) → quota and period. */
export function parseCpuMax(value: string): { quotaUsec: bigint; periodUsec: bigint } {
  const period = 100_000n;
  const usec = (n: bigint | number) => fitField("uint64", n, "a CPU time in µs");
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(value);
  if (percent) return { quotaUsec: usec((Number(percent[1]) / 100) * Number(period)), periodUsec: period };
  const pair = /^(\d+)\/(\d+)$/.exec(value);
  if (pair) return { quotaUsec: usec(BigInt(pair[1] ?? 0)), periodUsec: usec(BigInt(pair[2] ?? 0)) };
  if (/^\d+(\.\d+)?$/.test(value)) return { quotaUsec: usec(Number(value) * Number(period)), periodUsec: period };
  throw new InvalidArgumentError(`${JSON.stringify(value)} is not a CPU limit like 20%, 1.5 or 20000/100000`);
}
