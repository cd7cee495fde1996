// -w/--watch on list commands (issue 23, item 8): the list, then again each time the daemon's (or the
// aggregator's) event stream says something changed, never on a timer. The stream is opened before
// the first list, so a change that lands while the list is read is not lost (it causes one more
// list). Events that arrive while a list is being read are folded into one more list.
//
// How a state is shown:
// - on a terminal with a real width (progress.ts canRedraw): redrawn in place, the previous one
//   cleared, with a line saying what is watched and when it was last read;
// - otherwise each new state is printed whole after a blank line (only when it differs from the last);
// - with -o json: one JSON object per line for each item that was added, changed or removed,
//   {"type":"ADDED"|"MODIFIED"|"DELETED","object":{...}}, as `kubectl get -w -o json` scripts expect;
//   with -o yaml the same objects as YAML documents.
//
// It ends on Ctrl-C, SIGTERM and SIGHUP (no handler is installed, so the default death applies, and
// nothing needs restoring: the cursor is never hidden), when its output's reader goes away
// (exitWhenOutputGoes), when its parent dies (it is then re-parented: checked every second), and
// when the stream ends (the daemon stopped: exit 4, as for any unreachable daemon).
import { constants } from "node:os";
import { stripVTControlCharacters } from "node:util";
import stringWidth from "string-width";
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type AetherClient } from "@aether/sdk/client";
import { canRedraw } from "./progress.js";
import { formatOf, printList, type ListView, type OutputFlags } from "./output.js";
import { lazyRequire } from "./lazy.js";

/** -o yaml only. */
const yaml = lazyRequire<typeof import("yaml")>("yaml");
const toYaml = (value: unknown) => yaml().stringify(value);

export interface WatchSpec<T> {
  /** What is watched, for the terminal's header line: "executables on unix:///run/aether/aetherd.sock". */
  what: string;
  /** Reads the whole list, as the one-shot listing does. */
  list: () => Promise<T[]>;
  /** How the one-shot listing shows it, and the format asked for. */
  view: ListView<T>;
  output: OutputFlags;
  /** An item's identity, to tell a changed item from a new one (-o json, yaml). */
  key: (item: T) => string;
  /** Opens the stream of changes: each message means "the list may have changed"; it ends with the signal. */
  changes: (signal: AbortSignal) => AsyncIterable<unknown>;
}

/** Adds -w/--watch to a list command. */
export function watchOption<C extends { option(flags: string, description: string): C }>(cmd: C): C {
  return cmd.option("-w, --watch", "keep the list on screen, redrawn on every change the daemon reports (Ctrl-C to stop)");
}

export interface WatchFlags {
  watch?: boolean;
}

/** Runs until a signal, the reader, the parent or the stream ends it; never returns normally. */
export async function watch<T>(spec: WatchSpec<T>): Promise<never> {
  const abort = new AbortController();
  // Changes are counted by a loop of their own, so that those arriving while a list is read make
  // one more list, not one each.
  let changed = false;
  let wake: (() => void) | undefined;
  let lost: ConnectError | undefined;
  const signal = () => {
    wake?.();
    wake = undefined;
  };
  const consumer = (async () => {
    try {
      for await (const _ of spec.changes(abort.signal)) {
        changed = true;
        signal();
      }
      lost = streamLost(spec.what, undefined);
    } catch (err) {
      lost = streamLost(spec.what, err);
    }
    signal();
  })();
  watchParent();
  const format = formatOf(spec.output);
  const show =
    format === "json" || format === "yaml" ? changesOnly(spec, format) : canRedraw(process.stdout) ? redrawn(spec) : printedWhole(spec);
  // The stream's request went out above, before this first list (see the top of this file).
  show(await spec.list());
  for (;;) {
    if (!changed && lost === undefined) await new Promise<void>((resolve) => (wake = resolve));
    if (lost !== undefined) {
      abort.abort();
      await consumer;
      throw lost;
    }
    changed = false;
    show(await spec.list());
  }
}

function streamLost(what: string, err: unknown): ConnectError {
  if (err instanceof ConnectError && err.code !== Code.Canceled) {
    return new ConnectError(`the watch of ${what} ended: ${err.rawMessage}`, err.code);
  }
  return new ConnectError(`the watch of ${what} ended: the event stream closed (did the daemon stop?).`, Code.Unavailable);
}

/** Ends the process when its parent goes: it is then adopted by init or a subreaper, and ppid changes. */
export function watchParent(): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid !== parent) process.exit(128 + constants.signals.SIGHUP);
  }, 1000);
  timer.unref();
}

