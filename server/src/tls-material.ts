// The TLS material of a listener: the certificate, key, client CA and CRL files read and checked,
// each on its own and then together, so that an error names the file to fix; and, after a reload,
// the open connections whose client certificate the new CRL revokes.
import { createHash, createPrivateKey, X509Certificate as NodeX509Certificate } from "node:crypto";
import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import { createSecureContext, type TLSSocket } from "node:tls";
import type * as X509 from "@peculiar/x509";
import type { Logger } from "pino";

let x509Loaded: typeof X509 | undefined;

/**
 * @peculiar/x509, with the reflect polyfill it needs (some 200 CommonJS modules, about 0.12 s of
 * CPU), loaded by the first TLS listener rather than at every start of aetherd or the aggregator,
 * most of which serve on a unix socket only.
 */
function x509(): typeof X509 {
  if (x509Loaded === undefined) {
    const require = createRequire(import.meta.url);
    require("reflect-metadata");
    x509Loaded = require("@peculiar/x509") as typeof X509;
  }
  return x509Loaded;
}

/** TLS material of the TCP listener: all three of cert, key and client CA, or (plain loopback h2c) none. */
export interface TcpOptions {
  /** host:port; port 0 binds any free port (Listeners.tcpAddress tells which). */
  listen: string;
  cert?: string;
  key?: string;
  client_ca?: string;
  /** Certificate revocation list(s) of the client CA(s), PEM. */
  crl?: string;
}

/** What the TCP listener serves with, read from the [tcp] files and checked before use. */
export interface TlsMaterial {
  options: { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer[]; minVersion: "TLSv1.2" };
  /** For the log: which certificate, how many client CAs, how many revoked serials. */
  summary: Record<string, string | number>;
  /** Hashes of the files, to tell which ones a reload changed. */
  digests: { certificate: string; key: string; client_ca: string; crl: string };
  /** Revoked serials (upper-case hex) per issuer name. */
  revoked: Map<string, Set<string>>;
}

const digest = (data: Buffer | undefined) => (data ? createHash("sha256").update(data).digest("hex") : "");
const serialHex = (hex: string) => hex.toUpperCase().replace(/^0+(?=.)/, "");

