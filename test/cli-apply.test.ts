// aether apply|diff|delete -f (issue 23, item 13) as a kubectl user runs them against a real aetherd:
// a folder of manifests (TypeScript evaluated by aetherscript, and JSON), diff's exit codes (0 in
// sync, 1 differs, 2 usage or invalid manifest), apply twice changes nothing, and delete -f removes
// exactly what the manifests created: what another manifest or a person made in the same tenant
// stays. No VM boots here (test/manifest-vm.test.ts boots one).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { MANIFEST_LABEL } from "@aether/sdk";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { useDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";

const TENANT = "cliapply";

const web = (seconds: number, labels = "{}") => `import { defineManifest } from "@aether/sdk";
export default defineManifest({
  name: "web",
  tenant: "${TENANT}",
  executables: [
    { name: "front", argv: ["/bin/sleep", "${seconds}"], labels: ${labels} },
    { name: "back", argv: ["/bin/sleep", "700"] },
  ],
  volumes: [{ name: "web-data", size: "8M" }],
});
`;

const worker = JSON.stringify({ name: "worker", tenant: TENANT, executables: [{ name: "queue", argv: ["/bin/sleep", "800"] }] });

describe("aether apply|diff|delete -f", () => {
  const env = useDaemon();
  const dir = mkdtempSync(join(tmpdir(), "aether-cli-apply-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const aether = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
    runCommand("aether", args, { cwd: "/", env: { AETHER_HOST: env.daemon.address, ...extra } });
  const names = async () =>
    (await env.aether.runtime.listExecutables({ tenant: TENANT })).executables
      .filter((e) => e.state === ExecutableState.RUNNING)
      .map((e) => e.name)
      .sort();

  it("diff shows what apply will do and exits 1; apply does it; then diff exits 0 and apply changes nothing", async () => {
    writeFileSync(join(dir, "web.manifest.ts"), web(600));
    writeFileSync(join(dir, "worker.json"), worker);
    // A TypeScript project's tool files sit next to the manifests and are not manifests.
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "fleet", private: true }));
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: { strict: true } }));

    const before = await aether(["diff", "-f", dir]);
    assert.equal(before.code, 1, before.stderr);
    assert.match(before.stdout, /\+ create\s+volume\s+web-data/);
    assert.match(before.stdout, /\+ create\s+executable\s+front/);
    assert.match(before.stdout, /diff of manifest worker \(tenant cliapply\)/);
    assert.match(before.stdout, /\+ create\s+executable\s+queue/);
    assert.deepEqual(await names(), [], "diff changed nothing");

    const dry = await aether(["apply", "-f", dir, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would change manifest web/);
    assert.deepEqual(await names(), [], "--dry-run changed nothing");

    const applied = await aether(["apply", "-f", dir]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /applied: 3 to change/);
    assert.deepEqual(await names(), ["back", "front", "queue"]);
    const front = (await env.aether.runtime.getExecutable({ executable: "front", tenant: TENANT })).executable;
    assert.equal(front?.labels[MANIFEST_LABEL], "web");

    const again = await aether(["apply", "-f", dir, "-o", "json"]);
    assert.equal(again.code, 0, again.stderr);
    const results = JSON.parse(again.stdout) as Array<{ manifest: string; changes: number; actions: unknown[] }>;
    assert.deepEqual(
      results.map((r) => [r.manifest, r.changes, r.actions.length]),
      [
        ["web", 0, 0],
        ["worker", 0, 0],
      ],
    );
    const inSync = await aether(["diff", "-f", dir]);
    assert.equal(inSync.code, 0, inSync.stdout);
    assert.match(inSync.stdout, /0 to change, 3 unchanged/);
    assert.equal((await env.aether.runtime.getExecutable({ executable: "front", tenant: TENANT })).executable?.id, front?.id);
  });

  it("a changed manifest diffs as replace, and apply carries it out", async () => {
    writeFileSync(join(dir, "web.manifest.ts"), web(601));
    const diff = await aether(["diff", "-f", join(dir, "web.manifest.ts")]);
    assert.equal(diff.code, 1);
    assert.match(diff.stdout, /~ replace\s+executable\s+front\s+argv changed/);
    assert.doesNotMatch(diff.stdout, /back/, "diff lists what differs only");
    const applied = await aether(["apply", "-f", join(dir, "web.manifest.ts")]);
    assert.equal(applied.code, 0, applied.stderr);
    const front = (await env.aether.runtime.getExecutable({ executable: "front", tenant: TENANT })).executable;
    assert.deepEqual(front?.argv, ["/bin/sleep", "601"]);
  });

  it("delete -f removes exactly what the manifests created; what others made in the tenant stays", async () => {
    // One made by hand, one by another manifest, one of the same name as a managed one in another tenant.
    await env.aether.runtime.startExecutable({ name: "by-hand", tenant: TENANT, argv: ["/bin/sleep", "900"] });
    await env.aether.runtime.startExecutable({
      name: "other",
      tenant: TENANT,
      argv: ["/bin/sleep", "900"],
      labels: { [MANIFEST_LABEL]: "other" },
    });
    await env.aether.runtime.startExecutable({
      name: "front",
      tenant: "elsewhere",
      argv: ["/bin/sleep", "900"],
      labels: { [MANIFEST_LABEL]: "web" },
    });

    const dry = await aether(["delete", "-f", dir, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /- delete\s+executable\s+front/);
    assert.match(dry.stdout, /- delete\s+volume\s+web-data/);
    assert.deepEqual(await names(), ["back", "by-hand", "front", "other", "queue"], "--dry-run deleted nothing");

    const deleted = await aether(["delete", "-f", dir]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, /deleted: 3 to change/);
    assert.deepEqual(await names(), ["by-hand", "other"]);
    const volumes = (await env.aether.storage.listVolumes({ tenant: TENANT })).volumes.map((v) => v.name);
    assert.deepEqual(volumes, [], "the manifest's volume is gone");
    const elsewhere = (await env.aether.runtime.getExecutable({ executable: "front", tenant: "elsewhere" })).executable;
    assert.equal(elsewhere?.state, ExecutableState.RUNNING, "another tenant's executable stays");

    const twice = await aether(["delete", "-f", dir]);
    assert.equal(twice.code, 0, twice.stderr);
    assert.match(twice.stdout, /nothing to delete/);
    for (const [name, tenant] of [
      ["by-hand", TENANT],
      ["other", TENANT],
      ["front", "elsewhere"],
    ] as const) {
      await env.aether.runtime.stopExecutable({ executable: name, tenant, gracePeriod: { seconds: 1n } });
      await env.aether.runtime.deleteExecutable({ executable: name, tenant });
    }
  });

  it("usage errors and invalid manifests exit 2 naming the field; an unreachable daemon exits 4", async () => {
    const noFile = await aether(["apply"]);
    assert.equal(noFile.code, 2);
    assert.match(noFile.stderr, /-f, --filename/);
    const missing = await aether(["diff", "-f", join(dir, "nope.ts")]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /nope\.ts: no such file or folder/);

    const bad = mkdtempSync(join(tmpdir(), "aether-cli-apply-bad-"));
    writeFileSync(
      join(bad, "vm.ts"),
      'import { defineManifest } from "@aether/sdk";\nexport default defineManifest({ name: "bad", vms: [{ name: "v", kernel: "/boot/vmlinuz", memory: "32M" }] });\n',
    );
    const invalid = await aether(["diff", "-f", join(bad, "vm.ts")]);
    assert.equal(invalid.code, 2, invalid.stderr);
    assert.match(invalid.stderr, /vms\.0\.memory: must be at least 64M/);
    writeFileSync(join(bad, "vm.json"), JSON.stringify({ name: "bad", vms: [{ name: "v", image: "debian", kernel: "/boot/vmlinuz" }] }));
    const invalidJson = await aether(["apply", "-f", join(bad, "vm.json")]);
    assert.equal(invalidJson.code, 2);
    assert.match(invalidJson.stderr, /vms\.0\.kernel: give one of image, bootVolume or kernel, not image and kernel/);
    writeFileSync(join(bad, "twice.json"), JSON.stringify({ name: "bad" }));
    writeFileSync(join(bad, "vm.json"), JSON.stringify({ name: "bad" }));
    rmSync(join(bad, "vm.ts"));
    const twice = await aether(["apply", "-f", bad]);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /both declare manifest bad/);
    rmSync(bad, { recursive: true, force: true });

    // A cluster manifest sent to an aetherd: the advice names the CLI's flag; diff could not be made (6).
    const clusterFile = join(dir, "cluster.json");
    writeFileSync(
      clusterFile,
      JSON.stringify({ name: "fleet", tenant: TENANT, target: "cluster", executables: [{ name: "x", argv: ["/bin/true"] }] }),
    );
    const notAggregator = await aether(["diff", "-f", clusterFile, "--aggregator", env.daemon.address]);
    assert.equal(notAggregator.code, 6, notAggregator.stderr);
    assert.match(
      notAggregator.stderr,
      /targets the cluster, but .* is a node's aetherd, not aether-aggregator: give the aggregator with --aggregator \(or AETHER_AGGREGATOR\)/,
    );
    rmSync(clusterFile);

    const down = await aether(["diff", "-f", join(dir, "worker.json")], { AETHER_HOST: `unix://${dir}/none.sock` });
    assert.equal(down.code, 4, down.stderr);
  });

  it("--help shows examples and diff's exit codes", async () => {
    const help = await aether(["diff", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:\n\s+aether diff -f/);
    assert.match(help.stdout, /0 no differences, 1 differences/);
  });
});
