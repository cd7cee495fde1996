// Manifests as code: a script exports `defineManifest({...})`, a declarative description of what
// should run on a node, or (target "cluster") of what the aggregator should place somewhere in the
// cluster; `aetherscript plan|apply` compares it with the node's, or the aggregator's, live state.
// Past 400 lines because the schema, its cross-field checks and the documented input types are one
// thing read together (the types are each field's documentation); VMs are declared in vm-decl.ts.
import { z } from "zod";
import { DNS_LABEL_PATH } from "../names.js";
import { VmDeclSchema, type ManifestVm, type VmDecl } from "./vm-decl.js";

import { dnsLabel, RequirementsSchema, SizeSchema } from "./schema-parts.js";
import { DeploymentDeclSchema, type DeploymentDecl, type ManifestDeployment } from "./deployment-decl.js";

const ExecutableDeclSchema = z
  .object({
    /** Unique name within the manifest's tenant. */
    name: dnsLabel,
    /** Program and arguments; argv[0] is an absolute path. */
    argv: z
      .array(z.string())
      .min(1, "must name at least the program")
      .refine((a) => a[0]?.startsWith("/"), "argv[0] must be an absolute path"),
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().startsWith("/", "must be an absolute path").default("/"),
    labels: z.record(z.string(), z.string()).default({}),
    uid: z.number().int().nonnegative().optional(),
    gid: z.number().int().nonnegative().optional(),
    /** Cell to run in (needs an aetherd with cells). */
    cell: z.string().default(""),
    /** What the executable needs of a node (cluster manifests only). */
    requirements: RequirementsSchema.optional(),
  })
  .strict();

const CellDeclSchema = z
  .object({
    /** Name path, e.g. "team-a/build". */
    name: z.string().regex(DNS_LABEL_PATH, "must be DNS labels separated by '/'"),
    cpuWeight: z.number().int().min(1).max(10000).optional(),
    cpuMaxPercent: z.number().positive().max(100_000).optional(),
    cpusetCpus: z.string().optional(),
    memoryMaxBytes: z.number().int().positive().optional(),
    pidsMax: z.number().int().positive().optional(),
    labels: z.record(z.string(), z.string()).default({}),
    isolation: z
      .object({
        pid: z.boolean().default(false),
        mount: z.boolean().default(false),
        network: z.boolean().default(false),
        uts: z.boolean().default(false),
        ipc: z.boolean().default(false),
      })
      .strict()
      .default({ pid: false, mount: false, network: false, uts: false, ipc: false }),
  })
  .strict();

const VolumeDeclSchema = z
  .object({
    /** Unique name within the manifest's tenant. */
    name: dnsLabel,
    /** Bytes, or "512M", "10G". */
    size: SizeSchema.optional(),
    pool: dnsLabel.optional(),
    format: z.enum(["qcow2", "raw"], { error: 'must be "qcow2" or "raw"' }).optional(),
    /** Image to clone (id or name). */
    image: dnsLabel.optional(),
    labels: z.record(z.string(), z.string()).default({}),
  })
  .strict()
  .transform(({ size, pool, ...rest }) => ({ ...rest, sizeBytes: size, pool: pool ?? "" }));

