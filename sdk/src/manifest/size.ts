// Sizes as people write them in a manifest: bytes as a number, or "512M", "10G", "1.5Ti".
// The same notation as the CLI's (binary units: 1K = 1024 bytes), kept here because the SDK does
// not depend on the CLI.
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

/**
 * Bytes from a number of bytes or a string like "512M", "10G", "1.5Ti" or "1048576" (binary units,
 * an optional trailing "B"). Returns the reason instead when the value is not a positive size.
 */
export function parseSize(value: number | string): number | { error: string } {
  let bytes: number;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) return { error: `${value} is not a whole number of bytes` };
    bytes = value;
  } else {
    const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?$/i.exec(value.trim());
    const unit = UNITS[(m?.[2] ?? "").toLowerCase()];
    if (!m || unit === undefined) return { error: `${JSON.stringify(value)} is not a size like "512M", "10G" or a number of bytes` };
    bytes = Math.round(Number(m[1]) * unit);
  }
  if (bytes <= 0) return { error: "must be greater than 0" };
  if (!Number.isSafeInteger(bytes)) return { error: `${value} is larger than ${Number.MAX_SAFE_INTEGER} bytes` };
  return bytes;
}

/** "10 GiB", "1.5 MiB", "700 bytes": a byte count as a person reads it, exact to 0.01 of the unit. */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [
    ["TiB", 2 ** 40],
    ["GiB", 2 ** 30],
    ["MiB", 2 ** 20],
    ["KiB", 2 ** 10],
  ] as const) {
    if (bytes >= factor) return `${Number((bytes / factor).toFixed(2))} ${unit}`;
  }
  return `${bytes} bytes`;
}

/**
 * formatSize, with the exact count beside it when the rounded figure is not exact, so that two
 * sizes in one sentence never look equal when they are not: "1 GiB", "1 GiB (1073741823 bytes)".
 */
export function describeSize(bytes: number): string {
  const rounded = formatSize(bytes);
  return bytes < 1024 || parseSize(rounded.replace(/ (.)iB$/, "$1").replace(/ bytes$/, "")) === bytes
    ? rounded
    : `${rounded} (${bytes} bytes)`;
}
