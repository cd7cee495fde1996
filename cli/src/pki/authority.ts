// The cluster's certificate authority, kept in one directory:
//   ca.pem, ca.key (0600)   the CA: EC P-256, self-signed, CA:true, keyCertSign + cRLSign
//   crl.pem                 the revocation list aetherd reads ([tcp] crl), signed by the CA
//   index.json              every certificate issued, with its identity, validity and revocation
//   node/<name>.pem|.key, service/<name>.*, user/<name>.*, tenant/<t>/user/<name>.*   issued pairs
// Certificates are built with @peculiar/x509 on Node's WebCrypto; nothing is templated for openssl.
// About 500 lines because issuing, revoking and the CRL all read and write the same index and CA
// key under one lock; the identities they name are identity.ts's.
import type * as x509 from "@peculiar/x509";
import { randomBytes, webcrypto } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { isIP } from "node:net";
import { dirname, join, resolve } from "node:path";
import { stringify as stringifyToml } from "smol-toml";
import { defaultClientConfigPath } from "@aether/sdk/target";
import { spiffeId, type Identity, type Kind } from "./identity.js";
import { lazyRequire } from "../lazy.js";

/** @peculiar/x509 (and the reflect polyfill it needs), loaded by the first command that works on certificates. */
const reflectMetadata = lazyRequire<unknown>("reflect-metadata");
const x509lib = lazyRequire<typeof x509>("@peculiar/x509", (lib) => lib.cryptoProvider.set(webcrypto));
const X509 = () => {
  reflectMetadata();
  return x509lib();
};

type CryptoKey = webcrypto.CryptoKey;

const EC_KEY = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;
/** Certificates start a little in the past, so a peer whose clock is behind accepts them at once. */
const BACKDATE_MS = 5 * 60_000;

/** Validity of a certificate when --days is not given. */
export const DEFAULT_DAYS: Record<Kind | "ca", number> = { ca: 3650, node: 365, service: 365, user: 90 };

/** Reasons a revocation may give (RFC 5280 CRLReason, in the CLI's spelling). */
export const REVOCATION_REASONS = {
  unspecified: "unspecified",
  "key-compromise": "keyCompromise",
  "affiliation-changed": "affiliationChanged",
  superseded: "superseded",
  "cessation-of-operation": "cessationOfOperation",
  "privilege-withdrawn": "privilegeWithdrawn",
} as const satisfies Record<string, keyof typeof x509.X509CrlReason>;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** A failure with the exit code class the CLI reports it with. */
export class PkiError extends Error {
  constructor(
    message: string,
    readonly kind: "failed" | "usage" | "notFound" = "failed",
  ) {
    super(message);
  }
}

/** One certificate in index.json. Times are ISO 8601, serials upper-case hex. */
export interface IssuedCertificate {
  serial: string;
  kind: Kind;
  name: string;
  tenant?: string;
  spiffeId: string;
  notBefore: string;
  notAfter: string;
  /** Where the certificate and key were written (absolute). */
  cert: string;
  key: string;
  /** The client config written with it (users, --write-config). */
  config?: string;
  revoked?: { time: string; reason: RevocationReason };
}

export interface PkiIndex {
  version: 1;
  cluster: string;
  ca: { serial: string; subject: string; notBefore: string; notAfter: string };
  /** The number of the last CRL written (the CRL Number extension). */
  crlNumber: number;
  certificates: IssuedCertificate[];
}

export interface PkiPaths {
  dir: string;
  caCert: string;
  caKey: string;
  crl: string;
  index: string;
}

/** /etc/aether/pki as root; ~/.config/aether/pki ($XDG_CONFIG_HOME/aether/pki) otherwise. */
export function defaultPkiDir(): string {
  if (process.getuid?.() === 0) return "/etc/aether/pki";
  return join(dirname(defaultClientConfigPath()), "pki");
}

export function pkiPaths(dir: string): PkiPaths {
  const abs = resolve(dir);
  return { dir: abs, caCert: join(abs, "ca.pem"), caKey: join(abs, "ca.key"), crl: join(abs, "crl.pem"), index: join(abs, "index.json") };
}

