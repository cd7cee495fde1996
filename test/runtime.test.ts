// ExecutableService and StreamLogs end to end against a real aetherd: real processes, real signals.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@aether/sdk";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { LogChannel, LogSource } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { collect, eventually, isRunning, useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";

const SH = "/bin/sh";

describe("runtime: executables", () => {
  const env = useDaemon();

  it("runs a process with argv, env and cwd, captures its output and records its exit code", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-cwd-"));
    const { executable } = await env.aether.runtime.startExecutable({
      name: "greeter",
      labels: { team: "a" },
      // It waits for a go file, so the answer to the start sees it running whatever the machine's load.
      argv: [SH, "-c", 'while [ ! -e go ]; do sleep 0.01; done; echo "out:$GREETING:$(pwd)"; echo "err:$0" >&2; exit 7', "arg0"],
      env: { GREETING: "hello" },
      cwd: dir,
    });
    assert.ok(executable);
    assert.equal(executable.name, "greeter");
    assert.ok(executable.pid > 0);
    writeFileSync(join(dir, "go"), "");
    const { executable: done } = await env.aether.runtime.waitExecutable({ executable: "greeter" });
    assert.equal(done?.state, ExecutableState.EXITED);
    assert.equal(done?.exitCode, 7);
    assert.equal(done?.signal, "");
    assert.equal(done?.pid, 0);
    const logs = await collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable.id }));
    assert.equal(logs[LogChannel.STDOUT], `out:hello:${dir}\n`);
    assert.equal(logs[LogChannel.STDERR], "err:arg0\n");
    assert.equal(done?.stdoutBytes, BigInt(`out:hello:${dir}\n`.length));
  });

  it("gives the process a clean environment: nothing inherited from aetherd", async () => {
    const { executable } = await env.aether.runtime.startExecutable({ argv: ["/usr/bin/env"], env: { ONLY: "this" } });
    await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    const logs = await collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable?.id ?? "" }));
    assert.equal(logs[LogChannel.STDOUT], "ONLY=this\n");
  });

  it("stops with the given signal, and SIGKILLs what ignores it after the grace period", async () => {
    const polite = await env.aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"] });
    const stopped = await env.aether.runtime.stopExecutable({ executable: polite.executable?.id ?? "", signal: "SIGINT" });
    assert.equal(stopped.executable?.state, ExecutableState.EXITED);
    assert.equal(stopped.executable?.signal, "SIGINT");

    const stubborn = await env.aether.runtime.startExecutable({
      argv: [SH, "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"],
    });
    // Wait for the trap to be installed before signalling.
    for await (const chunk of env.aether.observe.streamLogs({
      source: LogSource.EXECUTABLE,
      target: stubborn.executable?.id ?? "",
      follow: true,
    })) {
      if (Buffer.from(chunk.data).toString().includes("ready")) break;
    }
    const t0 = Date.now();
    const killed = await env.aether.runtime.stopExecutable({ executable: stubborn.executable?.id ?? "", gracePeriod: { seconds: 1n } });
    assert.ok(Date.now() - t0 >= 900, "the grace period was honoured");
    assert.equal(killed.executable?.signal, "SIGKILL");
    assert.match(killed.executable?.stateReason ?? "", /did not end it within 1000 ms/);
  });

  it("stop reaches the whole process group, children included", async () => {
    const { executable } = await env.aether.runtime.startExecutable({ argv: [SH, "-c", "/bin/sleep 600 & echo $!; wait"] });
    let child = 0;
    for await (const chunk of env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable?.id ?? "", follow: true })) {
      child = Number.parseInt(Buffer.from(chunk.data).toString(), 10);
      if (child > 0) break;
    }
    assert.ok(isRunning(child), "the child runs");
    await env.aether.runtime.stopExecutable({ executable: executable?.id ?? "" });
    await eventually(() => (isRunning(child) ? undefined : true), 5000, "the child to end with its parent");
  });

  it("streams live output with follow, and ends the stream when the process exits", async () => {
    const { executable } = await env.aether.runtime.startExecutable({
      argv: [SH, "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
    });
    const t0 = Date.now();
    const logs = await collect(
      env.aether.observe.streamLogs({
        source: LogSource.EXECUTABLE,
        target: executable?.id ?? "",
        follow: true,
        channels: [LogChannel.STDOUT],
      }),
    );
    assert.equal(logs[LogChannel.STDOUT], "line1\nline2\nline3\n");
    assert.ok(Date.now() - t0 >= 350, "the stream followed the process while it ran");
  });

  it("streams the tail: the last N lines, or only new output with 0", async () => {
    const { executable } = await env.aether.runtime.startExecutable({ argv: [SH, "-c", "seq 1 10"] });
    await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    const tail = await collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable?.id ?? "", tailLines: 3 }));
    assert.equal(tail[LogChannel.STDOUT], "8\n9\n10\n");
    const none = await collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable?.id ?? "", tailLines: 0 }));
    assert.equal(none[LogChannel.STDOUT], undefined);
  });

  it("caps captured output and counts what it dropped", async () => {
    const { executable } = await env.aether.runtime.startExecutable({
      argv: [SH, "-c", "head -c 100000 /dev/zero"],
      logLimitBytes: 4096n,
    });
    const { executable: done } = await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    assert.equal(done?.stdoutBytes, 4096n);
    assert.equal(done?.droppedBytes, 100000n - 4096n);
    assert.equal(done?.exitCode, 0, "the program was not disturbed by the cap");
  });

  it("runs as another uid/gid when asked (as root), or says why it cannot", async () => {
    const start = env.aether.runtime.startExecutable({ argv: [SH, "-c", "id -u; id -g"], uid: 65534, gid: 65534 });
    if (process.getuid?.() !== 0) {
      await rejectsWith(start, Code.FailedPrecondition, /setting the group id: Operation not permitted/);
      return;
    }
    const { executable } = await start;
    await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
    const logs = await collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: executable?.id ?? "" }));
    assert.equal(logs[LogChannel.STDOUT], "65534\n65534\n");
  });

  it("lists newest first, filters by label, tenant and state, and pages", async () => {
    for (let i = 0; i < 5; i++) {
      await env.aether.runtime.startExecutable({
        name: `pager-${i}`,
        tenant: "paging",
        labels: { batch: "p", i: String(i) },
        argv: ["/bin/true"],
      });
    }
    const page1 = await env.aether.runtime.listExecutables({ tenant: "paging", pageSize: 2 });
    assert.deepEqual(
      page1.executables.map((e) => e.name),
      ["pager-4", "pager-3"],
    );
    const page2 = await env.aether.runtime.listExecutables({ tenant: "paging", pageSize: 2, pageToken: page1.nextPageToken });
    const page3 = await env.aether.runtime.listExecutables({ tenant: "paging", pageSize: 2, pageToken: page2.nextPageToken });
    assert.deepEqual(
      page2.executables.map((e) => e.name),
      ["pager-2", "pager-1"],
    );
    assert.deepEqual(
      page3.executables.map((e) => e.name),
      ["pager-0"],
    );
    assert.equal(page3.nextPageToken, "");
    const filtered = await env.aether.runtime.listExecutables({ filter: "batch=p,i=3" });
    assert.deepEqual(
      filtered.executables.map((e) => e.name),
      ["pager-3"],
    );
    const other = await env.aether.runtime.listExecutables({ tenant: "nobody" });
    assert.equal(other.executables.length, 0);
    // A name is unique within a tenant, not across tenants.
    await env.aether.runtime.startExecutable({ name: "pager-0", tenant: "other", argv: ["/bin/true"] });
  });

  it("returns the first executable again for a retried request_id instead of starting twice", async () => {
    const a = await env.aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"], requestId: "retry-1" });
    const b = await env.aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"], requestId: "retry-1" });
    assert.equal(a.executable?.id, b.executable?.id);
    await env.aether.runtime.stopExecutable({ executable: a.executable?.id ?? "", gracePeriod: { seconds: 0n } });
  });

  it("deletes an exited executable with its logs, and refuses to delete a running one", async () => {
    const run = await env.aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"] });
    await rejectsWith(
      env.aether.runtime.deleteExecutable({ executable: run.executable?.id ?? "" }),
      Code.FailedPrecondition,
      /still running/,
    );
    await env.aether.runtime.stopExecutable({ executable: run.executable?.id ?? "", gracePeriod: { seconds: 0n } });
    await env.aether.runtime.deleteExecutable({ executable: run.executable?.id ?? "", requestId: "del-1" });
    await rejectsWith(env.aether.runtime.getExecutable({ executable: run.executable?.id ?? "" }), Code.NotFound, /no executable/);
    // A retried delete with its request_id succeeds again; without one, the executable is gone.
    await env.aether.runtime.deleteExecutable({ executable: run.executable?.id ?? "", requestId: "del-1" });
    await rejectsWith(env.aether.runtime.deleteExecutable({ executable: run.executable?.id ?? "" }), Code.NotFound, /no executable/);
    assert.equal(existsSync(join(env.daemon.stateDir, "executables", run.executable?.id ?? "")), false, "its folder and logs are gone");
  });

  describe("bad input gets the right code and a sentence, and the daemon keeps serving", () => {
    before(async () => {
      await env.aether.runtime.startExecutable({ name: "sleeper", argv: ["/bin/sleep", "600"] });
    });
    const cases: Array<[string, () => Promise<unknown>, Code, RegExp]> = [
      ["empty argv", () => env.aether.runtime.startExecutable({ argv: [] }), Code.InvalidArgument, /argv is empty/],
      [
        "relative program",
        () => env.aether.runtime.startExecutable({ argv: ["sleep", "1"] }),
        Code.InvalidArgument,
        /not an absolute path/,
      ],
      [
        "missing program",
        () => env.aether.runtime.startExecutable({ argv: ["/no/such/program"] }),
        Code.FailedPrecondition,
        /does not exist/,
      ],
      ["directory as program", () => env.aether.runtime.startExecutable({ argv: ["/tmp"] }), Code.FailedPrecondition, /not a regular file/],
      [
        "missing cwd",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/true"], cwd: "/no/such/dir" }),
        Code.FailedPrecondition,
        /does not exist/,
      ],
      [
        "relative cwd",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/true"], cwd: "rel" }),
        Code.InvalidArgument,
        /not an absolute path/,
      ],
      [
        "bad name",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/true"], name: "../etc" }),
        Code.InvalidArgument,
        /not a valid name/,
      ],
      ["NUL in argv", () => env.aether.runtime.startExecutable({ argv: ["/bin/echo", "a\0b"] }), Code.InvalidArgument, /NUL/],
      [
        "bad env name",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/true"], env: { "A=B": "x" } }),
        Code.InvalidArgument,
        /env variable/,
      ],
      [
        "unknown cell",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/true"], cell: "x" }),
        Code.NotFound,
        /no cell with id or name "x"/,
      ],
      ["unknown id", () => env.aether.runtime.getExecutable({ executable: "no-such-thing" }), Code.NotFound, /no executable/],
      ["empty reference", () => env.aether.runtime.stopExecutable({ executable: "" }), Code.InvalidArgument, /is empty/],
      [
        "unknown signal",
        () => env.aether.runtime.stopExecutable({ executable: "sleeper", signal: "SIGBOGUS" }),
        Code.InvalidArgument,
        /not a signal name/,
      ],
      [
        "negative grace period",
        () => env.aether.runtime.stopExecutable({ executable: "sleeper", gracePeriod: { seconds: -5n } }),
        Code.InvalidArgument,
        /must not be negative/,
      ],
      ["oversized page", () => env.aether.runtime.listExecutables({ pageSize: 5000 }), Code.InvalidArgument, /too large/],
      ["bad label filter", () => env.aether.runtime.listExecutables({ filter: "novalue" }), Code.InvalidArgument, /key=value/],
      ["bad tenant", () => env.aether.runtime.listExecutables({ tenant: "Not A Tenant" }), Code.InvalidArgument, /not a valid name/],
      [
        "negative wait timeout",
        () => env.aether.runtime.waitExecutable({ executable: "greeter", timeout: { seconds: -1n } }),
        Code.InvalidArgument,
        /must not be negative/,
      ],
      [
        "wait that times out",
        () => env.aether.runtime.waitExecutable({ executable: "sleeper", timeout: { nanos: 100_000_000 } }),
        Code.DeadlineExceeded,
        /still running after 100 ms/,
      ],
      ["bad page token", () => env.aether.runtime.listExecutables({ pageToken: "garbage!" }), Code.InvalidArgument, /page_token/],
      [
        "log stream of unknown process",
        () => collect(env.aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: "nope" })),
        Code.NotFound,
        /no executable/,
      ],
      [
        "log stream without source",
        () => collect(env.aether.observe.streamLogs({ target: "nope" })),
        Code.InvalidArgument,
        /source is unspecified/,
      ],
      [
        "oversized request",
        () => env.aether.runtime.startExecutable({ argv: ["/bin/echo", "x".repeat(5 * 1024 * 1024)] }),
        Code.ResourceExhausted,
        /message size|larger than|exceeds/i,
      ],
    ];
    for (const [what, call, code, pattern] of cases) {
      it(what, async () => {
        await rejectsWith(call(), code, pattern);
        const health = await env.aether.node.checkHealth({});
        assert.equal(health.status, 1, "still serving");
      });
    }

    it("stopping an already-exited process is FAILED_PRECONDITION", async () => {
      const { executable } = await env.aether.runtime.startExecutable({ argv: ["/bin/true"] });
      await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "" });
      await rejectsWith(env.aether.runtime.stopExecutable({ executable: executable?.id ?? "" }), Code.FailedPrecondition, /not running/);
    });

    it("a duplicate name is ALREADY_EXISTS", async () => {
      await rejectsWith(env.aether.runtime.startExecutable({ name: "greeter", argv: ["/bin/true"] }), Code.AlreadyExists, /already exists/);
    });

    it("a program the kernel cannot execute fails with the kernel's reason and leaves nothing behind", async () => {
      const file = join(mkdtempSync(join(tmpdir(), "aether-noformat-")), "not-a-program");
      writeFileSync(file, "this is text without a #! line\n");
      chmodSync(file, 0o755);
      const folders = () => readdirSync(join(env.daemon.stateDir, "executables")).length;
      const before = folders();
      await rejectsWith(
        env.aether.runtime.startExecutable({ argv: [file] }),
        Code.FailedPrecondition,
        /executing the program: Exec format error/,
      );
      assert.equal(folders(), before, "no record folder is left behind");
    });

    it("a program without execute permission is refused before anything runs", async () => {
      const file = join(mkdtempSync(join(tmpdir(), "aether-noexec-")), "script");
      writeFileSync(file, "#!/bin/sh\necho hi\n");
      chmodSync(file, 0o644);
      const before = (await env.aether.runtime.listExecutables({ pageSize: 1000 })).executables.length;
      await rejectsWith(env.aether.runtime.startExecutable({ argv: [file] }), Code.FailedPrecondition, /not executable/);
      const afterCount = (await env.aether.runtime.listExecutables({ pageSize: 1000 })).executables.length;
      assert.equal(afterCount, before, "nothing was recorded");
    });

    it("a service aetherd does not serve says UNIMPLEMENTED with a sentence naming who does", async () => {
      await rejectsWith(env.aether.aggregator.listNodes({}), Code.Unimplemented, /served by aether-aggregator, not by aetherd/);
    });
  });
});
