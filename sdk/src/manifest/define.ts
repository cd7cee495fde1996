// Manifests as code: a script exports `defineManifest({...})`, a declarative description of what
// should run on a node; `aetherscript plan|apply` compares it with the node's live state.
import { z } from "zod";
import { parseSize } from "./size.js";

const dnsLabel = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a DNS label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit");

const ExecutableDeclSchema = z
  .object({
    /** Unique name within the manifest's tenant. */
    name: dnsLabel,
    /** Program and arguments; argv[0] is an absolute path. */
    argv: z.array(z.string()).min(1, "must name at least the program").refine((a) => a[0]?.startsWith("/"), "argv[0] must be an absolute path"),
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().startsWith("/", "must be an absolute path").default("/"),
    labels: z.record(z.string(), z.string()).default({}),
    uid: z.number().int().nonnegative().optional(),
    gid: z.number().int().nonnegative().optional(),
    /** Cell to run in (needs an aetherd with cells). */
    cell: z.string().default(""),
  })
  .strict();

const CellDeclSchema = z
  .object({
    /** Name path, e.g. "team-a/build". */
    name: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, "must be DNS labels separated by '/'"),
    cpuWeight: z.number().int().min(1).max(10000).optional(),
    cpuMaxPercent: z.number().positive().max(100_000).optional(),
    cpusetCpus: z.string().optional(),
    memoryMaxBytes: z.number().int().positive().optional(),
    pidsMax: z.number().int().positive().optional(),
    labels: z.record(z.string(), z.string()).default({}),
    isolation: z
      .object({ pid: z.boolean().default(false), mount: z.boolean().default(false), network: z.boolean().default(false), uts: z.boolean().default(false), ipc: z.boolean().default(false) })
      .strict()
      .default({ pid: false, mount: false, network: false, uts: false, ipc: false }),
  })
  .strict();

const SizeSchema = z
  .union([z.number(), z.string()], { error: 'must be a number of bytes or a string like "512M" or "10G"' })
  .transform((value, ctx) => {
    const bytes = parseSize(value);
    if (typeof bytes === "number") return bytes;
    ctx.addIssue({ code: "custom", message: bytes.error });
    return z.NEVER;
  });

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
    executables: z.array(ExecutableDeclSchema).default([]),
    cells: z.array(CellDeclSchema).default([]),
    volumes: z.array(VolumeDeclSchema).default([]),
  })
  .strict()
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    m.executables.forEach((e, i) => {
      if (seen.has(e.name)) ctx.addIssue({ code: "custom", path: ["executables", i, "name"], message: `${e.name} is declared twice` });
      seen.add(e.name);
    });
    const cells = new Set(m.cells.map((c) => c.name));
    m.cells.forEach((c, i) => {
      const parent = c.name.split("/").slice(0, -1).join("/");
      if (parent !== "" && !cells.has(parent)) ctx.addIssue({ code: "custom", path: ["cells", i, "name"], message: `its parent cell ${parent} is not declared` });
      if (m.cells.findIndex((x) => x.name === c.name) !== i) ctx.addIssue({ code: "custom", path: ["cells", i, "name"], message: `${c.name} is declared twice` });
    });
    m.executables.forEach((e, i) => {
      if (e.cell !== "" && !cells.has(e.cell)) ctx.addIssue({ code: "custom", path: ["executables", i, "cell"], message: `cell ${e.cell} is not declared in the manifest` });
    });
    m.volumes.forEach((v, i) => {
      if (m.volumes.findIndex((x) => x.name === v.name) !== i) ctx.addIssue({ code: "custom", path: ["volumes", i, "name"], message: `${v.name} is declared twice` });
      if (v.image === undefined && v.sizeBytes === undefined) ctx.addIssue({ code: "custom", path: ["volumes", i, "size"], message: "is required for an empty volume: give a size, or an image to clone" });
      if (v.image !== undefined && v.format !== undefined) ctx.addIssue({ code: "custom", path: ["volumes", i, "format"], message: `a clone has its image's format: drop format, or image ${v.image}` });
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
  /** Cell to run in (needs an aetherd with cells). Default: none. */
  cell?: string;
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
  /** Executables that should be running. */
  executables?: ExecutableDecl[];
  /** Cells that should exist. */
  cells?: CellDecl[];
  /** Volumes that should exist (created before cells and executables, deleted after them). */
  volumes?: VolumeDecl[];
}

/** An executable of a validated manifest, defaults filled in. */
export type ManifestExecutable = Required<Omit<ExecutableDecl, "uid" | "gid">> & Pick<ExecutableDecl, "uid" | "gid">;

/** A validated manifest with defaults filled in; made by {@link defineManifest}. */
export interface Manifest {
  /** Marks the value as a manifest. */
  readonly kind: "aether.manifest";
  /** The manifest's name. */
  name: string;
  /** Tenant of every resource. */
  tenant: string;
  /** Executables that should be running. */
  executables: ManifestExecutable[];
  /** Cells that should exist, parents before children. */
  cells: ManifestCell[];
  /** Volumes that should exist. */
  volumes: ManifestVolume[];
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
 * Declares what should run on a node. Export it as the default export of a manifest script.
 *
 * @example
 * ```ts
 * import { defineManifest } from "@aether/sdk";
 * export default defineManifest({
 *   name: "web",
 *   executables: [{ name: "server", argv: ["/usr/bin/python3", "-m", "http.server", "8080"] }],
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
