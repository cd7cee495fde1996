// aether-aggregator's configuration: a TOML file, overridden by command-line flags, checked by one
// schema (the same arrangement as aetherd's).
import { readFileSync, statSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { DNS_LABEL } from "@aether/sdk/names";
import { ConfigError, parseConfig, readToml } from "@aether/server";
import { DEFAULT_AUCTION_WINDOW_MS, DEFAULT_EVENT_RETENTION, DEFAULT_LEASE_TTL_MS, DEFAULT_PROVISION_TIMEOUT_MS } from "./aggregator.js";
import { DEFAULT_FENCE_POLL_INTERVAL_MS, DEFAULT_FENCE_RETRY_MS, DEFAULT_FENCE_TIMEOUT_MS } from "./fencing/deadman-model.js";
import type { BmcEntry } from "./fencing/fencing.js";
import { configuredThresholds } from "./alerts/thresholds.js";

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

/**
 * One BMC: which node it fences (by node name, or by slot narrowed by chassis/rack) and how to log
 * in. The password is in a file (password_file), never in the config or on the command line.
 */
const BmcSchema = z
  .object({
    node: z.string().regex(DNS_LABEL, "must be the node's name (a DNS label)").optional(),
    slot: z.number().int().min(1).max(65535).optional(),
    chassis: z.string().min(1).max(63).optional(),
    rack: z.string().min(1).max(63).optional(),
    endpoint: z.string().regex(/^https:\/\/[^\s/]+(\/.*)?$/, "must be the BMC's https:// URL, e.g. https://10.0.0.121"),
    username: z.string().min(1).max(256),
    /** File holding the password (its first line); not readable by every user. */
    password_file: z.string().min(1),
    /** CA (PEM file) the BMC's certificate chains to. Neither this nor insecure: the system's CAs. */
    ca_file: z.string().min(1).optional(),
    /** Accept any certificate (lab BMCs with self-signed certificates). */
    insecure: z.boolean().default(false),
    /** Name expected in the BMC's certificate when it differs from the endpoint's host. */
    server_name: z.string().min(1).optional(),
    profile: z.enum(["ilo5", "dmtf"]).optional(),
    request_timeout_ms: z.number().int().min(100).max(600_000).optional(),
    retries: z.number().int().min(0).max(10).optional(),
  })
  .strict()
  .refine((b) => (b.node === undefined) !== (b.slot === undefined), {
    message: "give either node (the node's name) or slot (its position), not both and not neither",
  })
  .refine((b) => b.slot !== undefined || (b.chassis === undefined && b.rack === undefined), {
    message: "chassis and rack narrow a slot; they need slot",
  })
  .refine((b) => !(b.insecure && b.ca_file !== undefined), { message: "give ca_file or insecure = true, not both" });

export type BmcConfig = z.infer<typeof BmcSchema>;

/** [backup]: the cluster's state committed to a git repository (aggregator/src/backup/). */
const BackupSchema = z
  .object({
    /** The bare repository the leader commits to (created when missing), e.g. /var/lib/aether-aggregator/backup.git. */
    repository: z.string().min(1),
    /** Where every commit is pushed: a path or URL git understands; empty: nowhere. */
    remote: z.string().default(""),
    /** At most one commit per this long after changes. */
    batch_ms: z.number().int().min(100).max(3_600_000).default(10_000),
    /** A commit (when anything changed) and a push retry at least this often. */
    interval_ms: z.number().int().min(1000).max(86_400_000).default(300_000),
  })
  .strict();

export const ConfigSchema = z
  .object({
    socket: z.string().min(1),
    state_dir: z.string().min(1),
    log_level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    /** Largest request or response message, in bytes. */
    max_message_bytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(256 * 1024 * 1024),
    /** embedded: a folder in state_dir, one replica. etcd: several replicas, one leader. */
    store: z.enum(["embedded", "etcd"]),
    etcd_endpoints: z.array(z.string().regex(/^https?:\/\/.+/, "must be a URL such as http://127.0.0.1:2379")).default([]),
    /** Key prefix in etcd, so several clusters can share one etcd. */
    etcd_prefix: z.string().min(1).default("/aether/aggregator/"),
    /** TLS for https:// etcd endpoints: the CA etcd's certificate chains to, and a client certificate when etcd asks for one. */
    etcd_tls: NodeTlsSchema.default({}),
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
    /** The authorization policy file (aetherd's format, see @aether/server's policy.ts). Unset: built-in bindings. */
    policy: z.string().min(1).optional(),
    /** The SPIFFE trust domain (cluster name) client certificates must name; default: the one in [tcp] cert. */
    trust_domain: z
      .string()
      .regex(/^[a-z0-9._-]{1,255}$/, "must be a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')")
      .optional(),
    tcp: TcpSchema.optional(),
    /** The Prometheus endpoint (GET /metrics), a listener of its own; unset: none. Loopback unless metrics_tls. */
    metrics_listen: z.string().regex(HOST_PORT, "must be host:port, e.g. 127.0.0.1:9465").optional(),
    /** Serve the metrics with mutual TLS, with the [tcp] certificate, key and client CA (Prometheus presents a certificate of the CA). */
    metrics_tls: z.boolean().default(false),
    /** TLS material for calling nodes at https:// addresses. */
    node_tls: NodeTlsSchema.default({}),
    /** The BMCs that fence silent nodes ([[bmcs]] here and in the --bmcs file). */
    bmcs: z.array(BmcSchema).default([]),
    /** Backups of the cluster's state to git; unset: none. */
    backup: BackupSchema.optional(),
    /** [alerts]: alert thresholds by name over the defaults (aggregator/src/alerts/thresholds.ts); SetAlertThreshold changes them at runtime. */
    alerts: z
      .record(z.string(), z.number())
      .default({})
      .superRefine((values, issue) => {
        try {
          configuredThresholds(values);
        } catch (err) {
          const sentence = (err as { rawMessage?: string }).rawMessage ?? (err as Error).message;
          issue.addIssue({ code: "custom", message: sentence });
        }
      }),
    /** Longest time from a fence request to power state "Off". */
    fence_timeout_ms: z.number().int().min(100).max(3_600_000),
    /** Time between power state reads while fencing. */
    fence_poll_interval_ms: z.number().int().min(10).max(60_000),
    /** First wait before fencing again after an unconfirmed fence (doubles up to 5 min). */
    fence_retry_ms: z.number().int().min(100).max(3_600_000),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.metrics_tls && config.tcp?.cert === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["metrics_tls"],
        message: "serves the metrics with the --tls-cert, --tls-key and --tls-client-ca of the TCP listener, and none are given",
      });
    if (config.fence_poll_interval_ms > config.fence_timeout_ms) {
      ctx.addIssue({
        code: "custom",
        path: ["fence_poll_interval_ms"],
        message: `must not be longer than fence_timeout_ms (${config.fence_timeout_ms})`,
      });
    }
    if ((config.etcd_tls.cert === undefined) !== (config.etcd_tls.key === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["etcd_tls"],
        message: "--etcd-cert and --etcd-key go together: give both (the client certificate etcd trusts and its key) or neither",
      });
    }
    const schemes = new Set(config.etcd_endpoints.map((e) => e.slice(0, e.indexOf(":"))));
    if (schemes.size > 1) {
      ctx.addIssue({
        code: "custom",
        path: ["etcd_endpoints"],
        message: "mixes http:// and https:// endpoints: one etcd cluster speaks either plain HTTP or TLS on its client port",
      });
    }
    const etcdTlsGiven = config.etcd_tls.ca !== undefined || config.etcd_tls.cert !== undefined;
    if (etcdTlsGiven && config.etcd_endpoints.some((e) => e.startsWith("http://"))) {
      ctx.addIssue({
        code: "custom",
        path: ["etcd_endpoints"],
        message: "--etcd-ca/--etcd-cert are for an etcd that serves TLS: give its https:// endpoints",
      });
    }
    if (config.store === "etcd" && config.etcd_endpoints.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["etcd_endpoints"],
        message: "--store etcd needs at least one endpoint (--etcd-endpoints http://127.0.0.1:2379)",
      });
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
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  auctionWindowMs?: number;
  leaseTtlMs?: number;
  provisionTimeoutMs?: number;
  eventRetention?: number;
  replica?: string;
  advertise?: string;
  nodeTlsCa?: string;
  nodeTlsCert?: string;
  nodeTlsKey?: string;
  /** A TOML file with [[bmcs]] entries (added to the config file's). */
  bmcs?: string;
  policy?: string;
  trustDomain?: string;
  fenceTimeoutMs?: number;
  fencePollIntervalMs?: number;
  fenceRetryMs?: number;
  backupRepository?: string;
  backupRemote?: string;
  backupBatchMs?: number;
  backupIntervalMs?: number;
  metricsListen?: string;
  metricsTls?: boolean;
}

