// Runs under the chosen engine for `aetherscript plan|apply FILE`: loads the manifest script,
// compares it with the daemon's live state (a cluster manifest: the aggregator's placements) and
// prints (plan) or carries out (apply) the changes.
// Usage: manifest-driver.js plan|apply FILE [--json]
import { pathToFileURL } from "node:url";
import { applyManifest, connect, isManifest, planManifest, type Plan, type PlannedAction } from "@aether/sdk";

const [mode, file, ...rest] = process.argv.slice(2);
const json = rest.includes("--json");
if ((mode !== "plan" && mode !== "apply") || file === undefined) {
  console.error("usage: manifest-driver plan|apply FILE [--json]");
  process.exit(2);
}

const module = (await import(pathToFileURL(file).href)) as { default?: unknown };
if (!isManifest(module.default)) {
  console.error(`aetherscript: ${file} does not export a manifest: end it with \`export default defineManifest({ ... })\`.`);
  process.exit(2);
}
const manifest = module.default;
const SYMBOL: Record<PlannedAction["kind"], string> = {
  create: "+",
  update: "*",
  replace: "~",
  delete: "-",
  unchanged: "=",
  conflict: "!",
};
const line = (a: PlannedAction) => `  ${SYMBOL[a.kind]} ${a.kind.padEnd(9)} ${a.resource.padEnd(10)} ${a.name.padEnd(20)} ${a.reason}`;
const summary = (plan: Plan) =>
  `${plan.changes} to change, ${plan.actions.filter((a) => a.kind === "unchanged").length} unchanged` +
  (plan.conflicts.length > 0 ? `, ${plan.conflicts.length} in conflict` : "");

const cluster = manifest.target === "cluster";
// A cluster manifest's placements: where each create or replace went.
const placed = (a: PlannedAction) =>
  a.placed && console.log(`      placed on node ${a.placed.node} as workload ${a.placed.workloadId} (executable ${a.placed.resourceId})`);

const aether = await connect();
try {
  const where = cluster ? `the cluster at ${aether.address}` : aether.address;
  if (mode === "plan") {
    const plan = await planManifest(aether, manifest);
    if (json)
      console.log(
        JSON.stringify(
          { manifest: manifest.name, tenant: manifest.tenant, target: manifest.target, actions: plan.actions, changes: plan.changes },
          null,
          2,
        ),
      );
    else {
      console.log(`plan for manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`);
      plan.actions.forEach((a) => console.log(line(a)));
      console.log(`${summary(plan)}.`);
    }
    process.exitCode = plan.conflicts.length > 0 ? 1 : 0;
  } else {
    if (!json) console.log(`applying manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`);
    const plan = await applyManifest(aether, manifest, {
      onStep: (a) => json || console.log(line(a)),
      onApplied: (a) => json || placed(a),
    });
    if (json)
      console.log(
        JSON.stringify(
          { manifest: manifest.name, tenant: manifest.tenant, target: manifest.target, applied: plan.applied, changes: plan.changes },
          null,
          2,
        ),
      );
    else
      console.log(
        plan.changes === 0
          ? `nothing to change: the ${cluster ? "cluster" : "node"} already matches the manifest.`
          : `applied: ${summary(plan)}.`,
      );
  }
} finally {
  aether.close();
}
