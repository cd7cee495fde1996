// Every example runs against a real aetherd under both engines, so an example that drifts from the
// API fails here.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { repoRoot, useDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";
import { guestImage } from "./helpers/guest.js";
import { sha256 } from "./helpers/disks.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startTestBmc, type TestBmc } from "./helpers/test-bmc.js";

/** Arguments an example needs (the storage example imports the guest's bootable disk; fence.ts a BMC; vm-migrate.ts a second aetherd). */
const argsOf = (file: string, bmc: TestBmc | undefined, otherNode: string): string[] => {
  if (file === "storage.ts") return [guestImage().disk, sha256(guestImage().disk)];
  if (file === "fence.ts") return ["example-node-b", bmc?.url ?? ""];
  if (file === "vm-migrate.ts") return [otherNode];
  if (file === "canary.ts") return ["example-node"];
  return [];
};

const scripts: Record<string, RegExp[]> = {
  "cluster-deploy.ts": [
    /^1 node\(s\) ready: example-node$/m,
    /^  [0-9a-f-]{36}: bid \d+$/m,
    /^example-\w+ placed on example-node \(score \d+\) as [0-9a-f-]{36}$/m,
    /^released example-/m,
  ],
  "storage.ts": [
    /^image example-image-\w+: ready, \d+ MiB$/m,
    /: running; the guest agent answers$/m,
    /^boot volume example-disk-vm-\w+-boot: a clone of example-image-\w+ taking \d+ KiB$/m,
    /^guest disk vda: \d+ sectors$/m,
    /^deleted example-disk-vm-/m,
  ],
  "hello-process.ts": [
    /connected to unix:\/\//,
    /\[stdout\] hello from aether \(3\)/,
    /\[stderr\] warning: done/,
    /exited with code 0: exit code 0/,
  ],
  "stop-with-grace.ts": [/did not end it within 1000 ms, so it was killed with SIGKILL \(signal SIGKILL\)/],
  "cells.ts": [
    /^cell example-\w+: 64 MiB, 16 tasks, half a CPU/m,
    /^inside: pid 1, interfaces: lo$/m,
    /^accounted: \d+ µs of CPU/m,
    /^freed example-/m,
  ],
  "vm.ts": [/: running; the guest agent answers$/m, /^configured by cloud-init$/m, /^Linux 6\./m, /^deleted example-vm-/m],
  "vm-fleet.ts": [
    /^fleet-\w+: AVAILABLE, 2\/2 running fleet-\w+-[0-9a-f]{6} fleet-\w+-[0-9a-f]{6}$/m,
    /^fleet-\w+: AVAILABLE, 1\/1 running fleet-\w+-[0-9a-f]{6}$/m,
    /^scaled fleet-\w+ to 1$/m,
    /^fleet-\w+: DELETED, 0\/1 running $/m,
    /^deleted fleet-/m,
  ],
  "vm-migrate.ts": [
    /^migrating example-mig-\w+ to unix:\/\//m,
    /^  (storage|memory|switchover|cleanup): disks /m,
    /^done: example-mig-\w+ runs on unix:\/\/\S+, moved in \d+ ms, guest paused \d+ ms$/m,
    /^on the target: Linux 6\./m,
    /^deleted example-mig-\w+ on the target$/m,
  ],
  "fence.ts": [
    /^BMC of example-node-b: HPE ProLiant DL325 Gen10 Plus, firmware iLO 5/m,
    /^power: On; allowed resets: On, ForceOff/m,
    /^fenced: /m,
    /^powered on: On$/m,
    /^forgot the BMC of example-node-b$/m,
  ],
  "canary.ts": [
    /^canary-\w+: revision 1 serving on 127\.0\.0\.1:\d+$/m,
    /^stage 1: 5 % to revision 2 \(PROGRESSING\)/m,
    /^stage 3: 50 % to revision 2 \(PROGRESSING\)/m,
    /^rollout succeeded: revision 2 serves all traffic$/m,
    /^  stage: \{"requests_new":/m,
    /^deleted canary-/m,
  ],
  "node-report.ts": [/^node \S+ \([0-9a-f-]{36}\)/m, /^cgroups: /m, /^memory: [\d.]+ of [\d.]+ GiB available/m],
};
const manifests = ["web.manifest.ts"];

for (const engine of ["deno", "node"]) {
  describe(`examples under the ${engine} engine`, () => {
    const env = useDaemon({ args: ["--kvm-probe-timeout-ms", "4000"] });
    // examples/vm-migrate.ts live-migrates a guest to a second aetherd.
    const other = useDaemon({ args: ["--kvm-probe-timeout-ms", "4000"] });
    guestImage(); // examples/vm.ts boots the project's test guest
    const aetherscript = (...args: string[]) =>
      runCommand("aetherscript", ["--engine", engine, ...args], { env: { AETHER_HOST: env.daemon.address } });
    // examples/cluster-deploy.ts talks to an aggregator, with this test's aetherd as its one node.
    let agg: TestAggregator | undefined;
    // examples/fence.ts fences through a test BMC (iLO 5 mockup), its credentials in the environment.
    let bmc: TestBmc | undefined;
    let bmcCa = "";
    before(async () => {
      bmc = await startTestBmc({ profile: "ilo5", powerOffDelayMs: 300 });
      bmcCa = join(mkdtempSync(join(tmpdir(), "aether-example-bmc-")), "ca.pem");
      writeFileSync(bmcCa, bmc.caPem);
      // The node is registered by hand and never heartbeats: a lease longer than the whole file keeps
      // it READY (with the default 15 s it turned SUSPECT before examples/vm-fleet.ts ran, and nothing
      // could be placed).
      agg = await startAggregator({ args: ["--lease-ttl-ms", "3600000"] });
      const { node } = await env.aether.node.getNodeInfo({});
      await agg.client.aggregator.registerNode({ nodeId: node?.id ?? "", name: "example-node", address: env.daemon.address });
    });
    after(async () => {
      assert.equal(await agg?.stop(), 0);
      await bmc?.close();
    });
    // examples/vm-fleet.ts too: a deployment of VMs on that one node.
    // examples/canary.ts too: its endpoint (HAProxy) runs on that node.
    const hostOf = (file: string) =>
      ["cluster-deploy.ts", "vm-fleet.ts", "canary.ts"].includes(file) ? `unix://${agg?.socket}` : env.daemon.address;

    for (const [file, patterns] of Object.entries(scripts)) {
      it(`examples/${file}`, async () => {
        const fenceEnv =
          file === "fence.ts"
            ? { AETHER_BMC_USERNAME: bmc?.username ?? "", AETHER_BMC_PASSWORD: bmc?.password ?? "", AETHER_BMC_CA: bmcCa }
            : {};
        const grants =
          file === "fence.ts"
            ? ["--allow-env=AETHER_BMC_USERNAME,AETHER_BMC_PASSWORD,AETHER_BMC_CA", `--allow-read=${bmcCa}`]
            : file === "vm-migrate.ts"
              ? [`--allow-read=${other.daemon.socket}`, `--allow-write=${other.daemon.socket}`, `--allow-net=unix:${other.daemon.socket}`]
              : [];
        const r = await runCommand(
          "aetherscript",
          ["--engine", engine, ...grants, join(repoRoot, "examples", file), ...argsOf(file, bmc, other.daemon.address)],
          { env: { AETHER_HOST: hostOf(file), ...fenceEnv } },
        );
        assert.equal(r.code, 0, r.stderr);
        for (const p of patterns) assert.match(r.stdout, p);
      });
    }

    it("examples/web.manifest.ts: plan, apply, apply again changes nothing", async () => {
      const file = join(repoRoot, "examples", "web.manifest.ts");
      const plan = await aetherscript("plan", file);
      assert.equal(plan.code, 0, plan.stderr);
      assert.match(plan.stdout, /\+ create\s+executable web/);
      assert.match(plan.stdout, /2 to change, 0 unchanged/);
      const apply = await aetherscript("apply", file);
      assert.equal(apply.code, 0, apply.stderr);
      const again = await aetherscript("apply", file, "--json");
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.stdout).applied, []);
      const after = await aetherscript("plan", file);
      assert.match(after.stdout, /0 to change, 2 unchanged/);
      const { executables } = await env.aether.runtime.listExecutables({ tenant: "examples", state: 1 });
      assert.deepEqual(executables.map((e) => e.name).sort(), ["web", "worker"]);
    });
  });
}

it("every example is covered by these tests", () => {
  const files = readdirSync(join(repoRoot, "examples")).filter((f) => f.endsWith(".ts"));
  assert.deepEqual(files.sort(), [...Object.keys(scripts), ...manifests].sort());
});
