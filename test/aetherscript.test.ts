// aetherscript as a user meets it: scripts outside the repository run by their shebang, failures
// that explain themselves, Deno's least privilege, manifests that plan and apply, and the REPL.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { defineManifest, MANIFEST_LABEL, type VolumeDecl } from "@aether/sdk";
import { ImageFileFormat, ImageState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { useDaemon } from "./helpers/daemon.js";
import { makeRawDisk, MiB } from "./helpers/disks.js";
import { runCommand } from "./helpers/run.js";
import { clientShape, completeAether } from "../runtime/src/repl.js";

/** A folder outside the repository, as a user's scripts would be. */
function userDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "aetherscript-user-"));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}

describe("aetherscript", () => {
  const env = useDaemon();
  const run = (args: string[], extra: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {}) =>
    runCommand("aetherscript", args, { cwd: extra.cwd, input: extra.input, env: { AETHER_HOST: env.daemon.address, ...extra.env } });

  describe("scripts", () => {
    const script = `#!/usr/bin/env aetherscript
import { connect } from "@aether/sdk";
const aether = await connect();
const { node } = await aether.node.getNodeInfo({});
console.log(JSON.stringify({ host: node?.hostname, args: process.argv.slice(2) }));
aether.close();
process.exit(Number(process.argv[2] ?? 0));
`;

    it("runs an extensionless script outside the repository by its shebang, with arguments and exit code", async () => {
      const dir = userDir({ deploy: script });
      chmodSync(join(dir, "deploy"), 0o755);
      const r = await runCommand(join(dir, "deploy"), ["7", "--replicas", "3"], { cwd: "/", env: { AETHER_HOST: env.daemon.address } });
      assert.equal(r.code, 7, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).args, ["7", "--replicas", "3"]);
    });

    for (const engine of ["deno", "node"]) {
      it(`runs a .ts script from another directory under ${engine}`, async () => {
        const dir = userDir({ "info.ts": script });
        const r = await run(["--engine", engine, join(dir, "info.ts"), "0", "x"], { cwd: "/" });
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(JSON.parse(r.stdout).args, ["0", "x"]);
      });

      it(`${engine}: a script that throws shows its own stack with TypeScript line numbers`, async () => {
        const dir = userDir({
          "throws.ts":
            "interface Box { value: number }\nfunction check(b: Box): void {\n  throw new Error(`bad value ${b.value}`);\n}\ncheck({ value: 42 });\n",
        });
        const r = await run(["--engine", engine, join(dir, "throws.ts")]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /Error: bad value 42/);
        assert.match(r.stderr, /throws\.ts:3:9/, "the throw's own line and column in the .ts file");
        assert.doesNotMatch(r.stderr, /node:internal|ext:/, "no engine internals");
      });

      it(`${engine}: a syntax error names the file and line`, async () => {
        const dir = userDir({ "broken.ts": "const ok = 1;\nconst value: number = ;\n" });
        const r = await run(["--engine", engine, join(dir, "broken.ts")]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /broken\.ts:2:/);
      });

      it(`${engine}: a daemon that is down gives the SDK's sentence, not a stack`, async () => {
        const dir = userDir({ "down.ts": 'import { connect } from "@aether/sdk";\nawait connect();\n' });
        const r = await run(["--engine", engine, join(dir, "down.ts")], { env: { AETHER_HOST: `unix://${dir}/no.sock` } });
        assert.equal(r.code, 1);
        assert.equal(
          r.stderr.trim(),
          `aetherscript: cannot reach aetherd at unix://${dir}/no.sock: no socket exists there. Start it with \`aetherd --socket ${dir}/no.sock\` (or \`npm run aetherd -- --socket ${dir}/no.sock\` in the Aether repository), or point AETHER_HOST at a running daemon.`,
        );
      });
    }

    it("deno: a script may read its own folder but not elsewhere, unless --allow-read widens it", async () => {
      const secret = userDir({ "secret.txt": "s3cret" });
      const dir = userDir({
        "data.txt": "mine",
        "read.ts": `import { readFileSync } from "node:fs";\nconsole.log(readFileSync(new URL("./data.txt", import.meta.url), "utf8"));\nconsole.log(readFileSync(${JSON.stringify(join(secret, "secret.txt"))}, "utf8"));\n`,
      });
      const refused = await run([join(dir, "read.ts")]);
      assert.equal(refused.code, 1);
      assert.match(refused.stdout, /^mine$/m);
      assert.match(refused.stderr, /NotCapable: Requires read access to ".*secret\.txt", run again with the --allow-read flag/);
      const allowed = await run([`--allow-read=${secret}`, join(dir, "read.ts")]);
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.match(allowed.stdout, /s3cret/);
    });

    it("deno: network access is limited to the daemon", async () => {
      const dir = userDir({ "net.ts": 'await fetch("http://127.0.0.1:8080/");\n' });
      const r = await run([join(dir, "net.ts")]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Requires net access to "127\.0\.0\.1:8080"/);
    });

    it("says clearly when the script does not exist", async () => {
      const r = await run(["/no/such/script.ts"]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /no such file/);
    });
  });

  describe("manifests", () => {
    const manifest = (executables: string) => `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "app", tenant: "mf", executables: ${executables} });
`;

    it("plans, applies, and a second apply changes nothing; changes replace and removals delete", async () => {
      const dir = userDir({
        "v1.ts": manifest('[{ name: "a", argv: ["/bin/sleep", "600"] }, { name: "b", argv: ["/bin/sleep", "601"] }]'),
        "v2.ts": manifest('[{ name: "a", argv: ["/bin/sleep", "600"] }, { name: "b", argv: ["/bin/sleep", "602"] }]'),
        "v3.ts": manifest('[{ name: "a", argv: ["/bin/sleep", "600"] }]'),
      });
      const first = await run(["apply", join(dir, "v1.ts")]);
      assert.equal(first.code, 0, first.stderr);
      const idA = (await env.aether.runtime.getExecutable({ executable: "a", tenant: "mf" })).executable?.id;
      const second = await run(["apply", join(dir, "v1.ts"), "--json"]);
      assert.deepEqual(JSON.parse(second.stdout).applied, [], "nothing changed");

      const plan2 = await run(["plan", join(dir, "v2.ts"), "--json"]);
      assert.deepEqual(
        JSON.parse(plan2.stdout).actions.map((a: { kind: string; name: string; reason: string }) => `${a.kind} ${a.name} ${a.reason}`),
        ["unchanged a running as declared", "replace b argv changed"],
      );
      assert.equal((await run(["apply", join(dir, "v2.ts")])).code, 0);
      const b = (await env.aether.runtime.getExecutable({ executable: "b", tenant: "mf" })).executable;
      assert.deepEqual(b?.argv, ["/bin/sleep", "602"]);
      assert.equal((await env.aether.runtime.getExecutable({ executable: "a", tenant: "mf" })).executable?.id, idA, "a was left alone");

      const apply3 = await run(["apply", join(dir, "v3.ts")]);
      assert.match(apply3.stdout, /- delete\s+executable b\s+no longer in the manifest/);
      const left = await env.aether.runtime.listExecutables({ tenant: "mf" });
      assert.deepEqual(
        left.executables.map((e) => e.name),
        ["a"],
      );
    });

    it("manages cells too: created before what runs in them, updated in place, removed after it", async () => {
      const pods = (memory: number, withSidecar: boolean) => `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "pods", tenant: "mfcells",
  cells: [{ name: "pod", memoryMaxBytes: ${memory} * 2 ** 20, isolation: { network: true } }${withSidecar ? ', { name: "pod/side", cpuMaxPercent: 50 }' : ""}],
  executables: [{ name: "app", cell: "pod", argv: ["/bin/sleep", "600"] }${withSidecar ? ', { name: "helper", cell: "pod/side", argv: ["/bin/sleep", "601"] }' : ""}],
});
`;
      const dir = userDir({ "v1.ts": pods(128, true), "v2.ts": pods(256, true), "v3.ts": pods(256, false) });
      const first = await run(["apply", join(dir, "v1.ts"), "--json"]);
      assert.equal(first.code, 0, first.stderr);
      assert.deepEqual(
        JSON.parse(first.stdout).applied.map((a: { kind: string; resource: string; name: string }) => `${a.kind} ${a.resource} ${a.name}`),
        ["create cell pod", "create cell pod/side", "create executable app", "create executable helper"],
      );
      const app = (await env.aether.runtime.getExecutable({ executable: "app", tenant: "mfcells" })).executable;
      assert.equal(app?.cell, "pod");
      assert.deepEqual(JSON.parse((await run(["apply", join(dir, "v1.ts"), "--json"])).stdout).applied, []);
      const update = await run(["apply", join(dir, "v2.ts")]);
      assert.match(update.stdout, /\* update\s+cell\s+pod\s+memory max changed/);
      assert.equal(
        (await env.aether.runtime.getExecutable({ executable: "app", tenant: "mfcells" })).executable?.id,
        app?.id,
        "updated in place: app kept running",
      );
      const shrink = await run(["apply", join(dir, "v3.ts"), "--json"]);
      assert.deepEqual(
        JSON.parse(shrink.stdout).applied.map((a: { kind: string; resource: string; name: string }) => `${a.kind} ${a.resource} ${a.name}`),
        ["delete executable helper", "delete cell pod/side"],
      );
      const { cells } = await env.aether.cells.listCells({ tenant: "mfcells" });
      assert.deepEqual(
        cells.map((c) => c.name),
        ["pod"],
      );
    });

    it("manages volumes: created first and deleted last, grown in place, never shrunk", async () => {
      // A small raw image in the manifest's tenant, for the clone.
      const work = mkdtempSync(join(tmpdir(), "aether-mfvol-"));
      const raw = join(work, "base.raw");
      const sha = makeRawDisk(raw, 8 * MiB, 0xcd);
      await env.aether.storage.importImage({
        name: "base",
        tenant: "mfvol",
        source: { source: { case: "localPath", value: raw } },
        sha256: sha,
        sourceFormat: ImageFileFormat.RAW,
      });
      let image;
      for await (const update of env.aether.storage.watchImage({ image: "base", tenant: "mfvol" })) image = update.image;
      assert.equal(image?.state, ImageState.READY, image?.stateReason);
      rmSync(work, { recursive: true, force: true });

      const vols = (data: string, withRoot: boolean) => `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "vols", tenant: "mfvol",
  volumes: [{ name: "data", size: ${data}, labels: { role: "data" } }${withRoot ? ', { name: "root", image: "base", size: "12M" }' : ""}],
  executables: [${withRoot ? '{ name: "app", argv: ["/bin/sleep", "600"] }' : ""}],
});
`;
      const dir = userDir({
        "v1.ts": vols('"16M"', true),
        "grow.ts": vols("24 * 2 ** 20", true),
        "shrink.ts": vols('"16M"', true),
        "drop.ts": vols('"24M"', false),
      });
      const steps = (stdout: string) =>
        JSON.parse(stdout).applied.map((a: { kind: string; resource: string; name: string }) => `${a.kind} ${a.resource} ${a.name}`);
      const volume = async (name: string) => (await env.aether.storage.getVolume({ volume: name, tenant: "mfvol" })).volume;

      const first = await run(["apply", join(dir, "v1.ts"), "--json"]);
      assert.equal(first.code, 0, first.stderr);
      assert.deepEqual(
        steps(first.stdout),
        ["create volume data", "create volume root", "create executable app"],
        "volumes before what may use them",
      );
      const data = await volume("data");
      const root = await volume("root");
      assert.equal(data?.sizeBytes, BigInt(16 * MiB));
      assert.deepEqual(data?.labels, { role: "data", [MANIFEST_LABEL]: "vols" });
      assert.equal(data?.backing, undefined, "created empty");
      assert.equal(root?.sizeBytes, BigInt(12 * MiB), "the clone is grown to the declared size");
      assert.deepEqual(root?.labels, { [MANIFEST_LABEL]: "vols" });
      assert.equal(root?.backing?.parent.value, image?.id);

      const again = await run(["apply", join(dir, "v1.ts"), "--json"]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(steps(again.stdout), [], "a second apply changes nothing");
      const plan = await run(["plan", join(dir, "v1.ts"), "--json"]);
      assert.deepEqual(
        JSON.parse(plan.stdout).actions.map((a: { kind: string }) => a.kind),
        ["unchanged", "unchanged", "unchanged"],
      );
      assert.equal(JSON.parse(plan.stdout).changes, 0);

      const grow = await run(["apply", join(dir, "grow.ts")]);
      assert.equal(grow.code, 0, grow.stderr);
      assert.match(grow.stdout, /\* update\s+volume\s+data\s+size grows from 16 MiB to 24 MiB/);
      assert.equal((await volume("data"))?.sizeBytes, BigInt(24 * MiB));
      assert.equal((await volume("data"))?.id, data?.id, "resized in place");

      const shrinkPlan = await run(["plan", join(dir, "shrink.ts")]);
      assert.equal(shrinkPlan.code, 1);
      assert.match(
        shrinkPlan.stdout,
        /! conflict\s+volume\s+data\s+volume data is 24 MiB \(25165824 bytes\) on the node, larger than the declared 16 MiB; volumes never shrink/,
      );
      const shrink = await run(["apply", join(dir, "shrink.ts")]);
      assert.equal(shrink.code, 1);
      assert.match(shrink.stderr, /^aetherscript: nothing was applied: volume data is 24 MiB .* volumes never shrink/);
      assert.equal((await volume("data"))?.sizeBytes, BigInt(24 * MiB), "not shrunk");

      // A volume removed from the manifest is deleted, after the executables; a refusal from aetherd
      // (here: it has a snapshot) stops apply and says what was done before it.
      await env.aether.storage.snapshotVolume({ volume: "root", tenant: "mfvol", name: "keep" });
      const refused = await run(["apply", join(dir, "drop.ts")]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /apply stopped at delete volume root: \[failed_precondition\] .*snapshot.*; applied before that: delete executable app/,
      );
      await env.aether.storage.deleteSnapshot({ volume: "root", tenant: "mfvol", snapshot: "keep" });
      const drop = await run(["apply", join(dir, "drop.ts"), "--json"]);
      assert.equal(drop.code, 0, drop.stderr);
      assert.deepEqual(steps(drop.stdout), ["delete volume root"]);
      const { volumes } = await env.aether.storage.listVolumes({ tenant: "mfvol" });
      assert.deepEqual(
        volumes.map((v) => v.name),
        ["data"],
      );
    });

    it("an invalid volume declaration names the field", () => {
      const invalid = (volume: Record<string, unknown>) => {
        try {
          defineManifest({ name: "v", volumes: [volume as unknown as VolumeDecl] });
        } catch (err) {
          return (err as Error).message;
        }
        return "accepted";
      };
      assert.match(invalid({ name: "Data", size: "1G" }), /^invalid manifest: volumes\.0\.name: must be a DNS label/);
      assert.equal(invalid({ name: "data", size: 0 }), "invalid manifest: volumes.0.size: must be greater than 0");
      assert.equal(
        invalid({ name: "data", size: "10 parsecs" }),
        'invalid manifest: volumes.0.size: "10 parsecs" is not a size like "512M", "10G" or a number of bytes',
      );
      assert.equal(
        invalid({ name: "data" }),
        "invalid manifest: volumes.0.size: is required for an empty volume: give a size, or an image to clone",
      );
      assert.equal(invalid({ name: "data", size: "1G", format: "vmdk" }), 'invalid manifest: volumes.0.format: must be "qcow2" or "raw"');
      assert.equal(
        invalid({ name: "data", image: "base", format: "raw" }),
        "invalid manifest: volumes.0.format: a clone has its image's format: drop format, or image base",
      );
      assert.deepEqual(
        defineManifest({
          name: "v",
          volumes: [
            { name: "a", size: "512M" },
            { name: "b", size: 1.5 * 2 ** 30 },
          ],
        }).volumes.map((v) => v.sizeBytes),
        [512 * MiB, 1536 * MiB],
      );
    });

    it("an invalid manifest says which field and why", async () => {
      const dir = userDir({ "bad.ts": manifest('[{ name: "ok", argv: ["relative/program"] }]') });
      const r = await run(["plan", join(dir, "bad.ts")]);
      assert.equal(r.code, 1);
      assert.equal(r.stderr.trim(), "aetherscript: invalid manifest: executables.0.argv: argv[0] must be an absolute path");
    });

    it("an apply that fails halfway reports what was applied", async () => {
      const dir = userDir({
        "half.ts": `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "half", tenant: "mf2", executables: [
  { name: "good", argv: ["/bin/sleep", "600"] },
  { name: "broken", argv: ["/no/such/program"] },
] });
`,
      });
      const r = await run(["apply", join(dir, "half.ts")]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /apply stopped at create executable broken: .*\/no\/such\/program does not exist on this host.*; applied before that: create executable good/,
      );
      const { executables } = await env.aether.runtime.listExecutables({ tenant: "mf2" });
      assert.deepEqual(
        executables.map((e) => e.name),
        ["good"],
      );
    });

    it("a file that is not a manifest is refused", async () => {
      const dir = userDir({ "plain.ts": "export default 42;\n" });
      const r = await run(["plan", join(dir, "plain.ts")]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /does not export a manifest/);
    });
  });

  describe("REPL", () => {
    it("binds a connected client as `aether` with top-level await", async () => {
      const history = join(mkdtempSync(join(tmpdir(), "aether-repl-")), "history");
      const r = await run([], {
        // One expression per line: piped lines do not wait for the previous line's await.
        input:
          "(await aether.node.checkHealth({})).status === 1 ? 'status=serving' : 'status=other'\nObject.keys(sdk).includes('runtime')\n.exit\n",
        env: { XDG_STATE_HOME: join(history, "..") },
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /status=serving/);
      assert.match(r.stdout, /true/);
    });

    it("completes services and methods", async () => {
      const aether = env.aether;
      const shape = clientShape(aether);
      assert.deepEqual(completeAether("aether.ru", shape), [["runtime"], "ru"]);
      const [methods, prefix] = completeAether("await aether.runtime.st", shape) ?? [[], ""];
      assert.equal(prefix, "st");
      assert.deepEqual(methods, ["startExecutable", "stopExecutable"]);
      assert.equal(completeAether("const x = 1", shape), undefined);
    });
  });
});
