// Deployments in cluster manifests: `deployments: [{ name, instances, labels, template }]`, each an
// aggregator Deployment (a template of an executable or a VM, and how many instances of it run). The
// declaration, its validated shape and the DeploymentTemplate it stands for.
import { z } from "zod";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { RestartPolicy, type DeploymentTemplateSchema } from "../gen/aether/auction/v1/auction_pb.js";
import { dnsLabel, PROCESS_FIELDS, RequirementsSchema } from "./schema-parts.js";
import { createVmRequest, VmTemplateSchema, type ManifestVm, type VmDecl } from "./vm-decl.js";

/** Instances are named <deployment>-<6 hex digits>, which must stay a DNS label. */
const MAX_NAME = 56;

const TemplateSchema = z
  .object({
    /** Labels of each instance (its placement, and the executable or VM on its node). */
    labels: z.record(z.string(), z.string()).default({}),
    restartPolicy: z.enum(["always", "on-failure", "never"], { error: 'must be "always", "on-failure" or "never"' }).default("always"),
    requirements: RequirementsSchema.optional(),
    executable: z.object(PROCESS_FIELDS).strict().optional(),
    vm: VmTemplateSchema.optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    if ((t.executable === undefined) === (t.vm === undefined))
      ctx.addIssue({
        code: "custom",
        path: [t.executable === undefined ? "vm" : "executable"],
        message: "give exactly one of executable ({ argv, ... }) or vm ({ image | kernel, cpus, memory, ... }): what each instance runs",
      });
    if (t.vm?.cell)
      ctx.addIssue({
        code: "custom",
        path: ["vm", "cell"],
        message: "instances run on whichever nodes win their auctions, outside any cell; drop cell",
      });
    if (t.vm?.requirements)
      ctx.addIssue({ code: "custom", path: ["vm", "requirements"], message: "give the template's requirements in template.requirements" });
  });

export const DeploymentDeclSchema = z
  .object({
    name: dnsLabel.max(MAX_NAME, `must be at most ${MAX_NAME} characters: each instance adds a 7-character suffix`),
    instances: z.number().int().min(0, "must be 0 or more").max(1000, "must be at most 1000").default(1),
    labels: z.record(z.string(), z.string()).default({}),
    template: TemplateSchema,
  })
  .strict();

/**
 * A deployment of a cluster manifest: `instances` copies of a template, kept running by the
 * aggregator (placed by auction, spread over the nodes, replaced when they end as `restartPolicy`
 * says). Changing `instances` or `labels` is an update in place; changing the template is a
 * replace: a new revision, whose instances the aggregator starts one at a time in place of the old.
 *
 * @example
 * ```ts
 * deployments: [
 *   { name: "web", instances: 3, template: { vm: { image: "debian-12", cpus: 1, memory: "512M" }, requirements: { nodeSelector: { zone: "a" } } } },
 *   { name: "workers", instances: 5, template: { executable: { argv: ["/usr/bin/worker"] }, restartPolicy: "on-failure" } },
 * ]
 * ```
 */
export interface DeploymentDecl {
  /** Unique name within the manifest's tenant (a DNS label of at most 56 characters). */
  name: string;
  /** How many instances run (0..1000). Default 1. */
  instances?: number;
  /** Labels of the deployment (the manifest adds its own `aether.io/manifest`); change in place. */
  labels?: Record<string, string>;
  /** What each instance runs: an executable or a VM (exactly one). */
  template: {
    /** Labels of each instance. */
    labels?: Record<string, string>;
    /** What happens when an instance ends: "always" (the default), "on-failure" or "never". */
    restartPolicy?: "always" | "on-failure" | "never";
    /** What each instance needs of a node (as an executable's `requirements`). */
    requirements?: { cpuMillis?: number; memory?: number | string; nodeSelector?: Record<string, string> };
    /** A process: argv (argv[0] absolute), env, cwd, uid, gid. */
    executable?: { argv: string[]; env?: Record<string, string>; cwd?: string; uid?: number; gid?: number };
    /** A VM, declared as in `vms` without a name (and without cell or requirements). */
    vm?: Omit<VmDecl, "name" | "cell" | "requirements">;
  };
}

/** A deployment of a validated manifest, defaults filled in. */
export interface ManifestDeployment {
  name: string;
  instances: number;
  labels: Record<string, string>;
  template: {
    labels: Record<string, string>;
    restartPolicy: "always" | "on-failure" | "never";
    requirements?: { cpuMillis: number; memoryBytes: number; nodeSelector: Record<string, string> };
    executable?: { argv: string[]; env: Record<string, string>; cwd: string; uid?: number; gid?: number };
    vm?: ManifestVm;
  };
}

const POLICY = { always: RestartPolicy.ALWAYS, "on-failure": RestartPolicy.ON_FAILURE, never: RestartPolicy.NEVER } as const;

/** The DeploymentTemplate of a declared deployment, as the aggregator keeps it (no name, tenant or request id in its kind). */
export function deploymentTemplate(d: ManifestDeployment): MessageInitShape<typeof DeploymentTemplateSchema> {
  const t = d.template;
  const requirements = t.requirements && {
    cpuMillis: t.requirements.cpuMillis,
    memoryBytes: BigInt(t.requirements.memoryBytes),
    nodeSelector: t.requirements.nodeSelector,
  };
  const base = { labels: t.labels, restartPolicy: POLICY[t.restartPolicy], ...(requirements && { requirements }) };
  if (t.vm !== undefined) return { ...base, kind: { case: "vm", value: { ...createVmRequest(t.vm, "", t.vm.labels), name: "" } } };
  const e = t.executable ?? { argv: [], env: {}, cwd: "/" };
  return { ...base, kind: { case: "executable", value: { argv: e.argv, env: e.env, cwd: e.cwd, uid: e.uid, gid: e.gid } } };
}