/** What `print` writes to stdout, as a string (the listing code stays the one the one-shot listing runs). */
export function captured(print: () => void): string {
  const write = process.stdout.write;
  let text = "";
  process.stdout.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    print();
  } finally {
    process.stdout.write = write;
  }
  return text;
}

/** On a terminal: each state replaces the previous one on screen. */
function redrawn<T>(spec: WatchSpec<T>): (items: T[]) => void {
  let items: T[] = [];
  let header = "";
  // Drawn again for a resized terminal: the same items, fitted to its new width.
  const screen = inPlace(() => ({ header, text: captured(() => printList(spec.output, spec.view, items)) }));
  return (now) => {
    items = now;
    header = `watching ${spec.what}, updated ${new Date().toLocaleTimeString()} (Ctrl-C to stop)`;
    screen(
      header,
      captured(() => printList(spec.output, spec.view, items)),
    );
  };
}

/**
 * A screen redrawn in place on a terminal: each call clears what the last one drew (moving the
 * cursor up over it) and draws a header line, a blank line and the text, cut to the terminal's height.
 */
export function inPlace(again?: () => { header: string; text: string }): (header: string, text: string) => void {
  let shownRows = 0;
  let last: { header: string; text: string } | undefined;
  const draw = (header: string, text: string, clear: string) => {
    last = { header, text };
    const columns = process.stdout.columns || 80;
    const rows = process.stdout.rows || 24;
    let lines = [header, "", ...text.replace(/\n$/, "").split("\n")];
    // What scrolled off the top cannot be cleared: never show more than fits.
    const height = (line: string) => Math.max(1, Math.ceil(stringWidth(stripVTControlCharacters(line)) / columns));
    let total = lines.reduce((n, l) => n + height(l), 0);
    if (total > rows - 1) {
      const kept: string[] = [];
      let used = 1;
      for (const line of lines) {
        if (used + height(line) > rows - 1) break;
        kept.push(line);
        used += height(line);
      }
      lines = [...kept, `… ${lines.length - kept.length} more lines (a taller terminal shows them)`];
      total = used + 1;
    }
    process.stdout.write(`${clear}${lines.join("\n")}\n`);
    shownRows = total;
  };
  // A resized terminal re-wraps what is shown, so the rows to go back over are no longer known:
  // start again from the top of the screen.
  process.stdout.on("resize", () => {
    const now = last && (again?.() ?? last);
    if (now) draw(now.header, now.text, "\u001b[H\u001b[J");
  });
  return (header, text) => draw(header, text, shownRows > 0 ? `\u001b[${shownRows}A\r\u001b[J` : "");
}

/** Not a terminal: each state that differs from the last, whole, after a blank line. */
function printedWhole<T>(spec: WatchSpec<T>): (items: T[]) => void {
  let last: string | undefined;
  return (items) => {
    const text = captured(() => printList(spec.output, spec.view, items));
    if (text === last) return;
    process.stdout.write(last === undefined ? text : `\n${text}`);
    last = text;
  };
}

/** -o json (a line each) or yaml (a document each): every item added, changed or removed since the last state. */
function changesOnly<T>(spec: WatchSpec<T>, format: "json" | "yaml"): (items: T[]) => void {
  const data = (item: T): unknown =>
    typeof spec.view.json === "function" ? spec.view.json(item) : toJson(spec.view.json, item as MessageShape<DescMessage>);
  let last = new Map<string, { text: string; object: unknown }>();
  const say = (type: string, object: unknown) =>
    process.stdout.write(format === "json" ? `${JSON.stringify({ type, object })}\n` : `---\n${toYaml({ type, object })}`);
  return (items) => {
    const now = new Map<string, { text: string; object: unknown }>();
    for (const item of items) {
      const key = spec.key(item);
      const object = data(item);
      const text = JSON.stringify(object);
      now.set(key, { text, object });
      const before = last.get(key);
      if (before === undefined) say("ADDED", object);
      else if (before.text !== text) say("MODIFIED", object);
    }
    for (const [key, { object }] of last) if (!now.has(key)) say("DELETED", object);
    last = now;
  };
}

/** The changes of one kind of resource on a node: its StreamEvents whose kind starts with one of `prefixes`. */
export function nodeEvents(aether: AetherClient, tenant: string, ...prefixes: string[]): WatchSpec<unknown>["changes"] {
  return (signal) => aether.observe.streamEvents({ tenant, kindPrefixes: prefixes }, { signal });
}

/** The cluster's changes: the aggregator's StreamClusterEvents from now on. */
export function clusterEvents(aether: AetherClient, tenant = ""): WatchSpec<unknown>["changes"] {
  return (signal) => aether.aggregator.streamClusterEvents({ tenant, start: { case: "tailEvents", value: 0 }, follow: true }, { signal });
}
