// aetherd's configuration: a TOML file, overridden by command-line flags, checked by one schema.
import { resolve } from "node:path";
import { z } from "zod";
import { defaultSocketPath, defaultStateDir } from "@aether/sdk/client";
import { DNS_LABEL, LABEL_KEY } from "@aether/sdk/names";
import { parseConfig, readToml } from "@aether/server";

const TcpSchema = z
  .object({
    listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:7443"),
    cert: z.string().min(1),
    key: z.string().min(1),
    client_ca: z.string().min(1),
    /**
     * Certificate revocation list(s) of the client CA(s), PEM. A client certificate listed there is
     * refused. Read again, with cert, key and client_ca, when aetherd gets SIGHUP.
     */
    crl: z.string().min(1).optional(),
  })
  .strict();

export type TcpConfig = z.infer<typeof TcpSchema>;

const PoolSchema = z
  .object({
    name: z.string().regex(DNS_LABEL, "must be a DNS label (lowercase letters, digits, '-')"),
    driver: z.enum(["dir", "zfs", "lvm-thin"]),
    /** A directory (dir), a dataset such as tank/aether (zfs), vg/thinpool (lvm-thin). */
    location: z.string().min(1),
    default: z.boolean().default(false),
    labels: z.record(z.string(), z.string()).default({}),
  })
  .strict();

export type PoolConfig = z.infer<typeof PoolSchema>;

/**
 * [bidding]: how this node answers the aggregator's RequestBid (see daemon/src/auction/score.ts).
 * A node declines a workload that would take its commitments past these ratios of what it has.
 */
const BiddingSchema = z
  .object({
    /**
     * Memory that may be promised to workloads (VMs with QEMU's overhead, cells' memory limits,
     * bid holds) as a multiple of the host's total memory. 1.0 (the default): never over-commit.
     */
    memory_overcommit: z.number().min(0.1).max(16).default(1.0),
    /** CPU that may be promised (VMs' vCPUs, cells' cpu max, bid holds) per host CPU. Default 4.0. */
    cpu_overcommit: z.number().min(0.1).max(256).default(4.0),
    /** How long a positive bid holds its resources for the auction that asked (ms). Default 5000. */
    hold_ms: z.number().int().min(0).max(600_000).default(5_000),
  })
  .strict();

export type BiddingConfig = z.infer<typeof BiddingSchema>;

/** [node]: facts about this host that aetherd cannot find by looking. */
const NodeSchema = z
  .object({
    /**
     * Labels of this node ("rack", "chassis", "tier", ...), matched by a workload's
     * requirements.node_selector. aetherd adds aether.io/hostname and aether.io/arch itself.
     */
    labels: z
      .record(
        z.string().regex(LABEL_KEY, "label keys are letters, digits, '-', '_' and '.', optionally prefixed by a domain and '/'"),
        z.string().max(63),
      )
      .default({}),
  })
  .strict();

/**
 * [cluster]: membership in a cluster run by aether-aggregator. Without `aggregator`, the node is on
 * its own (it still answers bids from anyone who asks).
 */
const AggregatorAddress = z.string().regex(/^(unix:\/\/\/|https:\/\/)\S+$/, "must be unix:///path.sock or https://host:port");

const ClusterSchema = z
  .object({
    /**
     * The aggregator to register with: unix:///path.sock or https://host:port; or a list of its
     * replicas (etcd store), tried in turn until the leader answers.
     */
    aggregator: z.union([AggregatorAddress.transform((a) => [a]), z.array(AggregatorAddress).min(1).max(16)]).optional(),
    /** The address the aggregator calls this node back on; default: unix://<socket>. */
    advertise: z
      .string()
      .regex(/^(unix:\/\/\/|https:\/\/)\S+$/, "must be unix:///path.sock or https://host:port")
      .optional(),
    /** The node's name in the cluster; default: the host name. */
    name: z.string().min(1).max(63).optional(),
    /** Where the node sits (used by the auction's tie-breakers and by fencing). */
    rack: z.string().max(63).default(""),
    chassis: z.string().max(63).default(""),
    slot: z.number().int().min(0).max(10_000).default(0),
    /**
     * The node's cluster identity for its outgoing calls (to the aggregator, to other nodes) when it
     * serves no TCP: the cluster CA, and a node certificate (spiffe://<cluster>/node/<name>) with its
     * key. Default: the [tcp] client_ca, cert and key.
     */
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
  })
  .strict()
  .refine((c) => (c.cert === undefined) === (c.key === undefined), {
    message: "cert and key go together: give both (the node certificate and its private key) or neither",
  });

