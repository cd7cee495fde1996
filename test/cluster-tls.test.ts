// The cluster over TCP and mutual TLS on loopback: aetherd registers with an https aggregator using
// its node certificate (from [tcp], or [cluster] ca/cert/key when it serves no TCP), the aggregator
// calls an https node back with its own certificate, identities are checked (a node certificate
// registers only as the node it names, a user certificate registers no node), and the CLI reaches
// an https aggregator given by --aggregator with the client config's CA and certificate.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import { NodeLifecycle } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { eventually, startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { createCa, type Pair, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";
import { runCommand } from "./helpers/run.js";

/** A node certificate as `aether pki issue node` makes it: server and client use, 127.0.0.1, spiffe://test/node/<name>. */
const issueNode = (ca: TestCa, name: string): Pair => ca.issue(name, { server: true, client: true });

const sleeper = (name: string) => ({
  spec: {
    name,
    requirements: { cpuMillis: 10 },
    kind: { case: "executable" as const, value: { argv: ["/bin/sleep", "600"], uid: 65534, gid: 65534 } },
  },
});

const registration = (name: string) => ({
  nodeId: `id-${name}`,
  name,
  address: "unix:///nonexistent/aetherd.sock",
  capabilities: { cpuCount: 1, memoryTotalBytes: 1n << 30n },
});

