#!/usr/bin/env node
// aether-aggregator: the cluster's node registry and placement auctions. Parses flags and the TOML
// config, opens the store (embedded by default, etcd for several replicas), serves at once (a
// standby answers UNAVAILABLE naming the leader) and campaigns for leadership; on SIGTERM it stops
// accepting, lets calls under way finish, resigns (so a standby takes over at once) and exits 0.
import { Command, InvalidArgumentError } from "commander";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { ConfigError, loadConfig, readBmcEntries, type Config, type ConfigFlags } from "./config.js";
import { BmcRegistry, RedfishFencer, describeBmc, type Fencer } from "./fencing/fencing.js";
import {
  Authorizer,
  certificateTrustDomain,
  createLogger,
  listen,
  ListenError,
  lockStateDir,
  methodsOf,
  outgoingTls,
  RuntimeLogLevel,
  serveMetrics,
  StateLockError,
  type MetricsEndpoint,
} from "@aether/server";
import { Registry } from "prom-client";
import { aggregatorMetrics, countStoreErrors } from "./metrics/metrics.js";
import { AggregatorService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { Aggregator } from "./aggregator.js";
import type { BackupSettings } from "./backup/backup.js";
import { configDocuments } from "./backup/documents.js";
import { aggregatorRoutes } from "./service/service.js";
import { EmbeddedStore } from "./store/embedded-store.js";
import { StoreUnavailableError, type ClusterStore } from "./store/store.js";

const packageJson = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "package.json"), "utf8")) as {
  version: string;
};
export const VERSION = packageJson.version;

async function openStore(config: Config): Promise<ClusterStore> {
  if (config.store === "embedded") return EmbeddedStore.open(config.state_dir);
  // Loaded on demand, so that the embedded configuration never loads the etcd client.
  const { EtcdStore } = await import("./store/etcd-store.js");
  const read = (file: string | undefined, flag: string) => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(`cannot read ${flag} ${file}: ${(err as Error).message}`);
    }
  };
  const tls = config.etcd_tls;
  return new EtcdStore(config.etcd_endpoints, {
    prefix: config.etcd_prefix,
    tls: {
      ...(tls.ca !== undefined && { ca: read(tls.ca, "--etcd-ca (etcd_tls.ca)") }),
      ...(tls.cert !== undefined && { cert: read(tls.cert, "--etcd-cert (etcd_tls.cert)") }),
      ...(tls.key !== undefined && { key: read(tls.key, "--etcd-key (etcd_tls.key)") }),
    },
  });
}

/** The fencer on the configured BMCs (undefined when none is configured); passwords are read here. */
async function fencerFor(config: Config, log: Logger): Promise<Fencer | undefined> {
  const entries = readBmcEntries(config);
  if (entries.length === 0) {
    log.info(
      "no BMC is configured ([[bmcs]] / --bmcs): a silent node is only suspected and alerted on, never fenced, and its workloads stay where they are",
    );
    return undefined;
  }
  let bmcs: BmcRegistry;
  try {
    bmcs = new BmcRegistry(entries);
  } catch (err) {
    throw new ConfigError(`invalid configuration: bmcs: ${(err as Error).message}`);
  }
  // Loaded only when BMCs are configured.
  const { RedfishClient } = await import("@aether/fence");
  const redfishLog = log.child({ room: "redfish" });
  for (const e of entries) log.info({ bmc: describeBmc(e) }, "BMC registered for fencing");
  return new RedfishFencer(bmcs, (target) => new RedfishClient(target, { log: redfishLog }));
}

/** [backup] as the backup room takes it, with the configuration documents (no secrets) committed beside the records. */
function backupSettings(config: Config): BackupSettings {
  const b = config.backup as NonNullable<Config["backup"]>;
  try {
    execFileSync("git", ["--version"], { stdio: "ignore" });
  } catch {
    throw new ConfigError(
      `[backup] repository ${b.repository} needs the git binary, which is not installed: apt-get install git (scripts/setup-host.sh does), or leave [backup] out.`,
    );
  }
  let policy: string | undefined;
  if (config.policy !== undefined) {
    try {
      policy = readFileSync(config.policy, "utf8");
    } catch (err) {
      throw new ConfigError(`cannot read the policy ${config.policy}: ${(err as Error).message}`);
    }
  }
  return {
    repository: b.repository,
    ...(b.remote !== "" && { remote: b.remote }),
    batchMs: b.batch_ms,
    intervalMs: b.interval_ms,
    documents: configDocuments(config.bmcs, policy),
  };
}