export { ConfigError };

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

/** [[bmcs]] of a TOML file, with their file paths resolved against the file's folder. */
function bmcsOf(file: Record<string, unknown>, path: string): unknown[] {
  const list = file.bmcs;
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new ConfigError(`${path}: bmcs must be a list of [[bmcs]] tables`);
  const base = dirname(resolve(path));
  return list.map((entry: unknown) => {
    if (typeof entry !== "object" || entry === null) return entry;
    const e = { ...(entry as Record<string, unknown>) };
    for (const key of ["password_file", "ca_file"]) if (typeof e[key] === "string") e[key] = resolve(base, e[key] as string);
    return e;
  });
}

export function loadConfig(flags: ConfigFlags): Config {
  let file: Record<string, unknown> = {};
  if (flags.config !== undefined) file = readToml(flags.config, "config file");
  const bmcs = [...(flags.config !== undefined ? bmcsOf(file, flags.config) : [])];
  if (flags.bmcs !== undefined) {
    const extra = readToml(flags.bmcs, "BMC file");
    const unknown = Object.keys(extra).filter((k) => k !== "bmcs");
    if (unknown.length > 0) throw new ConfigError(`${flags.bmcs} may hold only [[bmcs]] tables; it also has ${unknown.join(", ")}`);
    bmcs.push(...bmcsOf(extra, flags.bmcs));
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
  const fileBackup = (file.backup ?? {}) as Record<string, unknown>;
  const backup = {
    ...fileBackup,
    ...(flags.backupRepository !== undefined && { repository: flags.backupRepository }),
    ...(flags.backupRemote !== undefined && { remote: flags.backupRemote }),
    ...(flags.backupBatchMs !== undefined && { batch_ms: flags.backupBatchMs }),
    ...(flags.backupIntervalMs !== undefined && { interval_ms: flags.backupIntervalMs }),
  };
  const fileEtcdTls = (file.etcd_tls ?? {}) as Record<string, unknown>;
  const etcdTls = {
    ...fileEtcdTls,
    ...(flags.etcdCa !== undefined && { ca: flags.etcdCa }),
    ...(flags.etcdCert !== undefined && { cert: flags.etcdCert }),
    ...(flags.etcdKey !== undefined && { key: flags.etcdKey }),
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
    fence_timeout_ms: DEFAULT_FENCE_TIMEOUT_MS,
    fence_poll_interval_ms: DEFAULT_FENCE_POLL_INTERVAL_MS,
    fence_retry_ms: DEFAULT_FENCE_RETRY_MS,
    ...file,
    bmcs,
    ...(flags.socket !== undefined && { socket: flags.socket }),
    ...(flags.stateDir !== undefined && { state_dir: flags.stateDir }),
    ...(flags.logLevel !== undefined && { log_level: flags.logLevel }),
    ...(flags.store !== undefined && { store: flags.store }),
    ...(flags.etcdEndpoints !== undefined && {
      etcd_endpoints: flags.etcdEndpoints
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== ""),
    }),
    ...(flags.etcdPrefix !== undefined && { etcd_prefix: flags.etcdPrefix }),
    ...(flags.auctionWindowMs !== undefined && { auction_window_ms: flags.auctionWindowMs }),
    ...(flags.leaseTtlMs !== undefined && { lease_ttl_ms: flags.leaseTtlMs }),
    ...(flags.provisionTimeoutMs !== undefined && { provision_timeout_ms: flags.provisionTimeoutMs }),
    ...(flags.eventRetention !== undefined && { event_retention: flags.eventRetention }),
    ...(flags.replica !== undefined && { replica: flags.replica }),
    ...(flags.advertise !== undefined && { advertise: flags.advertise }),
    ...(flags.policy !== undefined && { policy: flags.policy }),
    ...(flags.trustDomain !== undefined && { trust_domain: flags.trustDomain }),
    ...(flags.fenceTimeoutMs !== undefined && { fence_timeout_ms: flags.fenceTimeoutMs }),
    ...(flags.fencePollIntervalMs !== undefined && { fence_poll_interval_ms: flags.fencePollIntervalMs }),
    ...(flags.fenceRetryMs !== undefined && { fence_retry_ms: flags.fenceRetryMs }),
    ...(flags.metricsListen !== undefined && { metrics_listen: flags.metricsListen }),
    ...(flags.metricsTls !== undefined && { metrics_tls: flags.metricsTls }),
    tcp: Object.keys(tcp).length > 0 ? tcp : undefined,
    node_tls: nodeTls,
    etcd_tls: etcdTls,
    backup: Object.keys(backup).length > 0 ? backup : undefined,
  };
  const config = parseConfig(ConfigSchema, merged);
  config.socket = resolve(config.socket);
  config.state_dir = resolve(config.state_dir);
  if (config.backup) config.backup.repository = resolve(config.backup.repository);
  return config;
}

