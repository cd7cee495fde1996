// What of the store is backed up, and how a record becomes a file of the backup repository and back.
//
// Backed up (the state worth restoring): nodes with their lifecycle, placements, the auction records
// they point to, request ids (so a retried Deploy still does not act twice), fencing records, the
// drains under way, the deployments (and their request ids) and the alert thresholds operators set.
// Not backed up: the alerts raised now (telemetry raises them again within a heartbeat), the
// cluster event log (a history with its own retention, not state to rebuild; restoring it would
// rewind its sequence) and the "leader" record (who leads now).
//
// One file per record, under a folder per kind: "nodes/<id>.json". A JSON record is written indented,
// its keys in the record's own stable order (protobuf field order), and a restore writes back exactly
// the compact JSON it came from: byte for byte the value the aggregator wrote. A value that is not
// such JSON (a request id's workload id) is a ".txt" file holding the value as it is.
//
// A node record is backed up without what every heartbeat rewrites (heartbeat_time, the lease's
// expire_time, thermal readings): otherwise a live cluster would change its backup every few seconds.
// Its restore writes the record as backed up; the leader extends the lease of a READY node by one TTL
// when it reads the state, as after any take-over, and a node that does not heartbeat is suspected.
import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { NodeSchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { decodeKey, encodeKey } from "../store/embedded-store.js";
import type { ClusterStore } from "../store/store.js";

/** The store's key prefixes that are backed up, each a folder of the repository. */
export const BACKED_UP = [
  "nodes/",
  "placements/",
  "auctions/",
  "requests/",
  "fencing/",
  "drains/",
  "alerts/",
  "deployments/",
  "deployment-requests/",
  "rollouts/",
] as const;

const NODES = "nodes/";
/** Under "alerts/", what telemetry raises (alerts/active/...) is not state to restore; the thresholds are. */
const NOT_BACKED_UP = ["alerts/active/"];

export function isBackedUp(key: string): boolean {
  return (
    BACKED_UP.some((prefix) => key.startsWith(prefix) && key.length > prefix.length) &&
    !NOT_BACKED_UP.some((prefix) => key.startsWith(prefix))
  );
}

/** The record as it is backed up (a node without its heartbeat's fields); other records unchanged. */
export function backedUpValue(key: string, value: string): string {
  if (!key.startsWith(NODES)) return value;
  try {
    const node = fromJsonString(NodeSchema, value, { ignoreUnknownFields: true });
    node.heartbeatTime = undefined;
    node.thermal = undefined;
    if (node.lease) node.lease.expireTime = undefined;
    return toJsonString(NodeSchema, node);
  } catch {
    return value;
  }
}

/** The file a record is backed up in: its path and content. */
export function recordFile(key: string, value: string): { path: string; content: string } {
  const prefix = BACKED_UP.find((p) => key.startsWith(p)) as string;
  const name = `${prefix}${encodeKey(key.slice(prefix.length))}`;
  const stored = backedUpValue(key, value);
  let parsed: unknown;
  try {
    parsed = JSON.parse(stored);
  } catch {
    parsed = undefined;
  }
  // Indented only when the compact form comes back exactly from the indented one.
  if (parsed !== undefined && typeof parsed === "object" && JSON.stringify(parsed) === stored)
    return { path: `${name}.json`, content: `${JSON.stringify(parsed, null, 2)}\n` };
  return { path: `${name}.txt`, content: stored };
}

/** The record a file of the repository holds, or undefined for a file that is no record (config/). */
export function recordOf(path: string, content: string): { key: string; value: string } | undefined {
  const prefix = BACKED_UP.find((p) => path.startsWith(p));
  if (prefix === undefined) return undefined;
  const rest = path.slice(prefix.length);
  if (rest.includes("/")) return undefined;
  if (rest.endsWith(".json")) {
    const key = `${prefix}${decodeKey(rest.slice(0, -".json".length))}`;
    if (!isBackedUp(key)) return undefined;
    try {
      return { key, value: JSON.stringify(JSON.parse(content)) };
    } catch {
      return undefined;
    }
  }
  if (rest.endsWith(".txt")) {
    const key = `${prefix}${decodeKey(rest.slice(0, -".txt".length))}`;
    return isBackedUp(key) ? { key, value: content } : undefined;
  }
  return undefined;
}

/** The backed-up records of the store: key → value (as backed up). */
export async function storeRecords(store: ClusterStore): Promise<Map<string, string>> {
  const records = new Map<string, string>();
  for (const prefix of BACKED_UP)
    for (const entry of await store.list(prefix)) if (isBackedUp(entry.key)) records.set(entry.key, backedUpValue(entry.key, entry.value));
  return records;
}

/** The repository's files for these records. */
export function filesOf(records: Map<string, string>): Map<string, string> {
  const files = new Map<string, string>();
  for (const [key, value] of records) {
    const { path, content } = recordFile(key, value);
    files.set(path, content);
  }
  return files;
}

/** The records a commit's files hold: key → value. */
export function recordsOf(files: Map<string, string>): Map<string, string> {
  const records = new Map<string, string>();
  for (const [path, content] of files) {
    const record = recordOf(path, content);
    if (record) records.set(record.key, record.value);
  }
  return records;
}

export type ChangeKind = "added" | "changed" | "removed";

/** What turns `from` into `to`, by key in order. */
export function diffRecords(from: Map<string, string>, to: Map<string, string>): Array<{ key: string; kind: ChangeKind }> {
  const out: Array<{ key: string; kind: ChangeKind }> = [];
  for (const key of new Set([...from.keys(), ...to.keys()])) {
    const a = from.get(key);
    const b = to.get(key);
    if (a === b) continue;
    out.push({ key, kind: a === undefined ? "added" : b === undefined ? "removed" : "changed" });
  }
  return out.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
}

/** "2 added, 1 changed: nodes/n1, placements/w1, …" (a commit's summary line). */
export function summarize(changes: Array<{ key: string; kind: ChangeKind }>): string {
  if (changes.length === 0) return "no change";
  const counts = (["added", "changed", "removed"] as const)
    .map((k) => [k, changes.filter((c) => c.kind === k).length] as const)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(", ");
  const keys = changes.slice(0, 4).map((c) => c.key);
  return `${counts}: ${keys.join(", ")}${changes.length > 4 ? `, and ${changes.length - 4} more` : ""}`;
}
