// Clients of the nodes' BidService (and VmService on the same connection, for a drain's live migrations;
// ExecutableService and VmService's lists for a deployment's reconcile loop): one HTTP/2
// connection per node (name and address), reused by every auction.
// unix:///path.sock is a local aetherd; https://host:port is aetherd's TCP listener, which requires
// a client certificate from the cluster CA (--node-tls-ca/--node-tls-cert/--node-tls-key); plain
// http://127.0.0.1:port is accepted on loopback (tests, benches). Every call carries a timeout.
//
// Over https the aggregator calls back only the node it registered: besides chaining to the CA and
// matching the address, the node's certificate must name that node (spiffe://<cluster>/node/<name>),
// so a node that registered another node's address (or a machine that took it over) is never asked
// to bid, provision or release in its place.
import { readFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { TrafficService } from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import { trustDomainOf, uriSans } from "@aether/server";
import { nodeAddress } from "../validate.js";
import { BidCaller } from "./bid-call.js";

/** TLS material for https:// node addresses: PEM text or file paths. */
export interface NodeTls {
  /** CA the nodes' certificates chain to. */
  ca?: string;
  /** Client certificate the aggregator presents (aetherd requires one on TCP). */
  cert?: string;
  /** Its private key. */
  key?: string;
  /** The trust domain node certificates must be in (spiffe://<trustDomain>/node/<name>); unset: any. */
  trustDomain?: string;
}

/** The node a call goes to: its registered address and name. */
export interface NodeTarget {
  address: string;
  name: string;
}

interface Connection {
  client: Client<typeof BidService>;
  /** RequestBid alone, for an auction's broadcast (see bid-call.ts), on the same connection. */
  bidder: BidCaller;
  /** VmService on the same connection: a drain live-migrates VMs with it (MigrateVm, WatchMigration). */
  vm: Client<typeof VmService>;
  /** NodeService: the cluster's health asks each node for its own. */
  node: Client<typeof NodeService>;
  /** ExecutableService: a deployment's reconcile loop asks which of its instances still run. */
  runtime: Client<typeof ExecutableService>;
  /** TrafficService: a deployment's endpoint (HAProxy) on the node that hosts it (rollouts). */
  traffic: Client<typeof TrafficService>;
  sessions: Http2SessionManager;
}

function pem(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value.includes("-----BEGIN") ? value : readFileSync(value, "utf8");
}

export class NodeClients {
  private readonly connections = new Map<string, Connection>();
  private tlsMaterial: { ca?: string; cert?: string; key?: string } | undefined;

  constructor(private readonly tls: NodeTls = {}) {}

  /** The BidService client for a registered node (its address was validated at registration). */
  bid(node: NodeTarget): Client<typeof BidService> {
    return this.connection(node).client;
  }

  /** RequestBid for a registered node, as an auction asks every node at once (bid-call.ts), on the same connection. */
  bidder(node: NodeTarget): BidCaller {
    return this.connection(node).bidder;
  }

  /** The NodeService client for a registered node (its health), on the same connection. */
  node(node: NodeTarget): Client<typeof NodeService> {
    return this.connection(node).node;
  }

  /** The ExecutableService client for a registered node, on the same connection (same identity checks). */
  runtime(node: NodeTarget): Client<typeof ExecutableService> {
    return this.connection(node).runtime;
  }

  /** The TrafficService client for a registered node, on the same connection (same identity checks). */
  traffic(node: NodeTarget): Client<typeof TrafficService> {
    return this.connection(node).traffic;
  }

  /** The VmService client for a registered node, on the same connection (same identity checks). */
  vm(node: NodeTarget): Client<typeof VmService> {
    return this.connection(node).vm;
  }

  private connection(node: NodeTarget): Connection {
    const key = `${node.name}\n${node.address}`;
    let connection = this.connections.get(key);
    if (!connection) {
      connection = this.open(node);
      this.connections.set(key, connection);
    }
    return connection;
  }

  private open(node: NodeTarget): Connection {
    const target = nodeAddress("address", node.address);
    let sessions: Http2SessionManager;
    let baseUrl: string;
    if (target.kind === "unix") {
      baseUrl = "http://localhost";
      sessions = new Http2SessionManager(baseUrl, undefined, { createConnection: () => netConnect(target.path) });
    } else if (target.kind === "http") {
      baseUrl = target.url;
      sessions = new Http2SessionManager(baseUrl);
    } else {
      baseUrl = target.url;
      this.tlsMaterial ??= { ca: pem(this.tls.ca), cert: pem(this.tls.cert), key: pem(this.tls.key) };
      sessions = new Http2SessionManager(baseUrl, undefined, {
        ...this.tlsMaterial,
        checkServerIdentity: (host, cert) => checkServerIdentity(host, cert) ?? this.namesNode(node, cert),
      });
    }
    const transport = createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, sessionManager: sessions });
    return {
      client: createClient(BidService, transport),
      bidder: new BidCaller(sessions),
      vm: createClient(VmService, transport),
      node: createClient(NodeService, transport),
      runtime: createClient(ExecutableService, transport),
      traffic: createClient(TrafficService, transport),
      sessions,
    };
  }

  /** Why a node's certificate does not speak for the registered node, or undefined when it does. */
  private namesNode(node: NodeTarget, cert: PeerCertificate): Error | undefined {
    const ids = uriSans(cert.subjectaltname).filter((uri) => uri.toLowerCase().startsWith("spiffe://"));
    const id = ids.length === 1 ? (ids[0] as string) : undefined;
    const domainOk = this.tls.trustDomain === undefined || (id !== undefined && trustDomainOf(id) === this.tls.trustDomain.toLowerCase());
    if (id !== undefined && domainOk && /^spiffe:\/\/[^/]+\/node\/([^/]+)$/i.exec(id)?.[1] === node.name) return undefined;
    const names = ids.length === 0 ? "no SPIFFE ID" : ids.map((each) => each.slice(0, 200)).join(", ");
    const want = `spiffe://${this.tls.trustDomain ?? "<cluster>"}/node/${node.name}`;
    return new Error(
      `the certificate served at ${node.address} names ${names}, not the registered node ${node.name} (${want}): the aggregator calls a node back only when its certificate is that node's own (aether pki issue node ${node.name}).`,
    );
  }

  /** Drops the connections to an address (a node that moved or left). */
  forget(address: string): void {
    for (const [key, connection] of [...this.connections]) {
      if (!key.endsWith(`\n${address}`)) continue;
      this.connections.delete(key);
      connection.sessions.abort();
    }
  }

  close(): void {
    for (const connection of this.connections.values()) connection.sessions.abort();
    this.connections.clear();
  }
}
