// How a table is laid out (issue 23, item 7): boxed on a terminal, plain columns a script can cut
// with awk when stdout is not one, and never wider than the terminal: the columns marked as
// clippable (reasons, commands, paths) give up width first and end in "…". `wide` keeps every cell
// whole. Widths are display widths (string-width), so a reason with wide characters still lines up.
import Table from "cli-table3";
import stringWidth from "string-width";

export interface LayoutColumn {
  header: string;
  /** May be shortened (ending in "…") to fit the width; names, ids and states never are. */
  clip: boolean;
}

export interface Layout {
  /** Boxed (a terminal) or plain columns separated by spaces. */
  boxed: boolean;
  /** Print the header row. */
  headers: boolean;
  /** The width to fit in; undefined: no limit. */
  width?: number;
  /** Longest a clippable cell may be even with no width to fit ("table", not "wide"); undefined: no cap. */
  clipAt?: number;
}

/** A clipped column keeps at least this much (or its header's width). */
const MIN_CLIPPED = 8;
/** Between two plain columns. */
const PLAIN_GAP = 3;

/** Control characters would break the rows (a reason with a newline): shown as spaces. */
const oneLine = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");

/** The first characters of `text` that fit in `width` columns, with "…" when something was cut. */
export function clip(text: string, width: number): string {
  if (stringWidth(text) <= width) return text;
  let out = "";
  for (const ch of text) {
    if (stringWidth(out + ch) > width - 1) break;
    out += ch;
  }
  return `${out}…`;
}

/** The widths the columns get: their content's, shrunk (clippable ones, widest first) to fit. */
export function columnWidths(columns: LayoutColumn[], rows: string[][], layout: Layout): number[] {
  const widths = columns.map((c, i) => {
    const natural = Math.max(layout.headers ? stringWidth(c.header) : 0, ...rows.map((r) => stringWidth(r[i] ?? "")), 1);
    return c.clip && layout.clipAt !== undefined ? Math.min(natural, Math.max(layout.clipAt, stringWidth(c.header))) : natural;
  });
  if (layout.width === undefined) return widths;
  // Borders and padding: "│ a │ b │" is 3 per column and 1; plain columns are 3 apart.
  const overhead = layout.boxed ? 3 * columns.length + 1 : PLAIN_GAP * (columns.length - 1);
  let excess = widths.reduce((a, b) => a + b, 0) + overhead - layout.width;
  while (excess > 0) {
    const floor = (i: number) => Math.max(MIN_CLIPPED, stringWidth((columns[i] as LayoutColumn).header));
    const candidates = widths.map((w, i) => ({ w, i })).filter(({ w, i }) => (columns[i] as LayoutColumn).clip && w > floor(i));
    if (candidates.length === 0) break; // nothing left to give: the row overflows, as kubectl's do
    candidates.sort((a, b) => b.w - a.w);
    const widest = candidates[0] as { w: number; i: number };
    const next = candidates[1]?.w ?? 0;
    // Shrink the widest down to the next widest (or the floor) at most, then look again.
    const cut = Math.min(excess, Math.max(1, widest.w - Math.max(next, floor(widest.i))));
    widths[widest.i] = widest.w - cut;
    excess -= cut;
  }
  return widths;
}

/** The table as text, ending in a newline (nothing at all for no rows and no header). */
export function renderTable(columns: LayoutColumn[], rows: string[][], layout: Layout): string {
  const clean = rows.map((r) => r.map(oneLine));
  const widths = columnWidths(columns, clean, layout);
  const cells = clean.map((r) => r.map((cell, i) => clip(cell, widths[i] as number)));
  if (layout.boxed) {
    const table = new Table({
      ...(layout.headers && { head: columns.map((c) => c.header) }),
      colWidths: widths.map((w) => w + 2),
      style: { head: [], border: [] },
      chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" },
    });
    table.push(...cells);
    return cells.length === 0 && !layout.headers ? "" : `${table.toString()}\n`;
  }
  const lines = [...(layout.headers ? [columns.map((c) => c.header)] : []), ...cells];
  const pad = (text: string, w: number) => text + " ".repeat(Math.max(0, w - stringWidth(text)));
  return lines
    .map(
      (line) => `${line.map((cell, i) => (i === line.length - 1 ? cell : pad(cell, widths[i] as number))).join(" ".repeat(PLAIN_GAP))}\n`,
    )
    .join("");
}
