// aether-aggregator's configuration: a TOML file, overridden by command-line flags, checked by one
// schema (the same arrangement as aetherd's).
import { readFileSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { DEFAULT_AUCTION_WINDOW_MS, DEFAULT_EVENT_RETENTION, DEFAULT_LEASE_TTL_MS, DEFAULT_PROVISION_TIMEOUT_MS } from "./aggregator.js";

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/;

const TcpSchema = z
  .object({
    listen: z.string().regex(HOST_PORT, "must be host:port, e.g. 127.0.0.1:7450"),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    client_ca: z.string().min(1).optional(),
  })
  .strict()
  .refine((t) => (t.cert === undefined) === (t.key === undefined) && (t.cert === undefined) === (t.client_ca === undefined), {
    message: "TLS needs cert, key and client_ca together (or none of them for plain HTTP/2 on loopback)",
  });

const NodeTlsSchema = z
  .object({
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
  })
  .strict();

export const ConfigSchema = z
  .object({
    socket: z.string().min(1),
    state_dir: z.string().min(1),
    log_level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    /** Largest request or response message, in bytes. */
    max_message_bytes: z.number().int().min(64 * 1024).max(256 * 1024 * 1024),
    /** embedded: a folder in state_dir, one replica. etcd: several replicas, one leader. */
    store: z.enum(["embedded", "etcd"]),
    etcd_endpoints: z.array(z.string().regex(/^https?:\/\/.+/, "must be a URL such as http://127.0.0.1:2379")).default([]),
    /** Key prefix in etcd, so several clusters can share one etcd. */
    etcd_prefix: z.string().min(1).default("/aether/aggregator/"),
    /** How long an auction waits for bids (a Deploy may ask for another bid_timeout). */
    auction_window_ms: z.number().int().min(1).max(60_000),
    /** Node lease length; nodes heartbeat every third of it. */
    lease_ttl_ms: z.number().int().min(100).max(3_600_000),
    /** How long a node may take to provision a workload it won. */
    provision_timeout_ms: z.number().int().min(100).max(3_600_000),
    /** Cluster events kept for replay. */
    event_retention: z.number().int().min(1).max(10_000_000),
    /** This replica's name in the election and in standby answers. */
    replica: z.string().min(1).max(253),
    /** Where clients reach this replica; standbys name it while it leads. */
    advertise: z.string().default(""),
    tcp: TcpSchema.optional(),
    /** TLS material for calling nodes at https:// addresses. */
    node_tls: NodeTlsSchema.default({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.store === "etcd" && config.etcd_endpoints.length === 0) {
      ctx.addIssue({ code: "custom", path: ["etcd_endpoints"], message: "--store etcd needs at least one endpoint (--etcd-endpoints http://127.0.0.1:2379)" });
    }
  });

export type Config = z.infer<typeof ConfigSchema>;

export interface ConfigFlags {
  config?: string;
  socket?: string;
  stateDir?: string;
  logLevel?: string;
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  store?: string;
  etcdEndpoints?: string;
  etcdPrefix?: string;
  auctionWindowMs?: number;
  leaseTtlMs?: number;
  provisionTimeoutMs?: number;
  eventRetention?: number;
  replica?: string;
  advertise?: string;
  nodeTlsCa?: string;
  nodeTlsCert?: string;
  nodeTlsKey?: string;
}

export class ConfigError extends Error {}

/** The default socket: /run/aether for root, $XDG_RUNTIME_DIR (or /tmp) for other users. */
export function defaultAggregatorSocket(): string {
  if (process.getuid?.() === 0) return "/run/aether/aggregator.sock";
  const runtimeDir = process.env.XDG_RUNTIME_DIR ?? join("/tmp", `aether-${process.getuid?.() ?? "user"}`);
  return join(runtimeDir, "aether", "aggregator.sock");
}

/** The default state directory: /var/lib/aether-aggregator for root, else under $XDG_STATE_HOME. */
export function defaultAggregatorStateDir(): string {
  if (process.getuid?.() === 0) return "/var/lib/aether-aggregator";
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), ".local", "state"), "aether-aggregator");
}

export function loadConfig(flags: ConfigFlags): Config {
  let file: Record<string, unknown> = {};
  if (flags.config !== undefined) {
    let text: string;
    try {
      text = readFileSync(flags.config, "utf8");
    } catch (err) {
      throw new ConfigError(`cannot read the config file ${flags.config}: ${(err as Error).message}`);
    }
    try {
      file = parseToml(text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`${flags.config} is not valid TOML: ${(err as Error).message}`);
    }
  }
  const fileTcp = (file.tcp ?? {}) as Record<string, unknown>;
  const tcp = {
    ...fileTcp,
    ...(flags.listen !== undefined && { listen: flags.listen }),
    ...(flags.tlsCert !== undefined && { cert: flags.tlsCert }),
    ...(flags.tlsKey !== undefined && { key: flags.tlsKey }),
    ...(flags.tlsClientCa !== undefined && { client_ca: flags.tlsClientCa }),
  };
  const fileNodeTls = (file.node_tls ?? {}) as Record<string, unknown>;
  const nodeTls = {
    ...fileNodeTls,
    ...(flags.nodeTlsCa !== undefined && { ca: flags.nodeTlsCa }),
    ...(flags.nodeTlsCert !== undefined && { cert: flags.nodeTlsCert }),
    ...(flags.nodeTlsKey !== undefined && { key: flags.nodeTlsKey }),
  };
  const merged = {
    socket: defaultAggregatorSocket(),
    state_dir: defaultAggregatorStateDir(),
    log_level: "info",
    max_message_bytes: 4 * 1024 * 1024,
    store: "embedded",
    auction_window_ms: DEFAULT_AUCTION_WINDOW_MS,
    lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
    provision_timeout_ms: DEFAULT_PROVISION_TIMEOUT_MS,
    event_retention: DEFAULT_EVENT_RETENTION,
    replica: `${hostname()}-${process.pid}`,
    ...file,
    ...(flags.socket !== undefined && { socket: flags.socket }),
    ...(flags.stateDir !== undefined && { state_dir: flags.stateDir }),
    ...(flags.logLevel !== undefined && { log_level: flags.logLevel }),
    ...(flags.store !== undefined && { store: flags.store }),
    ...(flags.etcdEndpoints !== undefined && { etcd_endpoints: flags.etcdEndpoints.split(",").map((s) => s.trim()).filter((s) => s !== "") }),
    ...(flags.etcdPrefix !== undefined && { etcd_prefix: flags.etcdPrefix }),
    ...(flags.auctionWindowMs !== undefined && { auction_window_ms: flags.auctionWindowMs }),
    ...(flags.leaseTtlMs !== undefined && { lease_ttl_ms: flags.leaseTtlMs }),
    ...(flags.provisionTimeoutMs !== undefined && { provision_timeout_ms: flags.provisionTimeoutMs }),
    ...(flags.eventRetention !== undefined && { event_retention: flags.eventRetention }),
    ...(flags.replica !== undefined && { replica: flags.replica }),
    ...(flags.advertise !== undefined && { advertise: flags.advertise }),
    tcp: Object.keys(tcp).length > 0 ? tcp : undefined,
    node_tls: nodeTls,
  };
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join(".") || "config";
    throw new ConfigError(`invalid configuration: ${where}: ${issue?.message ?? "invalid"}`);
  }
  const config = parsed.data;
  config.socket = resolve(config.socket);
  config.state_dir = resolve(config.state_dir);
  return config;
}
