// What reading a configuration means for every Aether server: a TOML file read with errors that name
// the file, and a schema's first complaint turned into one sentence naming the key. Each program
// keeps its own schema, defaults and flags (daemon/src/config.ts, aggregator/src/config.ts).
import { readFileSync } from "node:fs";
import { parse as parseToml } from "smol-toml";
import type { z } from "zod";

/** A configuration the server cannot start with; the sentence says which key or file and why. */
export class ConfigError extends Error {}

/** The table of a TOML file; what: how the error names the file ("config file", "BMC file"). */
export function readToml(path: string, what = "config file"): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`${path} is not valid TOML: ${(err as Error).message}`);
  }
}

/**
 * The value checked against the schema; on failure a ConfigError naming the first bad key
 * ("invalid configuration: tcp.cert: ..."), with hint(key) appended.
 */
export function parseConfig<S extends z.ZodType>(schema: S, value: unknown, hint: (where: string) => string = () => ""): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join(".") || "config";
    throw new ConfigError(`invalid configuration: ${where}: ${issue?.message ?? "invalid"}${hint(where)}`);
  }
  return parsed.data;
}
