#!/usr/bin/env node
// aetherd: the daemon on every host. Parses flags, loads state, serves every service, shuts down
// gracefully on SIGTERM (leaving the processes it runs alive, to be re-adopted on the next start).
//
// It is past 400 lines because it is aetherd's one composition root: every room is constructed and
// wired here, and nowhere else, so reading this file shows how the daemon is put together.
import { Command } from "commander";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { arch, hostname } from "node:os";
import { mkdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { ObserveService } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { TrafficService } from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { VmMigrationService, VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { ReplicaReceiverService, ReplicationService, StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { FenceService } from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import { AggregatorService, BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ServerReflection } from "@aether/sdk/gen/grpc/reflection/v1/reflection_pb";
import { ConfigError, loadConfig, type ConfigFlags } from "./config.js";
import {
  Authorizer,
  createLogger,
  describeError,
  listen,
  ListenError,
  lockStateDir,
  methodsOf,
  outgoingTls,
  PolicyError,
  RuntimeLogLevel,
  StateLockError,
  timestamp,
  writeFileAtomic,
} from "@aether/server";
import { unimplementedService } from "./api/unimplemented.js";
import { EventBus } from "./observe/event-bus.js";
import { observeService } from "./observe/service.js";
import { nodeService } from "./node/service.js";
import { reflectionService } from "./reflection/service.js";
import { probeHost } from "./node/probe.js";
import { executableService } from "./runtime/service.js";
import { ensureShim } from "./runtime/shim.js";
import { Supervisor } from "./runtime/supervisor.js";
import { detectProcessTrees } from "./runtime/process-tree.js";
import { TenantIds } from "./runtime/tenant-ids.js";
import { detectCellsBackend } from "./cells/detect.js";
import { CellRegistry } from "./cells/registry.js";
import { cellService } from "./cells/service.js";
import { explainOomKill } from "./cells/oom.js";
import { VmManager } from "./vm/manager.js";
import { QemuHypervisor } from "./vm/qemu.js";
import { FirecrackerHypervisor } from "./vm/firecracker.js";
import { vmService } from "./vm/service.js";
import { vmLifecycleRpcs } from "./vm/lifecycle-service.js";
import { autostartVms } from "./vm/autostart.js";
import { IncomingMigrations } from "./migration/incoming.js";
import { OutgoingMigrations } from "./migration/outgoing.js";
import { MigrationRecovery } from "./migration/recovery.js";
import { MigrationReports, reportThrough } from "./migration/reports.js";
import { migrationRpcs, vmMigrationService } from "./migration/service.js";
import { createPools } from "./storage/pools.js";
import { StorageRegistry } from "./storage/registry.js";
import { storageService } from "./storage/service.js";
import { ZfsPool } from "./storage/zfs-pool.js";
import { ReplicationPolicies } from "./replication/policies.js";
import { Replicas } from "./replication/replicas.js";
import { vmRestorer } from "./replication/restore.js";
import { qcow2ReplicaStore } from "./replication/qcow2-replicas.js";
import { zfsReplicaStore } from "./replication/zfs-driver.js";
import { DirPool } from "./storage/dir-pool.js";
import { replicaReceiverService, replicationService } from "./replication/service.js";
import { BmcRegistry } from "./fence/registry.js";
import { fenceService } from "./fence/service.js";
import { Endpoints } from "./traffic/endpoints.js";
import { HaproxyDriver } from "./traffic/haproxy-driver.js";
import { trafficService } from "./traffic/service.js";
import { KvmCheck } from "./auction/capacity.js";
import { Bidding, bidService } from "./auction/service.js";
import { Membership } from "./auction/membership.js";
import { readHeartbeatTelemetry } from "./auction/heartbeat-telemetry.js";
import { AuditLog } from "./observe/audit.js";
import { openMetrics } from "./observe/metrics.js";

const packageJson = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "package.json"), "utf8")) as {
  version: string;
};
export const VERSION = packageJson.version;