describe("the cluster over TCP and mutual TLS (loopback)", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-cluster-tls-"));
  let ca: TestCa;
  let agg: TestAggregator;
  let aggregatorUrl = "";
  const nodes: TestDaemon[] = [];
  const clients: AetherClient[] = [];

  before(async () => {
    ca = createCa("cluster-ca", mkdtempSync(join(tmpdir(), "aether-cluster-tls-pki-")));
    // No --node-tls-*: the aggregator calls the nodes with its own listener's certificate and client CA.
    const server = issueNode(ca, "aggregator");
    const port = await freePort();
    aggregatorUrl = `https://127.0.0.1:${port}`;
    agg = await startAggregator({
      dir,
      args: ["--listen", `127.0.0.1:${port}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert],
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const p of (await agg?.client.aggregator.listPlacements({ pageSize: 100 }).catch(() => ({ placements: [] })))?.placements ?? []) {
      await agg.client.aggregator.releasePlacement({ workload: p.workloadId, tenant: p.tenant }).catch(() => undefined);
    }
    for (const n of nodes) {
      await n.stop();
      n.cleanup();
    }
    await agg?.stop();
  });

  const clientAs = async (name: string, pair: Pair) => {
    const client = await connect({
      address: aggregatorUrl,
      tls: { ca: ca.cert, ...pair },
      useClientConfig: false,
      peer: "aether-aggregator",
    });
    clients.push(client);
    return client;
  };

  it("registers an aetherd whose [tcp] node certificate it presents, and deploys to it over https", async () => {
    const pair = issueNode(ca, "node-tcp");
    const nodePort = await freePort();
    const config = join(dir, "node-tcp.toml");
    writeFileSync(
      config,
      [
        "[tcp]",
        `listen = "127.0.0.1:${nodePort}"`,
        `cert = "${pair.cert}"`,
        `key = "${pair.key}"`,
        `client_ca = "${ca.cert}"`,
        "[cluster]",
        `aggregator = "${aggregatorUrl}"`,
        `advertise = "https://127.0.0.1:${nodePort}"`,
        'name = "node-tcp"',
        "",
      ].join("\n"),
    );
    nodes.push(await startDaemon({ args: ["--config", config] }));
    // Registered, then on duty once its registration is complete: only an ON_DUTY node is asked to bid.
    const node = await eventually(
      async () =>
        (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "node-tcp" && n.lifecycle === NodeLifecycle.ON_DUTY),
      20_000,
      "node-tcp to register over https and be on duty",
    );
    assert.equal(node.address, `https://127.0.0.1:${nodePort}`);
    // The aggregator asks the node for a bid and provisions it over https, with its own certificate.
    const deployed = await agg.client.aggregator.deploy(sleeper("tls-job"));
    assert.equal(deployed.placement?.node, node.id, `the https node wins: ${JSON.stringify(deployed.auction?.bids.map((b) => b.error))}`);
  });

  it("registers an aetherd that serves no TCP with its [cluster] ca, cert and key", async () => {
    const pair = issueNode(ca, "node-plain");
    const config = join(dir, "node-plain.toml");
    writeFileSync(
      config,
      [
        "[cluster]",
        `aggregator = "${aggregatorUrl}"`,
        'name = "node-plain"',
        `ca = "${ca.cert}"`,
        `cert = "${pair.cert}"`,
        `key = "${pair.key}"`,
        "",
      ].join("\n"),
    );
    nodes.push(await startDaemon({ args: ["--config", config] }));
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({})).nodes.some((n) => n.name === "node-plain") ? true : undefined),
      20_000,
      "node-plain to register over https",
    );
  });

  it("refuses a node certificate registering, heartbeating or deregistering as another node; nothing is registered", async () => {
    const mallory = await clientAs("node-mallory", issueNode(ca, "node-mallory"));
    const refused = await mallory.aggregator.registerNode(registration("node-victim")).catch((e: unknown) => e);
    assert.ok(refused instanceof ConnectError, String(refused));
    assert.equal(refused.code, Code.PermissionDenied, refused.message);
    assert.match(refused.rawMessage, /spiffe:\/\/test\/node\/node-mallory may register only as node node-mallory, not as node-victim/);
    // Taking over a registered node's id under its own name is refused too.
    const tcpNode = (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "node-tcp");
    assert.ok(tcpNode);
    const takeover = await mallory.aggregator
      .registerNode({ ...registration("node-mallory"), nodeId: tcpNode.id })
      .catch((e: unknown) => e as ConnectError);
    assert.equal((takeover as ConnectError).code, Code.PermissionDenied, String(takeover));
    assert.match((takeover as ConnectError).rawMessage, /registered as node node-tcp/);
    const heartbeat = await mallory.aggregator.heartbeat({ nodeId: tcpNode.id, leaseId: "x" }).catch((e: unknown) => e as ConnectError);
    assert.equal((heartbeat as ConnectError).code, Code.PermissionDenied, String(heartbeat));
    const deregister = await mallory.aggregator.deregisterNode({ nodeId: tcpNode.id }).catch((e: unknown) => e as ConnectError);
    assert.equal((deregister as ConnectError).code, Code.PermissionDenied, String(deregister));
    const names = (await agg.client.aggregator.listNodes({})).nodes.map((n) => n.name).sort();
    assert.deepEqual(names, ["node-plain", "node-tcp"], "nothing registered, nothing removed");
    // Under its own name the same certificate may register.
    await mallory.aggregator.registerNode(registration("node-mallory"));
    await agg.client.aggregator.deregisterNode({ nodeId: "id-node-mallory" });
  });

  it("refuses a user certificate registering a node", async () => {
    const alice = await clientAs("alice", ca.issue("alice"));
    const refused = await alice.aggregator.registerNode(registration("node-alice")).catch((e: unknown) => e);
    assert.ok(refused instanceof ConnectError, String(refused));
    assert.equal(refused.code, Code.PermissionDenied, refused.message);
    assert.match(refused.rawMessage, /spiffe:\/\/test\/user\/alice is not a node/);
    assert.ok(!(await agg.client.aggregator.listNodes({})).nodes.some((n) => n.name === "node-alice"), "nothing registered");
  });

  it("a node certificate may not cordon, drain, uncordon or shut down a node; an operator's certificate may", async () => {
    const mallory = await clientAs("node-mallory", issueNode(ca, "node-mallory"));
    const first = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) break;
    };
    for (const [what, call] of [
      ["cordon", () => mallory.aggregator.cordonNode({ node: "node-tcp" })],
      ["uncordon", () => mallory.aggregator.uncordonNode({ node: "node-tcp" })],
      ["drain", () => first(mallory.aggregator.drainNode({ node: "node-tcp" }))],
      ["shut down", () => first(mallory.aggregator.shutdownNode({ node: "node-tcp" }))],
    ] as const) {
      const refused = await (call() as Promise<unknown>).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(refused instanceof ConnectError, `${what}: ${String(refused)}`);
      assert.equal(refused.code, Code.PermissionDenied, refused.message);
      assert.match(refused.rawMessage, new RegExp(`node-mallory is a node's certificate; only an operator may ${what} a node`));
    }
    const tcpNode = (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "node-tcp");
    assert.equal(tcpNode?.lifecycle, NodeLifecycle.ON_DUTY, "nothing was changed");
    const alice = await clientAs("alice", ca.issue("alice"));
    assert.equal((await alice.aggregator.cordonNode({ node: "node-tcp" })).node?.lifecycle, NodeLifecycle.CORDONED);
    assert.equal((await alice.aggregator.uncordonNode({ node: "node-tcp" })).node?.lifecycle, NodeLifecycle.ON_DUTY);
  });

  it("a node certificate may not trigger or restore a backup of the cluster's state; an operator's certificate may ask", async () => {
    const mallory = await clientAs("node-mallory", issueNode(ca, "node-mallory"));
    for (const [what, call] of [
      ["back up", () => mallory.aggregator.triggerBackup({})],
      ["restore", () => mallory.aggregator.restoreBackup({ commit: "0123456789abcdef", dryRun: true })],
    ] as const) {
      const refused = await (call() as Promise<unknown>).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(refused instanceof ConnectError, `${what}: ${String(refused)}`);
      assert.equal(refused.code, Code.PermissionDenied, refused.message);
      assert.match(
        refused.rawMessage,
        new RegExp(`node-mallory is a node's certificate; only an operator may ${what} the cluster's state`),
      );
    }
    // An operator passes the check; this aggregator has no backup repository, and says so.
    const alice = await clientAs("alice", ca.issue("alice"));
    const answer = await alice.aggregator.triggerBackup({}).catch((e: unknown) => e);
    assert.ok(answer instanceof ConnectError, String(answer));
    assert.equal(answer.code, Code.FailedPrecondition, answer.message);
    assert.match(answer.rawMessage, /no backup repository is configured/);
  });

  it("refuses a node certificate from another CA; nothing is registered", async () => {
    const other = createCa("foreign-ca", mkdtempSync(join(tmpdir(), "aether-cluster-tls-foreign-")));
    const foreign = issueNode(other, "node-foreign");
    // The client trusts the cluster CA (so the handshake reaches the aggregator) but presents the foreign certificate.
    const client = await connect({ address: aggregatorUrl, tls: { ca: ca.cert, ...foreign }, useClientConfig: false, verify: false });
    clients.push(client);
    const refused = await client.aggregator.registerNode(registration("node-foreign")).catch((e: unknown) => e);
    assert.ok(refused instanceof ConnectError, String(refused));
    assert.equal(refused.code, Code.Unauthenticated, refused.message);
    assert.match(refused.rawMessage, /client certificate was refused/);
    assert.ok(!(await agg.client.aggregator.listNodes({})).nodes.some((n) => n.name === "node-foreign"), "nothing registered");
  });

  it("names the aggregator and the file to give when its certificate is not trusted", async () => {
    const other = createCa("other-ca", mkdtempSync(join(tmpdir(), "aether-cluster-tls-other-")));
    const pair = ca.issue("bob");
    const err = await connect({
      address: aggregatorUrl,
      tls: { ca: other.cert, ...pair },
      useClientConfig: false,
      peer: "aether-aggregator",
    }).catch((e: unknown) => e);
    assert.ok(err instanceof ConnectError, String(err));
    assert.match(err.rawMessage, /^the certificate of aether-aggregator at https:\/\/127\.0\.0\.1:\d+ is not trusted \([A-Z_]+\)/);
    assert.ok(err.rawMessage.includes(other.cert), err.rawMessage);
  });

  it("aether cluster nodes --aggregator https://... uses the client config's ca, cert and key", async () => {
    const pair = ca.issue("carol");
    const home = join(dir, "carol-config");
    mkdirSync(join(home, "aether"), { recursive: true });
    // The config's address is another (absent) endpoint: only its TLS material is used with --aggregator.
    writeFileSync(
      join(home, "aether", "config.toml"),
      `address = "unix:///nonexistent/aetherd.sock"\nca = "${ca.cert}"\ncert = "${pair.cert}"\nkey = "${pair.key}"\n`,
    );
    const env = { XDG_CONFIG_HOME: home, AETHER_HOST: "", AETHER_AGGREGATOR: "" };
    const result = await runCommand("aether", ["cluster", "--aggregator", aggregatorUrl, "nodes", "--json"], { env });
    assert.equal(result.code, 0, result.stderr);
    const names = (JSON.parse(result.stdout) as { name: string }[]).map((n) => n.name).sort();
    assert.deepEqual(names, ["node-plain", "node-tcp"]);
    // AETHER_AGGREGATOR too.
    const viaEnv = await runCommand("aether", ["cluster", "nodes"], { env: { ...env, AETHER_AGGREGATOR: aggregatorUrl } });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    // Without the client config the error names the aggregator, not aetherd, and what to give.
    const bare = await runCommand("aether", ["cluster", "--aggregator", aggregatorUrl, "nodes"], {
      env: { ...env, XDG_CONFIG_HOME: join(dir, "no-config") },
    });
    assert.notEqual(bare.code, 0);
    assert.match(bare.stderr, /the certificate of aether-aggregator at https:\/\/127\.0\.0\.1:\d+ is not trusted/);
    assert.match(bare.stderr, /ca in the client config/);
  });
});
