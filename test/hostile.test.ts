// Issue 22, as a hostile tenant and a careless operator would try it: certificates from the
// cluster CA that name a foreign trust domain or two identities, and a second aetherd started on a
// state directory that is in use. (Tenant processes on the host: hostile-tenants.test.ts.)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, connect } from "@aether/sdk";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { repoRoot, startDaemon, isRunning, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { createCa, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const unauthenticated = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ConnectError, String(err));
  assert.equal(err.code, Code.Unauthenticated, err.rawMessage);
  assert.match(err.rawMessage, pattern);
  return true;
};

describe("SPIFFE trust domain", () => {
  let ca: TestCa;
  let daemon: TestDaemon;
  let aggregator: TestAggregator;
  let daemonUrl: string;
  let aggregatorUrl: string;

  before(async () => {
    ca = createCa("cluster-ca");
    const server = ca.issue("aetherd", { server: true }); // spiffe://test/node/aetherd: trust domain "test"
    const [p1, p2] = [await freePort(), await freePort()];
    daemonUrl = `https://127.0.0.1:${p1}`;
    aggregatorUrl = `https://127.0.0.1:${p2}`;
    daemon = await startDaemon({
      args: ["--listen", `127.0.0.1:${p1}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert],
    });
    aggregator = await startAggregator({
      args: ["--listen", `127.0.0.1:${p2}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert],
    });
  });
  after(async () => {
    await daemon?.stop();
    daemon?.cleanup();
    await aggregator?.stop();
  });

  for (const [what, url] of [
    ["aetherd", () => daemonUrl],
    ["aether-aggregator", () => aggregatorUrl],
  ] as const) {
    it(`${what}: a certificate of the cluster CA naming another trust domain is refused, not an operator`, async () => {
      const mallory = ca.issue(`mallory-${what}`, { uri: "spiffe://evil/user/mallory" });
      await assert.rejects(
        connect({ address: url(), tls: { ca: ca.cert, ...mallory } }),
        unauthenticated(/spiffe:\/\/evil\/user\/mallory is not in this cluster's trust domain test/),
      );
    });

    it(`${what}: a certificate naming two SPIFFE IDs is refused, whichever comes first`, async () => {
      const twoFaced = ca.issue(`two-${what}`, { uri: "spiffe://test/tenant/a/user/x,URI:spiffe://test/user/admin" });
      await assert.rejects(connect({ address: url(), tls: { ca: ca.cert, ...twoFaced } }), unauthenticated(/names 2 SPIFFE IDs/));
    });

    it(`${what}: an identity of the cluster's own trust domain is still served`, async () => {
      const alice = ca.issue(`alice-${what}`, { uri: "spiffe://test/user/alice" });
      const client = await connect({ address: url(), tls: { ca: ca.cert, ...alice } });
      assert.ok((await client.node.checkHealth({})).status);
      client.close();
    });
  }

  it("aetherd does not start on TLS when no trust domain can be known, and starts with --trust-domain", async () => {
    const bare = ca.issue("bare-server", { server: true, uri: null });
    const port = await freePort();
    const args = ["--listen", `127.0.0.1:${port}`, "--tls-cert", bare.cert, "--tls-key", bare.key, "--tls-client-ca", ca.cert];
    await assert.rejects(startDaemon({ args }), /names no SPIFFE ID.*trust_domain/s);
    const named = await startDaemon({ args: [...args, "--trust-domain", "test"] });
    try {
      const alice = ca.issue("alice-named", { uri: "spiffe://test/user/alice" });
      const client = await connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, ...alice } });
      assert.ok((await client.node.checkHealth({})).status);
      client.close();
    } finally {
      await named.stop();
      named.cleanup();
    }
  });
});

describe("one aetherd per state directory", () => {
  let daemon: TestDaemon;

  before(async () => {
    daemon = await startDaemon();
  });
  after(async () => {
    await daemon?.stop();
    daemon?.cleanup();
  });

  it("a second aetherd on the same socket and state dir exits at once naming the holder, touching nothing", async () => {
    const aether = await daemon.client();
    const { executable } = await aether.runtime.startExecutable({ name: "keeper", argv: ["/bin/sleep", "600"] });
    const recordPath = join(daemon.stateDir, "executables", executable?.id ?? "", "record.json");
    const recordBefore = readFileSync(recordPath, "utf8");

    const second = spawn(
      process.execPath,
      [join(repoRoot, "daemon", "bin", "aetherd.mjs"), "--socket", daemon.socket, "--state-dir", daemon.stateDir],
      {
        cwd: repoRoot,
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    second.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => second.once("exit", (c) => resolve(c)));
    assert.notEqual(code, 0);
    assert.match(stderr, new RegExp(`another aetherd \\(pid ${daemon.process.pid}\\) is using the state directory`));

    // The first daemon still serves, its socket is still there, and its records were not rewritten.
    assert.ok(existsSync(daemon.socket));
    const got = await aether.runtime.getExecutable({ executable: "keeper" });
    assert.equal(got.executable?.state, ExecutableState.RUNNING);
    assert.ok(isRunning(got.executable?.pid ?? 0));
    assert.equal(readFileSync(recordPath, "utf8"), recordBefore);
    await aether.runtime.stopExecutable({ executable: "keeper", gracePeriod: { seconds: 0n } });
  });

  it("kill -9 releases the lock: a new aetherd starts on the same state dir at once", async () => {
    await daemon.kill9();
    const again = await startDaemon({ dir: join(daemon.stateDir, ".."), cgroupRoot: daemon.cgroupRoot });
    assert.equal(readFileSync(join(daemon.stateDir, "aetherd.lock"), "utf8").trim(), String(again.process.pid));
    await again.stop();
    daemon = again;
  });
});
