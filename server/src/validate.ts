// Validation at the edge: requests become typed, checked values before any handler acts on them.
// The general rules of every Aether server (names, tenants, labels, filters, pages); each program
// adds its own (the aggregator's node ids and addresses).
import { isIP } from "node:net";
import { DNS_LABEL, LABEL_KEY } from "@aether/sdk/names";
import { invalidArgument } from "./errors.js";

export const DEFAULT_TENANT = "default";

/** A DNS label (RFC 1123): lowercase letters, digits and '-', 1..63 characters, no leading/trailing '-'. */
export function dnsLabel(field: string, value: string): string {
  if (!DNS_LABEL.test(value)) {
    throw invalidArgument(
      `${field} ${JSON.stringify(clip(value))} is not a valid name: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit.`,
    );
  }
  return value;
}

/** The tenant of a request: a DNS label, "default" when empty. */
export function tenant(value: string): string {
  return value === "" ? DEFAULT_TENANT : dnsLabel("tenant", value);
}

/** An id or a name of a resource: non-empty, bounded, printable; name paths (cells) may contain '/'. */
export function reference(field: string, value: string, options: { path?: boolean } = {}): string {
  if (value === "") throw invalidArgument(`${field} is empty: give the id or the name of the resource.`);
  const forbidden = options.path ? /[\u0000-\u001f\u007f]/ : /[\u0000-\u001f\u007f/]/;
  if (value.length > 253 || forbidden.test(value)) {
    throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is neither an id nor a name.`);
  }
  return value;
}

/** Labels: keys are DNS labels optionally prefixed "domain/", values up to 63 printable characters. */
export function labels(value: Record<string, string>): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > 64) throw invalidArgument(`too many labels (${entries.length}); at most 64 are allowed.`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw invalidArgument(
        `label key ${JSON.stringify(clip(k))} is invalid: use letters, digits, '-', '_' and '.', at most 63 characters.`,
      );
    }
    if (v.length > 63 || /[\u0000-\u001f\u007f]/.test(v)) {
      throw invalidArgument(`label ${k} has an invalid value: at most 63 printable characters.`);
    }
  }
  return value;
}

/** A label filter "k=v,k2=v2" parsed into terms that must all match. */
export function labelFilter(filter: string): Array<[string, string]> {
  if (filter.trim() === "") return [];
  return filter.split(",").map((term) => {
    const eq = term.indexOf("=");
    if (eq <= 0) throw invalidArgument(`filter term ${JSON.stringify(clip(term))} is not of the form key=value.`);
    return [term.slice(0, eq).trim(), term.slice(eq + 1).trim()] as [string, string];
  });
}

export function matchesFilter(subject: Record<string, string>, terms: Array<[string, string]>): boolean {
  return terms.every(([k, v]) => subject[k] === v);
}

/** page_size: 0 means the default; more than the maximum is refused rather than silently cut. */
export function pageSize(value: number, fallback = 100, max = 1000): number {
  if (value === 0) return fallback;
  if (value > max) throw invalidArgument(`page_size ${value} is too large; at most ${max}.`);
  return value;
}

/** A page token is the offset of the next page, opaque to callers. */
export function pageOffset(token: string): number {
  if (token === "") return 0;
  const n = Number.parseInt(Buffer.from(token, "base64url").toString(), 10);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument("page_token is not one this server issued; start again without it.");
  return n;
}

export function nextPageToken(offset: number, size: number, total: number): string {
  return offset + size < total ? Buffer.from(String(offset + size)).toString("base64url") : "";
}

/** One page of a List result: validates page_size and page_token, returns the page and the next token. */
export function paginate<T>(items: T[], requestedSize: number, token: string): { page: T[]; nextPageToken: string } {
  const size = pageSize(requestedSize);
  const offset = pageOffset(token);
  return { page: items.slice(offset, offset + size), nextPageToken: nextPageToken(offset, size, items.length) };
}

/** True for 127.0.0.0/8, ::1 and localhost: plain HTTP/2 is accepted only there. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  if (isIP(bare) === 6) return bare === "::1";
  return false;
}

/** Shortens user input quoted back in an error so an oversized value cannot flood the reply. */
export function clip(value: string, max = 80): string {
  // Never half of a surrogate pair: a lone one is not valid UTF-8 on the wire.
  return value.length > max ? `${value.slice(0, max).replace(/[\ud800-\udbff]$/, "")}…` : value;
}
