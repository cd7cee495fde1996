// Contexts on the command line (issue 23, item 10): the global --context NAME, and what a context in
// use gives the commands besides the node address (which connect() reads itself, see
// @aether/sdk client-config.ts): the aggregator's address and the default tenant.
//
// A context is "in use" when it is asked for by name (--context, AETHER_CONTEXT), or when nothing
// else says where the node is (no --address, no AETHER_HOST): then it is the current context. An
// explicit address never borrows the current context's aggregator or tenant, so `AETHER_HOST=...
// aether cluster nodes` means what it meant before contexts existed.
import { mkdirSync, openSync, closeSync, writeSync, fsyncSync, renameSync, chmodSync } from "node:fs";
import { dirname } from "node:path";
import type { Command } from "commander";
import { ConnectError } from "@aether/sdk/client";
import { stringify as stringifyToml, parse as parseToml } from "smol-toml";
import {
  CONTEXT_FIELDS,
  DEFAULT_CONTEXT,
  defaultClientConfigPath,
  readClientConfig,
  selectContext,
  type ClientConfig,
  type ClientContext,
} from "@aether/sdk/client";
import { readFileSync } from "node:fs";

/** Where the client config is (XDG_CONFIG_HOME/aether/config.toml). */
export const configPath = (): string => defaultClientConfigPath();

/**
 * Installs --context's effect: before a command's action, the context asked for must exist (else a
 * usage error, exit 2), connect() is told about it through AETHER_CONTEXT, and a context in use gives
 * AETHER_AGGREGATOR (when unset, or whatever it was for a context asked for by name) and --tenant
 * (when not given) their defaults.
 */
export function applyContexts(program: Command): void {
  program.hook("preAction", (_program, action) => {
    const { context: flag, address } = program.opts<{ context?: string; address?: string }>();
    // aether config edits the file, and may be what repairs it: it applies no context.
    if (isUnder(action, "config") || action.name() === "__complete") return;
    if (flag !== undefined) process.env.AETHER_CONTEXT = flag;
    const named = process.env.AETHER_CONTEXT || undefined;
    if (named === undefined && (address !== undefined || process.env.AETHER_HOST)) return;
    let context: ClientContext | undefined;
    try {
      context = selectContext(readClientConfig(configPath()), named).context;
    } catch (err) {
      action.error(`error: ${messageOf(err)}`, { exitCode: 2 });
    }
    if (context === undefined) return;
    // As for the node's address, a context asked for by name wins over the environment; the current one does not.
    if (context.aggregator !== undefined && (named !== undefined || !process.env.AETHER_AGGREGATOR)) {
      process.env.AETHER_AGGREGATOR = context.aggregator;
    }
    const tenantOption = action.options.find((o) => o.long === "--tenant");
    if (context.tenant !== undefined && tenantOption && (action.getOptionValueSource("tenant") ?? "default") === "default") {
      action.setOptionValueWithSource("tenant", context.tenant, "config");
    }
  });
}

function isUnder(cmd: Command, name: string): boolean {
  for (let c: Command | null = cmd; c; c = c.parent) if (c.name() === name) return true;
  return false;
}

/** The config file's TOML document as a plain object (empty when there is no file). */
function readDocument(config: ClientConfig): Record<string, unknown> {
  if (!config.exists) return {};
  return parseToml(readFileSync(config.path, "utf8")) as Record<string, unknown>;
}

/** Write, fsync, rename (a reader sees the old file or the new one); 0600, it names keys. */
function writeDocument(path: string, document: Record<string, unknown>): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const text = `# aether client config: aether config get-contexts|set-context|use-context edit it.\n${stringifyToml(document)}\n`;
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** The table that holds a context's fields: the top of the document for "default". */
function tableOf(document: Record<string, unknown>, name: string, create: boolean): Record<string, unknown> | undefined {
  if (name === DEFAULT_CONTEXT) return document;
  const contexts = (document.contexts ??= {}) as Record<string, Record<string, unknown>>;
  if (contexts[name] === undefined && create) contexts[name] = {};
  return contexts[name];
}

/** Sets (and unsets) fields of a context, creating it; returns whether it was new. */
export function setContext(name: string, fields: ClientContext, unset: readonly string[]): boolean {
  const config = readClientConfig(configPath());
  const document = readDocument(config);
  const created = !config.contexts.has(name) || (name === DEFAULT_CONTEXT && !config.exists);
  const table = tableOf(document, name, true) as Record<string, unknown>;
  for (const field of CONTEXT_FIELDS) if (fields[field] !== undefined) table[field] = fields[field];
  for (const field of unset) delete table[field];
  writeDocument(config.path, document);
  return created;
}

/** Makes `name` the current context (it must exist). */
export function useContext(name: string): void {
  const config = readClientConfig(configPath());
  selectContext(config, name);
  const document = readDocument(config);
  if (name === DEFAULT_CONTEXT) delete document["current-context"];
  else document["current-context"] = name;
  writeDocument(config.path, document);
}

/** Removes a named context ("default", the top-level fields, is emptied); the current one falls back to default. */
export function deleteContext(name: string): void {
  const config = readClientConfig(configPath());
  selectContext(config, name);
  const document = readDocument(config);
  if (name === DEFAULT_CONTEXT) for (const field of CONTEXT_FIELDS) delete document[field];
  else delete (document.contexts as Record<string, unknown>)[name];
  if (document["current-context"] === name) delete document["current-context"];
  writeDocument(config.path, document);
}

/** An error's sentence without the RPC code ConnectError puts before it. */
export function messageOf(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : (err as Error).message;
}
