// connect(): finds aetherd and returns a typed client for every service of the standard library.
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { pem, resolveTarget, type Target, type TargetOptions } from "./target.js";
import { ExecutableService } from "./gen/aether/runtime/v1/runtime_pb.js";
import { CellService } from "./gen/aether/cells/v1/cells_pb.js";
import { VmService } from "./gen/aether/vm/v1/vm_pb.js";
import { ReplicationService, StorageService } from "./gen/aether/storage/v1/storage_pb.js";
import { FenceService } from "./gen/aether/fence/v1/fence_pb.js";
import { AggregatorService, BidService } from "./gen/aether/auction/v1/auction_pb.js";
import { ObserveService } from "./gen/aether/observe/v1/observe_pb.js";
import { NodeService } from "./gen/aether/node/v1/node_pb.js";
import { rolloutHelpers, type RolloutHelpers } from "./rollouts.js";
import { TrafficService } from "./gen/aether/traffic/v1/traffic_pb.js";

/** Where and how to reach aetherd. Every field is optional; see {@link connect} for the search order. */
export interface ConnectOptions extends TargetOptions {
  /** Check that the daemon answers before returning (default true), so a wrong address fails here, clearly. */
  verify?: boolean;
  /** What answers at the address, as error sentences name it (default "aetherd"; the CLI's cluster commands say "aether-aggregator"). */
  peer?: string;
  /**
   * Where the caller's TLS settings live, as error sentences name them (default: tls.ca and
   * tls.cert/tls.key, or ca and cert/key in the client config); aetherd says its [cluster] or [tcp] files.
   */
  tlsSettings?: { ca: string; certAndKey: string };
}

const DEFAULT_TLS_SETTINGS = {
  ca: "tls.ca, or ca in the client config",
  certAndKey: "tls.cert and tls.key, or cert and key in the client config",
};

/** Typed clients for every Aether service, bound to one daemon. */
export interface AetherClient {
  /** The address these clients talk to, e.g. `unix:///run/aether/aetherd.sock`. */
  readonly address: string;
  /** Processes: start, stop, wait, list. */
  readonly runtime: Client<typeof ExecutableService>;
  /** cgroup slices. */
  readonly cells: Client<typeof CellService>;
  /** Virtual machines. */
  readonly vm: Client<typeof VmService>;
  /** Pools, volumes, images, snapshots. */
  readonly storage: Client<typeof StorageService>;
  /** Volume replication to other nodes: policies, runs, the replicas held here. */
  readonly replication: Client<typeof ReplicationService>;
  /** Out-of-band power control through BMCs. */
  readonly fence: Client<typeof FenceService>;
  /** This node's side of the placement auction. */
  readonly bid: Client<typeof BidService>;
  /** The cluster's aggregator (when this address is an aether-aggregator). */
  readonly aggregator: Client<typeof AggregatorService>;
  /** Logs, events and telemetry. */
  readonly observe: Client<typeof ObserveService>;
  /** Identity, version, capabilities, health. */
  readonly node: Client<typeof NodeService>;
  /** Service endpoints: HAProxy per endpoint, weights and A/B splits changed at runtime. */
  readonly traffic: Client<typeof TrafficService>;
  /** Rollouts of the aggregator's deployments: `await aether.rollouts.wait("web")`. */
  readonly rollouts: RolloutHelpers;
  /** The underlying transport, for generic clients of other services. */
  readonly transport: Transport;
  /** Closes the connection; the clients must not be used afterwards. */
  close(): void;
}

