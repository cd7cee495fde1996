// Every example runs against a real aetherd, so an example that drifts from the API fails here.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { repoRoot, useDaemon } from "./helpers/daemon.js";

const run = promisify(execFile);

const expectations: Record<string, RegExp[]> = {
  "hello-process.ts": [/connected to unix:\/\//, /\[stdout\] hello from aether \(3\)/, /\[stderr\] warning: done/, /exited with code 0: exit code 0/],
  "stop-with-grace.ts": [/did not end it within 1000 ms, so it was killed with SIGKILL \(signal SIGKILL\)/],
};

describe("examples", () => {
  const env = useDaemon();

  for (const [file, patterns] of Object.entries(expectations)) {
    it(`examples/${file} runs against aetherd`, async () => {
      const { stdout } = await run(process.execPath, ["--conditions=source", "--import", "tsx", join(repoRoot, "examples", file)], {
        cwd: repoRoot,
        env: { ...process.env, AETHER_HOST: env.daemon.address },
      });
      for (const p of patterns) assert.match(stdout, p);
    });
  }

  it("every example is covered here", async () => {
    const { readdirSync } = await import("node:fs");
    const files = readdirSync(join(repoRoot, "examples")).filter((f) => f.endsWith(".ts"));
    assert.deepEqual(files.sort(), Object.keys(expectations).sort());
  });
});
