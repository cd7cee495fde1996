// aether pki init|issue|revoke|list: the cluster's certificate authority, on the operator's machine.
// Works on files only (it never talks to aetherd); aetherd picks up new certificates and the CRL on SIGHUP.
import { Argument, InvalidArgumentError, Option, type Command } from "commander";
import { EXIT, fail } from "../exit-codes.js";
import { forPrograms, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";
import {
  DEFAULT_DAYS,
  PkiError,
  REVOCATION_REASONS,
  defaultPkiDir,
  initCa,
  issueCertificate,
  listCertificates,
  pkiPaths,
  revokeCertificates,
  type RevocationReason,
} from "../pki/authority.js";
import { KINDS, checkCluster, checkLabel, type Kind } from "../pki/identity.js";

const label = (what: string) => (value: string) => {
  const problem = checkLabel(what, value);
  if (problem !== undefined) throw new InvalidArgumentError(problem);
  return value;
};

const cluster = (value: string) => {
  const problem = checkCluster(value);
  if (problem !== undefined) throw new InvalidArgumentError(problem);
  return value;
};

const days = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 36_500)
    throw new InvalidArgumentError(`--days must be a whole number of days from 1 to 36500, not ${JSON.stringify(value)}`);
  return n;
};

const time = (value: string) => {
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) throw new InvalidArgumentError(`${JSON.stringify(value)} is not an ISO 8601 time`);
  return t;
};

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Runs a pki action and turns its errors into a sentence on stderr and the matching exit code. */
async function run(work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    if (err instanceof PkiError) {
      process.stderr.write(`aether: ${err.message}\n`);
      process.exit(err.kind === "usage" ? EXIT.usage : err.kind === "notFound" ? EXIT.notFound : EXIT.failed);
    }
    fail(err);
  }
}

const dirOption = () => new Option("--dir <dir>", "the PKI directory (default ~/.config/aether/pki; /etc/aether/pki as root)");
const dirOf = (o: { dir?: string }) => o.dir ?? defaultPkiDir();