/**
 * Connects to aetherd and returns typed clients for every service.
 *
 * @example
 * ```ts
 * import { connect } from "@aether/sdk";
 * const aether = await connect(); // AETHER_HOST, ~/.config/aether/config.toml, or the default socket
 * const { node } = await aether.node.getNodeInfo({});
 * console.log(node?.hostname);
 * aether.close();
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<AetherClient> {
  const target = resolveTarget(options);
  // A unix address with a client certificate speaks mutual TLS over the socket (aetherd's unix.mtls);
  // the node's certificate is checked for the name "localhost" (aether pki issue node puts it there).
  const unixTls = target.kind === "unix" && target.tls?.cert !== undefined ? target.tls : undefined;
  const sessionManager =
    target.kind === "unix"
      ? new Http2SessionManager(unixTls ? "https://localhost" : "http://localhost", undefined, {
          createConnection: () =>
            unixTls
              ? tlsConnect({
                  path: target.path,
                  servername: "localhost",
                  ALPNProtocols: ["h2"],
                  ca: pem(unixTls.ca),
                  cert: pem(unixTls.cert),
                  key: pem(unixTls.key),
                })
              : netConnect(target.path),
        })
      : new Http2SessionManager(target.url, undefined, {
          ca: pem(target.tls.ca),
          cert: pem(target.tls.cert),
          key: pem(target.tls.key),
        });
  const transport = createConnectTransport({
    baseUrl: target.kind === "unix" ? (unixTls ? "https://localhost" : "http://localhost") : target.url,
    httpVersion: "2",
    useBinaryFormat: true,
    sessionManager,
    interceptors: [explainUnreachable(target, options.peer ?? "aetherd", options.tlsSettings ?? DEFAULT_TLS_SETTINGS)],
  });
  const client = <S extends DescService>(service: S) => createClient(service, transport);
  const aether: AetherClient = {
    address: target.address,
    runtime: client(ExecutableService),
    cells: client(CellService),
    vm: client(VmService),
    storage: client(StorageService),
    replication: client(ReplicationService),
    fence: client(FenceService),
    bid: client(BidService),
    aggregator: client(AggregatorService),
    observe: client(ObserveService),
    node: client(NodeService),
    traffic: client(TrafficService),
    rollouts: rolloutHelpers(client(AggregatorService)),
    transport,
    close: () => sessionManager.abort(),
  };
  if (options.verify ?? true) {
    try {
      await aether.node.checkHealth({});
    } catch (err) {
      aether.close();
      throw err;
    }
  }
  return aether;
}

const UNREACHABLE = new Set(["ENOENT", "ECONNREFUSED", "EACCES", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND"]);

/** Turns "connect ENOENT" deep inside a transport into one sentence: where we looked, what to do. */
function explainUnreachable(target: Target, peer: string, settings: { ca: string; certAndKey: string }): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      const cause = findErrno(err);
      if (cause === undefined) throw err;
      if (UNREACHABLE.has(cause.code)) {
        throw new ConnectError(describeUnreachable(target, peer, cause.code, cause.message), Code.Unavailable, undefined, undefined, err);
      }
      if (cause.code.startsWith("ERR_SSL_") || cause.code.startsWith("ERR_TLS_") || SERVER_NOT_TRUSTED.has(cause.code)) {
        throw new ConnectError(describeTlsFailure(target, peer, settings, cause.code), Code.Unavailable, undefined, undefined, err);
      }
      throw err;
    }
  };
}

/** Node's codes for a server certificate the client could not verify. */
const SERVER_NOT_TRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_HAS_EXPIRED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

function describeTlsFailure(target: Target, peer: string, settings: { ca: string; certAndKey: string }, code: string): string {
  if (SERVER_NOT_TRUSTED.has(code)) {
    const given = target.tls?.ca === undefined ? "no CA was given" : `the CA given (${describeMaterial(target.tls.ca)}) did not issue it`;
    return `the certificate of ${peer} at ${target.address} is not trusted (${code}): ${given}; give the cluster CA's certificate file (${settings.ca}).`;
  }
  const given =
    target.tls?.cert === undefined
      ? "no client certificate was given"
      : `the client certificate given is ${describeMaterial(target.tls.cert)}`;
  return `${peer} at ${target.address} refused the TLS handshake (${code}): it requires a client certificate and key issued by the cluster CA (${settings.certAndKey}), not expired and not revoked; ${given}.`;
}

/** A file path as given, or "PEM text". */
function describeMaterial(value: string): string {
  return value.includes("-----BEGIN") ? "PEM text" : value;
}

function describeUnreachable(target: Target, peer: string, code: string, message: string): string {
  const how =
    peer !== "aetherd"
      ? target.kind === "unix"
        ? `Check that ${peer} runs with --socket ${target.path}, or give its address (--aggregator, AETHER_AGGREGATOR).`
        : `Check that ${peer} runs with --listen on that address and that the client certificate, key and CA are right.`
      : target.kind === "unix"
        ? `Start it with \`aetherd --socket ${target.path}\` (or \`npm run aetherd -- --socket ${target.path}\` in the Aether repository), or point AETHER_HOST at a running daemon.`
        : "Check that aetherd runs with --listen on that address and that the client certificate, key and CA are right.";
  const what =
    code === "ENOENT"
      ? "no socket exists there"
      : code === "ECONNREFUSED"
        ? "nothing is listening there"
        : code === "EACCES"
          ? "permission denied (the socket is 0600: run as the daemon's user, e.g. root)"
          : message;
  return `cannot reach ${peer} at ${target.address}: ${what}. ${how}`;
}

function findErrno(err: unknown): { code: string; message: string } | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && (code.startsWith("E") || SERVER_NOT_TRUSTED.has(code))) return { code, message: e.message };
    e = e instanceof ConnectError ? e.cause : (e as { cause?: unknown }).cause;
  }
  return undefined;
}
