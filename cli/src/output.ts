// How results are shown: JSON (--json, for scripts) or tables and lines (for people).
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import Table from "cli-table3";

/** Prints messages as JSON in the proto3 JSON mapping (the same names buf curl and grpcurl show). */
export function printJson<Desc extends DescMessage>(schema: Desc, value: MessageShape<Desc> | Array<MessageShape<Desc>>): void {
  const json = Array.isArray(value) ? value.map((v) => toJson(schema, v)) : toJson(schema, value);
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
}

export function printTable(head: string[], rows: string[][]): void {
  const table = new Table({ head, style: { head: [], border: [] }, chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" } });
  table.push(...rows);
  process.stdout.write(`${table.toString()}\n`);
}

/** Two columns, field and value, for one resource in detail. */
export function printFields(rows: Array<[string, string]>): void {
  const table = new Table({ style: { head: [], border: [] }, chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" } });
  table.push(...rows);
  process.stdout.write(`${table.toString()}\n`);
}

/** "3s", "5m", "2h", "4d" ago. */
export function age(ts: Timestamp | undefined, now = Date.now()): string {
  if (!ts) return "-";
  const s = Math.max(0, Math.round((now - timestampMs(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(1)} ${units[i]}`;
}