/**
 * [metrics]: the Prometheus endpoint (GET /metrics), a listener of its own, opened only when listen
 * is set. Plain HTTP on a loopback address; any other address needs mutual TLS: tls = true serves
 * with the [tcp] node certificate, key, client CA and CRL, or cert, key and client_ca name others.
 */
const MetricsSchema = z
  .object({
    listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:9464"),
    tls: z.boolean().default(false),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    client_ca: z.string().min(1).optional(),
    crl: z.string().min(1).optional(),
  })
  .strict();

export type MetricsConfig = z.infer<typeof MetricsSchema>;

/**
 * [tenancy]: how a tenant's work is confined on this host. Cluster-wide callers (the socket,
 * operators) are not bound by it.
 */
const TenancySchema = z
  .object({
    /**
     * First host uid/gid of the ranges given to tenants. Each tenant gets its own block of
     * ids_per_tenant ids, allocated on first use and remembered in <state_dir>/tenants.json; a
     * tenant's uid/gid in a request is an offset within its block, so it never runs as a host
     * account or as another tenant.
     */
    id_base: z.number().int().min(65_536).max(2_000_000_000).default(1_000_000_000),
    /** Size of each tenant's uid/gid block. */
    ids_per_tenant: z.number().int().min(1).max(1_048_576).default(65_536),
    /**
     * Folders of kernels and initrds an operator published: a tenant's VM may boot a kernel/initrd
     * path only below one of these (links resolved first). Empty: tenants boot images and volumes only.
     */
    kernel_roots: z.array(z.string().startsWith("/", "must be an absolute path")).default([]),
    /** Bridges each tenant's NICs may join: { "team-a" = ["br-a"] }. A tenant not named joins none. */
    networks: z.record(z.string(), z.array(z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, "must be a network device name"))).default({}),
    /**
     * URL prefixes a tenant's ImportImage may download from ("https://images.example.org/"). Empty:
     * tenants import from no URL. Even under an allowed prefix, an address that is loopback,
     * link-local, private, unique-local, multicast or this host's own is refused unless
     * allow_private_urls is true; every redirect is checked again.
     */
    image_url_prefixes: z.array(z.string().regex(/^https?:\/\/[^\s]+$/, "must start with http:// or https://")).default([]),
    allow_private_urls: z.boolean().default(false),
  })
  .strict();

