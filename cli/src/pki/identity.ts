// Who a certificate names: a SPIFFE-style URI in the cluster's trust domain, built in one place:
//   spiffe://<cluster>/node/<name>
//   spiffe://<cluster>/service/<name>
//   spiffe://<cluster>/user/<name>
//   spiffe://<cluster>/tenant/<tenant>/user/<name>
// Names of nodes, users, services and tenants are DNS labels: the rule of @aether/sdk/names.
import { isDnsLabel } from "@aether/sdk/names";

export const KINDS = ["node", "user", "service"] as const;
export type Kind = (typeof KINDS)[number];

export interface Identity {
  cluster: string;
  kind: Kind;
  name: string;
  /** Only users belong to a tenant; a user without one is a cluster-wide user (an operator). */
  tenant?: string;
}

/** A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'. */
const TRUST_DOMAIN = /^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$/;

/** Why `value` is not a valid name, or undefined when it is. */
export function checkLabel(what: string, value: string): string | undefined {
  return isDnsLabel(value)
    ? undefined
    : `${what} ${JSON.stringify(value)} must be a DNS label: 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'`;
}

/** Why `value` is not a valid cluster name (the SPIFFE trust domain), or undefined when it is. */
export function checkCluster(value: string): string | undefined {
  return TRUST_DOMAIN.test(value)
    ? undefined
    : `cluster name ${JSON.stringify(value)} must be lowercase letters, digits, '.', '-' or '_' (it becomes the spiffe:// trust domain)`;
}

/** The SPIFFE ID of an identity. */
export function spiffeId(id: Identity): string {
  if (id.tenant !== undefined && id.kind !== "user") throw new Error(`only users belong to a tenant, not a ${id.kind}`);
  const path = id.tenant !== undefined ? `tenant/${id.tenant}/user/${id.name}` : `${id.kind}/${id.name}`;
  return `spiffe://${id.cluster}/${path}`;
}
