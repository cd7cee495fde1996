// The cluster PKI end to end: `aether pki` makes a CA and SPIFFE identities, aetherd serves mutual
// TLS with them, refuses foreign, expired and revoked client certificates, and rotates its own
// certificate on SIGHUP without dropping the listener or the connections already open.
import "reflect-metadata";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { webcrypto } from "node:crypto";
import { after, before, describe, it } from "node:test";
import * as x509 from "@peculiar/x509";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import { eventually, startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";
import { freePort } from "./helpers/net.js";

x509.cryptoProvider.set(webcrypto);

interface Issued {
  serial: string;
  spiffeId: string;
  cert: string;
  key: string;
  config?: string;
}

const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: "" } });

async function issue(dir: string, ...args: string[]): Promise<Issued> {
  const r = await aether("pki", "issue", ...args, "--dir", dir, "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Issued;
}

const parse = (file: string) => new x509.X509Certificate(readFileSync(file, "utf8"));
const sans = (cert: x509.X509Certificate) => cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON() ?? [];
const usages = (cert: x509.X509Certificate) => [...(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [])];

describe("aether pki and aetherd's certificate checks", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-pki-test-"));
  const pki = join(dir, "pki");
  let daemon: TestDaemon;
  let url: string;
  let port: number;
  let node: Issued;
  let alice: Issued;
  const clients: AetherClient[] = [];

  const reloads = () => (daemon.log().match(/reloaded TLS material|TLS reload failed/g) ?? []).length;
  /** SIGHUP, then wait until aetherd has logged the outcome of the reload. */
  const sighup = async () => {
    const before = reloads();
    daemon.process.kill("SIGHUP");
    await eventually(() => (reloads() > before ? true : undefined), 10_000, "aetherd to log the TLS reload");
  };
  const client = async (pair: Issued) => {
    const c = await connect({ address: url, tls: { ca: join(pki, "ca.pem"), cert: pair.cert, key: pair.key } });
    clients.push(c);
    return c;
  };
  const refused = async (pair: Issued, pattern: RegExp) => {
    await assert.rejects(client(pair), (err: unknown) => {
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.code, Code.Unauthenticated, err.rawMessage);
      assert.match(err.rawMessage, pattern);
      return true;
    });
  };
  /** The serial of the certificate aetherd presents to a new connection. */
  const serverSerial = async () => {
    const socket = await openTls();
    const serial = socket.getPeerCertificate().serialNumber;
    socket.destroy();
    return serial;
  };
  const openTls = () =>
    new Promise<TLSSocket>((resolve, reject) => {
      const socket = tlsConnect(
        {
          host: "127.0.0.1",
          port,
          ca: readFileSync(join(pki, "ca.pem")),
          cert: readFileSync(alice.cert),
          key: readFileSync(alice.key),
          ALPNProtocols: ["h2"],
        },
        () => resolve(socket),
      );
      socket.once("error", reject);
    });

  before(async () => {
    const init = await aether("pki", "init", "--cluster", "test-cluster", "--dir", pki);
    assert.equal(init.code, 0, init.stderr);
    port = await freePort();
    url = `https://127.0.0.1:${port}`;
    node = await issue(pki, "node", "aetherd");
    alice = await issue(pki, "user", "alice", "--tenant", "t", "--write-config", url);
    const config = join(dir, "aetherd.toml");
    writeFileSync(
      config,
      `[tcp]\nlisten = "127.0.0.1:${port}"\ncert = ${JSON.stringify(node.cert)}\nkey = ${JSON.stringify(node.key)}\n` +
        `client_ca = ${JSON.stringify(join(pki, "ca.pem"))}\ncrl = ${JSON.stringify(join(pki, "crl.pem"))}\n`,
    );
    daemon = await startDaemon({ args: ["--config", config] });
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await daemon?.stop();
    daemon?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("makes a CA and certificates whose URI SAN is the SPIFFE ID", async () => {
    const ca = parse(join(pki, "ca.pem"));
    assert.equal(await ca.isSelfSigned(), true);
    assert.equal(ca.getExtension(x509.BasicConstraintsExtension)?.ca, true);
    assert.equal(ca.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(ca.publicKey.algorithm.name, "ECDSA");
    assert.ok(ca.notAfter.getTime() - Date.now() > 3649 * 86_400_000, "10 years by default");
    assert.equal(statSync(join(pki, "ca.key")).mode & 0o777, 0o600);
    assert.equal(statSync(node.key).mode & 0o777, 0o600);

    const nodeCert = parse(node.cert);
    assert.deepEqual(sans(nodeCert), [
      { type: "url", value: "spiffe://test-cluster/node/aetherd" },
      { type: "dns", value: "localhost" },
      { type: "ip", value: "127.0.0.1" },
    ]);
    assert.deepEqual(usages(nodeCert), [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    assert.equal(await nodeCert.verify({ publicKey: ca }), true);

    assert.deepEqual(sans(parse(alice.cert)), [{ type: "url", value: "spiffe://test-cluster/tenant/t/user/alice" }]);
    assert.deepEqual(usages(parse(alice.cert)), [x509.ExtendedKeyUsage.clientAuth]);
    const bob = await issue(pki, "user", "bob");
    assert.deepEqual(sans(parse(bob.cert)), [{ type: "url", value: "spiffe://test-cluster/user/bob" }]);
    const ci = await issue(pki, "service", "ci");
    assert.deepEqual(sans(parse(ci.cert)), [{ type: "url", value: "spiffe://test-cluster/service/ci" }]);
    assert.deepEqual(usages(parse(ci.cert)), [x509.ExtendedKeyUsage.clientAuth]);
    const edge = await issue(pki, "node", "edge", "--dns", "edge.example", "--ip", "10.1.2.3", "--days", "7");
    assert.deepEqual(
      sans(parse(edge.cert)).map((n) => n.value),
      ["spiffe://test-cluster/node/edge", "edge.example", "10.1.2.3"],
    );
    assert.ok(parse(edge.cert).notAfter.getTime() - Date.now() < 7 * 86_400_000 + 60_000);

    const list = await aether("pki", "list", "--dir", pki, "--json");
    const listed = JSON.parse(list.stdout) as Array<{ spiffeId: string; serial: string; status: string }>;
    assert.deepEqual(
      listed.map((c) => c.spiffeId),
      ["node/aetherd", "tenant/t/user/alice", "user/bob", "service/ci", "node/edge"].map((p) => `spiffe://test-cluster/${p}`),
    );
    assert.ok(listed.every((c) => c.status === "valid"));
    assert.equal(listed[0]?.serial, nodeCert.serialNumber.toUpperCase());
  });

  it("reports mistakes with a sentence and the CLI's exit codes", async () => {
    const again = await aether("pki", "init", "--cluster", "test-cluster", "--dir", pki);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^aether: a cluster CA already exists in /);
    const badName = await aether("pki", "issue", "user", "Alice", "--dir", pki);
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /must be a DNS label/);
    const tenantNode = await aether("pki", "issue", "node", "n2", "--tenant", "t", "--dir", pki);
    assert.equal(tenantNode.code, 2);
    assert.match(tenantNode.stderr, /--tenant applies to users only/);
    const unknown = await aether("pki", "revoke", "nobody", "--dir", pki);
    assert.equal(unknown.code, 3);
    assert.match(unknown.stderr, /no certificate in the index has the serial, SPIFFE ID or name "nobody"/);
    const noCa = await aether("pki", "list", "--dir", join(dir, "nowhere"));
    assert.equal(noCa.code, 3);
    assert.match(noCa.stderr, /no cluster CA in .*aether pki init --cluster NAME/);
    const help = await aether("pki", "issue", "--help");
    assert.match(help.stdout, /Examples:\n {2}aether pki issue node/);
  });

  it("serves a user through the client config that `pki issue --write-config` wrote", async () => {
    assert.ok(alice.config);
    const toml = readFileSync(alice.config, "utf8");
    assert.match(toml, new RegExp(`address = "${url}"`));
    const viaSdk = await connect({ configPath: alice.config });
    clients.push(viaSdk);
    assert.ok((await viaSdk.node.getNodeInfo({})).node?.hostname);
    // The same file as ~/.config/aether/config.toml serves the aether CLI.
    const xdg = join(dir, "xdg");
    mkdirSync(join(xdg, "aether"), { recursive: true });
    copyFileSync(alice.config, join(xdg, "aether", "config.toml"));
    const info = await runCommand("aether", ["node", "info", "--json"], { env: { AETHER_HOST: "", XDG_CONFIG_HOME: xdg } });
    assert.equal(info.code, 0, info.stderr);
    assert.ok((JSON.parse(info.stdout) as { hostname: string }).hostname);
  });

  it("refuses a certificate from another CA", async () => {
    const other = join(dir, "other-pki");
    assert.equal((await aether("pki", "init", "--cluster", "test-cluster", "--dir", other)).code, 0);
    const mallory = await issue(other, "user", "mallory", "--tenant", "t");
    await refused(mallory, /client certificate was refused \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/);
  });

  it("refuses an expired certificate", async () => {
    const expired = await issue(pki, "user", "late", "--not-after", new Date(Date.now() - 3_600_000).toISOString());
    assert.ok(parse(expired.cert).notAfter < new Date());
    const list = JSON.parse((await aether("pki", "list", "--dir", pki, "--json")).stdout) as Array<{ serial: string; status: string }>;
    assert.equal(list.find((c) => c.serial === expired.serial)?.status, "expired");
    await refused(expired, /refused \(CERT_HAS_EXPIRED/);
  });

  it("refuses a revoked certificate once aetherd reloads the CRL, and closes its open connection", async () => {
    const carol = await issue(pki, "user", "carol", "--tenant", "t");
    const carolClient = await client(carol);
    assert.equal((await carolClient.node.checkHealth({})).status, 1);

    const revoke = await aether("pki", "revoke", "carol", "--tenant", "t", "--reason", "key-compromise", "--dir", pki);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, new RegExp(`revoked spiffe://test-cluster/tenant/t/user/carol \\(serial ${carol.serial}\\)`));
    const crl = new x509.X509Crl(readFileSync(join(pki, "crl.pem"), "utf8"));
    assert.equal(await crl.verify({ publicKey: parse(join(pki, "ca.pem")) }), true);
    assert.deepEqual(
      crl.entries.map((e) => e.serialNumber.toUpperCase()),
      [carol.serial],
    );
    assert.equal(crl.entries[0]?.reason, x509.X509CrlReason.keyCompromise);

    await sighup();
    assert.match(daemon.log(), /"revoked":1,.*"changed":\["crl"\],"closedRevokedConnections":1/);
    await refused(carol, /CERT_REVOKED\): it has been revoked/);
    await assert.rejects(carolClient.node.checkHealth({}), "the revoked client's open connection was closed");
    // Everyone else is still served.
    assert.equal((await (await client(alice)).node.checkHealth({})).status, 1);
    const list = JSON.parse((await aether("pki", "list", "--dir", pki, "--json")).stdout) as Array<{ serial: string; status: string }>;
    assert.equal(list.find((c) => c.serial === carol.serial)?.status, "revoked");
  });

  it("rotates its certificate on SIGHUP: new connections get the new one, open ones keep working", async () => {
    const oldSerial = await serverSerial();
    assert.equal(oldSerial, node.serial);
    // A long-lived client: one HTTP/2 connection, opened before the rotation.
    const session = http2.connect(url, {
      ca: readFileSync(join(pki, "ca.pem")),
      cert: readFileSync(alice.cert),
      key: readFileSync(alice.key),
    });
    const health = () =>
      new Promise<string>((resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": "/aether.node.v1.NodeService/CheckHealth",
          "content-type": "application/json",
        });
        let body = "";
        req.on("data", (d: Buffer) => (body += d.toString()));
        req.on("end", () => resolve(body));
        req.on("error", reject);
        req.end("{}");
      });
    try {
      assert.match(await health(), /SERVING/);
      const sdkClient = await client(alice);
      assert.equal((await sdkClient.node.checkHealth({})).status, 1);

      const rotated = await issue(pki, "node", "aetherd");
      assert.equal(rotated.cert, node.cert, "the new pair replaces the files aetherd reads");
      assert.notEqual(rotated.serial, node.serial);
      await sighup();
      assert.match(daemon.log(), /reloaded TLS material \(changed: certificate, key\)/);

      assert.equal(await serverSerial(), rotated.serial, "a new connection sees the new certificate");
      const peer = (session.socket as TLSSocket).getPeerCertificate();
      assert.equal(peer.serialNumber, oldSerial, "the open connection still runs on the old one");
      assert.match(await health(), /SERVING/, "and keeps working");
      assert.equal((await sdkClient.node.checkHealth({})).status, 1);
    } finally {
      session.close();
    }
  });

  it("keeps the material in use when a reloaded file is bad", async () => {
    const serial = await serverSerial();
    const good = readFileSync(node.key);
    writeFileSync(node.key, "not a key\n");
    try {
      await sighup();
      assert.match(daemon.log(), /TLS reload failed; still serving with the certificate, key, client CA and CRL loaded before/);
      assert.equal(await serverSerial(), serial);
      assert.equal((await (await client(alice)).node.checkHealth({})).status, 1);
    } finally {
      writeFileSync(node.key, good);
    }
    await sighup();
    assert.equal(await serverSerial(), serial);
  });
});
