import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { it } from "node:test";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isSameProcessAlive, processStartTime } from "./procfs.js";

it("identifies a process by pid and start time, so a reused pid is never mistaken for it", async () => {
  const child = spawn("/bin/sleep", ["30"]);
  const pid = child.pid ?? 0;
  const start = processStartTime(pid);
  assert.match(start ?? "", /^\d+$/);
  assert.equal(isSameProcessAlive(pid, start ?? ""), true);
  // Same pid, other start time: what a reused pid looks like.
  assert.equal(isSameProcessAlive(pid, String(Number(start) + 1)), false);
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  assert.equal(processStartTime(pid), undefined);
  assert.equal(isSameProcessAlive(pid, start ?? ""), false);
});

it("reads the start time even when the command name has spaces and parentheses", async () => {
  const odd = join(mkdtempSync(join(tmpdir(), "aether-procfs-")), "a) b (c");
  copyFileSync("/bin/sleep", odd);
  chmodSync(odd, 0o755);
  const child = spawn(odd, ["30"]);
  await new Promise((r) => setTimeout(r, 100));
  assert.match(readFileSync(`/proc/${child.pid}/stat`, "utf8"), /\(a\) b \(c\)/);
  const start = processStartTime(child.pid ?? 0);
  assert.match(start ?? "", /^\d+$/);
  child.kill("SIGKILL");
});