/**
 * The BMC entries with their passwords and CA certificates read from their files. Errors name the
 * entry and the file, never the password.
 */
export function readBmcEntries(config: Config): BmcEntry[] {
  const seen = new Set<string>();
  return config.bmcs.map((b, i) => {
    const which = `BMC ${b.endpoint} (bmcs[${i}], for ${b.node !== undefined ? `node ${b.node}` : `slot ${b.slot}${b.chassis ? ` of chassis ${b.chassis}` : ""}${b.rack ? ` in rack ${b.rack}` : ""}`})`;
    const key = b.node !== undefined ? `node:${b.node}` : `slot:${b.slot}/${b.chassis ?? "*"}/${b.rack ?? "*"}`;
    if (seen.has(key))
      throw new ConfigError(
        `invalid configuration: ${which} is the second BMC for the same ${b.node !== undefined ? "node" : "position"}; keep one.`,
      );
    seen.add(key);
    let password: string;
    try {
      const mode = statSync(b.password_file).mode;
      if ((mode & 0o004) !== 0) throw new Error(`it is readable by every user (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
      password = readFileSync(b.password_file, "utf8").split(/\r?\n/)[0] ?? "";
    } catch (err) {
      throw new ConfigError(`cannot use the password_file ${b.password_file} of ${which}: ${(err as Error).message}`);
    }
    if (password === "")
      throw new ConfigError(`the password_file ${b.password_file} of ${which} is empty; put the BMC user's password on its first line.`);
    let caPem: string | undefined;
    if (b.ca_file !== undefined) {
      try {
        caPem = readFileSync(b.ca_file, "utf8");
      } catch (err) {
        throw new ConfigError(`cannot read the ca_file ${b.ca_file} of ${which}: ${(err as Error).message}`);
      }
      if (!caPem.includes("-----BEGIN CERTIFICATE-----"))
        throw new ConfigError(`the ca_file ${b.ca_file} of ${which} holds no PEM certificate.`);
    }
    return {
      ...(b.node !== undefined && { node: b.node }),
      ...(b.slot !== undefined && { slot: b.slot }),
      ...(b.chassis !== undefined && { chassis: b.chassis }),
      ...(b.rack !== undefined && { rack: b.rack }),
      endpoint: b.endpoint,
      username: b.username,
      password,
      ...(caPem !== undefined && { caPem }),
      ...(b.insecure && { insecureSkipVerify: true }),
      ...(b.server_name !== undefined && { serverName: b.server_name }),
      ...(b.profile !== undefined && { profile: b.profile }),
      ...(b.request_timeout_ms !== undefined && { requestTimeoutMs: b.request_timeout_ms }),
      ...(b.retries !== undefined && { retries: b.retries }),
    };
  });
}
