// Who is calling: the transport and, on TLS, the verified client certificate. Every RPC passes
// through requireVerifiedPeer, so a TLS client without a certificate from the cluster CA reaches no
// handler. The TLS layer asks for the certificate but does not drop the connection itself: that way
// the client gets UNAUTHENTICATED with a sentence instead of a bare reset whose meaning it must guess.
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, createContextKey, createContextValues, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { certificateCaller, spiffeRefusal, uriSans, type Caller } from "./identity.js";

export interface Peer {
  /** unix: the socket; tcp: plain HTTP/2 on loopback (the aggregator's tests and local proxies); tls: mutual TLS. */
  transport: "unix" | "tcp" | "tls";
  /** True on the unix socket (file permissions decide) and loopback TCP, and on TLS when the certificate verified. */
  verified: boolean;
  /** Why the certificate did not verify (OpenSSL's code), when it did not. */
  rejection?: string;
  /** The sentence for a certificate that verified but names no identity of this cluster. */
  refusal?: string;
  /** Subject common name and URI SANs of the verified client certificate. */
  subject?: string;
  uris?: string[];
}

export const peerKey = createContextKey<Peer>({ transport: "unix", verified: true }, { description: "the calling peer" });

export interface PeerOptions {
  /** The cluster's SPIFFE trust domain; a certificate naming another, or several SPIFFE IDs, is not a verified peer. */
  trustDomain: string | undefined;
  /** The program's name in the sentences callers get ("aetherd", "aether-aggregator"). */
  program: string;
}

/** The peer context of each request. */
export const peerContextIn = (options: PeerOptions) => (req: IncomingMessage | Http2ServerRequest) => {
  const socket = req.socket as TLSSocket | undefined;
  const values = createContextValues();
  if (!socket || typeof socket.getPeerCertificate !== "function") {
    // The socket is mode 0600 (the server's own user or root); plain TCP is served on loopback only.
    return values.set(peerKey, { transport: socket?.remoteAddress === undefined ? "unix" : "tcp", verified: true });
  }
  const cert = socket.getPeerCertificate();
  const hasCert = cert !== null && Object.keys(cert).length > 0;
  if (!hasCert) return values.set(peerKey, { transport: "tls", verified: false, rejection: "NO_CERTIFICATE" });
  if (!socket.authorized) {
    return values.set(peerKey, { transport: "tls", verified: false, rejection: String(socket.authorizationError ?? "UNVERIFIED") });
  }
  const uris = uriSans(cert.subjectaltname);
  const refusal =
    options.trustDomain === undefined
      ? `${options.program} has no trust domain configured, so it accepts no certificate identity.`
      : spiffeRefusal(uris, options.trustDomain);
  if (refusal !== undefined) return values.set(peerKey, { transport: "tls", verified: false, rejection: "FOREIGN_IDENTITY", refusal });
  return values.set(peerKey, { transport: "tls", verified: true, subject: String(cert.subject?.CN ?? ""), uris });
};

/** Who calls, as the policy and the audit log name it. */
export function callerOf(peer: Peer): Caller {
  if (peer.transport === "unix") return { identity: `unix:uid=${process.getuid?.() ?? -1}` };
  if (peer.transport === "tcp") return { identity: "local:loopback-tcp" };
  return certificateCaller(peer.uris, peer.subject);
}

/** The caller of a request, from its peer context. */
export function callerOfRequest(req: { contextValues: ContextValues }): Caller {
  return callerOf(req.contextValues.get(peerKey));
}

/** Refuses every request whose peer did not verify, with a sentence naming why. */
export const requireVerifiedPeer =
  (program: string): Interceptor =>
  (next) =>
  async (req) => {
    const peer = req.contextValues.get(peerKey);
    if (!peer.verified) {
      if (peer.refusal !== undefined) throw new ConnectError(peer.refusal, Code.Unauthenticated);
      throw new ConnectError(
        peer.rejection === "NO_CERTIFICATE"
          ? `${program} requires a client certificate here: connect with a certificate and key issued by the cluster CA.`
          : `the client certificate was refused (${peer.rejection}): it must be issued by this cluster's CA and be within its validity period.`,
        Code.Unauthenticated,
      );
    }
    return next(req);
  };