const ManifestSchema = z
  .object({
    /** Names this manifest; everything it creates is labelled `aether.io/manifest=<name>`. */
    name: dnsLabel,
    /** Tenant of every resource. Default "default". */
    tenant: dnsLabel.default("default"),
    target: z.enum(["node", "cluster"], { error: 'must be "node" or "cluster"' }).default("node"),
    executables: z.array(ExecutableDeclSchema).default([]),
    cells: z.array(CellDeclSchema).default([]),
    volumes: z.array(VolumeDeclSchema).default([]),
    vms: z.array(VmDeclSchema).default([]),
    deployments: z.array(DeploymentDeclSchema).default([]),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.target === "cluster") {
      // The aggregator places each executable by auction on whichever node wins it: nothing that
      // lives on one node (a volume, a cell, an executable inside a cell) can follow it there.
      if (m.volumes.length > 0)
        ctx.addIssue({
          code: "custom",
          path: ["volumes"],
          message: 'volumes belong to one node; apply them to a node (in a manifest without target "cluster")',
        });
      if (m.cells.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["cells"],
          message:
            'cells belong to one node, and the aggregator places each executable on a node of its own choosing, so none could run in them; apply them to a node (in a manifest without target "cluster")',
        });
      }
      m.executables.forEach((e, i) => {
        if (e.cell !== "")
          ctx.addIssue({
            code: "custom",
            path: ["executables", i, "cell"],
            message:
              'an executable of a cluster manifest runs on whichever node wins its auction, outside any cell; drop cell, or apply the manifest to a node (without target "cluster")',
          });
      });
      m.vms.forEach((v, i) => {
        if (v.cell !== "")
          ctx.addIssue({
            code: "custom",
            path: ["vms", i, "cell"],
            message:
              'a VM of a cluster manifest runs on whichever node wins its auction, outside any cell; drop cell, or apply the manifest to a node (without target "cluster")',
          });
      });
      m.deployments.forEach((d, i) => {
        if (m.deployments.findIndex((x) => x.name === d.name) !== i)
          ctx.addIssue({ code: "custom", path: ["deployments", i, "name"], message: `${d.name} is declared twice` });
      });
    } else {
      if (m.deployments.length > 0)
        ctx.addIssue({
          code: "custom",
          path: ["deployments"],
          message:
            'deployments are kept by the aggregator, which places their instances on the cluster\'s nodes: set target: "cluster" (and point AETHER_HOST at the aggregator)',
        });
      m.vms.forEach((v, i) => {
        if (v.requirements !== undefined)
          ctx.addIssue({
            code: "custom",
            path: ["vms", i, "requirements"],
            message: 'only a cluster manifest places VMs by their requirements: set target: "cluster", or drop requirements',
          });
        if (v.cell !== "" && !m.cells.some((c) => c.name === v.cell))
          ctx.addIssue({ code: "custom", path: ["vms", i, "cell"], message: `cell ${v.cell} is not declared in the manifest` });
      });
      m.executables.forEach((e, i) => {
        if (e.requirements !== undefined)
          ctx.addIssue({
            code: "custom",
            path: ["executables", i, "requirements"],
            message: 'only a cluster manifest places executables by their requirements: set target: "cluster", or drop requirements',
          });
      });
    }
    const seen = new Set<string>();
    m.executables.forEach((e, i) => {
      if (seen.has(e.name)) ctx.addIssue({ code: "custom", path: ["executables", i, "name"], message: `${e.name} is declared twice` });
      seen.add(e.name);
    });
    const cells = new Set(m.cells.map((c) => c.name));
    m.cells.forEach((c, i) => {
      const parent = c.name.split("/").slice(0, -1).join("/");
      if (parent !== "" && !cells.has(parent))
        ctx.addIssue({ code: "custom", path: ["cells", i, "name"], message: `its parent cell ${parent} is not declared` });
      if (m.cells.findIndex((x) => x.name === c.name) !== i)
        ctx.addIssue({ code: "custom", path: ["cells", i, "name"], message: `${c.name} is declared twice` });
    });
    m.executables.forEach((e, i) => {
      if (e.cell !== "" && !cells.has(e.cell))
        ctx.addIssue({ code: "custom", path: ["executables", i, "cell"], message: `cell ${e.cell} is not declared in the manifest` });
    });
    m.vms.forEach((v, i) => {
      if (m.vms.findIndex((x) => x.name === v.name) !== i)
        ctx.addIssue({ code: "custom", path: ["vms", i, "name"], message: `${v.name} is declared twice` });
    });
    m.volumes.forEach((v, i) => {
      if (m.volumes.findIndex((x) => x.name === v.name) !== i)
        ctx.addIssue({ code: "custom", path: ["volumes", i, "name"], message: `${v.name} is declared twice` });
      if (v.image === undefined && v.sizeBytes === undefined)
        ctx.addIssue({
          code: "custom",
          path: ["volumes", i, "size"],
          message: "is required for an empty volume: give a size, or an image to clone",
        });
      if (v.image !== undefined && v.format !== undefined)
        ctx.addIssue({
          code: "custom",
          path: ["volumes", i, "format"],
          message: `a clone has its image's format: drop format, or image ${v.image}`,
        });
    });
  });

/** One executable a manifest declares. */
export interface ExecutableDecl {
  /** Unique name within the manifest's tenant (a DNS label). */
  name: string;
  /** Program and arguments; argv[0] is an absolute path. */
  argv: string[];
  /** The complete environment of the process. Default: empty. */
  env?: Record<string, string>;
  /** Absolute working directory. Default "/". */
  cwd?: string;
  /** Labels to attach (the manifest adds its own `aether.io/manifest`). */
  labels?: Record<string, string>;
  /** User id to run as. Default: aetherd's. */
  uid?: number;
  /** Group id to run as. Default: aetherd's. */
  gid?: number;
  /** Cell to run in (needs an aetherd with cells). Default: none. Not allowed in a cluster manifest. */
  cell?: string;
  /**
   * What the executable needs of a node: only nodes that can give it bid in its auction. Cluster
   * manifests only (`target: "cluster"`); a node manifest refuses it. Default: derived by the nodes
   * (a tenth of a CPU, no memory).
   */
  requirements?: RequirementsDecl;
}