export type TenancyConfig = z.infer<typeof TenancySchema>;

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
    /** How long a probe guest may take to boot under KVM before acceleration `auto` settles for TCG. */
    kvm_probe_timeout_ms: z.number().int().min(500).max(120_000),
    /** Folder, below aetherd's own cgroup in each hierarchy, that holds its cells. */
    cgroup_root: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/, "must be one folder name (letters, digits, '_', '.', '-')"),
    tcp: TcpSchema.optional(),
    /** The Prometheus metrics endpoint; unset: none. */
    metrics: MetricsSchema.optional(),
    /**
     * Storage pools. Empty: one dir pool named "default" in <state_dir>/pools/default. A pool with
     * default = true (else the first) serves requests that name none.
     */
    pools: z.array(PoolSchema).default([]),
    /** Folders ImportImage may read local files from (absolute; links are resolved first). */
    import_roots: z.array(z.string().startsWith("/", "must be an absolute path")).default(["/"]),
    /** Over-commit rules and hold time of bids; every key optional. */
    bidding: BiddingSchema.prefault({}),
    /** This node's labels. */
    node: NodeSchema.prefault({}),
    /** Cluster membership (registering with an aggregator). */
    cluster: ClusterSchema.prefault({}),
    /** [auth] policy: the authorization policy file (TOML; see server/src/policy.ts). Unset: built-in defaults. */
    /**
     * [auth] policy: the authorization policy file; trust_domain: the SPIFFE trust domain (the
     * cluster name) client certificates must name; default: the one of the [tcp] node certificate.
     */
    auth: z
      .object({
        policy: z.string().min(1).optional(),
        trust_domain: z
          .string()
          .regex(/^[a-z0-9._-]{1,255}$/, "must be a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')")
          .optional(),
      })
      .strict()
      .prefault({}),
    /** [unix] mtls = true: callers on the socket must also present a client certificate (the [tcp] TLS material is used). */
    unix: z
      .object({ mtls: z.boolean().default(false) })
      .strict()
      .prefault({}),
    /** How tenants are confined on this host (uids, kernels, bridges, image URLs). */
    tenancy: TenancySchema.prefault({}),
    /** How long a client may take to send a whole request (a slow or stalled client is cut off). */
    request_body_timeout_ms: z.number().int().min(100).max(600_000).default(30_000),
    /** Most streams one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
    max_streams_per_connection: z.number().int().min(1).max(10_000).default(128),
  })
  .strict()
  .superRefine((config, ctx) => {
    const names = config.pools.map((p) => p.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice) ctx.addIssue({ code: "custom", path: ["pools"], message: `pool name ${twice} is used twice` });
    if (config.pools.filter((p) => p.default).length > 1)
      ctx.addIssue({ code: "custom", path: ["pools"], message: "more than one pool has default = true" });
    if (config.metrics?.tls && !config.tcp)
      ctx.addIssue({
        code: "custom",
        path: ["metrics", "tls"],
        message:
          "tls = true serves the metrics with the [tcp] certificate, key and client CA, and there is no [tcp]: configure it, or give [metrics] cert, key and client_ca",
      });
    for (const p of config.pools) {
      if (p.driver === "dir" && !p.location.startsWith("/"))
        ctx.addIssue({ code: "custom", path: ["pools", p.name, "location"], message: "a dir pool's location must be an absolute path" });
      if (p.driver === "zfs" && !/^[A-Za-z0-9][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)*$/.test(p.location))
        ctx.addIssue({
          code: "custom",
          path: ["pools", p.name, "location"],
          message: "a zfs pool's location must be a dataset name such as tank/aether",
        });
      if (p.driver === "lvm-thin" && !/^[A-Za-z0-9+_.-]+\/[A-Za-z0-9+_.-]+$/.test(p.location))
        ctx.addIssue({ code: "custom", path: ["pools", p.name, "location"], message: "an lvm-thin pool's location must be vg/thinpool" });
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
  cgroupRoot?: string;
  kvmProbeTimeoutMs?: number;
  policy?: string;
  trustDomain?: string;
  unixMtls?: boolean;
  metricsListen?: string;
}

export { ConfigError } from "@aether/server";

export function loadConfig(flags: ConfigFlags): Config {
  const file: Record<string, unknown> = flags.config === undefined ? {} : readToml(flags.config);
  const fileTcp = (file.tcp ?? {}) as Record<string, unknown>;
  const tcp = {
    ...fileTcp,
    ...(flags.listen !== undefined && { listen: flags.listen }),
    ...(flags.tlsCert !== undefined && { cert: flags.tlsCert }),
    ...(flags.tlsKey !== undefined && { key: flags.tlsKey }),
    ...(flags.tlsClientCa !== undefined && { client_ca: flags.tlsClientCa }),
  };
  const merged = {
    socket: defaultSocketPath(),
    state_dir: defaultStateDir(),
    log_level: "info",
    max_message_bytes: 4 * 1024 * 1024,
    cgroup_root: "aether",
    kvm_probe_timeout_ms: 10_000,
    ...file,
    ...(flags.socket !== undefined && { socket: flags.socket }),
    ...(flags.stateDir !== undefined && { state_dir: flags.stateDir }),
    ...(flags.logLevel !== undefined && { log_level: flags.logLevel }),
    ...(flags.cgroupRoot !== undefined && { cgroup_root: flags.cgroupRoot }),
    ...(flags.kvmProbeTimeoutMs !== undefined && { kvm_probe_timeout_ms: flags.kvmProbeTimeoutMs }),
    tcp: Object.keys(tcp).length > 0 ? tcp : undefined,
    ...(flags.metricsListen !== undefined && {
      metrics: { ...((file.metrics ?? {}) as Record<string, unknown>), listen: flags.metricsListen },
    }),
    ...(flags.unixMtls !== undefined && { unix: { ...((file.unix ?? {}) as Record<string, unknown>), mtls: flags.unixMtls } }),
    auth: {
      ...((file.auth ?? {}) as Record<string, unknown>),
      ...(flags.policy !== undefined && { policy: flags.policy }),
      ...(flags.trustDomain !== undefined && { trust_domain: flags.trustDomain }),
    },
  };
  const config = parseConfig(ConfigSchema, merged, (where) =>
    where.startsWith("tcp") ? " (TCP needs listen, cert, key and client_ca together: clients must present a certificate)" : "",
  );
  config.socket = resolve(config.socket);
  config.state_dir = resolve(config.state_dir);
  if (config.auth.policy) config.auth.policy = resolve(config.auth.policy);
  return config;
}
