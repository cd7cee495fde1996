// The client config file (~/.config/aether/config.toml) and its named contexts (issue 23, item 10).
//
// A context is where a client talks to and as whom: a node address, an aggregator address, the CA,
// certificate and key, and a default tenant. The fields at the top of the file are the context named
// "default" (a file from `aether pki issue user --write-config`, or written by hand before contexts
// existed, is exactly that one context); more live under [contexts.NAME]. current-context names the
// one used when none is asked for:
//
//   current-context = "lab-b"
//   address = "unix:///run/aether/aetherd.sock"        # the context "default"
//   [contexts.lab-b]
//   address = "https://10.0.0.8:7443"
//   aggregator = "https://10.0.0.2:7444"
//   ca = "/home/me/.config/aether/pki/ca.pem"
//   cert = "/home/me/.config/aether/pki/user/me.pem"
//   key = "/home/me/.config/aether/pki/user/me.key"
//   tenant = "team-a"
//
// Reading is here, in the SDK, so that every client (aether, aetherscript, programs using connect())
// picks the same context; the CLI writes the file (aether config set-context|use-context).
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { parse as parseToml } from "smol-toml";

/** The name of the context the top-level fields make. */
export const DEFAULT_CONTEXT = "default";

/** The fields of one context; every one is optional. */
export interface ClientContext {
  /** aetherd's address: unix:///path.sock or https://host:port. */
  address?: string;
  /** aether-aggregator's address. */
  aggregator?: string;
  /** CA certificate file (or PEM text) the daemons' certificates must chain to. */
  ca?: string;
  /** Client certificate file (or PEM text). */
  cert?: string;
  /** Client private key file (or PEM text). */
  key?: string;
  /** Tenant commands use when none is given. */
  tenant?: string;
}

/** The context fields, in the order they are shown and written. */
export const CONTEXT_FIELDS = ["address", "aggregator", "ca", "cert", "key", "tenant"] as const;

/** A client config file as read. */
export interface ClientConfig {
  /** Where it was read from. */
  path: string;
  /** False when there is no file (then there are no contexts but an empty "default"). */
  exists: boolean;
  /** current-context, or "default" when the file does not name one. */
  current: string;
  /** Every context, "default" (the top-level fields) first when it has any field or is current. */
  contexts: Map<string, ClientContext>;
}

function contextOf(table: Record<string, unknown>): ClientContext {
  const context: ClientContext = {};
  for (const field of CONTEXT_FIELDS) if (typeof table[field] === "string") context[field] = table[field] as string;
  return context;
}

/** Reads the client config at `path`: a missing file is an empty config, a file that is not TOML an error. */
export function readClientConfig(path: string): ClientConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return { path, exists: false, current: DEFAULT_CONTEXT, contexts: new Map([[DEFAULT_CONTEXT, {}]]) };
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConnectError(`the client config ${path} is not valid TOML: ${(err as Error).message}`, Code.InvalidArgument);
  }
  const current = typeof parsed["current-context"] === "string" ? parsed["current-context"] : DEFAULT_CONTEXT;
  const contexts = new Map<string, ClientContext>([[DEFAULT_CONTEXT, contextOf(parsed)]]);
  const named = parsed.contexts;
  if (named !== undefined && (typeof named !== "object" || named === null || Array.isArray(named))) {
    throw new ConnectError(`the client config ${path}: contexts must be a table of [contexts.NAME] tables.`, Code.InvalidArgument);
  }
  for (const [name, table] of Object.entries((named ?? {}) as Record<string, unknown>)) {
    if (name === DEFAULT_CONTEXT) {
      throw new ConnectError(
        `the client config ${path}: [contexts.default] is not allowed; the context "default" is the fields at the top of the file.`,
        Code.InvalidArgument,
      );
    }
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      throw new ConnectError(`the client config ${path}: contexts.${name} must be a table.`, Code.InvalidArgument);
    }
    contexts.set(name, contextOf(table as Record<string, unknown>));
  }
  return { path, exists: true, current, contexts };
}

/**
 * The context to use: `name` (a --context flag or AETHER_CONTEXT) when given, else the file's
 * current-context. A name the file does not have is an error that says which ones it has.
 */
export function selectContext(config: ClientConfig, name?: string): { name: string; context: ClientContext } {
  const wanted = name === undefined || name === "" ? config.current : name;
  const context = config.contexts.get(wanted);
  if (context === undefined) {
    const known = [...config.contexts.keys()].join(", ");
    const where = config.exists ? `the client config ${config.path}` : `the client config (${config.path} does not exist)`;
    throw new ConnectError(
      `there is no context ${JSON.stringify(wanted)} in ${where}; its contexts: ${known} (add one with aether config set-context).`,
      Code.InvalidArgument,
    );
  }
  return { name: wanted, context };
}
