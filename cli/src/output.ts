// How results are shown, the same way by every command (issue 23, item 7):
//
//   -o table  (the default) for people: boxed on a terminal, plain columns when stdout is not one,
//             fitted to the terminal's width (long reasons, commands and paths end in "…");
//   -o wide   every cell whole, and the columns a table leaves out (full ids, labels...);
//   -o json   the proto3 JSON mapping (the names buf curl and grpcurl show); --json is the same;
//   -o yaml   the same data as YAML;
//   -o name   one name per line, for xargs and shell loops.
//
// A command declares its options with outputOptions() and prints with printList / printOne /
// printEach, given a View of its resource: how to turn one into JSON, its name, and its columns.
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import Table from "cli-table3";
import { Option, type Command } from "commander";
import { renderTable } from "./table-layout.js";
import { lazyRequire } from "./lazy.js";

/** -o yaml only. */
const yaml = lazyRequire<typeof import("yaml")>("yaml");
const toYaml = (value: unknown) => yaml().stringify(value);

export const FORMATS = ["table", "wide", "json", "yaml", "name"] as const;
export type Format = (typeof FORMATS)[number];

/** What outputOptions() adds, as commander hands it to an action. */
export interface OutputFlags {
  output?: Format;
  json?: boolean;
  /** false with --no-headers. */
  headers?: boolean;
}

/** A clipped cell in `table` keeps at most this many columns when there is no terminal to fit. */
const CLIP_AT = 80;

/**
 * Adds -o/--output and --json (the same as -o json) to a command; a list also gets --no-headers.
 * test/cli-tree.test.ts finds lists by --no-headers (and by their names) and checks they have these.
 */
export function outputOptions(cmd: Command, shape: "list" | "one" = "one"): Command {
  cmd.addOption(new Option("-o, --output <format>", "output format").choices(FORMATS));
  cmd.addOption(new Option("--json", "the same as -o json").conflicts("output"));
  if (shape === "list") cmd.option("--no-headers", "leave out the header row (table and wide)");
  return cmd;
}

export function formatOf(o: OutputFlags): Format {
  return o.json === true ? "json" : (o.output ?? "table");
}

/** json, yaml and name are for programs: no progress, no chatter on stdout, only the data. */
export const forPrograms = (o: OutputFlags): boolean => !["table", "wide"].includes(formatOf(o));

/** How to show one kind of resource. */
export interface View<T> {
  /** Its schema (printed in the proto3 JSON mapping), or a function giving plain JSON data. */
  json: DescMessage | ((item: T) => unknown);
  /** Its name, for -o name (a name, or a short id when it has none). */
  name: (item: T) => string;
}

export interface Column<T> {
  header: string;
  cell: (item: T) => string;
  /** The cell in `wide` when it differs (a full id where the table shows a short one). */
  whole?: (item: T) => string;
  /** May be shortened to fit ("…"): reasons, commands, paths, sources. */
  clip?: boolean;
  /** Only in `wide`. */
  wideOnly?: boolean;
}

export interface ListView<T> extends View<T> {
  columns: Array<Column<T>>;
}

function data<T>(view: View<T>, item: T): unknown {
  return typeof view.json === "function" ? view.json(item) : toJson(view.json, item as MessageShape<DescMessage>);
}

/** The width a table must fit: the terminal's, else $COLUMNS; none when neither is known. */
export function terminalWidth(): number | undefined {
  if (process.stdout.isTTY && (process.stdout.columns ?? 0) > 0) return process.stdout.columns;
  const columns = Number(process.env.COLUMNS);
  return Number.isSafeInteger(columns) && columns > 0 ? columns : undefined;
}

const write = (text: string) => process.stdout.write(text);

