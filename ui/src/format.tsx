// How the screens write times, ages, sizes and enum values.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

export const ago = (t?: Timestamp): string => {
  if (t === undefined) return "";
  const s = Math.round((Date.now() - timestampDate(t).getTime()) / 1000);
  return s < 0 ? `in ${-s}s` : s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};
export const time = (t?: Timestamp): string => (t === undefined ? "" : timestampDate(t).toLocaleTimeString());
export const bytes = (n: bigint | number): string => {
  const v = Number(n);
  return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(1)} GiB` : v >= 2 ** 20 ? `${Math.round(v / 2 ** 20)} MiB` : `${v} B`;
};
/** An enum value's name without its prefix, e.g. VmState.RUNNING → RUNNING. */
export const word = (e: Record<number, string>, v: number): string => e[v] ?? String(v);
export const State = ({ e, v }: { e: Record<number, string>; v: number }) => <span class={`state-${word(e, v)}`}>{word(e, v)}</span>;
