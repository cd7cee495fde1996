// aetherscript as a user meets it: scripts outside the repository run by their shebang, failures
// that explain themselves, Deno's least privilege, manifests that plan and apply, and the REPL.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { useDaemon } from "./helpers/daemon.js";
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
        const dir = userDir({ "throws.ts": "interface Box { value: number }\nfunction check(b: Box): void {\n  throw new Error(`bad value ${b.value}`);\n}\ncheck({ value: 42 });\n" });
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
        assert.equal(r.stderr.trim(), `aetherscript: cannot reach aetherd at unix://${dir}/no.sock: no socket exists there. Start it with \`aetherd --socket ${dir}/no.sock\` (or \`npm run aetherd -- --socket ${dir}/no.sock\` in the Aether repository), or point AETHER_HOST at a running daemon.`);
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
      assert.deepEqual(left.executables.map((e) => e.name), ["a"]);
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
      assert.equal((await env.aether.runtime.getExecutable({ executable: "app", tenant: "mfcells" })).executable?.id, app?.id, "updated in place: app kept running");
      const shrink = await run(["apply", join(dir, "v3.ts"), "--json"]);
      assert.deepEqual(
        JSON.parse(shrink.stdout).applied.map((a: { kind: string; resource: string; name: string }) => `${a.kind} ${a.resource} ${a.name}`),
        ["delete executable helper", "delete cell pod/side"],
      );
      const { cells } = await env.aether.cells.listCells({ tenant: "mfcells" });
      assert.deepEqual(cells.map((c) => c.name), ["pod"]);
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
      assert.match(r.stderr, /apply stopped at create executable broken: .*\/no\/such\/program does not exist on this host.*; applied before that: create executable good/);
      const { executables } = await env.aether.runtime.listExecutables({ tenant: "mf2" });
      assert.deepEqual(executables.map((e) => e.name), ["good"]);
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
        input: "(await aether.node.checkHealth({})).status === 1 ? 'status=serving' : 'status=other'\nObject.keys(sdk).includes('runtime')\n.exit\n",
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
