// Where aetherd is: resolving an address from options, AETHER_HOST, the client config file or the
// default socket. Kept apart from connect() so tools can resolve an address without loading the
// transport and every generated client (aetherscript's launcher does, on every run).
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { defaultClientConfigPath, defaultSocketPath } from "./address.js";
import { readClientConfig, selectContext, type ClientContext } from "./client-config.js";

export { defaultClientConfigPath, defaultSocketPath, defaultStateDir } from "./address.js";

/** TLS material for an `https://` address: file paths or PEM text. */
export interface TlsOptions {
  /** CA that the daemon's certificate must chain to. */
  ca?: string;
  /** Client certificate (aetherd requires one on TCP). */
  cert?: string;
  /** Client private key. */
  key?: string;
}

/** Where to look for aetherd; see {@link resolveTarget} for the search order. */
export interface TargetOptions {
  /** `unix:///path/to.sock`, a plain socket path, or `https://host:port`. */
  address?: string;
  /** TLS material for an `https://` address. */
  tls?: TlsOptions;
  /**
   * Client config file to read when neither `address` nor `AETHER_HOST` is set, and for the
   * ca/cert/key of an `https://` address given without all three in `tls`.
   */
  configPath?: string;
  /**
   * False: never read the client config (a server's own outgoing calls, which carry their TLS
   * material explicitly). Default true.
   */
  useClientConfig?: boolean;
  /**
   * Named context of the client config to use (default: AETHER_CONTEXT, else the file's
   * current-context). A context asked for by name wins over AETHER_HOST; the current one does not.
   */
  context?: string;
}

/** A resolved unix socket address. */
export interface UnixTarget {
  /** Discriminates the kinds of target. */
  kind: "unix";
  /** Absolute path of the socket. */
  path: string;
  /** The address as written, `unix:///path`. */
  address: string;
  /** With a client certificate: mutual TLS over the socket (aetherd's `[unix] mtls`). */
  tls?: TlsOptions;
}

/** A resolved TCP address with mutual TLS. */
export interface HttpsTarget {
  /** Discriminates the kinds of target. */
  kind: "https";
  /** `https://host:port`. */
  url: string;
  /** The address as written. */
  address: string;
  /** TLS material from the options or the client config. */
  tls: TlsOptions;
}

/** A resolved address: a unix socket path or an https URL with its TLS material. */
export type Target = UnixTarget | HttpsTarget;

/**
 * Resolves where aetherd is: `options.address`, else the context asked for by name
 * (`options.context`, else the `AETHER_CONTEXT` environment variable) in the client config, else the
 * `AETHER_HOST` environment variable, else the client config's current context
 * (`~/.config/aether/config.toml`: `address`, `ca`, `cert`, `key`), else the default socket.
 */
export function resolveTarget(options: TargetOptions = {}): Target {
  const useFile = options.useClientConfig ?? true;
  const named = options.context ?? (process.env.AETHER_CONTEXT || undefined);
  const context = (): ClientContext | undefined =>
    useFile ? selectContext(readClientConfig(options.configPath ?? defaultClientConfigPath()), named).context : undefined;
  let address = options.address;
  let tls = options.tls ?? {};
  // A context asked for by name comes before AETHER_HOST: --context says where, AETHER_HOST is a default.
  if ((address === undefined || address === "") && named !== undefined) {
    const file = context();
    address = file?.address;
    if (address !== undefined) tls = { ...definedOf({ ca: file?.ca, cert: file?.cert, key: file?.key }), ...definedOf(tls) };
  }
  if (address === undefined || address === "") address = process.env.AETHER_HOST;
  if (address === undefined || address === "") {
    const file = context();
    address = file?.address ?? `unix://${defaultSocketPath()}`;
    tls = { ...definedOf({ ca: file?.ca, cert: file?.cert, key: file?.key }), ...definedOf(tls) };
  } else if (address.startsWith("https://") && useFile && (tls.ca === undefined || tls.cert === undefined || tls.key === undefined)) {
    // An https address however given (flag, AETHER_HOST, option) uses the client config's TLS
    // material for what the caller did not give: the same identity whatever names the address.
    const file = context();
    tls = { ...definedOf({ ca: file?.ca, cert: file?.cert, key: file?.key }), ...definedOf(tls) };
  }
  const unixTls = tls.cert !== undefined ? { tls } : {};
  if (address.startsWith("unix://")) return { kind: "unix", path: address.slice("unix://".length), address, ...unixTls };
  if (address.startsWith("/")) return { kind: "unix", path: address, address: `unix://${address}`, ...unixTls };
  if (address.startsWith("https://")) return { kind: "https", url: address, address, tls };
  throw new ConnectError(
    `aether address ${JSON.stringify(address)} is not understood: use unix:///path/to/aetherd.sock or https://host:port.`,
    Code.InvalidArgument,
  );
}

/** The fields that are set (so that spreading never overwrites a value with undefined). */
function definedOf(tls: TlsOptions): TlsOptions {
  return Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== undefined)) as TlsOptions;
}

/** PEM text as given, or the content of the file it names. */
export function pem(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value.includes("-----BEGIN") ? value : readFileSync(value, "utf8");
}
