// TCP with mutual TLS: a client certificate from the cluster CA is required; none, or one from
// another CA, is refused with a clear error, and the daemon keeps serving.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, connect } from "@aether/sdk";
import { startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { createCa, type Pair, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const run = promisify(execFile);

describe("mutual TLS on TCP", () => {
  let daemon: TestDaemon;
  let ca: TestCa;
  let client: Pair;
  let url: string;

  before(async () => {
    ca = createCa("cluster-ca");
    const server = ca.issue("aetherd", { server: true });
    client = ca.issue("alice");
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    daemon = await startDaemon({
      args: ["--listen", `127.0.0.1:${port}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert],
    });
  });
  after(async () => {
    await daemon.stop();
    daemon.cleanup();
  });

  it("serves a client with a certificate from the cluster CA", async () => {
    const aether = await connect({ address: url, tls: { ca: ca.cert, cert: client.cert, key: client.key } });
    const { node } = await aether.node.getNodeInfo({});
    assert.ok(node?.hostname);
    aether.close();
  });

  it("serves Connect JSON over HTTP/1.1 too (curl with the client certificate)", async () => {
    const { stdout } = await run("curl", [
      "--silent",
      "--http1.1",
      "--cacert",
      ca.cert,
      "--cert",
      client.cert,
      "--key",
      client.key,
      "-H",
      "Content-Type: application/json",
      "-d",
      "{}",
      `${url}/aether.node.v1.NodeService/CheckHealth`,
    ]);
    assert.equal((JSON.parse(stdout) as { status: string }).status, "HEALTH_STATUS_SERVING");
  });

  const refused = async (tls: { ca: string; cert?: string; key?: string }, pattern: RegExp) => {
    await assert.rejects(connect({ address: url, tls }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unauthenticated, err.rawMessage);
      assert.match(err.rawMessage, pattern);
      return true;
    });
  };

  it("refuses a client without a certificate", async () => {
    await refused({ ca: ca.cert }, /requires a client certificate/);
  });

  it("refuses a client whose certificate comes from another CA", async () => {
    const foreign = createCa("foreign-ca").issue("mallory");
    await refused(
      { ca: ca.cert, cert: foreign.cert, key: foreign.key },
      /client certificate was refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE/,
    );
  });

  it("refuses an expired client certificate", async () => {
    const expired = ca.issue("expired-bob", { days: -1 });
    await refused({ ca: ca.cert, cert: expired.cert, key: expired.key }, /refused \(CERT_HAS_EXPIRED/);
  });

  it("tells a client that does not trust the daemon's CA what to do", async () => {
    const other = createCa("other-ca");
    await assert.rejects(connect({ address: url, tls: { ca: other.cert, cert: client.cert, key: client.key } }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, /is not trusted \([A-Z_]+\).*cluster CA/);
      return true;
    });
  });

  it("keeps serving after refusing", async () => {
    const aether = await connect({ address: url, tls: { ca: ca.cert, cert: client.cert, key: client.key } });
    assert.equal((await aether.node.checkHealth({})).status, 1);
    aether.close();
  });
});

describe("mutual TLS on the unix socket (--unix-mtls)", () => {
  let daemon: TestDaemon;
  let ca: TestCa;
  let alice: Pair;

  before(async () => {
    ca = createCa("socket-ca");
    // The node certificate carries "localhost", the name clients check over a socket.
    const server = ca.issue("aetherd", { server: true });
    alice = ca.issue("alice");
    const port = await freePort();
    daemon = await startDaemon({
      args: [
        "--listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
        "--unix-mtls",
      ],
      socketTls: { ca: ca.cert, cert: alice.cert, key: alice.key },
    });
  });
  after(async () => {
    await daemon.stop();
    daemon.cleanup();
  });

  it("serves a caller with a certificate from the cluster CA, known by its SPIFFE identity", async () => {
    const aether = await daemon.client();
    const { executable } = await aether.runtime.startExecutable({ argv: ["/bin/true"] });
    await aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    const { records } = await aether.observe.listAuditRecords({});
    assert.equal(records.find((r) => r.method.endsWith("/StartExecutable"))?.identity, "spiffe://test/user/alice");
  });

  it("refuses a caller without a certificate, or with one from another CA", async () => {
    await assert.rejects(connect({ address: `unix://${daemon.socket}`, tls: { ca: ca.cert } }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      return true;
    });
    // A plain HTTP/2 client cannot even speak to a TLS socket.
    await assert.rejects(connect({ address: `unix://${daemon.socket}` }), ConnectError);
    const foreign = createCa("foreign-socket-ca").issue("mallory");
    await assert.rejects(
      connect({ address: `unix://${daemon.socket}`, tls: { ca: ca.cert, cert: foreign.cert, key: foreign.key } }),
      (err: unknown) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unauthenticated, err.rawMessage);
        assert.match(err.rawMessage, /client certificate was refused/);
        return true;
      },
    );
  });
});
