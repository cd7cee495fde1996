// Tenants on the cluster: through aether-aggregator's mutual-TLS listener, a tenant deploys and
// sees its own workloads, placements, auctions and events only; another tenant's by id is not there,
// and deploying into another tenant is refused. The same policy engine as aetherd's.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import { PlacementState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { eventually, startDaemon, type TestDaemon } from "./helpers/daemon.js";
import { createCa, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const sleeper = (name: string) => ({
  spec: {
    name,
    requirements: { cpuMillis: 10 },
    kind: { case: "executable" as const, value: { argv: ["/bin/sleep", "600"], uid: 65534, gid: 65534 } },
  },
});

describe("tenants on the cluster (aether-aggregator)", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-agg-authz-"));
  let agg: TestAggregator;
  let node: TestDaemon;
  let ca: TestCa;
  let alice: AetherClient; // tenant a
  let bob: AetherClient; // tenant b
  const bobs: { workload: string; auction: string } = { workload: "", auction: "" };

  before(async () => {
    ca = createCa("cluster-ca", mkdtempSync(join(tmpdir(), "aether-agg-pki-")));
    const server = ca.issue("aggregator", { server: true });
    const port = await freePort();
    agg = await startAggregator({
      dir,
      args: [
        "--listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
        "--lease-ttl-ms",
        "6000",
      ],
    });
    const config = join(dir, "node.toml");
    writeFileSync(config, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "node-0"\n`);
    node = await startDaemon({ args: ["--config", config] });
    await eventually(
      async () => ((await agg.client.aggregator.listNodes({})).nodes.length === 1 ? true : undefined),
      20_000,
      "the node to register",
    );
    const client = async (name: string, uri: string) => {
      const pair = ca.issue(name, { uri });
      return connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, cert: pair.cert, key: pair.key } });
    };
    alice = await client("alice", "spiffe://test/tenant/a/user/alice");
    bob = await client("bob", "spiffe://test/tenant/b/user/bob");
    const deployed = await bob.aggregator.deploy(sleeper("bobs-job"));
    bobs.workload = deployed.placement?.workloadId ?? "";
    bobs.auction = deployed.auction?.id ?? "";
    assert.equal(deployed.placement?.tenant, "b", "bob's workload is in his tenant, filled in from his certificate");
    await alice.aggregator.deploy(sleeper("alices-job"));
  });

  after(async () => {
    alice?.close();
    bob?.close();
    for (const p of (await agg.client.aggregator.listPlacements({ pageSize: 100 }).catch(() => ({ placements: [] }))).placements) {
      await agg.client.aggregator.releasePlacement({ workload: p.workloadId, tenant: p.tenant }).catch(() => undefined);
    }
    await node?.stop();
    node?.cleanup();
    await agg?.stop();
  });

  it("a tenant lists only its own placements, auctions and events", async () => {
    assert.deepEqual(
      (await alice.aggregator.listPlacements({})).placements.map((p) => `${p.tenant}/${p.name}`),
      ["a/alices-job"],
    );
    const auctions = (await alice.aggregator.listAuctions({})).auctions;
    assert.ok(auctions.length >= 1 && auctions.every((a) => a.tenant === "a"), "alice's auctions only");
    const events: string[] = [];
    for await (const r of alice.aggregator.streamClusterEvents({ follow: false })) events.push(`${r.event?.tenant}`);
    assert.ok(events.length > 0 && events.every((t) => t === "a"), `alice saw events of ${[...new Set(events)].join(", ")}`);
    // The admin (the socket) sees both tenants.
    const all = (await agg.client.aggregator.listPlacements({})).placements.map((p) => p.tenant).sort();
    assert.deepEqual(all, ["a", "b"]);
  });

  it("another tenant's placement and auction by id are not there; its tenant cannot be named", async () => {
    await assert.rejects(alice.aggregator.getPlacement({ workload: bobs.workload }), (e: ConnectError) => e.code === Code.NotFound);
    await assert.rejects(alice.aggregator.getAuction({ auction: bobs.auction }), (e: ConnectError) => e.code === Code.NotFound);
    await assert.rejects(alice.aggregator.releasePlacement({ workload: bobs.workload }), (e: ConnectError) => e.code === Code.NotFound);
    await assert.rejects(
      alice.aggregator.listPlacements({ tenant: "b" }),
      (e: ConnectError) => e.code === Code.PermissionDenied && /belongs to tenant a/.test(e.message),
    );
    const intrude = sleeper("intruder");
    await assert.rejects(
      alice.aggregator.deploy({ spec: { ...intrude.spec, tenant: "b" } }),
      (e: ConnectError) => e.code === Code.PermissionDenied && /may not deploy in tenant "b"/.test(e.message),
    );
    // The node registry is the cluster's, not a tenant's.
    await assert.rejects(alice.aggregator.listNodes({}), (e: ConnectError) => e.code === Code.PermissionDenied);
    // Bob's workload is untouched and still his.
    assert.equal((await bob.aggregator.getPlacement({ workload: bobs.workload })).placement?.name, "bobs-job");
    assert.equal((await bob.aggregator.getAuction({ auction: bobs.auction })).auction?.tenant, "b");
  });

  it("deployments: a tenant creates them in its own tenant only, sees only its own, and their instances run confined", async () => {
    const template = { requirements: { cpuMillis: 10 }, kind: sleeper("x").spec.kind };
    const created = await alice.aggregator.createDeployment({ deployment: { name: "alices-fleet", instances: 1, template } });
    assert.equal(created.deployment?.tenant, "a", "filled in from her certificate");
    assert.equal(created.deployment?.confined, true);
    await assert.rejects(
      alice.aggregator.createDeployment({ deployment: { name: "intruders", tenant: "b", instances: 1, template } }),
      (e: ConnectError) => e.code === Code.PermissionDenied && /may not create a deployment in tenant "b"/.test(e.message),
    );
    await assert.rejects(bob.aggregator.getDeployment({ deployment: "alices-fleet" }), (e: ConnectError) => e.code === Code.NotFound);
    await assert.rejects(
      bob.aggregator.getDeployment({ deployment: created.deployment?.id ?? "" }),
      (e: ConnectError) => e.code === Code.NotFound,
    );
    await assert.rejects(
      bob.aggregator.scaleDeployment({ deployment: created.deployment?.id ?? "", instances: 0 }),
      (e: ConnectError) => e.code === Code.NotFound,
    );
    await assert.rejects(
      bob.aggregator.deleteDeployment({ deployment: created.deployment?.id ?? "" }),
      (e: ConnectError) => e.code === Code.NotFound,
    );
    await assert.rejects(
      bob.aggregator.watchDeployment({ deployment: "alices-fleet" })[Symbol.asyncIterator]().next(),
      (e: ConnectError) => e.code === Code.NotFound,
    );
    await assert.rejects(alice.aggregator.listDeployments({ tenant: "b" }), (e: ConnectError) => e.code === Code.PermissionDenied);
    assert.deepEqual((await bob.aggregator.listDeployments({})).deployments, []);
    assert.deepEqual(
      (await alice.aggregator.listDeployments({})).deployments.map((d) => `${d.tenant}/${d.name}`),
      ["a/alices-fleet"],
    );
    // Nothing of "intruders" was made anywhere.
    assert.deepEqual(
      (await agg.client.aggregator.listDeployments({})).deployments.map((d) => d.name),
      ["alices-fleet"],
    );
    // Its instance runs on the node as tenant a's own host ids.
    const instance = await eventually(
      async () =>
        (await alice.aggregator.getDeployment({ deployment: "alices-fleet" })).instances.find((i) => i.state === PlacementState.PLACED),
      20_000,
      "alice's instance placed",
    );
    const admin = await node.client();
    const { executable } = await admin.runtime.getExecutable({ executable: instance.resourceId, tenant: "a" });
    assert.ok((executable?.hostUid ?? 0) >= 1_000_000_000, `runs as host uid ${executable?.hostUid}`);
    await alice.aggregator.deleteDeployment({ deployment: "alices-fleet", gracePeriod: { seconds: 1n } });
    await eventually(
      async () => ((await alice.aggregator.listDeployments({})).deployments.length === 0 ? true : undefined),
      20_000,
      "alices-fleet deleted",
    );
  });

  // Last: it deploys more of tenant a's workloads than the listings above expect.
  it("a tenant's deployed workload runs confined on the node: the tenant's own host ids, whatever uid/gid the spec names", async () => {
    const admin = await node.client();
    const [job] = (await admin.runtime.listExecutables({ tenant: "b" })).executables;
    assert.equal(job?.name, "bobs-job");
    assert.equal(job?.uid, 65534, "the spec's uid, as an offset in tenant b's block");
    assert.ok((job?.hostUid ?? 0) >= 1_000_000_000, `runs as host uid ${job?.hostUid}, not the host's nobody`);
    assert.ok((job?.hostGid ?? 0) >= 1_000_000_000);
    // Even a spec that claims to be unconfined is confined when a tenant deploys it.
    const sneaky = await alice.aggregator.deploy({ spec: { ...sleeper("sneaky").spec, confined: false } });
    const placed = (await admin.runtime.listExecutables({ tenant: "a" })).executables.find((e) => e.name === "sneaky");
    assert.ok(sneaky.placement && (placed?.hostUid ?? 0) >= 1_000_000_000);
  });
});
