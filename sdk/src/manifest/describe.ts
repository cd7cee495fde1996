// How a plan reads in a terminal, the same in `aetherscript plan|apply`, `aether diff|apply|delete -f`
// and `aetherscript apply --watch`: one line per step, a symbol for its kind, and a summary.
import type { Plan, PlannedAction } from "./types.js";

/** The symbol of each kind of step: + create, * update in place, ~ replace, - delete. */
export const ACTION_SYMBOL: Record<PlannedAction["kind"], string> = {
  create: "+",
  update: "*",
  replace: "~",
  delete: "-",
  unchanged: "=",
  conflict: "!",
};

/** One step as a line: symbol, kind, resource, name and why. */
export const describeAction = (a: PlannedAction) =>
  `  ${ACTION_SYMBOL[a.kind]} ${a.kind.padEnd(9)} ${a.resource.padEnd(10)} ${a.name.padEnd(20)} ${a.reason}`;

/** "2 to change, 1 unchanged" (and how many conflict). */
export const describePlanSummary = (plan: Plan) =>
  `${plan.changes} to change, ${plan.actions.filter((a) => a.kind === "unchanged").length} unchanged` +
  (plan.conflicts.length > 0 ? `, ${plan.conflicts.length} in conflict` : "");

/** Where a cluster manifest's create or replace was placed, as a line (undefined for other steps). */
export const describePlacement = (a: PlannedAction) =>
  a.placed &&
  `      placed on node ${a.placed.node} as workload ${a.placed.workloadId} (${a.resource === "vm" ? "VM" : "executable"} ${a.placed.resourceId})`;
