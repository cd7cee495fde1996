// A deployment of VMs on three aetherd with real TCG guests (issue 15): the image is on one node
// only, the others import it from the template's URL when they win (the time is in the auction
// record); all three instances run on three nodes and answer their guest agents. Killing one's QEMU
// gets a new instance; scaling to 1 and back to 3 works; deleting removes every VM. A template whose
// image no node has and that gives no URL is DEGRADED with each node's reason, and nothing is made.
import assert from "node:assert/strict";
import { createReadStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type AetherClient } from "@aether/sdk";
import { DeploymentState, PlacementState, type DeploymentInstance } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ImageState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { eventually, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { guestImage } from "./helpers/guest.js";
import { sha256 } from "./helpers/disks.js";

const MiB = 1024n * 1024n;
const BOOT_MS = 180_000;

describe("a deployment of VMs from an image only one node has (TCG guests)", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-deploy-vm-"));
  let agg: TestAggregator;
  let server: Server;
  let url = "";
  let digest = "";
  const daemons = new Map<string, TestDaemon>();
  /** node id → client. */
  const clients = new Map<string, AetherClient>();
  const names = new Map<string, string>();

  const template = (image: string, withUrl: boolean) => ({
    ...(withUrl && { imageFetch: { url, sha256: digest } }),
    kind: {
      case: "vm" as const,
      value: {
        vcpus: 1,
        memoryBytes: 192n * MiB,
        guestAgent: true,
        boot: { source: { case: "disk" as const, value: { image } } },
      },
    },
  });
  const get = (name: string) => agg.client.aggregator.getDeployment({ deployment: name });
  const placed = (instances: DeploymentInstance[]) => instances.filter((i) => i.state === PlacementState.PLACED);
  /** Waits until the instance's guest agent answers, and returns its uname. */
  const answers = async (i: DeploymentInstance) => {
    const node = clients.get(i.node) as AetherClient;
    for await (const step of node.vm.waitVmReady({ vm: i.resourceId, timeout: { seconds: BigInt(BOOT_MS / 1000) } })) void step;
    const r = await node.vm.execVm({ vm: i.resourceId, argv: ["/bin/uname", "-s"] });
    return new TextDecoder().decode(r.stdout).trim();
  };

  before(async () => {
    const g = guestImage();
    digest = sha256(g.disk);
    server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      createReadStream(g.disk).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/guest.raw`;
    agg = await startAggregator({ dir: join(dir, "agg"), args: ["--lease-ttl-ms", "15000", "--auction-window-ms", "5000"] });
    for (const name of ["node-a", "node-b", "node-c"]) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      writeFileSync(join(dir, `${name}.toml`), `[cluster]\naggregator = "unix://${agg.socket}"\nname = "${name}"\n`);
      daemons.set(
        name,
        await startDaemon({ dir: nodeDir, args: ["--config", join(dir, `${name}.toml`), "--kvm-probe-timeout-ms", "4000"] }),
      );
    }
    const nodes = await eventually(
      async () => {
        const { nodes: n } = await agg.client.aggregator.listNodes({});
        return n.length === 3 ? n : undefined;
      },
      20_000,
      "three nodes",
    );
    for (const n of nodes) {
      clients.set(n.id, await (daemons.get(n.name) as TestDaemon).client());
      names.set(n.id, n.name);
    }
    // Only node-a has the image.
    const a = await (daemons.get("node-a") as TestDaemon).client();
    await a.storage.importImage({ name: "guest", source: { source: { case: "localPath", value: g.disk } }, sha256: digest });
    await eventually(
      async () => ((await a.storage.getImage({ image: "guest" })).image?.state === ImageState.READY ? true : undefined),
      60_000,
      "guest image READY on node-a",
    );
    a.close();
  });

  after(async () => {
    for (const { name } of (await agg.client.aggregator.listDeployments({}).catch(() => ({ deployments: [] }))).deployments)
      await agg.client.aggregator.deleteDeployment({ deployment: name, gracePeriod: { seconds: 1n } }).catch(() => undefined);
    await eventually(
      async () =>
        (await agg.client.aggregator.listDeployments({}).catch(() => ({ deployments: [] }))).deployments.length === 0 ? true : undefined,
      60_000,
      "every deployment deleted",
    ).catch(() => undefined);
    for (const c of clients.values()) c.close();
    for (const d of daemons.values()) {
      try {
        const c = await d.client();
        await stopWorkloads(c);
        for (const v of (await c.vm.listVms({ pageSize: 100 })).vms) await c.vm.deleteVm({ vm: v.id, force: true }).catch(() => undefined);
        c.close();
        assert.equal(await d.stop(), 0);
      } finally {
        d.cleanup();
      }
    }
    assert.equal(await agg.stop(), 0, agg.log());
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("an image no node has and no URL: DEGRADED with each node's reason, no VM made", async () => {
    await agg.client.aggregator.createDeployment({ deployment: { name: "nowhere", instances: 2, template: template("not-here", false) } });
    const d = await eventually(
      async () => {
        const { deployment } = await get("nowhere");
        return deployment?.state === DeploymentState.DEGRADED ? deployment : undefined;
      },
      30_000,
      "nowhere DEGRADED",
    );
    assert.equal(d.runningInstances, 0);
    assert.match(d.stateReason, /^0 of 2 instance\(s\) run; 2 could not be placed: no node can host workload nowhere-[0-9a-f]{6}: /);
    assert.equal(
      d.stateReason.match(/image not-here is not on this node \(tenant default\) and the spec gives no image_fetch URL to import it from/g)
        ?.length,
      3,
      d.stateReason,
    );
    for (const c of clients.values()) assert.deepEqual((await c.vm.listVms({})).vms, []);
    await agg.client.aggregator.deleteDeployment({ deployment: "nowhere" });
    // A URL without its SHA-256 is refused outright.
    await assert.rejects(
      agg.client.aggregator.createDeployment({
        deployment: { name: "unsure", instances: 1, template: { ...template("guest", false), imageFetch: { url } } },
      }),
      (e: ConnectError) => e.code === Code.InvalidArgument && /image_fetch\.sha256 is not 64 lowercase hex digits/.test(e.rawMessage),
    );
  });

  it("3 instances on 3 nodes, the image imported where it was missing (in the auction records), each guest answering", async () => {
    await agg.client.aggregator.createDeployment({ deployment: { name: "vms", instances: 3, template: template("guest", true) } });
    const running = await eventually(
      async () => {
        const { deployment, instances } = await get("vms");
        return deployment?.state === DeploymentState.AVAILABLE ? placed(instances) : undefined;
      },
      BOOT_MS,
      "vms AVAILABLE",
    );
    assert.equal(new Set(running.map((i) => i.node)).size, 3, `three nodes: ${running.map((i) => names.get(i.node)).join(", ")}`);
    for (const i of running) assert.equal(await answers(i), "Linux", `${i.name}'s guest agent answers`);
    const imports = new Map<string, boolean>();
    for (const i of running) {
      const { auction } = await agg.client.aggregator.getAuction({ auction: i.auctionId });
      imports.set(names.get(i.node) ?? "", auction?.imageImportDuration !== undefined);
      if (auction?.imageImportDuration) assert.match(auction.stateReason, /after importing its image in \d+ ms/);
      assert.ok(
        auction?.bids.some((b) => b.breakdown?.factors.some((f) => f.name === "image")),
        "the bids say whether the node had the image",
      );
    }
    assert.deepEqual(Object.fromEntries(imports), { "node-a": false, "node-b": true, "node-c": true });
    for (const [id, c] of clients) {
      const { image } = await c.storage.getImage({ image: "guest" });
      assert.equal(image?.state, ImageState.READY, `the image is on ${names.get(id)} now`);
    }
  });

  it("kill -9 of an instance's QEMU: a new instance runs; scale to 1 and back to 3; delete removes every VM", async () => {
    const [victim] = placed((await get("vms")).instances);
    assert.ok(victim);
    const node = clients.get(victim.node) as AetherClient;
    const { vm } = await node.vm.getVm({ vm: victim.resourceId });
    process.kill(vm?.pid ?? 0, "SIGKILL");
    const healed = await eventually(
      async () => {
        const { deployment, instances } = await get("vms");
        const live = placed(instances);
        return deployment?.state === DeploymentState.AVAILABLE && !live.some((i) => i.workloadId === victim.workloadId) ? live : undefined;
      },
      30_000,
      "a replacement instance",
    );
    const dead = (await get("vms")).instances.find((i) => i.workloadId === victim.workloadId);
    assert.match(dead?.stateReason ?? "", /its VM FAILED/);
    const newest = [...healed].sort((x, y) =>
      Number((y.createTime?.seconds ?? 0n) - (x.createTime?.seconds ?? 0n)),
    )[0] as DeploymentInstance;
    assert.equal(await answers(newest), "Linux", "the replacement's guest answers");
    // The killed VM is gone from its node (released), not left FAILED there.
    await eventually(
      async () => ((await node.vm.listVms({})).vms.some((v) => v.id === victim.resourceId) ? undefined : true),
      20_000,
      "the dead VM released",
    );

    await agg.client.aggregator.scaleDeployment({ deployment: "vms", instances: 1 });
    await eventually(
      async () => {
        const { deployment } = await get("vms");
        return deployment?.state === DeploymentState.AVAILABLE && deployment.runningInstances === 1 ? true : undefined;
      },
      60_000,
      "vms scaled to 1",
    );
    await agg.client.aggregator.scaleDeployment({ deployment: "vms", instances: 3 });
    const three = await eventually(
      async () => {
        const { deployment, instances } = await get("vms");
        return deployment?.state === DeploymentState.AVAILABLE && deployment.runningInstances === 3 ? placed(instances) : undefined;
      },
      BOOT_MS,
      "vms back to 3",
    );
    assert.equal(new Set(three.map((i) => i.node)).size, 3);

    await agg.client.aggregator.deleteDeployment({ deployment: "vms", gracePeriod: { seconds: 2n } });
    await eventually(
      async () =>
        await get("vms").then(
          () => undefined,
          (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined),
        ),
      60_000,
      "vms gone",
    );
    for (const c of clients.values()) {
      const left = (await c.vm.listVms({})).vms;
      assert.deepEqual(
        left.map((v) => v.name),
        [],
        "every instance's VM is deleted on its node",
      );
    }
  });
});