/** Prints a list of resources in the format asked for. */
export function printList<T>(o: OutputFlags, view: ListView<T>, items: readonly T[]): void {
  const format = formatOf(o);
  if (format === "json")
    return void write(
      `${JSON.stringify(
        items.map((i) => data(view, i)),
        null,
        2,
      )}\n`,
    );
  if (format === "yaml") return void write(toYaml(items.map((i) => data(view, i))));
  if (format === "name") return void write(items.map((i) => `${view.name(i)}\n`).join(""));
  const wide = format === "wide";
  const columns = view.columns.filter((c) => wide || !c.wideOnly);
  const rows = items.map((item) => columns.map((c) => (wide && c.whole ? c.whole(item) : c.cell(item))));
  write(
    renderTable(
      columns.map((c) => ({ header: c.header, clip: !wide && c.clip === true })),
      rows,
      {
        boxed: process.stdout.isTTY === true,
        headers: o.headers !== false,
        ...(!wide && { width: terminalWidth(), clipAt: CLIP_AT }),
      },
    ),
  );
}

/**
 * Prints one resource: its fields (table, wide) or the data (json, yaml, name). Without `fields`
 * (a command whose human output is something else, e.g. a mutation's one line), table and wide
 * print nothing here.
 */
export function printOne<T>(o: OutputFlags, view: View<T>, item: T, fields?: (item: T) => Array<[string, string]>): void {
  const format = formatOf(o);
  if (format === "json") return void write(`${JSON.stringify(data(view, item), null, 2)}\n`);
  if (format === "yaml") return void write(toYaml(data(view, item)));
  if (format === "name") return void write(`${view.name(item)}\n`);
  if (fields) printFields(fields(item));
}

/**
 * One item of a stream (events, progress): a line of JSON each (json), a YAML document each (yaml),
 * its name (name), or the line given for people.
 */
export function printEach<T>(o: OutputFlags, view: View<T>, item: T, line: string): void {
  const format = formatOf(o);
  if (format === "json") return void write(`${JSON.stringify(data(view, item))}\n`);
  if (format === "yaml") return void write(`---\n${toYaml(data(view, item))}`);
  if (format === "name") return void write(`${view.name(item)}\n`);
  write(`${line}\n`);
}

/**
 * A table of plain rows, laid out as printList's (boxed on a terminal, plain otherwise). Prefer
 * printList with a View, which gives -o wide/json/yaml/name too.
 */
export function printTable(head: string[], rows: string[][]): void {
  write(
    renderTable(
      head.map((header) => ({ header, clip: false })),
      rows,
      { boxed: process.stdout.isTTY === true, headers: true },
    ),
  );
}

/** Prints messages as JSON in the proto3 JSON mapping (for answers that are not a resource). */
export function printJson<Desc extends DescMessage>(schema: Desc, value: MessageShape<Desc> | Array<MessageShape<Desc>>): void {
  const json = Array.isArray(value) ? value.map((v) => toJson(schema, v)) : toJson(schema, value);
  write(`${JSON.stringify(json, null, 2)}\n`);
}

/**
 * Two columns, field and value, for one resource in detail: boxed on a terminal (long values
 * wrapped to its width), plain when stdout is not one. Values are never clipped: this is where a
 * whole reason is read.
 */
export function printFields(rows: Array<[string, string]>): void {
  if (!process.stdout.isTTY) {
    const w = Math.max(0, ...rows.map(([k]) => k.length));
    return void write(rows.map(([k, v]) => `${k.padEnd(w)}   ${v}\n`).join(""));
  }
  const width = terminalWidth();
  const keyWidth = Math.max(0, ...rows.map(([k]) => k.length)) + 2;
  const valueWidth = Math.max(0, ...rows.map(([, v]) => v.length)) + 2;
  const fits = width === undefined || keyWidth + valueWidth + 3 <= width;
  const table = new Table({
    style: { head: [], border: [] },
    chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" },
    ...(!fits && { colWidths: [keyWidth, Math.max(20, (width as number) - keyWidth - 3)], wordWrap: true, wrapOnWordBoundary: false }),
  });
  table.push(...rows);
  write(`${table.toString()}\n`);
}

/** The first 8 hex digits of an id, as tables show it (any unique prefix is accepted back). */
export const shortId = (id: string): string => (id === "" ? "-" : id.slice(0, 8));

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

/** Labels as "k=v,k2=v2" ("-" for none). */
export const labelsText = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";
