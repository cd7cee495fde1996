// Label selectors on every list (issue 23, item 14): `-l team=a,env!=prod,tier,!legacy`, as kubectl
// reads them. aetherd's and the aggregator's List requests filter on "key=value" terms only, so the
// equality terms go to the server (less comes back) and the whole selector is applied here too, the
// same way for every list, including those whose request has no filter at all.
import { InvalidArgumentError, type Command } from "commander";

export type Term =
  | { key: string; op: "=" | "!="; value: string }
  /** "tier": the label is set (to anything); "!tier": it is not. */
  | { key: string; op: "exists" | "absent" };

export interface Selector {
  terms: Term[];
  /** As typed, for messages. */
  text: string;
}

// Keys as labels have them (DNS-ish, with a prefix/); values anything but the separators.
const KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

/** Parses a selector; a malformed one is a usage error (commander exits 2 with the sentence). */
export function parseSelector(text: string): Selector {
  const terms: Term[] = [];
  for (const raw of text.split(",")) {
    const term = raw.trim();
    if (term === "") throw new InvalidArgumentError(`${JSON.stringify(text)} has an empty term; write key=value,key2!=value,key3,!key4`);
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
    const key = (m ? m[1] : term.replace(/^!/, ""))?.trim() ?? "";
    if (!KEY.test(key))
      throw new InvalidArgumentError(
        `${JSON.stringify(term)} does not name a label key (letters, digits, '.', '_', '-', '/'); write key=value`,
      );
    if (!m) terms.push({ key, op: term.startsWith("!") ? "absent" : "exists" });
    else terms.push({ key, op: m[2] === "!=" ? "!=" : "=", value: (m[3] ?? "").trim() });
  }
  return { terms, text };
}

/** Whether labels match every term. */
export function selects(selector: Selector | undefined, labels: Readonly<Record<string, string>>): boolean {
  return (selector?.terms ?? []).every((t) => {
    const has = Object.hasOwn(labels, t.key);
    if (t.op === "exists") return has;
    if (t.op === "absent") return !has;
    if (t.op === "=") return has && labels[t.key] === t.value;
    if (t.op === "!=") return labels[t.key] !== t.value;
    return false;
  });
}

/** The part a List request's `filter` can do ("k=v,k2=v2"): the equality terms. */
export function serverFilter(selector: Selector | undefined): string {
  return (selector?.terms ?? []).flatMap((t) => (t.op === "=" ? [`${t.key}=${t.value}`] : [])).join(",");
}

/** What selectorOptions() adds, as commander hands it to an action. */
export interface SelectorFlags {
  selector?: Selector;
  filter?: Selector;
}

/** Adds -l/--selector and its other name --filter to a command. */
export function selectorOptions(cmd: Command, what = "label"): Command {
  return cmd
    .option("-l, --selector <selector>", `only those whose ${what}s match, e.g. team=a,env!=prod,tier,!legacy`, parseSelector)
    .option("--filter <selector>", "the same as --selector", parseSelector);
}

/** The selector given with -l and/or --filter (both must match); undefined when neither was. */
export function selectorOf(o: SelectorFlags): Selector | undefined {
  const given = [o.selector, o.filter].filter((s): s is Selector => s !== undefined);
  if (given.length === 0) return undefined;
  return { terms: given.flatMap((s) => s.terms), text: given.map((s) => s.text).join(",") };
}
