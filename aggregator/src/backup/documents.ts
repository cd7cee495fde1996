// The configuration that goes into the backup beside the store's records, for reference: the BMC
// registrations (which BMC fences which node, and how to reach it) and the authorization policy. They
// live in the aggregator's configuration files, not in its store, so a restore does not write them;
// they let an operator rebuild those files. Secrets never enter: a BMC's password (and the path of
// its password file) and keys are not copied. Fields are copied by name, so a field added to the BMC
// settings later stays out until it is added here.
import { encodeKey } from "../store/embedded-store.js";

export const CONFIG_FOLDER = "config/";

/** A BMC registration as configured ([[bmcs]]), whatever else the entry holds. */
export interface BmcSetting {
  node?: string;
  slot?: number;
  chassis?: string;
  rack?: string;
  endpoint: string;
  username: string;
  profile?: string;
  insecure?: boolean;
  server_name?: string;
  request_timeout_ms?: number;
  retries?: number;
}

/** The configuration documents: path → content. */
export function configDocuments(bmcs: readonly BmcSetting[], policy: string | undefined): Map<string, string> {
  const files = new Map<string, string>();
  for (const b of bmcs) {
    const name =
      b.node !== undefined
        ? `node-${b.node}`
        : `slot-${b.slot}${b.chassis ? `-chassis-${b.chassis}` : ""}${b.rack ? `-rack-${b.rack}` : ""}`;
    const entry = {
      ...(b.node !== undefined && { node: b.node }),
      ...(b.slot !== undefined && { slot: b.slot }),
      ...(b.chassis !== undefined && { chassis: b.chassis }),
      ...(b.rack !== undefined && { rack: b.rack }),
      endpoint: b.endpoint,
      username: b.username,
      ...(b.profile !== undefined && { profile: b.profile }),
      ...(b.insecure && { insecure: true }),
      ...(b.server_name !== undefined && { server_name: b.server_name }),
      ...(b.request_timeout_ms !== undefined && { request_timeout_ms: b.request_timeout_ms }),
      ...(b.retries !== undefined && { retries: b.retries }),
    };
    files.set(`${CONFIG_FOLDER}bmcs/${encodeKey(name)}.json`, `${JSON.stringify(entry, null, 2)}\n`);
  }
  if (policy !== undefined) files.set(`${CONFIG_FOLDER}policy.toml`, policy);
  return files;
}