function advertised(config: Config, tcpAddress: string | undefined): string {
  if (config.advertise !== "") return config.advertise;
  if (config.tcp && tcpAddress !== undefined) return `${config.tcp.cert !== undefined ? "https" : "http"}://${tcpAddress}`;
  return `unix://${config.socket}`;
}

/**
 * The trust domain the nodes' certificates must be in: trust_domain, else the one the aggregator's
 * own outgoing certificate names; unset (any domain, the node name still checked) without either.
 */
function nodeTrustDomain(config: Config): string | undefined {
  if (config.trust_domain !== undefined) return config.trust_domain;
  const cert = config.node_tls.cert ?? config.tcp?.cert;
  return cert === undefined ? undefined : certificateTrustDomain(cert);
}

async function run(flags: ConfigFlags): Promise<void> {
  const config = loadConfig(flags);
  const backup = config.backup ? backupSettings(config) : undefined;
  await mkdir(config.state_dir, { recursive: true, mode: 0o700 });
  lockStateDir(config.state_dir, "aether-aggregator");
  const log = createLogger(config.log_level, join(config.state_dir, "aggregator.log"), "aether-aggregator");
  const logLevel = new RuntimeLogLevel(log, config.log_level);
  const fencer = await fencerFor(config, log);
  // Prometheus metrics when metrics_listen is set: the store's failures are counted on the way.
  const metrics = config.metrics_listen === undefined ? undefined : new Registry();
  const opened = await openStore(config);
  const store = metrics ? countStoreErrors(opened, metrics) : opened;
  const aggregator = new Aggregator({
    store,
    replica: config.replica,
    auctionWindowMs: config.auction_window_ms,
    leaseTtlMs: config.lease_ttl_ms,
    provisionTimeoutMs: config.provision_timeout_ms,
    eventRetention: config.event_retention,
    // Its identity on calls to the nodes: --node-tls-*, else its own listener's certificate and client CA.
    nodeTls: outgoingTls(
      { names: { ca: "--node-tls-ca", cert: "--node-tls-cert", key: "--node-tls-key" }, ...config.node_tls },
      { names: { ca: "--tls-client-ca", cert: "--tls-cert", key: "--tls-key" }, ...config.tcp, ca: config.tcp?.client_ca },
    ).tls,
    nodeTrustDomain: nodeTrustDomain(config),
    ...(fencer && { fencer }),
    fenceTimeoutMs: config.fence_timeout_ms,
    fencePollIntervalMs: config.fence_poll_interval_ms,
    fenceRetryMs: config.fence_retry_ms,
    ...(backup && { backup }),
    alertThresholds: config.alerts,
    log,
  });
  // Who may call what: the same policy file format, roles and tenant scoping as aetherd.
  let authorizer: Authorizer;
  try {
    authorizer = new Authorizer(
      config.policy === undefined ? undefined : resolve(config.policy),
      methodsOf([AggregatorService, NodeService]),
      log.child({ room: "authz" }),
    );
  } catch (err) {
    await store.close();
    throw new ConfigError((err as Error).message);
  }
  authorizer.watch();
  process.on("SIGHUP", () => authorizer.reload());
  if (metrics) aggregatorMetrics(aggregator.observed(), metrics);
  let listeners;
  let metricsEndpoint: MetricsEndpoint | undefined;
  try {
    if (metrics && config.metrics_listen !== undefined)
      metricsEndpoint = await serveMetrics(
        {
          listen: config.metrics_listen,
          ...(config.metrics_tls && config.tcp && { cert: config.tcp.cert, key: config.tcp.key, client_ca: config.tcp.client_ca }),
          program: "aether-aggregator",
          setting: "--metrics-listen (metrics_listen)",
          tlsSetting: "--metrics-tls (metrics_tls = true, with --tls-cert, --tls-key and --tls-client-ca)",
        },
        metrics,
        log,
      );
    listeners = await listen(
      {
        program: "aether-aggregator",
        socket: config.socket,
        maxMessageBytes: config.max_message_bytes,
        ...(config.tcp && { tcp: config.tcp }),
        allowPlainLoopback: true,
        ...(config.trust_domain !== undefined && { trustDomain: config.trust_domain }),
        trustDomainSetting: "trust_domain",
        ...(metrics && { metrics }),
      },
      aggregatorRoutes(aggregator, logLevel),
      log,
      [authorizer.interceptor()],
    );
  } catch (err) {
    await metricsEndpoint?.close();
    await store.close();
    throw err;
  }
  // The TCP port may have been 0 (any free port): advertise the one bound.
  aggregator.setAdvertise(advertised(config, listeners.tcpAddress));
  aggregator.start();
  log.info(
    {
      version: VERSION,
      replica: config.replica,
      store: store.description,
      socket: config.socket,
      listen: listeners.tcpAddress,
      windowMs: config.auction_window_ms,
      leaseTtlMs: config.lease_ttl_ms,
      pid: process.pid,
    },
    "aether-aggregator ready",
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down: finishing calls under way, then resigning leadership");
    const deadline = setTimeout(() => process.exit(0), 10_000);
    deadline.unref();
    void (async () => {
      aggregator.endStreams();
      authorizer.close();
      logLevel.close();
      await listeners.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, "closing the listeners failed"));
      await metricsEndpoint?.close();
      await aggregator.stop();
      await store.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, "closing the store failed"));
      log.flush();
      process.exit(0);
    })();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