export function pkiCommands(program: Command): void {
  const pki = program
    .command("pki")
    .description("the cluster's certificate authority: SPIFFE identities for nodes, users and services, and their revocation")
    .addHelpText(
      "after",
      `
Files (in --dir): ca.pem, ca.key (0600), crl.pem, index.json, and the issued pairs under
node/, service/, user/ and tenant/<tenant>/user/. aetherd reads the CRL from [tcp] crl and
reloads its certificate, key, client CA and CRL on SIGHUP.

Examples:
  aether pki init --cluster prod
  aether pki issue node blade-07 --dns blade-07.rack1.example --ip 10.0.0.7
  aether pki issue user alice --write-config https://10.0.0.7:7443
  aether pki issue user bob --tenant team-a --days 30
  aether pki revoke bob --reason key-compromise && kill -HUP <pid of aetherd>
  aether pki list`,
    );

  outputOptions(pki.command("init"))
    .description("create the cluster CA (EC P-256, self-signed) and an empty revocation list")
    .requiredOption("--cluster <name>", "the cluster name: the trust domain of every SPIFFE ID (spiffe://<name>/...)", cluster)
    .option("--days <n>", `validity of the CA (default ${DEFAULT_DAYS.ca})`, days)
    .addOption(dirOption())
    .addHelpText("after", "\nExamples:\n  aether pki init --cluster prod\n  aether pki init --cluster lab --dir ./pki --days 365 --json")
    .action((o: { cluster: string; days?: number; dir?: string } & OutputFlags) =>
      run(async () => {
        const index = await initCa({ dir: dirOf(o), cluster: o.cluster, ...(o.days !== undefined && { days: o.days }) });
        const paths = pkiPaths(dirOf(o));
        if (forPrograms(o)) {
          const ca = { cluster: index.cluster, ...index.ca, cert: paths.caCert, key: paths.caKey, crl: paths.crl };
          return printOne(o, { json: (x: typeof ca) => x, name: (x: typeof ca) => x.cluster }, ca);
        }
        process.stdout.write(
          `created the CA of cluster ${index.cluster} (serial ${index.ca.serial}, expires ${index.ca.notAfter})\n` +
            `  certificate  ${paths.caCert}\n  key          ${paths.caKey}  (keep it secret: it can issue any identity)\n  crl          ${paths.crl}\n`,
        );
      }),
    );

  outputOptions(pki.command("issue"))
    .description("issue a certificate signed by the CA, with the identity's SPIFFE ID as URI SAN")
    .addArgument(new Argument("<kind>", "node (server and client), user or service (client)").choices(KINDS))
    .argument("<name>", "the node's, user's or service's name (DNS label)", label("name"))
    .option("--tenant <tenant>", "users: the tenant the user belongs to (spiffe://<cluster>/tenant/<tenant>/user/<name>)", label("tenant"))
    .option("--days <n>", `validity (default ${DEFAULT_DAYS.node} for nodes and services, ${DEFAULT_DAYS.user} for users)`, days)
    .option(
      "--dns <name>",
      "nodes: a DNS name clients reach it by (repeatable; default localhost and 127.0.0.1 when no --dns or --ip)",
      collect,
    )
    .option("--ip <address>", "nodes: an IP address clients reach it at (repeatable)", collect)
    .option("--write-config <address>", "users: also write NAME.toml, a client config (address, ca, cert, key) for this https://host:port")
    .option("--out <dir>", "folder for NAME.pem and NAME.key (default: the identity's folder in the PKI directory)")
    .addOption(dirOption())
    .addOption(new Option("--not-after <time>", "exact end of validity, ISO 8601 (for tests)").argParser(time).hideHelp())
    .addHelpText(
      "after",
      `
Examples:
  aether pki issue node blade-07 --dns blade-07.example --ip 10.0.0.7
  aether pki issue user alice --write-config https://10.0.0.7:7443 && cp ~/.config/aether/pki/user/alice.toml ~/.config/aether/config.toml
  aether pki issue user bob --tenant team-a --days 30
  aether pki issue service ci-runner --out /etc/ci/aether`,
    )
    .action(
      (
        kind: Kind,
        name: string,
        o: {
          tenant?: string;
          days?: number;
          dns?: string[];
          ip?: string[];
          writeConfig?: string;
          out?: string;
          dir?: string;
          notAfter?: Date;
        } & OutputFlags,
      ) =>
        run(async () => {
          const issued = await issueCertificate({
            dir: dirOf(o),
            kind,
            name,
            ...(o.tenant !== undefined && { tenant: o.tenant }),
            ...(o.days !== undefined && { days: o.days }),
            ...(o.notAfter !== undefined && { notAfter: o.notAfter }),
            dns: o.dns ?? [],
            ip: o.ip ?? [],
            ...(o.out !== undefined && { outDir: o.out }),
            ...(o.writeConfig !== undefined && { writeConfig: o.writeConfig }),
          });
          if (forPrograms(o)) return printOne(o, { json: (x: typeof issued) => x, name: (x: typeof issued) => x.spiffeId }, issued);
          process.stdout.write(
            `issued ${issued.spiffeId} (serial ${issued.serial}, expires ${issued.notAfter})\n  certificate  ${issued.cert}\n  key          ${issued.key}\n` +
              (issued.config ? `  config       ${issued.config}  (copy it to ~/.config/aether/config.toml)\n` : ""),
          );
        }),
    );

  outputOptions(pki.command("revoke"))
    .description("revoke a certificate by serial, or every certificate of an identity by SPIFFE ID or name, and rewrite crl.pem")
    .argument("<target>", "a serial (hex), a SPIFFE ID, or a name")
    .addOption(new Option("--kind <kind>", "when a name is used by several kinds: which one").choices(KINDS))
    .option("--tenant <tenant>", "when a name is used in several tenants: which one", label("tenant"))
    .addOption(new Option("--reason <reason>", "why (recorded in the CRL)").choices(Object.keys(REVOCATION_REASONS)).default("unspecified"))
    .addOption(dirOption())
    .addHelpText(
      "after",
      `
aetherd refuses the revoked certificates once it reloads the CRL (kill -HUP <pid of aetherd>);
their open connections are closed then.

Examples:
  aether pki revoke bob
  aether pki revoke spiffe://prod/tenant/team-a/user/bob --reason key-compromise
  aether pki revoke 4F3A9C0D2E...`,
    )
    .action((target: string, o: { kind?: Kind; tenant?: string; reason: RevocationReason; dir?: string } & OutputFlags) =>
      run(async () => {
        const revoked = await revokeCertificates({
          dir: dirOf(o),
          target,
          reason: o.reason,
          ...(o.kind !== undefined && { kind: o.kind }),
          ...(o.tenant !== undefined && { tenant: o.tenant }),
        });
        if (forPrograms(o))
          return printList(
            o,
            { json: (c: (typeof revoked)[number]) => c, name: (c: (typeof revoked)[number]) => c.spiffeId, columns: [] },
            revoked,
          );
        for (const c of revoked) process.stdout.write(`revoked ${c.spiffeId} (serial ${c.serial})\n`);
        process.stdout.write(`wrote ${pkiPaths(dirOf(o)).crl}; send aetherd SIGHUP to apply it.\n`);
      }),
    );

  outputOptions(pki.command("list"), "list")
    .description("the certificates the CA has issued, with their status")
    .addOption(dirOption())
    .addHelpText(
      "after",
      "\nExamples:\n  aether pki list\n  aether pki list -o name\n  aether pki list --json | jq '.[] | select(.status == \"valid\") | .spiffeId'",
    )
    .action((o: { dir?: string } & OutputFlags) =>
      run(async () => {
        const { index, certificates } = await listCertificates(dirOf(o));
        type Certificate = (typeof certificates)[number];
        const view: ListView<Certificate> = {
          json: (c) => c,
          name: (c) => c.spiffeId,
          columns: [
            { header: "SERIAL", cell: (c) => c.serial },
            { header: "IDENTITY", cell: (c) => c.spiffeId },
            { header: "EXPIRES", cell: (c) => c.notAfter },
            { header: "STATUS", cell: (c) => (c.revoked ? `revoked ${c.revoked.time} (${c.revoked.reason})` : c.status), clip: true },
          ],
        };
        if (!forPrograms(o)) process.stdout.write(`cluster ${index.cluster}: CA serial ${index.ca.serial}, expires ${index.ca.notAfter}\n`);
        printList(o, view, certificates);
      }),
    );
}