async function nodeId(stateDir: string): Promise<string> {
  const file = join(stateDir, "node-id");
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    const id = randomUUID();
    await writeFileAtomic(file, `${id}\n`);
    return id;
  }
}

async function run(flags: ConfigFlags): Promise<void> {
  const config = loadConfig(flags);
  await mkdir(config.state_dir, { recursive: true, mode: 0o700 });
  // Before anything in the state directory is read or written: one aetherd per state directory.
  lockStateDir(config.state_dir, "aetherd");
  const daemonLogPath = join(config.state_dir, "aetherd.log");
  const log = createLogger(config.log_level, daemonLogPath, "aetherd");
  const logLevel = new RuntimeLogLevel(log, config.log_level);
  const startTimeMs = Date.now();

  const events = new EventBus();
  const shimPath = await ensureShim(join(config.state_dir, "bin"));
  const cellsChoice = detectCellsBackend(config.cgroup_root);
  // Each executable's whole process tree in a cgroup of its own (see runtime/process-tree.ts).
  const treesFor = (name: string) => {
    const choice = detectProcessTrees(config.cgroup_root, name, cellsChoice.backend?.version);
    if (!choice.trees) log.warn({ reason: choice.reason }, "executables are tracked by their process group only");
    return choice.trees;
  };
  const supervisor = new Supervisor(config.state_dir, shimPath, log.child({ room: "runtime" }), events, treesFor("executables"));
  await supervisor.load();
  const tenantIds = new TenantIds(config.state_dir, config.tenancy.id_base, config.tenancy.ids_per_tenant);
  tenantIds.load();
  const cells = new CellRegistry(
    config.state_dir,
    cellsChoice.backend,
    cellsChoice.reason,
    shimPath,
    supervisor,
    log.child({ room: "cells" }),
    events,
  );
  await cells.load();
  supervisor.explainExit = (spec, exit) => explainOomKill(cells, spec, exit);
  const configured = createPools(config.pools, config.state_dir);
  const storage = new StorageRegistry(
    config.state_dir,
    configured.pools,
    configured.defaultPool,
    config.import_roots,
    log.child({ room: "storage" }),
  );
  await storage.load();
  const fences = new BmcRegistry(config.state_dir, log.child({ room: "fence" }), events);
  await fences.load();
  // The VMs' hypervisor processes have a supervisor of their own: they are not user executables.
  const vmProcesses = new Supervisor(
    join(config.state_dir, "vms"),
    shimPath,
    log.child({ room: "vm-processes" }),
    events,
    treesFor("vm-processes"),
  );
  await vmProcesses.load();
  const hypervisors = { qemu: await QemuHypervisor.find(), firecracker: await FirecrackerHypervisor.find() };
  const vms = new VmManager(
    { stateDir: config.state_dir, runtimeDir: dirname(config.socket), kvmProbeTimeoutMs: config.kvm_probe_timeout_ms },
    vmProcesses,
    hypervisors,
    cells,
    storage,
    events,
    log.child({ room: "vm" }),
  );
  await vms.load();
  const probe = await probeHost();
  let markShutdown: () => void = () => {};
  const shutdown = new Promise<void>((resolve) => (markShutdown = resolve));

  const nodeIdValue = await nodeId(config.state_dir);
  const audit = new AuditLog(config.state_dir);
  // Live migration: this node's identity on calls to the target is its cluster identity.
  const clusterIdentity = outgoingTls(
    {
      names: { ca: "[cluster] ca", cert: "[cluster] cert", key: "[cluster] key" },
      ca: config.cluster.ca,
      cert: config.cluster.cert,
      key: config.cluster.key,
    },
    { names: { ca: "[tcp] client_ca", cert: "[tcp] cert", key: "[tcp] key" }, ...config.tcp, ca: config.tcp?.client_ca },
  );
  const migrationHooks = vms.migrationHooks();
  const ownAddresses = [`unix://${config.socket}`, ...(config.tcp ? [`https://${config.tcp.listen}`] : [])];
  // A finished incoming migration is reported to the aggregator (in a cluster) over membership's connection.
  let membershipRef: Membership | undefined;
  const migrationReports = new MigrationReports({
    dir: join(config.state_dir, "migration-reports"),
    hooks: migrationHooks,
    send: config.cluster.aggregator ? reportThrough(() => membershipRef, nodeIdValue) : undefined,
    log: log.child({ room: "migration" }),
  });
  const outgoing = new OutgoingMigrations({
    hooks: migrationHooks,
    storage,
    identity: clusterIdentity,
    tlsDir: join(config.state_dir, "migration-tls"),
    events,
    nodeName: config.cluster.name ?? `${hostname()} (${ownAddresses.at(-1)})`,
    nodeId: nodeIdValue,
    // Off unless asked for (the auto-converge test, which accepts either honest end: the guest confirmed
    // on the target, or, broken by TCG's live copy, removed there and resumed here): see outgoing.ts.
    tcgLiveCopy: process.env.AETHER_UNSAFE_TCG_LIVE_COPY === "1",
    log: log.child({ room: "migration" }),
  });
  // The target's QEMU listens for NBD and the memory stream on the host of its TCP listener (else loopback).
  const tcpHost = config.tcp?.listen.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  const incoming = new IncomingMigrations({
    hooks: migrationHooks,
    storage,
    listenHost: tcpHost === undefined || tcpHost === "0.0.0.0" || tcpHost === "::" ? "127.0.0.1" : tcpHost,
    identity: clusterIdentity,
    tlsDir: join(config.state_dir, "migration-tls"),
    reports: migrationReports,
    tenancy: config.tenancy,
    log: log.child({ room: "migration" }),
  });
  const migrationRecovery = new MigrationRecovery({
    hooks: migrationHooks,
    storage,
    connectTarget: (address) => outgoing.connectTarget(address),
    reports: migrationReports,
    log: log.child({ room: "migration" }),
  });
  outgoing.inDoubt = (vm) => migrationRecovery.later(vm);
  // Replication: the replicas this node holds for others (those of ZFS volumes in its default pool if
  // that is ZFS, else its first ZFS pool; those of qcow2 volumes likewise in a dir pool), and its own
  // policies, whose runs start as soon as they are due.
  const vmControl = vms.lifecycleHooks();
  const allPools = [...configured.pools.values()].map((p) => p.pool);
  const preferDefault = <T extends { name: string }>(pools: T[]) => pools.find((p) => p.name === configured.defaultPool) ?? pools[0];
  const zfsPools = allPools.filter((p): p is ZfsPool => p instanceof ZfsPool);
  const dirPools = allPools.filter((p): p is DirPool => p instanceof DirPool);
  const zfsStore = preferDefault(zfsPools);
  const dirStore = preferDefault(dirPools);
  const replicas = new Replicas({
    stateDir: config.state_dir,
    storage,
    stores: {
      ...(zfsStore ? { zfs: zfsReplicaStore(zfsStore) } : {}),
      ...(dirStore ? { qcow2: qcow2ReplicaStore(dirStore) } : {}),
    },
    log: log.child({ room: "replication" }),
  });
  await replicas.load();
  const replication = new ReplicationPolicies({
    stateDir: config.state_dir,
    storage,
    pools: configured.pools,
    vms,
    identity: clusterIdentity,
    qmpOf: (volumeId) => {
      const vm = vms.list().find((v) => v.runtime.state === "running" && v.spec.disks.some((d) => d.volumeId === volumeId));
      return vm && vmControl.qmp(vm);
    },
    // The name the aggregator knows this node by: it matches a replica to the node it came from.
    nodeName: config.cluster.name ?? hostname(),
    events,
    log: log.child({ room: "replication" }),
  });
  await replication.load();
  // Service endpoints: one HAProxy each, adopted as they run (they outlive an aetherd restart).
  const endpoints = new Endpoints({ stateDir: config.state_dir, driver: new HaproxyDriver(), events, log: log.child({ room: "traffic" }) });
  await endpoints.load();
  // One instance of each handler: the RPCs and the auction's provisioning share them.
  const handlers = {
    runtime: executableService(supervisor, (cell, tenant) => cells.placement(cell, tenant), tenantIds),
    cells: cellService(cells),
    // A VM workload's image, imported on the winner that lacks it (auction/image-fetch.ts).
    storage: storageService(storage, config.tenancy),
    vm: {
      ...vmService(
        vms,
        config.tenancy,
        migrationRpcs(outgoing, (ref, tenant) => vms.resolve(ref, tenant), ownAddresses),
      ),
      ...vmLifecycleRpcs(vms, storage, config.tenancy),
    },
  };
  const bidding = new Bidding({
    nodeId: nodeIdValue,
    nodeLabels: { ...config.node.labels, "aether.io/hostname": hostname(), "aether.io/arch": arch() },
    rules: {
      memoryOvercommit: config.bidding.memory_overcommit,
      cpuOvercommit: config.bidding.cpu_overcommit,
      holdMs: config.bidding.hold_ms,
    },
    stateDir: config.state_dir,
    supervisor,
    cells,
    cellsReason: cellsChoice.reason,
    vms,
    storage,
    defaultPool: configured.defaultPool,
    kvm: new KvmCheck(hypervisors.qemu?.path, config.kvm_probe_timeout_ms),
    hypervisors: { qemu: hypervisors.qemu !== undefined, firecracker: hypervisors.firecracker !== undefined },
    handlers,
    log: log.child({ room: "auction" }),
    restoreVm: vmRestorer(replicas, storage, events, log.child({ room: "replication" })),
  });
  await bidding.load();
  const implemented = [
    ExecutableService,
    ObserveService,
    NodeService,
    CellService,
    VmService,
    VmMigrationService,
    StorageService,
    ReplicationService,
    ReplicaReceiverService,
    BidService,
    TrafficService,
  ];
  const routes = (router: ConnectRouter) => {
    router.service(ExecutableService, handlers.runtime);
    router.service(CellService, handlers.cells);
    router.service(
      ObserveService,
      observeService({
        supervisor,
        events,
        daemonLogPath,
        shutdown,
        memoryCommittedBytes: () => bidding.committed().memoryBytes,
        audit,
        vmConsole: (target, tenant) => {
          const vm = vms.resolve(target, tenant);
          return { path: vms.filesOf(vm).consoleLog, ended: vms.ended(vm) };
        },
      }),
    );
    router.service(
      NodeService,
      nodeService({
        nodeId: nodeIdValue,
        version: VERSION,
        stateDir: config.state_dir,
        startTimeMs,
        supervisor,
        probe,
        cells: { version: cells.backendVersion, reason: cellsChoice.reason },
        logLevel,
        health: {
          shimPath,
          spawnerWaitingMs: () => supervisor.spawnerWaitingMs(),
          cellsRoot: () => cells.root(),
          pools: async () =>
            (await storage.listPools()).map((p) => ({ name: p.pool.name, available: p.status.available, reason: p.status.reason })),
          vms: { list: () => vms.list(), qmp: (vm) => migrationHooks.qmp(vm), pidOf: (vm) => vms.pidOf(vm) },
        },
      }),
    );
    router.service(VmService, handlers.vm);
    router.service(VmMigrationService, vmMigrationService(incoming));
    router.service(StorageService, storageService(storage, config.tenancy));
    router.service(ReplicationService, replicationService(replication, replicas, ownAddresses));
    router.service(ReplicaReceiverService, replicaReceiverService(replicas));
    router.service(FenceService, fenceService(fences));
    router.service(BidService, bidService(bidding));
    router.service(TrafficService, trafficService(endpoints));
    router.service(
      AggregatorService,
      unimplementedService(AggregatorService, "this service is served by aether-aggregator, not by aetherd."),
    );
    router.service(ServerReflection, reflectionService([...implemented, FenceService, AggregatorService]));
  };
  // Every method aetherd serves, so a policy rule naming none is refused as a typo.
  const authorizer = new Authorizer(
    config.auth.policy,
    methodsOf([...implemented, FenceService, AggregatorService, ServerReflection]),
    log.child({ room: "authz" }),
  );
  authorizer.watch();
  log.info({ policy: authorizer.source }, "authorization policy loaded");
  // Prometheus metrics on a listener of their own, when [metrics] listen is set.
  const metrics = await openMetrics(config, {
    supervisor,
    cells,
    vms: { list: () => vms.list(), pidOf: (vm) => vms.pidOf(vm), qmp: (vm) => migrationHooks.qmp(vm) },
    storage,
    bidding,
    log: log.child({ room: "metrics" }),
  });
  // Audit first, so a refused call is recorded too; then the policy.
  const listeners = await listen(
    {
      program: "aetherd",
      socket: config.socket,
      unixMtls: config.unix.mtls,
      ...(config.tcp && { tcp: config.tcp }),
      maxMessageBytes: config.max_message_bytes,
      maxStreamsPerConnection: config.max_streams_per_connection,
      requestBodyTimeoutMs: config.request_body_timeout_ms,
      ...(config.auth.trust_domain !== undefined && { trustDomain: config.auth.trust_domain }),
      trustDomainSetting: "[auth] trust_domain",
      ...(metrics && { metrics: metrics.registry }),
    },
    routes,
    log,
    [audit.interceptor(), authorizer.interceptor()],
  );
  const nodeLabels = { ...config.node.labels, "aether.io/hostname": hostname(), "aether.io/arch": arch() };
  const membership = config.cluster.aggregator
    ? new Membership(
        {
          aggregators: config.cluster.aggregator,
          identity: outgoingTls(
            {
              names: { ca: "[cluster] ca", cert: "[cluster] cert", key: "[cluster] key" },
              ca: config.cluster.ca,
              cert: config.cluster.cert,
              key: config.cluster.key,
            },
            { names: { ca: "[tcp] client_ca", cert: "[tcp] cert", key: "[tcp] key" }, ...config.tcp, ca: config.tcp?.client_ca },
          ),
          advertise: config.cluster.advertise ?? `unix://${config.socket}`,
          nodeId: nodeIdValue,
          name: config.cluster.name ?? hostname(),
          labels: nodeLabels,
          position: { rack: config.cluster.rack, chassis: config.cluster.chassis, slot: config.cluster.slot },
          capabilities: {
            kvm: false,
            qemu: hypervisors.qemu !== undefined,
            firecracker: hypervisors.firecracker !== undefined,
            zfs: probe.zfs.available,
            cgroupV2: cells.backendVersion === "v2",
            pools: [...configured.pools.keys()],
            version: VERSION,
          },
          telemetry: async () => {
            const lag = replication.worstLag();
            return {
              ...(await readHeartbeatTelemetry(() => bidding.committed().memoryBytes)),
              replicationLagRpoRatio: lag?.ratio ?? -1,
              replicationLagCopy: lag?.what ?? "",
            };
          },
          replicas: () => replicas.held().map((r) => ({ ...r, lastPointTime: timestamp(r.lastPointMs) })),
        },
        log.child({ room: "membership" }),
      )
    : undefined;
  membership?.start();
  membershipRef = membership;
  // Live migrations a crash cut short: settled with the other node, in the background (it may be slow
  // to answer); then the reports of finished ones the aggregator has not taken yet.
  void migrationRecovery.settle().finally(() => migrationReports.flush());
  // VMs marked autostart, after a host reboot (or whose QEMU is gone): started in the background.
  void autostartVms(vms, vms.lifecycleHooks(), config.state_dir, log.child({ room: "vm" }));
  log.info({ version: VERSION, stateDir: config.state_dir, pid: process.pid }, "aetherd ready");

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down; executables keep running and are re-adopted on the next start");
    markShutdown();
    const deadline = setTimeout(() => process.exit(0), 5000);
    deadline.unref();
    // A cluster member deregisters (within 2 s of the 5), so a node stopped on purpose is not fenced.
    const left = membership?.leave(2000);
    authorizer.close();
    logLevel.close();
    migrationRecovery.close();
    migrationReports.close();
    replication.close();
    endpoints.close();
    incoming.close();
    void Promise.allSettled([left, listeners.close(), metrics?.endpoint.close()]).finally(() => {
      vms.close();
      vmProcesses.close();
      supervisor.close();
      log.flush();
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  // Certificate rotation and revocation: re-read [tcp] cert, key, client_ca and crl, keep listening;
  // and the authorization policy.
  process.on("SIGHUP", () => {
    void listeners.reloadTls();
    authorizer.reload();
  });
}

const program = new Command("aetherd")
  .description(
    "The Aether host daemon: runs processes, cells, VMs (QEMU, Firecracker) and storage (pools, volumes, images, snapshots) on this host, takes part in a cluster, and serves the Aether API.",
  )
  .version(VERSION)
  .option(
    "-c, --config <file>",
    "TOML config file (keys: socket, state_dir, log_level, max_message_bytes, cgroup_root, import_roots, max_streams_per_connection, request_body_timeout_ms, [tcp] listen/cert/key/client_ca/crl, [unix] mtls, [metrics] listen/tls/cert/key/client_ca/crl, [auth] policy/trust_domain, [tenancy] id_base/ids_per_tenant/kernel_roots/networks/image_url_prefixes/allow_private_urls, [[pools]] name/driver/location/default/labels, [bidding] memory_overcommit/cpu_overcommit/hold_ms, [node] labels, [cluster] aggregator/advertise/name/rack/chassis/slot/ca/cert/key)",
  )
  .option("--socket <path>", "unix socket to serve on (default /run/aether/aetherd.sock as root)")
  .option("--state-dir <dir>", "where records and logs are kept (default /var/lib/aether as root)")
  .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent")
  .option("--listen <host:port>", "also serve mutual TLS on this TCP address (needs the three --tls-* files)")
  .option("--tls-cert <file>", "server certificate (PEM)")
  .option("--tls-key <file>", "server private key (PEM)")
  .option("--tls-client-ca <file>", "CA that client certificates must chain to (PEM)")
  .option("--metrics-listen <host:port>", "serve Prometheus metrics on GET /metrics at this address (loopback, or mutual TLS: [metrics])")
  .option("--cgroup-root <name>", "folder below aetherd's own cgroup that holds its cells (default aether)")
  .option("--unix-mtls", "require a client certificate on the unix socket too (uses the --tls-* files)")
  .option("--policy <file>", "authorization policy (TOML): roles and allow/deny rules per identity; reloaded on change and on SIGHUP")
  .option("--trust-domain <name>", "SPIFFE trust domain (cluster name) client certificates must name (default: the one in --tls-cert)")
  .option("--kvm-probe-timeout-ms <ms>", "how long a probe guest may take to boot under KVM (acceleration auto)", (v) =>
    Number.parseInt(v, 10),
  )
  .addHelpText(
    "after",
    `
Examples:
  aetherd                                    serve on the default socket, state in /var/lib/aether
  aetherd --socket /tmp/a.sock --state-dir /tmp/aether
  aetherd --listen 127.0.0.1:7443 --tls-cert node.pem --tls-key node.key --tls-client-ca ca.pem
  aetherd --policy /etc/aether/policy.toml  tenants and roles (see README: Authorization)
  aetherd --config /etc/aether/aetherd.toml [node] labels and [cluster] aggregator, advertise, name: a cluster member
  AETHER_HOST=unix:///tmp/a.sock aether node info`,
  )
  .action(async (opts: ConfigFlags) => {
    try {
      await run(opts);
    } catch (err) {
      if (err instanceof ConfigError || err instanceof ListenError || err instanceof PolicyError || err instanceof StateLockError) {
        process.stderr.write(`aetherd: ${err.message}\n`);
        process.exit(2);
      }
      process.stderr.write(`aetherd: could not start: ${describeError(err)}\n`);
      process.exit(1);
    }
  });

await program.parseAsync();
