// Validation at the edge: requests become typed, checked values before the aggregator acts on them.
// The general rules are aetherd's (names, labels, filters, pages); the rest is the aggregator's own
// (node ids, node addresses, idempotency keys).
import { isIP } from "node:net";
import { invalidArgument } from "./errors.js";

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const NODE_ID = /^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/;
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

/** A node id (aether.node.v1 NodeInfo.id, a UUID on aetherd): letters, digits, '.', '_', ':' and '-', at most 128. */
export function nodeId(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is empty: give the node's id (aether node info shows it).`);
  if (!NODE_ID.test(value)) {
    throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not a valid node id: use 1 to 128 letters, digits, '.', '_', ':' and '-'.`);
  }
  return value;
}

/** An id or a name of a resource: non-empty, bounded, printable, no '/'. */
export function reference(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is empty: give the id or the name of the resource.`);
  if (value.length > 253 || /[\u0000-\u001f\u007f/]/.test(value)) {
    throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is neither an id nor a name.`);
  }
  return value;
}

/** An idempotency key: empty (none) or up to 128 printable characters without '/'. */
export function requestId(value: string): string {
  if (value.length > 128 || /[\u0000-\u001f\u007f/]/.test(value)) {
    throw invalidArgument(`request_id ${JSON.stringify(clip(value))} is invalid: use at most 128 printable characters without '/'.`);
  }
  return value;
}

/** Labels: keys are DNS labels optionally prefixed "domain/", values up to 63 printable characters. */
export function labels(value: Record<string, string>): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > 64) throw invalidArgument(`too many labels (${entries.length}); at most 64 are allowed.`);
  for (const [k, v] of entries) {
    if (!/^([a-z0-9.-]{1,253}\/)?[a-z0-9A-Z]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$/.test(k)) {
      throw invalidArgument(`label key ${JSON.stringify(clip(k))} is invalid: use letters, digits, '-', '_' and '.', at most 63 characters.`);
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

/** Where the aggregator reaches a node's aetherd. */
export type NodeAddress =
  | { kind: "unix"; path: string; address: string }
  | { kind: "https"; url: string; address: string }
  | { kind: "http"; url: string; address: string };

/** True for 127.0.0.0/8, ::1 and localhost: plain HTTP/2 is accepted only there. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  if (isIP(bare) === 6) return bare === "::1";
  return false;
}

/**
 * A node's address: `unix:///absolute/path.sock`, `https://host:port` (mutual TLS, as aetherd serves
 * TCP) or, on loopback only, plain `http://127.0.0.1:port`.
 */
export function nodeAddress(field: string, value: string): NodeAddress {
  const hint = "use unix:///path/to/aetherd.sock, https://host:port, or http://127.0.0.1:port on loopback.";
  if (value === "") throw invalidArgument(`${field} is empty: give the address the aggregator reaches this node's aetherd at; ${hint}`);
  if (value.length > 1024 || /[\u0000-\u001f\u007f\s]/.test(value)) throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not an address; ${hint}`);
  if (value.startsWith("unix://")) {
    const path = value.slice("unix://".length);
    if (!path.startsWith("/")) throw invalidArgument(`${field} ${JSON.stringify(clip(value))} must name an absolute socket path (unix:///run/aether/aetherd.sock).`);
    return { kind: "unix", path, address: value };
  }
  if (value.startsWith("https://") || value.startsWith("http://")) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not a valid URL; ${hint}`);
    }
    if (url.port === "" || (url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.username !== "") {
      throw invalidArgument(`${field} ${JSON.stringify(clip(value))} must be scheme://host:port with nothing after the port; ${hint}`);
    }
    const base = `${url.protocol}//${url.host}`;
    if (url.protocol === "http:") {
      if (!isLoopbackHost(url.hostname)) {
        throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is plain HTTP on a non-loopback host: aetherd serves TCP with mutual TLS, so use https://${url.host}.`);
      }
      return { kind: "http", url: base, address: value };
    }
    return { kind: "https", url: base, address: value };
  }
  throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not understood; ${hint}`);
}

/** Shortens user input quoted back in an error so an oversized value cannot flood the reply. */
export function clip(value: string, max = 80): string {
  return value.length > max ? `${value.slice(0, max)}…` : value;
}
