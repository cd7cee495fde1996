// The host-wide ZFS lock: commands take turns on zfs-fuse, a held lock gives an error that says so,
// and errors name the zfs command rather than the flock in front of it. A stand-in script plays
// zfs so the test measures the lock, not ZFS.
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { execa } from "execa";
import { HostCommandError } from "./command.js";
import { runZfs, runZfsInOneTurn, setZfsCommandsTakeTurns, ZFS_LOCK_PATH } from "./zfs-command.js";

describe("zfs commands on zfs-fuse take turns under one host lock", () => {
  let dir: string;
  let fakeZfs: string;
  before(async () => {
    setZfsCommandsTakeTurns(true);
    dir = await mkdtemp(join(tmpdir(), "aether-zfs-lock-"));
    fakeZfs = join(dir, "zfs");
    // Logs its start and end (ms) and sleeps between them; exits 1 with a message when asked to.
    await writeFile(
      fakeZfs,
      `#!/bin/sh\n[ "$1" = fail ] && { echo "cannot open 'x': dataset does not exist" >&2; exit 1; }\n` +
        `echo "start $1 $(date +%s%3N)" >> ${dir}/log\nsleep 0.4\necho "end $1 $(date +%s%3N)" >> ${dir}/log\n`,
    );
    await chmod(fakeZfs, 0o755);
  });
  after(async () => {
    setZfsCommandsTakeTurns(false);
    await rm(dir, { recursive: true, force: true });
  });

  it("runs three commands started at once one after another, never overlapping", async () => {
    await Promise.all(["a", "b", "c"].map((name) => runZfs(fakeZfs, [name], { timeoutMs: 10_000 })));
    const spans = new Map<string, { start: number; end: number }>();
    for (const line of (await readFile(join(dir, "log"), "utf8")).trim().split("\n")) {
      const [kind, name, ms] = line.split(" ") as [string, string, string];
      const span = spans.get(name) ?? { start: 0, end: 0 };
      span[kind as "start" | "end"] = Number(ms);
      spans.set(name, span);
    }
    const ordered = [...spans.values()].sort((x, y) => x.start - y.start);
    assert.equal(ordered.length, 3);
    for (let i = 1; i < ordered.length; i++) {
      assert.ok(ordered[i]!.start >= ordered[i - 1]!.end, `commands overlapped: ${JSON.stringify(ordered)}`);
    }
  });

  it("says the host's ZFS lock was the wait when another command holds it too long", async () => {
    const holder = execa("flock", ["--no-fork", ZFS_LOCK_PATH, "sleep", "3"]);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await assert.rejects(runZfs(fakeZfs, ["late"], { timeoutMs: 1000 }), (err: unknown) => {
        assert.ok(err instanceof HostCommandError);
        assert.match(err.message, new RegExp(`^${fakeZfs} late did not start: another zfs command held the host's ZFS lock`));
        return true;
      });
    } finally {
      holder.kill();
      await holder.catch(() => undefined);
    }
  });

  it("keeps the zfs command's own failure and stderr, named as the zfs command", async () => {
    await assert.rejects(runZfs(fakeZfs, ["fail"], { timeoutMs: 5000 }), (err: unknown) => {
      assert.ok(err instanceof HostCommandError);
      assert.equal(err.command, `${fakeZfs} fail`);
      assert.equal(err.message, `${fakeZfs} fail failed: cannot open 'x': dataset does not exist`);
      assert.match(err.stderr, /does not exist/);
      return true;
    });
  });
  it("runs a sequence in one turn of the lock, in order, arguments passed as they are, the last one's output returned", async () => {
    const echo = join(dir, "echo-zfs");
    // Prints its arguments one per line, so a quote or a space that the shell split would show.
    await writeFile(echo, `#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n`);
    await chmod(echo, 0o755);
    const odd = "it's a 'name' with $HOME and ; rm -rf /tmp/nothing";
    const out = await runZfsInOneTurn(echo, [["first"], ["second", odd]], { timeoutMs: 5000 });
    assert.equal(out.stdout, `[second]\n[${odd}]`);
    // While the sequence runs, another command waits for the lock.
    const slow = join(dir, "slow-zfs");
    await writeFile(
      slow,
      `#!/bin/sh\necho "start $1 $(date +%s%3N)" >> ${dir}/seq\nsleep 0.3\necho "end $1 $(date +%s%3N)" >> ${dir}/seq\n`,
    );
    await chmod(slow, 0o755);
    await Promise.all([runZfsInOneTurn(slow, [["s1"], ["s2"]], { timeoutMs: 5000 }), runZfs(slow, ["other"], { timeoutMs: 5000 })]);
    const lines = (await readFile(join(dir, "seq"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => l.split(" ").slice(0, 2).join(" "));
    const other = lines.indexOf("start other");
    assert.ok(
      other === 0 ? lines[1] === "end other" : lines.indexOf("end s2") < other,
      `another command ran inside the sequence's turn: ${lines.join(", ")}`,
    );
  });

  it("stops a sequence at the first failure, named as the zfs commands", async () => {
    await assert.rejects(runZfsInOneTurn(fakeZfs, [["fail"], ["never"]], { timeoutMs: 5000 }), (err: unknown) => {
      assert.ok(err instanceof HostCommandError);
      assert.equal(err.command, `${fakeZfs} fail && ${fakeZfs} never`);
      assert.equal(err.message, `${fakeZfs} fail && ${fakeZfs} never failed: cannot open 'x': dataset does not exist`);
      return true;
    });
    assert.equal((await readFile(join(dir, "log"), "utf8")).includes("never"), false, "the second command ran after the first failed");
  });
});
