// GitOps (issue 15, item 6): `aetherscript apply --watch DIR --pull` on a clone of a local git
// repository, against a real aetherd. Each commit pushed to the repository is pulled, applied and
// reported with its commit; a manifest removed from the folder has what it created deleted; a commit
// with an invalid manifest is reported as failed (naming the field) and changes nothing on the node,
// and the next good commit applies.
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MANIFEST_LABEL } from "@aether/sdk";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { eventually, useDaemon } from "./helpers/daemon.js";
import { binDir } from "./helpers/run.js";

const TENANT = "gitops";

interface Report {
  status: "applied" | "failed";
  commit: string;
  subject: string;
  dirty: boolean;
  changes?: number;
  error?: string;
  manifests?: Array<{
    manifest: string;
    deleted?: boolean;
    changes: number;
    applied: Array<{ kind: string; resource: string; name: string }>;
  }>;
}

const app = (seconds: number) => `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "app", tenant: "${TENANT}", executables: [{ name: "server", argv: ["/bin/sleep", "${seconds}"] }] });
`;
const extra = `import { defineManifest } from "@aether/sdk";
export default defineManifest({ name: "extra", tenant: "${TENANT}", executables: [{ name: "sidecar", argv: ["/bin/sleep", "900"] }] });
`;

describe("GitOps: aetherscript apply --watch", () => {
  const env = useDaemon();
  const root = mkdtempSync(join(tmpdir(), "aether-gitops-"));
  const origin = join(root, "origin");
  const checkout = join(root, "checkout");
  let watch: ChildProcess;
  let stdout = "";
  let stderr = "";

  const git = (cwd: string, ...args: string[]) =>
    execFileSync("git", ["-c", "user.name=Aether Test", "-c", "user.email=test@aether.invalid", "-c", "init.defaultBranch=main", ...args], {
      cwd,
      encoding: "utf8",
    }).trim();
  /** Writes (or, with undefined, removes) files in the origin repository and commits them; returns the commit. */
  const commit = (subject: string, files: Record<string, string | undefined>) => {
    for (const [name, content] of Object.entries(files)) {
      if (content === undefined) git(origin, "rm", "-q", join("manifests", name));
      else writeFileSync(join(origin, "manifests", name), content);
    }
    git(origin, "add", "-A");
    git(origin, "commit", "-q", "-m", subject);
    return git(origin, "rev-parse", "HEAD");
  };
  const reports = () =>
    stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Report);
  const reportOf = (sha: string, what: string) =>
    eventually(() => reports().find((r) => r.commit === sha), 45_000, `the watch to report ${what} (stdout: ${stdout}, stderr: ${stderr})`);
  const running = async () =>
    (await env.aether.runtime.listExecutables({ tenant: TENANT })).executables
      .filter((e) => e.state === ExecutableState.RUNNING)
      .map((e) => `${e.name} ${e.argv.join(" ")}`)
      .sort();

  before(() => {
    mkdirSync(join(origin, "manifests"), { recursive: true });
    git(origin, "init", "-q");
  });

  after(() => {
    if (watch && watch.exitCode === null) watch.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  });

  it("applies the checkout's commit, then every commit pulled after it, and reports each commit", async () => {
    const first = commit("app: a server", { "app.manifest.ts": app(600) });
    git(root, "clone", "-q", origin, checkout);
    watch = spawn("aetherscript", ["apply", "--watch", join(checkout, "manifests"), "--pull", "--interval", "300ms", "--json"], {
      cwd: "/",
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, AETHER_HOST: env.daemon.address },
      stdio: ["ignore", "pipe", "pipe"],
    });
    watch.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
    watch.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));

    const r1 = await reportOf(first, "the first commit");
    assert.equal(r1.status, "applied", r1.error);
    assert.equal(r1.subject, "app: a server");
    assert.equal(r1.dirty, false);
    assert.deepEqual(
      r1.manifests?.map((m) => m.applied.map((a) => `${a.kind} ${a.resource} ${a.name}`)),
      [["create executable server"]],
    );
    assert.deepEqual(await running(), ["server /bin/sleep 600"]);
    const server = (await env.aether.runtime.getExecutable({ executable: "server", tenant: TENANT })).executable;
    assert.equal(server?.labels[MANIFEST_LABEL], "app");

    const second = commit("app: longer sleep; extra: a sidecar", { "app.manifest.ts": app(601), "extra.manifest.ts": extra });
    const r2 = await reportOf(second, "the second commit");
    assert.equal(r2.status, "applied", r2.error);
    assert.deepEqual(
      r2.manifests?.map((m) => `${m.manifest}: ${m.applied.map((a) => `${a.kind} ${a.name}`).join(", ")}`),
      ["app: replace server", "extra: create sidecar"],
    );
    assert.deepEqual(await running(), ["server /bin/sleep 601", "sidecar /bin/sleep 900"]);
    assert.equal(reports().filter((r) => r.commit === first).length, 1, "an unchanged checkout is not applied again");
  });

  it("a manifest removed from the folder has what it created deleted", async () => {
    const third = commit("extra: removed", { "extra.manifest.ts": undefined });
    const r3 = await reportOf(third, "the removal");
    assert.equal(r3.status, "applied", r3.error);
    assert.deepEqual(
      r3.manifests?.map((m) => `${m.manifest}${m.deleted ? " (deleted)" : ""}: ${m.applied.map((a) => `${a.kind} ${a.name}`).join(", ")}`),
      ["app: ", "extra (deleted): delete sidecar"],
    );
    assert.deepEqual(await running(), ["server /bin/sleep 601"]);
  });

  it("an invalid commit is reported as failed and changes nothing; the next good commit applies", async () => {
    const broken = commit("app: broken", { "app.manifest.ts": app(602).replace('argv: ["/bin/sleep", "602"]', 'argv: ["sleep", "602"]') });
    const r4 = await reportOf(broken, "the broken commit");
    assert.equal(r4.status, "failed");
    assert.match(r4.error ?? "", /executables\.0\.argv: argv\[0\] must be an absolute path/);
    assert.deepEqual(await running(), ["server /bin/sleep 601"], "nothing changed on the node");

    const fixed = commit("app: fixed", { "app.manifest.ts": app(603) });
    const r5 = await reportOf(fixed, "the fix");
    assert.equal(r5.status, "applied", r5.error);
    assert.deepEqual(await running(), ["server /bin/sleep 603"]);

    watch.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) =>
      watch.exitCode !== null ? resolve(watch.exitCode) : watch.once("exit", (c) => resolve(c)),
    );
    assert.equal(code, 0, stderr);
    // What the watch applied stays after it stops; aetherscript delete removes it.
    const removed = spawn("aetherscript", ["delete", join(checkout, "manifests", "app.manifest.ts")], {
      cwd: "/",
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, AETHER_HOST: env.daemon.address },
      stdio: "ignore",
    });
    assert.equal(await new Promise((resolve) => removed.once("exit", resolve)), 0);
    assert.deepEqual(await running(), []);
  });
});
