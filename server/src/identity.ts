// Who a caller is, in one string the policy and the audit log both use, and the tenant it belongs to.
// On TCP the identity is the SPIFFE URI SAN of the verified client certificate (issued by
// `aether pki issue`): spiffe://<cluster>/node/<n>, .../user/<n>, .../service/<n> or
// .../tenant/<t>/user/<n>, and only in this cluster's trust domain (<cluster>): the cluster CA is
// trusted for this cluster's names alone, so spiffe://evil/user/mallory is refused, and so is a
// certificate naming several SPIFFE IDs (which one would speak?). On the unix socket (mode 0600: only the server's own user and root can
// connect) it is unix:uid=<the server's uid>. Pure functions of certificates and names: the peer of a
// request (peer.ts) is built from them, never the other way round.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { DNS_LABEL } from "@aether/sdk/names";

export interface Caller {
  /** The identity the policy matches and the audit log records. */
  identity: string;
  /** The tenant the identity's certificate names (spiffe://<cluster>/tenant/<t>/...), if any. */
  tenant?: string;
}

/**
 * Why a verified certificate names no identity of this cluster, or undefined when it names at most
 * one SPIFFE ID and that one is in trustDomain. Checked before any policy looks at the identity.
 */
export function spiffeRefusal(uris: string[] | undefined, trustDomain: string): string | undefined {
  const ids = (uris ?? []).filter((u) => u.toLowerCase().startsWith("spiffe://"));
  if (ids.length > 1) {
    return `the client certificate names ${ids.length} SPIFFE IDs (${ids.map((u) => u.slice(0, 100)).join(", ")}); a certificate must name exactly one identity: issue it again with one URI SAN.`;
  }
  const id = ids[0];
  if (id !== undefined && trustDomainOf(id) !== trustDomain.toLowerCase()) {
    return `the client certificate's identity ${id.slice(0, 200)} is not in this cluster's trust domain ${trustDomain}: only spiffe://${trustDomain}/... identities are accepted here.`;
  }
  return undefined;
}

/** The trust domain (the host part) of a SPIFFE ID, lower-cased. */
export function trustDomainOf(spiffe: string): string {
  return (/^spiffe:\/\/([^/]*)/i.exec(spiffe)?.[1] ?? "").toLowerCase();
}

/** The trust domain of a PEM certificate's single SPIFFE URI SAN (a node certificate), if it has one. */
export function certificateTrustDomain(certPath: string): string | undefined {
  const cert = new X509Certificate(readFileSync(certPath));
  const ids = uriSans(cert.subjectAltName).filter((u) => u.toLowerCase().startsWith("spiffe://"));
  return ids.length === 1 && ids[0] !== undefined ? trustDomainOf(ids[0]) || undefined : undefined;
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
