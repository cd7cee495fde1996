import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createLogger } from "./logger.js";
import { RuntimeLogLevel } from "./log-level.js";

const settle = () => new Promise((r) => setTimeout(r, 150));

describe("the log level at runtime", () => {
  it("reaches child loggers made before the change, reverts by itself, and records each change at the more verbose level, never as fatal", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-log-level-"));
    const file = join(dir, "test.log");
    // stderr gets the lines too: the test reads the file.
    const root = createLogger("info", file, "log-level-test");
    const child = root.child({ room: "a" }).child({ sub: "b" });
    const runtime = new RuntimeLogLevel(root, "info");
    try {
      child.debug("hidden");
      runtime.set("debug", 200, "tester");
      assert.equal(child.level, "debug", "a grandchild made before the change follows it");
      child.debug("shown");
      assert.ok(runtime.revertAt !== undefined);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(runtime.level, "info");
      assert.equal(child.level, "info");
      assert.equal(runtime.revertAt, undefined);
      child.debug("hidden again");
      runtime.set("fatal", 0, "tester");
      runtime.set("silent", 0, "tester");
      runtime.set("info", 0, "tester");
      await settle();
      const lines = readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { level: number; msg: string; from?: string; to?: string; by?: string });
      assert.deepEqual(
        lines.map((l) => [l.level, l.msg, l.from, l.to]),
        [
          [20, "log level changed at runtime", "info", "debug"],
          [20, "shown", undefined, undefined],
          [20, "log level reverted to the configured one", "debug", "info"],
          [30, "log level changed at runtime", "info", "fatal"],
          [30, "log level changed at runtime", "silent", "info"],
        ],
      );
      assert.ok(
        lines.every((l) => l.level !== 60),
        "no fatal line for a change of level",
      );
      assert.equal(lines[0]?.by, "tester");
    } finally {
      runtime.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
