// Runs under the chosen engine for `aetherscript plan|apply|delete FILE`: loads the manifest script,
// compares it with the daemon's live state (a cluster manifest: the aggregator's placements) and
// prints (plan) or carries out (apply, delete) the changes. `export FILE...` only evaluates the
// scripts and prints their manifests as JSON (what `aether apply -f` and `aetherscript apply
// --watch` read), without connecting to anything.
// Usage: manifest-driver.js plan|apply|delete FILE [--json]
//        manifest-driver.js export FILE...
import { pathToFileURL } from "node:url";
import {
  applyManifest,
  connect,
  deleteManifest,
  describeAction,
  describePlacement,
  describePlanSummary,
  isManifest,
  planManifest,
  type Manifest,
} from "@aether/sdk";

const [mode, ...rest] = process.argv.slice(2);
const json = rest.includes("--json");
const files = rest.filter((a) => a !== "--json");
if ((mode !== "plan" && mode !== "apply" && mode !== "delete" && mode !== "export") || files.length === 0) {
  console.error("usage: manifest-driver plan|apply|delete FILE [--json] | export FILE...");
  process.exit(2);
}

async function load(file: string): Promise<Manifest> {
  const module = (await import(pathToFileURL(file).href)) as { default?: unknown };
  if (!isManifest(module.default)) {
    console.error(`aetherscript: ${file} does not export a manifest: end it with \`export default defineManifest({ ... })\`.`);
    process.exit(2);
  }
  return module.default;
}

if (mode === "export") {
  const out = [];
  for (const file of files) out.push({ file, manifest: await load(file) });
  console.log(JSON.stringify(out));
  process.exit(0);
}

const file = files[0] as string;
const manifest = await load(file);
const cluster = manifest.target === "cluster";
const summaryJson = (extra: object) =>
  console.log(JSON.stringify({ manifest: manifest.name, tenant: manifest.tenant, target: manifest.target, ...extra }, null, 2));

const aether = await connect();
try {
  const where = cluster ? `the cluster at ${aether.address}` : aether.address;
  if (mode === "plan") {
    const plan = await planManifest(aether, manifest);
    if (json) summaryJson({ actions: plan.actions, changes: plan.changes });
    else {
      console.log(`plan for manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`);
      plan.actions.forEach((a) => console.log(describeAction(a)));
      console.log(`${describePlanSummary(plan)}.`);
    }
    process.exitCode = plan.conflicts.length > 0 ? 1 : 0;
  } else {
    const verb = mode === "apply" ? "applying" : "deleting everything of";
    if (!json) console.log(`${verb} manifest ${manifest.name} (tenant ${manifest.tenant}) on ${where}:`);
    const options = {
      onStep: (a: Parameters<typeof describeAction>[0]) => json || console.log(describeAction(a)),
      onApplied: (a: Parameters<typeof describeAction>[0]) => {
        const placed = describePlacement(a);
        if (!json && placed) console.log(placed);
      },
    };
    const plan = mode === "apply" ? await applyManifest(aether, manifest, options) : await deleteManifest(aether, manifest, options);
    if (json) summaryJson({ applied: plan.applied, changes: plan.changes });
    else if (plan.changes === 0)
      console.log(
        mode === "apply"
          ? `nothing to change: the ${cluster ? "cluster" : "node"} already matches the manifest.`
          : `nothing to delete: the ${cluster ? "cluster" : "node"} holds nothing of manifest ${manifest.name}.`,
      );
    else console.log(`${mode === "apply" ? "applied" : "deleted"}: ${describePlanSummary(plan)}.`);
  }
} finally {
  aether.close();
}