/**
 * What an executable of a cluster manifest needs of the node it is placed on.
 *
 * @example
 * ```ts
 * requirements: { cpuMillis: 500, memory: "256M", nodeSelector: { zone: "a" } }
 * ```
 */
export interface RequirementsDecl {
  /** CPU in thousandths of a CPU (500 = half a CPU). Default: 100. */
  cpuMillis?: number;
  /** Memory in bytes, or a string with a binary unit: "256M", "2G". Default: none. */
  memory?: number | string;
  /** Node labels that must all match (see `aether cluster nodes`). Default: any node. */
  nodeSelector?: Record<string, string>;
}

/** The requirements of a validated executable, sizes in bytes. */
export interface ManifestRequirements {
  /** CPU in thousandths of a CPU; 0 when not declared (the nodes derive it). */
  cpuMillis: number;
  /** Memory in bytes; 0 when not declared. */
  memoryBytes: number;
  /** Node labels that must all match; empty for any node. */
  nodeSelector: Record<string, string>;
}

/** One cell a manifest declares. Its parent (if any) must be declared too. */
export interface CellDecl {
  /** Name path, e.g. "team-a/build". */
  name: string;
  /** cgroup cpu weight, 1..10000 (100 is the default share). */
  cpuWeight?: number;
  /** CPU limit in percent of one CPU (150 = one and a half CPUs). */
  cpuMaxPercent?: number;
  /** CPUs the cell may run on, in list format ("0-1"). */
  cpusetCpus?: string;
  /** Memory limit in bytes. */
  memoryMaxBytes?: number;
  /** Largest number of tasks. */
  pidsMax?: number;
  /** Labels to attach (the manifest adds its own `aether.io/manifest`). */
  labels?: Record<string, string>;
  /** Namespaces of its own (see the cells API). */
  isolation?: { pid?: boolean; mount?: boolean; network?: boolean; uts?: boolean; ipc?: boolean };
}

/** A cell of a validated manifest, defaults filled in. */
export interface ManifestCell extends Omit<CellDecl, "labels" | "isolation"> {
  /** Labels to attach. */
  labels: Record<string, string>;
  /** Namespaces of its own. */
  isolation: { pid: boolean; mount: boolean; network: boolean; uts: boolean; ipc: boolean };
}

/**
 * One volume a manifest declares: empty of a given size, or a thin clone of an image. Apply only
 * ever grows a volume; a declared size smaller than the volume on the node is a plan error.
 *
 * @example
 * ```ts
 * volumes: [
 *   { name: "data", size: "10G" },
 *   { name: "root", image: "debian-12", size: "20G" },
 * ]
 * ```
 */
export interface VolumeDecl {
  /** Unique name within the manifest's tenant (a DNS label). */
  name: string;
  /**
   * Size in bytes, or a string with a binary unit: "512M", "10G", "1.5T" (1G = 2^30 bytes).
   * Required for an empty volume; for a clone, optional and at least the image's size (the clone is
   * grown to it). The pool rounds it up to its allocation unit.
   */
  size?: number | string;
  /** Pool to create the volume in. Default: the node's default pool (a clone lives in its image's pool). */
  pool?: string;
  /** How an empty volume stores its data. Default: the pool's default format. Not allowed with `image`. */
  format?: "qcow2" | "raw";
  /** Id or name of an image (in the manifest's tenant, READY) to clone. Default: an empty volume. */
  image?: string;
  /** Labels to attach (the manifest adds its own `aether.io/manifest`). Fixed once the volume exists. */
  labels?: Record<string, string>;
}

/** A volume of a validated manifest, its size in bytes and defaults filled in. */
export interface ManifestVolume {
  /** Unique name within the manifest's tenant. */
  name: string;
  /** Size in bytes; undefined for a clone that keeps its image's size. */
  sizeBytes?: number;
  /** Pool to create the volume in; "" for the default pool. */
  pool: string;
  /** How an empty volume stores its data; undefined for the pool's default. */
  format?: "qcow2" | "raw";
  /** Id or name of the image to clone; undefined for an empty volume. */
  image?: string;
  /** Labels to attach. */
  labels: Record<string, string>;
}

