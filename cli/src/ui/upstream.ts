// The proxy's side towards aetherd or aether-aggregator: one HTTP/2 session per peer, made with the
// operator's own address and TLS material exactly as @aether/sdk's connect() makes it (a unix socket,
// mutual TLS over the socket, or https with the client certificate). The browser never sees any of it.
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { pem, type Target } from "@aether/sdk/target";

/** A peer the proxy forwards to: where it is, and its HTTP/2 session. */
export interface Upstream {
  readonly address: string;
  readonly session: Http2SessionManager;
}

export function openUpstream(target: Target): Upstream {
  const unixTls = target.kind === "unix" && target.tls?.cert !== undefined ? target.tls : undefined;
  const session =
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
      : new Http2SessionManager(target.url, undefined, { ca: pem(target.tls.ca), cert: pem(target.tls.cert), key: pem(target.tls.key) });
  return { address: target.address, session };
}
