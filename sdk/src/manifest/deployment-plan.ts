// Deployments of a cluster manifest against the aggregator's: plan compares each declared deployment
// with the one of its name that carries the manifest's label (instances and labels: an update in
// place; the template: a replace, i.e. a new revision the aggregator rolls out), apply creates,
// updates and deletes them through the Deployment RPCs.
import { Code, ConnectError } from "@connectrpc/connect";
import { create, equals, toJson } from "@bufbuild/protobuf";
import type { AetherClient } from "../connect.js";
import {
  DeploymentState,
  DeploymentStrategySchema,
  DeploymentTemplateSchema,
  DeploymentTrafficSchema,
  type Deployment,
} from "../gen/aether/auction/v1/auction_pb.js";
import { MANIFEST_LABEL, type Manifest } from "./define.js";
import { allPages, sameRecord } from "./common.js";
import { deploymentStrategy, deploymentTemplate, deploymentTraffic, type ManifestDeployment } from "./deployment-decl.js";
import type { PlannedAction } from "./types.js";

const labelsOf = (manifest: Manifest, d: ManifestDeployment) => ({ ...d.labels, [MANIFEST_LABEL]: manifest.name });
const stateName = (s: DeploymentState) => (DeploymentState[s] ?? String(s)).toLowerCase();

/** Which parts of the template differ, in the words of the proto3 JSON mapping ("vm.memoryBytes"). */
function templateDifferences(want: ReturnType<typeof create<typeof DeploymentTemplateSchema>>, have: Deployment["template"]): string[] {
  if (have === undefined) return ["template"];
  if (equals(DeploymentTemplateSchema, want, have)) return [];
  const a = toJson(DeploymentTemplateSchema, want) as Record<string, unknown>;
  const b = toJson(DeploymentTemplateSchema, have) as Record<string, unknown>;
  const out: string[] = [];
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const x = a[key];
    const y = b[key];
    if (JSON.stringify(x) === JSON.stringify(y)) continue;
    if ((key === "vm" || key === "executable") && typeof x === "object" && typeof y === "object" && x && y) {
      const xs = x as Record<string, unknown>;
      const ys = y as Record<string, unknown>;
      for (const k of new Set([...Object.keys(xs), ...Object.keys(ys)]))
        if (JSON.stringify(xs[k]) !== JSON.stringify(ys[k])) out.push(`${key}.${k}`);
    } else out.push(key);
  }
  return out.length > 0 ? out : ["template"];
}

/** The plan's steps for the deployments of a cluster manifest. */
export async function planDeployments(aether: AetherClient, manifest: Manifest): Promise<PlannedAction[]> {
  const managed = await allPages(async (pageToken) => {
    const page = await aether.aggregator.listDeployments({
      tenant: manifest.tenant,
      filter: `${MANIFEST_LABEL}=${manifest.name}`,
      pageSize: 1000,
      pageToken,
    });
    return { items: page.deployments, nextPageToken: page.nextPageToken };
  });
  const byName = new Map(managed.map((d) => [d.name, d]));
  const actions: PlannedAction[] = [];
  for (const decl of manifest.deployments) {
    const current = byName.get(decl.name);
    if (!current) {
      const foreign = await aether.aggregator.getDeployment({ deployment: decl.name, tenant: manifest.tenant }).then(
        (r) => r.deployment,
        (err: unknown) => {
          if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
          throw err;
        },
      );
      if (foreign) {
        const owner = foreign.labels[MANIFEST_LABEL];
        actions.push({
          kind: "conflict",
          resource: "deployment",
          name: decl.name,
          reason: `a deployment named ${decl.name} already exists in tenant ${manifest.tenant} and is ${owner === undefined ? "not managed by a manifest" : `managed by manifest ${owner}`}, not ${manifest.name}; delete or rename it`,
        });
      } else {
        actions.push({
          kind: "create",
          resource: "deployment",
          name: decl.name,
          reason: `does not exist in the cluster; create it with ${decl.instances} instance${decl.instances === 1 ? "" : "s"} of ${decl.template.vm ? "a VM" : "an executable"}`,
        });
      }
      continue;
    }
    const base = { resource: "deployment" as const, name: decl.name, liveId: current.id };
    if (current.state === DeploymentState.DELETING) {
      actions.push({ ...base, kind: "conflict", reason: `deployment ${decl.name} is being deleted; apply again once it is gone` });
      continue;
    }
    const changed = templateDifferences(create(DeploymentTemplateSchema, deploymentTemplate(decl)), current.template);
    const updates: string[] = [];
    if (current.instances !== decl.instances) updates.push(`instances ${current.instances} -> ${decl.instances}`);
    if (!sameRecord(current.labels, labelsOf(manifest, decl))) updates.push("labels changed");
    if (
      decl.strategy &&
      !equals(
        DeploymentStrategySchema,
        create(DeploymentStrategySchema, deploymentStrategy(decl)),
        current.strategy ?? create(DeploymentStrategySchema),
      )
    )
      updates.push(`strategy ${decl.strategy.kind}`);
    if (
      decl.traffic &&
      !equals(
        DeploymentTrafficSchema,
        create(DeploymentTrafficSchema, deploymentTraffic(decl)),
        current.traffic ?? create(DeploymentTrafficSchema),
      )
    )
      updates.push("endpoint changed");
    if (changed.length > 0)
      actions.push({
        ...base,
        kind: "replace",
        reason: `template (${changed.join(", ")}) changed: revision ${current.revision + 1n}, whose instances the aggregator starts in place of the old ones${updates.length > 0 ? `; ${updates.join(", ")}` : ""}`,
      });
    else if (updates.length > 0) actions.push({ ...base, kind: "update", reason: updates.join(", ") });
    else
      actions.push({
        ...base,
        kind: "unchanged",
        reason: `${stateName(current.state)}: ${current.runningInstances} of ${current.instances} running (revision ${current.revision})`,
      });
  }
  const declared = new Set(manifest.deployments.map((d) => d.name));
  for (const d of managed)
    if (!declared.has(d.name) && d.state !== DeploymentState.DELETING)
      actions.push({
        kind: "delete",
        resource: "deployment",
        name: d.name,
        reason: "no longer in the manifest; its instances are released",
        liveId: d.id,
      });
  return actions;
}

/** Carries out one deployment step of a cluster plan. */
export async function applyDeployment(
  aether: AetherClient,
  manifest: Manifest,
  action: PlannedAction,
  decl: ManifestDeployment | undefined,
  graceSeconds: number,
): Promise<void> {
  const tenant = manifest.tenant;
  if (action.kind === "delete") {
    await aether.aggregator.deleteDeployment({ deployment: action.liveId ?? "", tenant, gracePeriod: { seconds: BigInt(graceSeconds) } });
  } else if (action.kind === "create" && decl) {
    await aether.aggregator.createDeployment({
      deployment: {
        name: decl.name,
        tenant,
        labels: labelsOf(manifest, decl),
        instances: decl.instances,
        template: deploymentTemplate(decl),
        strategy: deploymentStrategy(decl),
        traffic: deploymentTraffic(decl),
      },
    });
  } else if ((action.kind === "update" || action.kind === "replace") && decl) {
    await aether.aggregator.updateDeployment({
      deployment: action.liveId ?? "",
      tenant,
      ...(action.kind === "replace" && { template: deploymentTemplate(decl) }),
      instances: decl.instances,
      labels: labelsOf(manifest, decl),
      replaceLabels: true,
      ...(decl.strategy && { strategy: deploymentStrategy(decl) }),
      ...(decl.traffic && { traffic: deploymentTraffic(decl) }),
    });
  }
}