export async function loadTlsMaterial(files: TcpOptions, program: string, log: Logger): Promise<TlsMaterial> {
  const given = (what: string, path: string | undefined) => {
    if (path === undefined) throw new Error(`TLS on ${files.listen} needs a certificate, a key and a client CA; the ${what} is missing.`);
    return path;
  };
  const tcp = {
    cert: given("certificate", files.cert),
    key: given("key", files.key),
    client_ca: given("client CA", files.client_ca),
    crl: files.crl,
  };
  const read = async (what: string, path: string) => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const cert = await read("certificate", tcp.cert);
  const key = await read("key", tcp.key);
  const ca = await read("client CA", tcp.client_ca);
  const crlFile = tcp.crl === undefined ? undefined : await read("CRL", tcp.crl);
  const crlBlocks = crlFile === undefined ? undefined : pemBlocks(crlFile, "X509 CRL");
  if (tcp.crl !== undefined && crlBlocks?.length === 0) {
    throw new Error(
      `the CRL ${tcp.crl} holds no PEM "X509 CRL" block (a DER file converts with: openssl crl -inform DER -in FILE -out crl.pem)`,
    );
  }
  // Each file on its own first, so an error names the file to fix.
  const check = <T>(what: string, path: string, parse: () => T): T => {
    try {
      return parse();
    } catch (err) {
      throw new Error(`the TLS ${what} ${path} cannot be used: ${(err as Error).message}`);
    }
  };
  const leaf = check("certificate", tcp.cert, () => new NodeX509Certificate(cert));
  const privateKey = check("key", tcp.key, () => createPrivateKey(key));
  if (!leaf.checkPrivateKey(privateKey))
    throw new Error(`the TLS key ${tcp.key} does not belong to the certificate ${tcp.cert}; replace both files together`);
  const cas = check("client CA", tcp.client_ca, () => {
    const blocks = pemBlocks(ca, "CERTIFICATE");
    if (blocks.length === 0) throw new Error('it holds no PEM "CERTIFICATE" block');
    const { X509Certificate } = x509();
    return blocks.map((b) => new X509Certificate(b.toString()));
  });
  const crlPath = tcp.crl;
  const crls =
    crlPath === undefined || crlBlocks === undefined
      ? []
      : crlBlocks.map((b) => check("CRL", crlPath, () => new (x509().X509Crl)(b.toString())));
  const options = { cert, key, ca, ...(crlBlocks !== undefined && { crl: crlBlocks }), minVersion: "TLSv1.2" as const };
  try {
    // Then together, as the listener will use them.
    createSecureContext(options);
  } catch (err) {
    throw new Error(
      `the TLS certificate ${tcp.cert}, key ${tcp.key}, client CA ${tcp.client_ca}${tcp.crl ? ` and CRL ${tcp.crl}` : ""} cannot be used together: ${(err as Error).message}`,
    );
  }
  const summary: Record<string, string | number> = {
    cert: tcp.cert,
    serial: leaf.serialNumber,
    subject: leaf.subject.replace(/\n/g, ", "),
    notAfter: leaf.validTo,
    clientCas: cas.length,
  };
  if (new Date(leaf.validTo) < new Date())
    log.warn(
      { cert: tcp.cert, notAfter: leaf.validTo },
      `the server certificate has expired: clients will refuse ${program} until it is replaced (then send SIGHUP)`,
    );

  const revoked = new Map<string, Set<string>>();
  if (crlPath !== undefined) {
    for (const crl of crls) {
      const issuer = cas.find((c) => c.subject === crl.issuer);
      if (!issuer) throw new Error(`the CRL ${crlPath} is issued by ${crl.issuer}, which is not a CA in ${tcp.client_ca}`);
      if (!(await crl.verify({ publicKey: issuer })))
        throw new Error(`the CRL ${crlPath} from ${crl.issuer} does not carry that CA's signature`);
      if (crl.nextUpdate !== undefined && crl.nextUpdate < new Date()) {
        log.warn(
          { crl: crlPath, nextUpdate: crl.nextUpdate.toISOString() },
          "the CRL is past its next update: every client of its CA is refused (CRL_HAS_EXPIRED) until a fresh one is loaded",
        );
      }
      const serials = revoked.get(crl.issuer) ?? new Set<string>();
      for (const entry of crl.entries) serials.add(serialHex(entry.serialNumber));
      revoked.set(crl.issuer, serials);
    }
    // With a CRL, OpenSSL checks every certificate of a chain and refuses one whose issuer has no list.
    const missing = cas.filter((c) => !revoked.has(c.subject));
    if (missing.length > 0) {
      throw new Error(
        `the CRL ${crlPath} has no list from ${missing.map((c) => c.subject).join("; ")} (in ${tcp.client_ca}): every client of that CA would be refused; add that CA's CRL to the file`,
      );
    }
    summary.crl = crlPath;
    summary.revoked = [...revoked.values()].reduce((n, s) => n + s.size, 0);
  }
  return {
    options,
    summary,
    digests: { certificate: digest(cert), key: digest(key), client_ca: digest(ca), crl: digest(crlFile) },
    revoked,
  };
}

/** The PEM blocks with this label in a file, each as its own buffer (how Node's `crl` wants them). */
function pemBlocks(data: Buffer, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----`, "g");
  return [...data.toString("utf8").matchAll(re)].map((m) => Buffer.from(`${m[0]}\n`));
}

/** Closes the open connections whose verified client certificate is now revoked; returns how many. */
export function closeRevoked(sockets: Set<TLSSocket>, revoked: Map<string, Set<string>>, log: Logger): number {
  if (revoked.size === 0) return 0;
  let closed = 0;
  for (const socket of sockets) {
    if (!socket.authorized) continue; // already refused on every request
    try {
      const raw = socket.getPeerCertificate().raw;
      if (!raw) continue;
      const peer = new (x509().X509Certificate)(raw);
      if (revoked.get(peer.issuer)?.has(serialHex(peer.serialNumber))) {
        log.info(
          { serial: serialHex(peer.serialNumber), subject: peer.subject, remote: socket.remoteAddress },
          "closing a connection whose client certificate is now revoked",
        );
        socket.destroy();
        closed++;
      }
    } catch (err) {
      log.warn(
        { err: (err as Error).message, remote: socket.remoteAddress },
        "could not check an open connection's client certificate against the new CRL; closing it",
      );
      socket.destroy();
      closed++;
    }
  }
  return closed;
}
