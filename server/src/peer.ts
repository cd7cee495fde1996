// Who is calling: the transport and, on TCP, the verified client certificate. Every RPC passes
// through requireVerifiedPeer, so a TLS client without a certificate from the cluster CA reaches no
// handler. The TLS layer asks for the certificate but does not drop the connection itself: that way
// the client gets UNAUTHENTICATED with a sentence instead of a bare reset whose meaning it must guess.
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, createContextKey, createContextValues, type Interceptor } from "@connectrpc/connect";
import { spiffeRefusal, uriSans } from "./identity.js";

export interface Peer {
  transport: "unix" | "tls";
  /** True on the unix socket (file permissions decide), and on TLS when the certificate verified. */
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

/**
 * The peer context of each request. trustDomain: the cluster's SPIFFE trust domain; a certificate
 * naming another, or several SPIFFE IDs, is not a verified peer.
 */
export const peerContextIn = (trustDomain: string | undefined) => (req: IncomingMessage | Http2ServerRequest) => {
  const socket = req.socket as TLSSocket | undefined;
  const values = createContextValues();
  if (!socket || typeof socket.getPeerCertificate !== "function") return values.set(peerKey, { transport: "unix", verified: true });
  const cert = socket.getPeerCertificate();
  const hasCert = cert !== null && Object.keys(cert).length > 0;
  if (!hasCert) return values.set(peerKey, { transport: "tls", verified: false, rejection: "NO_CERTIFICATE" });
  if (!socket.authorized) {
    return values.set(peerKey, { transport: "tls", verified: false, rejection: String(socket.authorizationError ?? "UNVERIFIED") });
  }
  const uris = uriSans(cert.subjectaltname);
  const refusal = trustDomain === undefined ? "aetherd has no trust domain configured, so it accepts no certificate identity." : spiffeRefusal(uris, trustDomain);
  if (refusal !== undefined) return values.set(peerKey, { transport: "tls", verified: false, rejection: "FOREIGN_IDENTITY", refusal });
  return values.set(peerKey, { transport: "tls", verified: true, subject: String(cert.subject?.CN ?? ""), uris });
};

export const requireVerifiedPeer: Interceptor = (next) => async (req) => {
  const peer = req.contextValues.get(peerKey);
  if (!peer.verified) {
    if (peer.refusal !== undefined) throw new ConnectError(peer.refusal, Code.Unauthenticated);
    throw new ConnectError(
      peer.rejection === "NO_CERTIFICATE"
        ? "aetherd requires a client certificate here: connect with a certificate and key issued by the cluster CA."
        : `the client certificate was refused (${peer.rejection}): it must be issued by this cluster's CA and be within its validity period.`,
      Code.Unauthenticated,
    );
  }
  return next(req);
};
