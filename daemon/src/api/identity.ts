// Who a caller is, in one string the policy and the audit log both use, and the tenant it belongs to.
// On TCP the identity is the SPIFFE URI SAN of the verified client certificate (issued by
// `aether pki issue`): spiffe://<cluster>/node/<n>, .../user/<n>, .../service/<n> or
// .../tenant/<t>/user/<n>. On the unix socket (mode 0600: only aetherd's own user and root can
// connect) it is unix:uid=<aetherd's uid>.
import type { Peer } from "./peer.js";

export interface Caller {
  /** The identity the policy matches and the audit log records. */
  identity: string;
  /** The tenant the identity's certificate names (spiffe://<cluster>/tenant/<t>/...), if any. */
  tenant?: string;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function callerOf(peer: Peer): Caller {
  if (peer.transport === "unix") return { identity: `unix:uid=${process.getuid?.() ?? -1}` };
  return certificateCaller(peer.uris, peer.subject);
}

/** The caller a verified client certificate names: its SPIFFE URI SAN, else its common name. */
export function certificateCaller(uris: string[] | undefined, commonName: string | undefined): Caller {
  const spiffe = uris?.find((u) => u.startsWith("spiffe://"));
  if (!spiffe) return { identity: `cn:${commonName ?? ""}` };
  return { identity: spiffe, tenant: tenantOf(spiffe) };
}

/** The URI SANs in Node's `subjectaltname` string ("DNS:a, URI:spiffe://c/user/x, ..."). */
export function uriSans(subjectaltname: string | undefined): string[] {
  return (subjectaltname ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
}

/** The tenant named by a SPIFFE path /tenant/<t>/..., when <t> is a valid tenant name. */
export function tenantOf(spiffe: string): string | undefined {
  const path = spiffe.replace(/^spiffe:\/\/[^/]*/, "").split("/");
  return path[1] === "tenant" && path[2] && DNS_LABEL.test(path[2]) && path.length >= 4 ? path[2] : undefined;
}
