// Helpers the node and cluster plans share.
import type { Manifest } from "./define.js";
import type { Plan, PlannedAction } from "./types.js";

/** Every item of a paged List call. */
export async function allPages<T>(list: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>): Promise<T[]> {
  const all: T[] = [];
  let pageToken = "";
  do {
    const page = await list(pageToken);
    all.push(...page.items);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

/** Whether two label (or environment) maps hold the same entries. */
export const sameRecord = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/** A plan from its actions: counts the changes and picks out the conflicts. */
export function planOf(manifest: Manifest, actions: PlannedAction[]): Plan {
  return {
    manifest,
    actions,
    changes: actions.filter((a) => a.kind === "create" || a.kind === "update" || a.kind === "replace" || a.kind === "delete").length,
    conflicts: actions.filter((a) => a.kind === "conflict"),
  };
}
