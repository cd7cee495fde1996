// A deployment's shape checked at the edge: its name, tenant, labels, instance count and template,
// and the WorkloadSpec each instance is placed with (the template's kind named after the instance,
// labelled with the deployment, so the reconcile loop finds its instances on the nodes).
import { clone, create, equals } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import {
  DeploymentSchema,
  DeploymentTemplateSchema,
  RestartPolicy,
  WorkloadSpecSchema,
  type Deployment,
  type DeploymentTemplate,
  type WorkloadSpec,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { dnsLabel, invalidArgument, labels as checkLabels, tenant as checkTenant } from "@aether/server";
import { StartExecutableRequestSchema } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CreateVmRequestSchema } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { normalizeSpec } from "../auction/deploy.js";
import { DISK_LABEL, RESTART_LABEL } from "../fencing/deadman-model.js";
import { normalizeStrategy, normalizeTraffic } from "../rollouts/validate.js";

/** The most instances a deployment may ask for. */
export const MAX_INSTANCES = 1000;
/** Instances are named <deployment>-<6 hex digits>: the name leaves room for the suffix in a DNS label. */
export const MAX_DEPLOYMENT_NAME = 56;
/** Label on every instance (placement, executable, VM): the deployment it belongs to. */
export const DEPLOYMENT_LABEL = "aether.io/deployment";
/** Label on every instance: the deployment's revision it runs. */
export const REVISION_LABEL = "aether.io/deployment-revision";

/** Checks the deployment of a CreateDeploymentRequest; returns a normalized copy (server fields cleared). */
export function normalizeDeployment(input: Deployment | undefined): Deployment {
  if (input === undefined) throw invalidArgument("deployment is missing: give its name, template and instances.");
  const d = clone(DeploymentSchema, input);
  if (d.name === "") throw invalidArgument("deployment.name is empty: give the deployment a name (a DNS label such as web).");
  dnsLabel("deployment.name", d.name);
  if (d.name.length > MAX_DEPLOYMENT_NAME)
    throw invalidArgument(
      `deployment.name ${d.name} has ${d.name.length} characters: at most ${MAX_DEPLOYMENT_NAME}, since each instance adds a 7-character suffix to it.`,
    );
  d.tenant = checkTenant(d.tenant);
  checkLabels(d.labels);
  checkInstances("deployment.instances", d.instances);
  d.template = normalizeTemplate("deployment.template", d.template, d.name, d.tenant);
  d.strategy = normalizeStrategy("deployment.strategy", d.strategy, d.instances);
  d.traffic = normalizeTraffic("deployment.traffic", d.traffic, d.template.kind.case === "executable");
  checkPortRange("deployment.traffic", d);
  d.id = "";
  d.createTime = undefined;
  d.updateTime = undefined;
  d.revision = 0n;
  d.state = 0;
  d.stateReason = "";
  d.runningInstances = 0;
  d.pendingInstances = 0;
  d.finishedInstances = 0;
  return d;
}

/** An endpoint's port range must hold every instance, and as many again while a rollout runs both revisions. */
export function checkPortRange(field: string, d: Deployment): void {
  if (!d.traffic) return;
  const room = d.traffic.backendPortLast - d.traffic.backendPortFirst + 1;
  if (room < 2 * d.instances)
    throw invalidArgument(
      `${field}: ports ${d.traffic.backendPortFirst}..${d.traffic.backendPortLast} give ${room} port(s); ${d.instances} instance(s) need ${2 * d.instances} (both revisions run during a rollout).`,
    );
}

export function checkInstances(field: string, instances: number): number {
  if (!Number.isInteger(instances) || instances < 0 || instances > MAX_INSTANCES)
    throw invalidArgument(`${field} ${instances} is out of range: give 0 to ${MAX_INSTANCES}.`);
  return instances;
}

/** Checks a template (as an instance would be deployed) and returns a normalized copy. */
export function normalizeTemplate(field: string, input: DeploymentTemplate | undefined, name: string, tenant: string): DeploymentTemplate {
  if (input === undefined) throw invalidArgument(`${field} is missing: give what each instance runs (executable or vm).`);
  const t = clone(DeploymentTemplateSchema, input);
  if (t.kind.case === undefined) throw invalidArgument(`${field} has nothing to run: set ${field}.executable or ${field}.vm.`);
  if (!(t.restartPolicy in RestartPolicy))
    throw invalidArgument(`${field}.restart_policy ${t.restartPolicy} is not a restart policy: give ALWAYS, ON_FAILURE or NEVER.`);
  checkLabels(t.labels);
  for (const key of [DEPLOYMENT_LABEL, REVISION_LABEL])
    if (key in t.labels) throw invalidArgument(`${field}.labels may not set ${key}: the aggregator sets it on each instance.`);
  // The kind's own identity is the aggregator's to give (the instance's name, the tenant, the request id).
  t.kind.value.name = "";
  t.kind.value.tenant = "";
  t.kind.value.requestId = "";
  // Checked exactly as a Deploy of one instance would be, so a template that cannot run is refused here.
  try {
    normalizeSpec(instanceSpec(t, name, tenant, 1n, name));
  } catch (err) {
    // The same sentence, naming the template's fields rather than a Deploy's.
    if (err instanceof ConnectError) throw new ConnectError(err.rawMessage.replaceAll("spec.", `${field}.`), err.code);
    throw err;
  }
  return t;
}

/** The spec an instance is placed with (workload_id is set by the placement). */
export function instanceSpec(t: DeploymentTemplate, deployment: string, tenant: string, revision: bigint, instance: string): WorkloadSpec {
  const instanceLabels = { ...t.labels, [DEPLOYMENT_LABEL]: deployment, [REVISION_LABEL]: String(revision) };
  const spec = create(WorkloadSpecSchema, {
    name: instance,
    tenant,
    labels: instanceLabels,
    ...(t.requirements && { requirements: t.requirements }),
    ...(t.imageFetch && { imageFetch: t.imageFetch }),
  });
  // The deadman moves a fenced node's workloads unless told not to: a deployment that never restarts says so.
  if (t.restartPolicy === RestartPolicy.NEVER) spec.labels[RESTART_LABEL] = "never";
  if (t.kind.case === "executable") {
    const executable = clone(StartExecutableRequestSchema, t.kind.value);
    executable.labels = { ...executable.labels, ...instanceLabels };
    spec.kind = { case: "executable", value: executable };
  } else if (t.kind.case === "vm") {
    const vm = clone(CreateVmRequestSchema, t.kind.value);
    vm.labels = { ...vm.labels, ...instanceLabels };
    spec.kind = { case: "vm", value: vm };
    // An instance is one of many alike: a fenced node's instance is started afresh elsewhere, and its
    // leftovers are released when the node rejoins (fencing/deadman.ts), unless the template says otherwise.
    spec.labels[DISK_LABEL] ??= "ephemeral";
  }
  return spec;
}

/** Whether two templates are the same (a different one is a new revision). */
export function sameTemplate(a: DeploymentTemplate | undefined, b: DeploymentTemplate | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return equals(DeploymentTemplateSchema, a, b);
}

/** The restart policy's name as people and records say it. */
export function restartPolicyName(policy: RestartPolicy): "always" | "on-failure" | "never" {
  return policy === RestartPolicy.NEVER ? "never" : policy === RestartPolicy.ON_FAILURE ? "on-failure" : "always";
}