const integer = (flag: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${flag} takes a whole number, not ${JSON.stringify(value)}.`);
  return n;
};

const program = new Command("aether-aggregator")
  .description("The Aether aggregator: the cluster's node registry and reverse-bid placement auctions.")
  .version(VERSION)
  .option(
    "-c, --config <file>",
    "TOML config file (keys: socket, state_dir, log_level, max_message_bytes, store, etcd_endpoints, etcd_prefix, [etcd_tls] ca/cert/key, auction_window_ms, lease_ttl_ms, provision_timeout_ms, event_retention, replica, advertise, [tcp] listen/cert/key/client_ca, metrics_listen, metrics_tls, [node_tls] ca/cert/key, fence_timeout_ms, fence_poll_interval_ms, fence_retry_ms, [[bmcs]] node|slot/chassis/rack, endpoint, username, password_file, ca_file|insecure, profile, [backup] repository/remote/batch_ms/interval_ms, [alerts] <threshold> = <value>)",
  )
  .option("--socket <path>", "unix socket to serve on (default /run/aether/aggregator.sock as root)")
  .option("--state-dir <dir>", "where the embedded store and the log are kept (default /var/lib/aether-aggregator as root)")
  .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent")
  .option("--listen <host:port>", "also serve on TCP: mutual TLS with the three --tls-* files, else plain HTTP/2 on loopback only")
  .option("--tls-cert <file>", "server certificate (PEM)")
  .option("--tls-key <file>", "server private key (PEM)")
  .option("--tls-client-ca <file>", "CA that client certificates must chain to (PEM)")
  .option("--metrics-listen <host:port>", "serve Prometheus metrics on GET /metrics at this address (loopback unless --metrics-tls)")
  .option("--metrics-tls", "serve the metrics with mutual TLS, with the --tls-cert, --tls-key and --tls-client-ca")
  .option("--store <kind>", "embedded (one replica, in --state-dir) or etcd (several replicas, one leader)")
  .option("--etcd-endpoints <urls>", "comma-separated etcd endpoints, e.g. http://127.0.0.1:2379")
  .option("--etcd-prefix <prefix>", "key prefix in etcd (default /aether/aggregator/)")
  .option("--etcd-ca <file>", "CA certificate etcd's serving certificate chains to (https:// endpoints)")
  .option("--etcd-cert <file>", "client certificate to present to etcd (etcd --client-cert-auth)")
  .option("--etcd-key <file>", "private key of --etcd-cert")
  .option("--auction-window-ms <ms>", "how long an auction waits for bids (default 250)", integer("--auction-window-ms"))
  .option(
    "--lease-ttl-ms <ms>",
    "node lease length, the deadman timeout: a node silent this long is suspect and fenced; nodes heartbeat every third of it (default 15000)",
    integer("--lease-ttl-ms"),
  )
  .option("--provision-timeout-ms <ms>", "how long a winner may take to provision (default 60000)", integer("--provision-timeout-ms"))
  .option("--event-retention <n>", "cluster events kept for replay (default 10000)", integer("--event-retention"))
  .option("--replica <name>", "this replica's name in the election (default hostname-pid)")
  .option("--advertise <address>", "address clients reach this replica at, named by standbys (default: the TCP address, else the socket)")
  .option(
    "--policy <file>",
    "authorization policy (TOML, aetherd's format): roles and allow/deny rules; tenants see only their own placements, auctions and events",
  )
  .option("--trust-domain <name>", "SPIFFE trust domain (cluster name) client certificates must name (default: the one in --tls-cert)")
  .option("--node-tls-ca <file>", "CA of the nodes' certificates, for https:// node addresses")
  .option("--node-tls-cert <file>", "client certificate presented to nodes")
  .option("--node-tls-key <file>", "its private key")
  .option(
    "--bmcs <file>",
    "TOML file of [[bmcs]] entries: the BMC that fences each node (by node name or slot) and its login (password_file)",
  )
  .option("--fence-timeout-ms <ms>", "longest time from a fence request to power state Off (default 60000)", integer("--fence-timeout-ms"))
  .option(
    "--fence-poll-interval-ms <ms>",
    "time between power state reads while fencing (default 500)",
    integer("--fence-poll-interval-ms"),
  )
  .option(
    "--fence-retry-ms <ms>",
    "first wait before fencing again after an unconfirmed fence; doubles up to 5 min (default 10000)",
    integer("--fence-retry-ms"),
  )
  .option(
    "--backup-repository <dir>",
    "back the cluster's state up to this bare git repository (created when missing), e.g. /var/lib/aether-aggregator/backup.git",
  )
  .option("--backup-remote <url>", "push every backup to this git remote (a path or URL)")
  .option("--backup-batch-ms <ms>", "at most one backup commit per this long after changes (default 10000)", integer("--backup-batch-ms"))
  .option(
    "--backup-interval-ms <ms>",
    "a backup commit (when anything changed) and a push retry at least this often (default 300000)",
    integer("--backup-interval-ms"),
  )
  .addHelpText(
    "after",
    `
Examples:
  aether-aggregator                                       one replica, state in /var/lib/aether-aggregator
  aether-aggregator --socket /tmp/agg.sock --state-dir /tmp/agg --auction-window-ms 100
  aether-aggregator --listen 127.0.0.1:7450 --lease-ttl-ms 5000
  aether-aggregator --bmcs /etc/aether/bmcs.toml            fence silent nodes through their BMCs
  aether-aggregator --backup-repository /var/lib/aether-aggregator/backup.git --backup-remote git@backup:aether.git
  aether-aggregator --store etcd --etcd-endpoints http://10.0.0.2:2379,http://10.0.0.3:2379 --replica agg-1 \\
      --listen 10.0.0.5:7450 --tls-cert agg.pem --tls-key agg.key --tls-client-ca ca.pem
  aether-aggregator --store etcd --etcd-endpoints https://10.0.0.2:2379 --etcd-ca etcd-ca.pem \\
      --etcd-cert agg.pem --etcd-key agg.key --replica agg-2 ...   etcd over mutual TLS
  aether cluster --aggregator unix:///tmp/agg.sock nodes`,
  )
  .action(async (opts: ConfigFlags) => {
    try {
      await run(opts);
    } catch (err) {
      if (
        err instanceof ConfigError ||
        err instanceof ListenError ||
        err instanceof StoreUnavailableError ||
        err instanceof StateLockError
      ) {
        process.stderr.write(`aether-aggregator: ${err.message}\n`);
        process.exit(2);
      }
      process.stderr.write(`aether-aggregator: could not start: ${(err as Error).message}\n`);
      process.exit(1);
    }
  });

await program.parseAsync();
