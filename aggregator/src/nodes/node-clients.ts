// Clients of the nodes' BidService: one HTTP/2 connection per node address, reused by every auction.
// unix:///path.sock is a local aetherd; https://host:port is aetherd's TCP listener, which requires
// a client certificate from the cluster CA (--node-tls-ca/--node-tls-cert/--node-tls-key); plain
// http://127.0.0.1:port is accepted on loopback (tests, benches). Every call carries a timeout.
import { readFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { nodeAddress } from "../validate.js";

/** TLS material for https:// node addresses: PEM text or file paths. */
export interface NodeTls {
  /** CA the nodes' certificates chain to. */
  ca?: string;
  /** Client certificate the aggregator presents (aetherd requires one on TCP). */
  cert?: string;
  /** Its private key. */
  key?: string;
}

interface Connection {
  client: Client<typeof BidService>;
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

  /** The BidService client for a node address (validated at registration). */
  bid(address: string): Client<typeof BidService> {
    let connection = this.connections.get(address);
    if (!connection) {
      connection = this.open(address);
      this.connections.set(address, connection);
    }
    return connection.client;
  }

  private open(address: string): Connection {
    const target = nodeAddress("address", address);
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
      sessions = new Http2SessionManager(baseUrl, undefined, { ...this.tlsMaterial });
    }
    const transport = createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, sessionManager: sessions });
    return { client: createClient(BidService, transport), sessions };
  }

  /** Drops the connection to an address (a node that moved or left). */
  forget(address: string): void {
    const connection = this.connections.get(address);
    if (!connection) return;
    this.connections.delete(address);
    connection.sessions.abort();
  }

  close(): void {
    for (const address of [...this.connections.keys()]) this.forget(address);
  }
}
