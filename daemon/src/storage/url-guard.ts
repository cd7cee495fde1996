// Which URLs aetherd may download an image from for a caller. aetherd sits inside the host's
// networks: a tenant who could name any URL would make it fetch loopback-only services, the cloud
// metadata address or a neighbour on a private network (server-side request forgery). A tenant is
// therefore held to the operator's URL prefixes, and every address a name resolves to must be a
// public unicast one that is not this host's own. The check runs inside the connection's own DNS
// lookup (guardedLookup), so the address checked is the address connected to: a name that resolves
// to a public address when checked and to 127.0.0.1 a moment later (DNS rebinding) cannot slip by.
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP } from "node:net";
import { createRequire } from "node:module";
import { networkInterfaces } from "node:os";
import type * as Ipaddr from "ipaddr.js";
import { ImportError } from "./import-error.js";

/** A URL or an address the caller may not download from; handlers answer PERMISSION_DENIED. */
export class UrlRefusedError extends ImportError {}

export interface UrlRules {
  /** URL prefixes the URL (and every redirect) must be under; undefined: any http(s) URL. */
  prefixes: string[] | undefined;
  /** Refuse loopback, private, link-local and this host's own addresses. */
  publicOnly: boolean;
}

/** A cluster-wide caller's rules: the operator chooses where aetherd downloads from. */
export const ANY_URL: UrlRules = { prefixes: undefined, publicOnly: false };

/** Whether `url` is under `prefix`: same scheme, host and port, and a path below the prefix's. */
function under(url: URL, prefix: string): boolean {
  let p: URL;
  try {
    p = new URL(prefix);
  } catch {
    return false;
  }
  if (url.origin !== p.origin || url.username !== "" || url.password !== "") return false;
  // "https://h/images" allows /images and /images/..., not /images-private.
  const base = p.pathname;
  return url.pathname === base || url.pathname.startsWith(base.endsWith("/") ? base : `${base}/`);
}

/** Refuses a URL whose scheme or prefix is not allowed, and an IP literal that is not public. */
export function checkUrl(url: URL, rules: UrlRules): void {
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UrlRefusedError(`${url.href} is not an http:// or https:// URL.`);
  if (rules.prefixes !== undefined && !rules.prefixes.some((p) => under(url, p))) {
    const allowed =
      rules.prefixes.length === 0
        ? "this host allows tenants no URL (an operator lists them in [tenancy] image_url_prefixes)"
        : `tenants may download only from ${rules.prefixes.join(", ")}`;
    throw new UrlRefusedError(`${url.origin}${url.pathname} is not under an allowed URL prefix: ${allowed}.`);
  }
  const literal = hostAddress(url);
  if (literal !== undefined && rules.publicOnly) refuseIfNotPublic(url.hostname, literal);
}

/** The URL's host as an IP address when it is one (URL keeps brackets around IPv6). */
function hostAddress(url: URL): string | undefined {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return isIP(host) === 0 ? undefined : host;
}

let ipaddrLoaded: typeof Ipaddr | undefined;
/** ipaddr.js, required at the first download rather than at every start of aetherd (issue 18, idle footprint). */
function ipaddrModule(): typeof Ipaddr {
  ipaddrLoaded ??= createRequire(import.meta.url)("ipaddr.js") as typeof Ipaddr;
  return ipaddrLoaded;
}

/** Why an address must not be downloaded from, or undefined when it is a public unicast address. */
export function notPublic(address: string): string | undefined {
  const ipaddr = ipaddrModule();
  let ip: Ipaddr.IPv4 | Ipaddr.IPv6;
  try {
    // process() turns ::ffff:127.0.0.1 into 127.0.0.1, so a mapped address is judged as IPv4.
    ip = ipaddr.process(address.replace(/%.*$/, ""));
  } catch {
    return "not an IP address";
  }
  const range = ip.range();
  if (range !== "unicast") return `a ${range} address`;
  // Only global unicast (2000::/3) is public in IPv6; anything else (IPv4-compatible ::a.b.c.d...) is not.
  if (ip.kind() === "ipv6" && !ip.match(ipaddr.IPv6.parse("2000::"), 3)) return "not a global unicast address";
  const normalized = ip.toNormalizedString();
  for (const list of Object.values(networkInterfaces())) {
    for (const own of list ?? []) {
      try {
        if (ipaddr.process(own.address.replace(/%.*$/, "")).toNormalizedString() === normalized) return "one of this host's own addresses";
      } catch {
        // An interface address ipaddr cannot read is not this one.
      }
    }
  }
  return undefined;
}

function refuseIfNotPublic(host: string, address: string): void {
  const why = notPublic(address);
  if (why === undefined) return;
  const shown = host.replace(/^\[(.*)\]$/, "$1") === address ? address : `${host} (${address})`;
  throw new UrlRefusedError(
    `${shown} is ${why}; tenants may download images only from public addresses (an operator can set [tenancy] allow_private_urls).`,
  );
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http(s).request: resolves the name, refuses it when any of its addresses is not
 * public, and hands the connection exactly the addresses it checked.
 */
export function guardedLookup(rules: UrlRules) {
  return (hostname: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback): void => {
    dnsLookup(hostname, { all: true, family: typeof options.family === "number" ? options.family : 0 }, (err, addresses) => {
      if (err) return callback(err, []);
      try {
        if (addresses.length === 0) throw new ImportError(`${hostname} has no address.`);
        if (rules.publicOnly) for (const a of addresses) refuseIfNotPublic(hostname, a.address);
      } catch (refusal) {
        return callback(refusal as NodeJS.ErrnoException, []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

/**
 * Checks a URL before an import is accepted, so a tenant is refused at once with a reason rather
 * than by a failed image later; the download checks again on every connection it makes.
 */
export async function precheckUrl(url: URL, rules: UrlRules): Promise<void> {
  checkUrl(url, rules);
  if (!rules.publicOnly || hostAddress(url) !== undefined) return;
  await new Promise<void>((resolve, reject) => {
    guardedLookup(rules)(url.hostname, { all: true }, (err) =>
      err ? reject(err instanceof ImportError ? err : new ImportError(`cannot resolve ${url.hostname}: ${err.message}.`)) : resolve(),
    );
  });
}
