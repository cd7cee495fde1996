// README.md's snippets are executed, so the front page cannot drift from the code.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { loadConfig } from "../daemon/src/config.js";
import { methodsOf } from "../server/src/authorize.js";
import { decide, parsePolicy } from "../server/src/policy.js";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { ObserveService } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { FenceService } from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import { BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { repoRoot, useDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";

const run = promisify(execFile);
const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
const blocks = (lang: string) => [...readme.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1] ?? "");

describe("README.md", () => {
  const env = useDaemon();

  it("its TypeScript snippets run under aetherscript against aetherd", async () => {
    const snippets = blocks("ts");
    assert.equal(snippets.length, 2, "the hello script and the manifest");
    const dir = join(repoRoot, ".aether", "readme-snippets");
    mkdirSync(dir, { recursive: true });
    for (const [i, code] of snippets.entries()) {
      const file = join(dir, `snippet-${i}.ts`);
      writeFileSync(file, code);
      const isManifest = code.includes("defineManifest");
      const r = await runCommand("aetherscript", isManifest ? ["plan", file] : [file, "world"], {
        env: { AETHER_HOST: env.daemon.address },
      });
      assert.equal(r.code, 0, r.stderr);
      if (isManifest) {
        assert.match(r.stdout, /\+ create\s+executable server/);
        assert.match(r.stdout, /\+ create\s+vm\s+db\s+does not exist on the node; create it booting a clone of image debian-12/);
      } else assert.equal(r.stdout, "hello world\n");
    }
  });

  it("its aetherd config is what aetherd accepts", () => {
    const [toml] = blocks("toml");
    assert.ok(toml);
    const file = join(repoRoot, ".aether", "readme-aetherd.toml");
    writeFileSync(file, toml);
    const config = loadConfig({ config: file });
    assert.equal(config.socket, "/run/aether/aetherd.sock");
    assert.equal(config.tcp?.listen, "10.0.0.5:7443");
    assert.equal(config.auth.policy, "/etc/aether/policy.toml");
  });

  it("its authorization policy is one aetherd accepts", () => {
    const [, policy] = blocks("toml");
    assert.ok(policy);
    const methods = methodsOf([
      ExecutableService,
      CellService,
      VmService,
      StorageService,
      ObserveService,
      NodeService,
      FenceService,
      BidService,
    ]);
    const parsed = parsePolicy(policy, "README.md", methods);
    assert.equal(decide(parsed, { identity: "spiffe://prod/user/bob" }, "aether.vm.v1.VmService/DeleteVm").allowed, false);
    assert.equal(decide(parsed, { identity: "spiffe://prod/app/billing" }, "aether.vm.v1.VmService/DeleteVm").tenant, "billing");
  });

  it("its buf curl commands work against aetherd", async () => {
    const [sh] = blocks("sh").filter((b) => b.includes("buf curl"));
    assert.ok(sh);
    const commands = sh
      .replace(/\\\n\s*/g, "")
      .split("\n")
      .filter((l) => l.startsWith("npx buf curl"));
    assert.equal(commands.length, 2);
    for (const command of commands) {
      const args = [...command.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? "").slice(2);
      const withSocket = args.map((a) => (a === "/tmp/aether.sock" ? env.daemon.socket : a));
      const { stdout } = await run(join(repoRoot, "node_modules", ".bin", "buf"), withSocket);
      assert.ok(stdout.length > 0);
      if (command.includes("StartExecutable")) assert.match(stdout, /"argv":\s*\[\s*"\/bin\/echo",\s*"hi"\s*\]/);
    }
  });
});
