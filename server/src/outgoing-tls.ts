// The TLS material a server presents on the calls it makes (aetherd to the aggregator and to other
// nodes, the aggregator to the nodes): one place decides which files are its cluster identity, so
// every outgoing call of a program carries the same certificate and trusts the same CA, and an error
// names the setting to fix.
import type { TlsOptions } from "@aether/sdk/target";

/** One source of TLS settings, e.g. aetherd's [cluster] ca/cert/key or its [tcp] client_ca/cert/key. */
export interface TlsSource {
  /** How the settings are named in sentences: "[cluster] ca", "--node-tls-ca". */
  names: { ca: string; cert: string; key: string };
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/** A program's identity for outgoing calls, and the names of its settings for error sentences. */
export interface OutgoingTls {
  tls: TlsOptions;
  settings: { ca: string; certAndKey: string };
}

/**
 * The material for outgoing calls: the first source that sets a CA gives the CA, the first that sets
 * a certificate gives the certificate and its key (a certificate is never paired with another
 * source's key).
 */
export function outgoingTls(...sources: TlsSource[]): OutgoingTls {
  const caFrom = sources.find((s) => s.ca !== undefined);
  const certFrom = sources.find((s) => s.cert !== undefined || s.key !== undefined);
  const list = (pick: (s: TlsSource) => string) => sources.map(pick).join(", else ");
  return {
    tls: {
      ...(caFrom?.ca !== undefined && { ca: caFrom.ca }),
      ...(certFrom?.cert !== undefined && { cert: certFrom.cert }),
      ...(certFrom?.key !== undefined && { key: certFrom.key }),
    },
    settings: {
      ca: list((s) => s.names.ca),
      certAndKey: list((s) => `${s.names.cert} and ${s.names.key}`),
    },
  };
}

/**
 * The connect() options for a call from this program to an address: over https with its identity;
 * over a unix socket or plain loopback as it is (the socket's file mode decides there). The client
 * config of whoever runs the program is never read.
 */
export function outgoingConnectOptions(
  address: string,
  identity: OutgoingTls,
  peer: string,
): { address: string; tls: TlsOptions; useClientConfig: false; peer: string; tlsSettings: OutgoingTls["settings"] } {
  return { address, tls: address.startsWith("https://") ? identity.tls : {}, useClientConfig: false, peer, tlsSettings: identity.settings };
}
