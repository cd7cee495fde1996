// Pieces of the manifest schema that define.ts, vm-decl.ts and deployment-decl.ts share.
import { z } from "zod";
import { DNS_LABEL } from "../names.js";
import { parseSize } from "./size.js";

export const dnsLabel = z
  .string()
  .regex(DNS_LABEL, "must be a DNS label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit");

/** Bytes, or "512M", "10G": a number of bytes out. */
export const SizeSchema = z
  .union([z.number(), z.string()], { error: 'must be a number of bytes or a string like "512M" or "10G"' })
  .transform((value, ctx) => {
    const bytes = parseSize(value);
    if (typeof bytes === "number") return bytes;
    ctx.addIssue({ code: "custom", message: bytes.error });
    return z.NEVER;
  });

/** What a workload of a cluster manifest needs of a node. */
export const RequirementsSchema = z
  .object({
    cpuMillis: z
      .number()
      .int()
      .min(1, "must be at least 1 (thousandths of a CPU)")
      .max(2 ** 32 - 1)
      .optional(),
    memory: SizeSchema.optional(),
    nodeSelector: z.record(z.string(), z.string()).default({}),
  })
  .strict()
  .transform(({ cpuMillis, memory, nodeSelector }) => ({ cpuMillis: cpuMillis ?? 0, memoryBytes: memory ?? 0, nodeSelector }));

/** A process as an executable or a deployment's template declares it: argv, env, cwd, uid, gid. */
export const PROCESS_FIELDS = {
  /** Program and arguments; argv[0] is an absolute path. */
  argv: z
    .array(z.string())
    .min(1, "must name at least the program")
    .refine((a) => a[0]?.startsWith("/"), "argv[0] must be an absolute path"),
  env: z.record(z.string(), z.string()).default({}),
  cwd: z.string().startsWith("/", "must be an absolute path").default("/"),
  uid: z.number().int().nonnegative().optional(),
  gid: z.number().int().nonnegative().optional(),
};
