// A throwaway PKI for tests: a CA, a server certificate for 127.0.0.1, and client certificates,
// made with the openssl command line (the product's own PKI is a separate piece of work).
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Pair {
  cert: string;
  key: string;
}

export interface TestCa extends Pair {
  dir: string;
  /**
   * uri: the SPIFFE URI SAN (default spiffe://test/user/<name>, for a server spiffe://test/node/<name>,
   * so the trust domain is "test"); null: none at all.
   * ips: more IP SANs of a server certificate (besides 127.0.0.1); client: a server certificate
   * may also be presented as a client certificate (a node calling the aggregator with its own).
   */
  issue(name: string, options?: { server?: boolean; days?: number; uri?: string | null; ips?: string[]; client?: boolean }): Pair;
}

const openssl = (dir: string, args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });

export function createCa(name: string, dir = mkdtempSync(join(tmpdir(), "aether-pki-"))): TestCa {
  const ca = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    ca.key,
    "-out",
    ca.cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
  ]);
  return {
    ...ca,
    dir,
    issue(subject, options = {}) {
      const pair = { cert: join(dir, `${subject}.pem`), key: join(dir, `${subject}.key`) };
      const csr = join(dir, `${subject}.csr`);
      const ext = join(dir, `${subject}.ext`);
      writeFileSync(
        ext,
        options.server
          ? `subjectAltName=IP:127.0.0.1,${(options.ips ?? []).map((ip) => `IP:${ip},`).join("")}DNS:localhost${options.uri === null ? "" : `,URI:${options.uri ?? `spiffe://test/node/${subject}`}`}\nextendedKeyUsage=serverAuth${options.client ? ",clientAuth" : ""}\n`
          : `${options.uri === null ? "" : `subjectAltName=URI:${options.uri ?? `spiffe://test/user/${subject}`}\n`}extendedKeyUsage=clientAuth\n`,
      );
      openssl(dir, [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        pair.key,
        "-out",
        csr,
        "-subj",
        `/CN=${subject}`,
      ]);
      openssl(dir, [
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca.cert,
        "-CAkey",
        ca.key,
        "-CAcreateserial",
        "-out",
        pair.cert,
        "-days",
        String(options.days ?? 1),
        "-extfile",
        ext,
      ]);
      return pair;
    },
  };
}