export interface InitOptions {
  dir: string;
  cluster: string;
  days?: number;
  now?: Date;
}

/** Creates the cluster CA, an empty CRL and the index in `dir`; refuses to replace an existing CA. */
export async function initCa(options: InitOptions): Promise<PkiIndex> {
  const lib = X509();
  const paths = pkiPaths(options.dir);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  return withLock(paths, async () => {
    if (await exists(paths.caCert))
      throw new PkiError(`a cluster CA already exists in ${paths.dir}; remove it first or choose another --dir.`);
    const now = options.now ?? new Date();
    const keys = await webcrypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
    const ca = await lib.X509CertificateGenerator.createSelfSigned({
      serialNumber: newSerial(),
      name: [{ CN: [`Aether cluster CA ${options.cluster}`] }, { O: ["Aether"] }],
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + (options.days ?? DEFAULT_DAYS.ca) * DAY_MS),
      keys,
      signingAlgorithm: SIGNING,
      extensions: [
        new lib.BasicConstraintsExtension(true, 0, true),
        new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
        await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const index: PkiIndex = {
      version: 1,
      cluster: options.cluster,
      ca: { serial: serialOf(ca), subject: ca.subject, notBefore: ca.notBefore.toISOString(), notAfter: ca.notAfter.toISOString() },
      crlNumber: 0,
      certificates: [],
    };
    await writeAtomic(paths.caKey, await privateKeyPem(keys.privateKey), 0o600);
    await writeCrl(paths, { cert: ca, key: keys.privateKey }, index, now);
    await writeAtomic(paths.index, `${JSON.stringify(index, null, 2)}\n`, 0o644);
    // Last: ca.pem is what marks the directory as holding a CA.
    await writeAtomic(paths.caCert, ca.toString("pem") + "\n", 0o644);
    return index;
  });
}

export interface IssueOptions {
  dir: string;
  kind: Kind;
  name: string;
  tenant?: string;
  days?: number;
  /** Overrides days: an exact end of validity (tests use it for expired certificates). */
  notAfter?: Date;
  /** Node certificates only; default localhost and 127.0.0.1 when neither is given. */
  dns?: string[];
  ip?: string[];
  /** Folder for NAME.pem / NAME.key; default the identity's folder in the PKI directory. */
  outDir?: string;
  /** Users: write NAME.toml, a client config for this https:// address. */
  writeConfig?: string;
  now?: Date;
}

/** Issues a certificate for a node, user or service, writes it with its key, and records it. */
export async function issueCertificate(options: IssueOptions): Promise<IssuedCertificate> {
  const lib = X509();
  const paths = pkiPaths(options.dir);
  if (options.tenant !== undefined && options.kind !== "user")
    throw new PkiError(`--tenant applies to users only, not to a ${options.kind}.`, "usage");
  if (options.kind !== "node" && ((options.dns?.length ?? 0) > 0 || (options.ip?.length ?? 0) > 0)) {
    throw new PkiError(`--dns and --ip apply to node certificates only (a ${options.kind} certificate authenticates a client).`, "usage");
  }
  if (options.writeConfig !== undefined && options.kind !== "user")
    throw new PkiError("--write-config applies to user certificates only.", "usage");
  const address = options.writeConfig === undefined ? undefined : httpsAddress(options.writeConfig);
  for (const ip of options.ip ?? [])
    if (isIP(ip) === 0) throw new PkiError(`--ip ${JSON.stringify(ip)} is not an IPv4 or IPv6 address.`, "usage");
  for (const dns of options.dns ?? []) {
    if (!/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(dns)) {
      throw new PkiError(`--dns ${JSON.stringify(dns)} is not a host name.`, "usage");
    }
  }

  return withLock(paths, async () => {
    const { ca, index } = await loadCa(paths);
    const identity: Identity = {
      cluster: index.cluster,
      kind: options.kind,
      name: options.name,
      ...(options.tenant !== undefined && { tenant: options.tenant }),
    };
    const uri = spiffeId(identity);
    const now = options.now ?? new Date();
    const notAfter = options.notAfter ?? new Date(now.getTime() + (options.days ?? DEFAULT_DAYS[options.kind]) * DAY_MS);
    const notBefore = new Date(Math.min(now.getTime() - BACKDATE_MS, notAfter.getTime() - DAY_MS));
    if (notAfter > ca.cert.notAfter) {
      throw new PkiError(`the certificate would outlive the CA, which expires on ${ca.cert.notAfter.toISOString()}: give fewer --days.`);
    }

    const names: x509.JsonGeneralName[] = [{ type: "url", value: uri }];
    if (options.kind === "node") {
      const dns = options.dns ?? [];
      const ips = options.ip ?? [];
      const none = dns.length === 0 && ips.length === 0;
      for (const d of none ? ["localhost"] : dns) names.push({ type: "dns", value: d });
      for (const i of none ? ["127.0.0.1"] : ips) names.push({ type: "ip", value: i });
    }
    const usages =
      options.kind === "node" ? [lib.ExtendedKeyUsage.serverAuth, lib.ExtendedKeyUsage.clientAuth] : [lib.ExtendedKeyUsage.clientAuth];
    const keys = await webcrypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
    const subject: x509.JsonName = [{ CN: [options.name] }, { OU: [options.kind] }, { O: [options.tenant ?? index.cluster] }];
    const cert = await lib.X509CertificateGenerator.create({
      serialNumber: newSerial(),
      subject,
      issuer: ca.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.key,
      signingAlgorithm: SIGNING,
      extensions: [
        new lib.BasicConstraintsExtension(false, undefined, true),
        new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
        new lib.ExtendedKeyUsageExtension(usages, false),
        new lib.SubjectAlternativeNameExtension(names, false),
        await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await lib.AuthorityKeyIdentifierExtension.create(ca.cert),
      ],
    });

    const outDir = resolve(
      options.outDir ?? join(paths.dir, ...(options.tenant !== undefined ? ["tenant", options.tenant, "user"] : [options.kind])),
    );
    await mkdir(outDir, { recursive: true, mode: 0o700 });
    const record: IssuedCertificate = {
      serial: serialOf(cert),
      kind: options.kind,
      name: options.name,
      ...(options.tenant !== undefined && { tenant: options.tenant }),
      spiffeId: uri,
      notBefore: cert.notBefore.toISOString(),
      notAfter: cert.notAfter.toISOString(),
      cert: join(outDir, `${options.name}.pem`),
      key: join(outDir, `${options.name}.key`),
    };
    // The key first: a reader that sees the new certificate finds its key already in place.
    await writeAtomic(record.key, await privateKeyPem(keys.privateKey), 0o600);
    await writeAtomic(record.cert, cert.toString("pem") + "\n", 0o644);
    if (address !== undefined) {
      record.config = join(outDir, `${options.name}.toml`);
      const toml = stringifyToml({ address, ca: paths.caCert, cert: record.cert, key: record.key });
      await writeAtomic(record.config, `# aether client config for ${uri}; copy to ~/.config/aether/config.toml\n${toml}\n`, 0o600);
    }
    index.certificates.push(record);
    await writeAtomic(paths.index, `${JSON.stringify(index, null, 2)}\n`, 0o644);
    return record;
  });
}

export interface RevokeOptions {
  dir: string;
  /** A serial (hex, any case, colons allowed), a SPIFFE ID, or a name. */
  target: string;
  /** Narrow a name to one kind or tenant when it is ambiguous. */
  kind?: Kind;
  tenant?: string;
  reason?: RevocationReason;
  now?: Date;
}

/**
 * Revokes the certificate with that serial, or every unrevoked certificate of the identity a SPIFFE
 * ID or name designates, and rewrites crl.pem. Returns what was revoked now.
 */
export async function revokeCertificates(options: RevokeOptions): Promise<IssuedCertificate[]> {
  const paths = pkiPaths(options.dir);
  return withLock(paths, async () => {
    const { ca, index } = await loadCa(paths);
    const matches = findCertificates(index, options);
    const fresh = matches.filter((c) => c.revoked === undefined);
    if (fresh.length === 0)
      throw new PkiError(
        `every certificate matching ${JSON.stringify(options.target)} is already revoked (${matches.map((c) => c.serial).join(", ")}).`,
      );
    const now = options.now ?? new Date();
    for (const c of fresh) c.revoked = { time: now.toISOString(), reason: options.reason ?? "unspecified" };
    await writeCrl(paths, ca, index, now);
    await writeAtomic(paths.index, `${JSON.stringify(index, null, 2)}\n`, 0o644);
    return fresh;
  });
}

function findCertificates(index: PkiIndex, options: RevokeOptions): IssuedCertificate[] {
  const target = options.target.trim();
  const serial = target
    .replace(/:/g, "")
    .toUpperCase()
    .replace(/^0+(?=.)/, "");
  const bySerial = index.certificates.filter((c) => c.serial === serial);
  if (bySerial.length > 0) return bySerial;
  const byIdentity = index.certificates.filter(
    (c) =>
      (target.startsWith("spiffe://") ? c.spiffeId === target : c.name === target) &&
      (options.kind === undefined || c.kind === options.kind) &&
      (options.tenant === undefined || c.tenant === options.tenant),
  );
  if (byIdentity.length === 0) {
    throw new PkiError(
      `no certificate in the index has the serial, SPIFFE ID or name ${JSON.stringify(target)}: see aether pki list.`,
      "notFound",
    );
  }
  const identities = [...new Set(byIdentity.map((c) => c.spiffeId))];
  if (identities.length > 1) {
    throw new PkiError(
      `${JSON.stringify(target)} names more than one identity (${identities.join(", ")}): give its SPIFFE ID, a serial, or --kind/--tenant.`,
      "usage",
    );
  }
  return byIdentity;
}

export type CertificateStatus = "valid" | "expired" | "revoked" | "not yet valid";

/** The index with each certificate's status at `now`. */
export async function listCertificates(
  dir: string,
  now = new Date(),
): Promise<{ index: PkiIndex; certificates: Array<IssuedCertificate & { status: CertificateStatus }> }> {
  const paths = pkiPaths(dir);
  const index = await readIndex(paths);
  const status = (c: IssuedCertificate): CertificateStatus =>
    c.revoked ? "revoked" : new Date(c.notAfter) < now ? "expired" : new Date(c.notBefore) > now ? "not yet valid" : "valid";
  return { index, certificates: index.certificates.map((c) => ({ ...c, status: status(c) })) };
}

interface LoadedCa {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

async function loadCa(paths: PkiPaths): Promise<{ ca: LoadedCa; index: PkiIndex }> {
  const lib = X509();
  const index = await readIndex(paths);
  let cert: x509.X509Certificate;
  let key: CryptoKey;
  try {
    cert = new lib.X509Certificate(await readFile(paths.caCert, "utf8"));
  } catch (err) {
    throw new PkiError(`cannot read the CA certificate ${paths.caCert}: ${(err as Error).message}`);
  }
  try {
    const der = lib.PemConverter.decodeFirst(await readFile(paths.caKey, "utf8"));
    key = await webcrypto.subtle.importKey("pkcs8", der, EC_KEY, false, ["sign"]);
  } catch (err) {
    throw new PkiError(`cannot read the CA key ${paths.caKey}: ${(err as Error).message}`);
  }
  if (serialOf(cert) !== index.ca.serial)
    throw new PkiError(`${paths.index} belongs to another CA (serial ${index.ca.serial}, ca.pem has ${serialOf(cert)}).`);
  return { ca: { cert, key }, index };
}

async function readIndex(paths: PkiPaths): Promise<PkiIndex> {
  let text: string;
  try {
    text = await readFile(paths.index, "utf8");
  } catch {
    throw new PkiError(`no cluster CA in ${paths.dir}: create one with \`aether pki init --cluster NAME\` (or give --dir).`, "notFound");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PkiError(`${paths.index} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isIndex(value)) throw new PkiError(`${paths.index} is not an aether PKI index (version 1).`);
  return value;
}

function isIndex(value: unknown): value is PkiIndex {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Partial<Record<keyof PkiIndex, unknown>>;
  return (
    v.version === 1 &&
    typeof v.cluster === "string" &&
    typeof v.ca === "object" &&
    v.ca !== null &&
    typeof v.crlNumber === "number" &&
    Array.isArray(v.certificates)
  );
}

/** Writes crl.pem: every revoked certificate of the index, valid until the CA itself expires. */
async function writeCrl(paths: PkiPaths, ca: LoadedCa, index: PkiIndex, now: Date): Promise<void> {
  const lib = X509();
  index.crlNumber += 1;
  const crl = await lib.X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate: now,
    // The CRL is a file the operator hands to aetherd, not a URL polled by clients: it stays in force
    // until replaced. OpenSSL refuses every client once nextUpdate passes, so it ends with the CA.
    nextUpdate: ca.cert.notAfter,
    signingKey: ca.key,
    signingAlgorithm: SIGNING,
    extensions: [
      await lib.AuthorityKeyIdentifierExtension.create(ca.cert),
      new lib.Extension("2.5.29.20", false, derInteger(index.crlNumber)),
    ],
    entries: index.certificates
      .filter((c) => c.revoked !== undefined)
      .map((c) => ({
        serialNumber: c.serial,
        revocationDate: new Date(c.revoked?.time ?? now),
        ...(c.revoked?.reason !== undefined &&
          c.revoked.reason !== "unspecified" && { reason: lib.X509CrlReason[REVOCATION_REASONS[c.revoked.reason]] }),
      })),
  });
  // OpenSSL (and so Node's TLS) reads only the "X509 CRL" PEM label, not the library's "CRL".
  await writeAtomic(paths.crl, lib.PemConverter.encode(crl.rawData, "X509 CRL") + "\n", 0o644);
}

/** A DER INTEGER (the CRL Number extension's value). */
function derInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if ((bytes[0] ?? 0) & 0x80) bytes.unshift(0);
  return Uint8Array.from([0x02, bytes.length, ...bytes]);
}

/** 16 random bytes, positive, with no leading zero byte (so it prints the same everywhere). */
function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x3f) | 0x40;
  return bytes.toString("hex");
}

/** Upper-case hex without leading zeros: how Node's TLS and `openssl x509 -serial` print it. */
export function serialOf(cert: x509.X509Certificate): string {
  return cert.serialNumber.toUpperCase().replace(/^0+(?=.)/, "");
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const lib = X509();
  return lib.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY") + "\n";
}

/** `https://host:port` from either that or `host:port`. */
function httpsAddress(value: string): string {
  const address = /^https:\/\//.test(value) ? value : `https://${value}`;
  if (!/^https:\/\/(\[[0-9a-fA-F:]+\]|[^\s/:[\]]+):\d{1,5}\/?$/.test(address)) {
    throw new PkiError(`--write-config ${JSON.stringify(value)}: give the https://host:port address of an aetherd TCP listener.`, "usage");
  }
  return address.replace(/\/$/, "");
}

async function exists(path: string): Promise<boolean> {
  return readFile(path).then(
    () => true,
    () => false,
  );
}

/** Write, fsync, rename: a reader sees the old file or the new one, never half of one. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const file = await open(tmp, "w", mode);
  try {
    await file.chmod(mode);
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
}

/** One aether pki command at a time per directory: index.json is read, changed and written back. */
async function withLock<T>(paths: PkiPaths, work: () => Promise<T>): Promise<T> {
  const lock = join(paths.dir, ".lock");
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await (await open(lock, "wx", 0o600)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT")
        throw new PkiError(
          `no cluster CA in ${paths.dir}: create one with \`aether pki init --cluster NAME\` (or give --dir).`,
          "notFound",
        );
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (Date.now() > deadline) throw new PkiError(`${lock} is held by another aether pki command; if none is running, remove the file.`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lock, { force: true });
  }
}