/** What a manifest script passes to {@link defineManifest}. */
export interface ManifestInput {
  /** Names this manifest; everything it creates is labelled `aether.io/manifest=<name>`. */
  name: string;
  /** Tenant of every resource. Default "default". */
  tenant?: string;
  /**
   * Where the manifest applies. "node" (the default): the aetherd that AETHER_HOST names runs
   * everything. "cluster": AETHER_HOST names an aether-aggregator, which places each executable
   * and VM by auction on a node of the cluster; such a manifest declares executables and VMs only
   * (no volumes, no cells), and each may declare `requirements`. Its live state is the aggregator's placements
   * labelled with the manifest: a process that exited on its node stays placed until the manifest
   * changes it or the placement is released.
   */
  target?: ManifestTarget;
  /** Executables that should be running. */
  executables?: ExecutableDecl[];
  /** Cells that should exist. Node manifests only. */
  cells?: CellDecl[];
  /** Volumes that should exist (created before cells and executables, deleted after them). Node manifests only. */
  volumes?: VolumeDecl[];
  /**
   * VMs that should exist and run. On a node, aetherd runs them; in a cluster manifest, the
   * aggregator places each by auction (like an executable).
   */
  vms?: VmDecl[];
  /**
   * Deployments: N instances of an executable or a VM, kept running by the aggregator. Cluster
   * manifests only.
   */
  deployments?: DeploymentDecl[];
}

/** Where a manifest applies: one node's aetherd, or the cluster through its aggregator. */
export type ManifestTarget = "node" | "cluster";

/** An executable of a validated manifest, defaults filled in. */
export type ManifestExecutable = Required<Omit<ExecutableDecl, "uid" | "gid" | "requirements">> &
  Pick<ExecutableDecl, "uid" | "gid"> & {
    /** What it needs of a node; undefined when not declared (always, in a node manifest). */
    requirements?: ManifestRequirements;
  };

/** A validated manifest with defaults filled in; made by {@link defineManifest}. */
export interface Manifest {
  /** Marks the value as a manifest. */
  readonly kind: "aether.manifest";
  /** The manifest's name. */
  name: string;
  /** Tenant of every resource. */
  tenant: string;
  /** Where the manifest applies: one node, or the cluster through its aggregator. */
  target: ManifestTarget;
  /** Executables that should be running. */
  executables: ManifestExecutable[];
  /** Cells that should exist, parents before children. */
  cells: ManifestCell[];
  /** Volumes that should exist. */
  volumes: ManifestVolume[];
  /** VMs that should exist and run. */
  vms: ManifestVm[];
  /** Deployments the aggregator should keep (cluster manifests). */
  deployments: ManifestDeployment[];
}

/** The label that marks what a manifest manages. */
export const MANIFEST_LABEL = "aether.io/manifest";

/** Raised when a manifest is invalid: names the field and why. */
export class ManifestError extends Error {
  constructor(
    message: string,
    /** Dotted path of the offending field, e.g. "executables.0.argv". */
    readonly field: string,
  ) {
    super(message);
    this.name = "ManifestError";
  }
}

/**
 * Declares what should run on a node, or (with `target: "cluster"`) in the cluster. Export it as
 * the default export of a manifest script.
 *
 * @example
 * ```ts
 * import { defineManifest } from "@aether/sdk";
 * export default defineManifest({
 *   name: "web",
 *   executables: [{ name: "server", argv: ["/usr/bin/python3", "-m", "http.server", "8080"] }],
 * });
 * ```
 *
 * @example
 * ```ts
 * // Placed by the aggregator (AETHER_HOST names aether-aggregator's socket or address).
 * export default defineManifest({
 *   name: "workers",
 *   target: "cluster",
 *   executables: [{ name: "worker-1", argv: ["/usr/bin/worker"], requirements: { cpuMillis: 500, memory: "256M" } }],
 * });
 * ```
 */
export function defineManifest(input: ManifestInput): Manifest {
  const parsed = ManifestSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join(".") || "(manifest)";
    throw new ManifestError(`invalid manifest: ${field}: ${issue?.message ?? "invalid"}`, field);
  }
  return { ...parsed.data, kind: "aether.manifest" };
}

/** True for a value made by {@link defineManifest}. */
export function isManifest(value: unknown): value is Manifest {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "aether.manifest";
}
