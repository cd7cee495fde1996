// Deployments in cluster manifests: `deployments: [{ name, instances, labels, template }]`, each an
// aggregator Deployment (a template of an executable or a VM, and how many instances of it run). The
// declaration, its validated shape and the DeploymentTemplate it stands for.
import { z } from "zod";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  RestartPolicy,
  type DeploymentStrategySchema,
  type DeploymentTemplateSchema,
  type DeploymentTrafficSchema,
} from "../gen/aether/auction/v1/auction_pb.js";
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

const percent = z.number().int().min(1, "must be 1 to 100").max(100, "must be 1 to 100");
const seconds = z.number().min(0, "must be 0 or more seconds");

const StrategySchema = z.discriminatedUnion(
  "kind",
  [
    z.object({ kind: z.literal("immediate") }).strict(),
    z
      .object({
        kind: z.literal("rolling"),
        maxSurge: z.number().int().min(0).max(1000).default(0),
        maxUnavailable: z.number().int().min(0).max(1000).default(0),
      })
      .strict(),
    z
      .object({
        kind: z.literal("canary"),
        stages: z.array(percent).min(1).optional(),
        holdSeconds: seconds.max(86_400).optional(),
        maxErrorRate: z.number().min(0).max(1, "is a share: 0 to 1 (0.01 is 1 %)").optional(),
        maxLatencyRatio: z.number().min(0).max(1000).optional(),
      })
      .strict(),
    z.object({ kind: z.literal("blue-green"), gracePeriodSeconds: seconds.max(3600).optional() }).strict(),
    z
      .object({
        kind: z.literal("ab"),
        header: z.string().min(1).optional(),
        cookie: z.string().min(1).optional(),
        percent: percent.max(99, "must be 1 to 99"),
      })
      .strict()
      .refine((a) => (a.header === undefined) !== (a.cookie === undefined), {
        message: "give exactly one of header or cookie: what identifies a caller",
      }),
  ],
  { error: 'kind must be "immediate", "rolling", "canary", "blue-green" or "ab"' },
);

const TrafficSchema = z
  .object({
    listen: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:8080"),
    node: z.string().min(1, "name the node that runs the endpoint"),
    ports: z.tuple([z.number().int().min(1024).max(65535), z.number().int().min(1024).max(65535)]),
    healthPath: z.string().startsWith("/").optional(),
    healthIntervalMs: z.number().int().min(100).max(60_000).optional(),
    commandCheck: z
      .object({
        argv: z.array(z.string().min(1)).min(1, "give the program and its arguments").max(64),
        intervalMs: z.number().int().min(500).max(300_000).optional(),
        timeoutMs: z.number().int().min(100).max(60_000).optional(),
        rise: z.number().int().min(1).max(100).optional(),
        fall: z.number().int().min(1).max(100).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const DeploymentDeclSchema = z
  .object({
    name: dnsLabel.max(MAX_NAME, `must be at most ${MAX_NAME} characters: each instance adds a 7-character suffix`),
    instances: z.number().int().min(0, "must be 0 or more").max(1000, "must be at most 1000").default(1),
    labels: z.record(z.string(), z.string()).default({}),
    template: TemplateSchema,
    strategy: StrategySchema.optional(),
    traffic: TrafficSchema.optional(),
  })
  .strict();

/** How a new revision replaces the running one (see the proto's DeploymentStrategy). */
export type StrategyDecl =
  | { kind: "immediate" }
  | { kind: "rolling"; maxSurge?: number; maxUnavailable?: number }
  | { kind: "canary"; stages?: number[]; holdSeconds?: number; maxErrorRate?: number; maxLatencyRatio?: number }
  | { kind: "blue-green"; gracePeriodSeconds?: number }
  | { kind: "ab"; header?: string; cookie?: string; percent: number };

/** A deployment's endpoint: HAProxy on `node` listening on `listen`, each instance given a port of `ports` (PORT in its environment). */
export interface TrafficDecl {
  listen: string;
  node: string;
  ports: [number, number];
  healthPath?: string;
  healthIntervalMs?: number;
  /** A command run for each instance in its cell: exit 0 passes; `fall` failures put its backend in maintenance, `rise` passes bring it back. */
  commandCheck?: { argv: string[]; intervalMs?: number; timeoutMs?: number; rise?: number; fall?: number };
}

/**
 * A deployment of a cluster manifest: `instances` copies of a template, kept running by the
 * aggregator (placed by auction, spread over the nodes, replaced when they end as `restartPolicy`
 * says). Changing `instances` or `labels` is an update in place; changing the template is a
 * replace: a new revision, rolled out by `strategy` (default rolling, one instance at a time); with
 * `traffic`, the deployment has an endpoint (HAProxy on one node) whose weights the rollout shifts.
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
  /** How a template change is rolled out: immediate, rolling, canary (default stages 5/25/50/100 %), blue-green or ab. */
  strategy?: StrategyDecl;
  /** The deployment's endpoint (executables only). */
  traffic?: TrafficDecl;
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
  strategy?: StrategyDecl;
  traffic?: TrafficDecl;
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

const duration = (s: number) => ({ seconds: BigInt(Math.floor(s)), nanos: Math.round((s % 1) * 1e9) });

/** The DeploymentStrategy of a declared deployment (undefined: the aggregator's default, rolling). */
export function deploymentStrategy(d: ManifestDeployment): MessageInitShape<typeof DeploymentStrategySchema> | undefined {
  const s = d.strategy;
  switch (s?.kind) {
    case undefined:
      return undefined;
    case "immediate":
      return { kind: { case: "immediate", value: {} } };
    case "rolling":
      return { kind: { case: "rolling", value: { maxSurge: s.maxSurge ?? 0, maxUnavailable: s.maxUnavailable ?? 0 } } };
    case "canary":
      return {
        kind: {
          case: "canary",
          value: {
            stages: s.stages ?? [],
            ...(s.holdSeconds !== undefined && { hold: duration(s.holdSeconds) }),
            maxErrorRate: s.maxErrorRate ?? 0,
            maxLatencyRatio: s.maxLatencyRatio ?? 0,
          },
        },
      };
    case "blue-green":
      return {
        kind: { case: "blueGreen", value: s.gracePeriodSeconds !== undefined ? { gracePeriod: duration(s.gracePeriodSeconds) } : {} },
      };
    case "ab":
      return { kind: { case: "ab", value: { header: s.header ?? "", cookie: s.cookie ?? "", percent: s.percent } } };
  }
}

/** The DeploymentTraffic of a declared deployment, if it has an endpoint. */
export function deploymentTraffic(d: ManifestDeployment): MessageInitShape<typeof DeploymentTrafficSchema> | undefined {
  const t = d.traffic;
  if (!t) return undefined;
  return {
    listen: t.listen,
    node: t.node,
    backendPortFirst: t.ports[0],
    backendPortLast: t.ports[1],
    healthPath: t.healthPath ?? "",
    ...(t.healthIntervalMs !== undefined && { healthInterval: duration(t.healthIntervalMs / 1000) }),
    ...(t.commandCheck && {
      commandCheck: {
        argv: t.commandCheck.argv,
        ...(t.commandCheck.intervalMs !== undefined && { interval: duration(t.commandCheck.intervalMs / 1000) }),
        ...(t.commandCheck.timeoutMs !== undefined && { timeout: duration(t.commandCheck.timeoutMs / 1000) }),
        rise: t.commandCheck.rise ?? 0,
        fall: t.commandCheck.fall ?? 0,
      },
    }),
  };
}
