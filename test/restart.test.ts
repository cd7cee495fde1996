// Executables outlive aetherd: kill -9 the daemon, start it again, and everything it ran is still
// there, truthfully: running ones re-adopted (same pid, new output streams, stoppable), ones that
// ended meanwhile with their real exit status, ones whose end could not be observed marked LOST.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { LogChannel, LogSource } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { collect, eventually, isRunning, startDaemon } from "./helpers/daemon.js";

const SH = "/bin/sh";

describe("executables survive a restart of aetherd", () => {
  it("re-adopts after kill -9: listed, new output streams, stoppable; ended ones keep their exit status", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aetherd-restart-"));
    const gate = join(dir, "go");
    let daemon = await startDaemon({ dir });
    let aether = await daemon.client();

    const ticker = await aether.runtime.startExecutable({
      name: "ticker",
      argv: [SH, "-c", "i=0; while :; do i=$((i+1)); echo tick$i; sleep 0.1; done"],
    });
    await aether.runtime.startExecutable({ name: "quick", argv: [SH, "-c", "sleep 0.3; exit 3"] });
    const gated = await aether.runtime.startExecutable({
      name: "gated",
      argv: [SH, "-c", `while [ ! -f ${gate} ]; do sleep 0.05; done; echo through; exit 5`],
    });
    const orphan = await aether.runtime.startExecutable({ name: "orphan", argv: ["/bin/sleep", "600"] });
    const tickerPid = ticker.executable?.pid ?? 0;
    assert.ok(tickerPid > 0);

    await daemon.kill9();
    assert.ok(isRunning(tickerPid), "the process outlived aetherd");

    // While aetherd is down: `quick` exits by itself; `orphan` loses its shim and then dies, so
    // nobody can know how it ended.
    const orphanStarted = JSON.parse(
      readFileSync(join(daemon.stateDir, "executables", orphan.executable?.id ?? "", "started.json"), "utf8"),
    ) as {
      shimPid: number;
      pid: number;
    };
    process.kill(orphanStarted.shimPid, "SIGKILL");
    process.kill(orphanStarted.pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 500));

    daemon = await startDaemon({ dir, cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    try {
      const { executables } = await aether.runtime.listExecutables({});
      const byName = new Map(executables.map((e) => [e.name, e]));
      assert.equal(byName.get("ticker")?.state, ExecutableState.RUNNING);
      assert.equal(byName.get("ticker")?.pid, tickerPid, "same process, not a new one");
      assert.equal(byName.get("quick")?.state, ExecutableState.EXITED);
      assert.equal(byName.get("quick")?.exitCode, 3, "the exit status recorded while aetherd was down");
      assert.equal(byName.get("gated")?.state, ExecutableState.RUNNING);
      assert.equal(byName.get("orphan")?.state, ExecutableState.LOST);
      assert.match(byName.get("orphan")?.stateReason ?? "", /exit status is unknown/);

      // New output of the adopted process streams live.
      let fresh = "";
      for await (const chunk of aether.observe.streamLogs({
        source: LogSource.EXECUTABLE,
        target: "ticker",
        tailLines: 0,
        follow: true,
        channels: [LogChannel.STDOUT],
      })) {
        fresh += Buffer.from(chunk.data).toString();
        if (/tick\d+\n.*tick\d+\n/s.test(fresh)) break;
      }
      assert.match(fresh, /tick\d+/);

      // An adopted process that ends by itself is noticed, with its exit code.
      const waiting = aether.runtime.waitExecutable({ executable: gated.executable?.id ?? "" });
      writeFileSync(gate, "");
      const { executable: gatedDone } = await waiting;
      assert.equal(gatedDone?.state, ExecutableState.EXITED);
      assert.equal(gatedDone?.exitCode, 5);
      const gatedLogs = await collect(aether.observe.streamLogs({ source: LogSource.EXECUTABLE, target: "gated" }));
      assert.equal(gatedLogs[LogChannel.STDOUT], "through\n");

      // And it can still be stopped.
      const { executable: stopped } = await aether.runtime.stopExecutable({ executable: "ticker" });
      assert.equal(stopped?.state, ExecutableState.EXITED);
      assert.equal(stopped?.signal, "SIGTERM");
      await eventually(() => (isRunning(tickerPid) ? undefined : true), 5000, "the ticker to end");
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });

  it("a graceful SIGTERM leaves processes running and a restart adopts them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aetherd-restart-"));
    let daemon = await startDaemon({ dir });
    let aether = await daemon.client();
    const { executable } = await aether.runtime.startExecutable({ argv: ["/bin/sleep", "600"] });
    assert.equal(await daemon.stop(), 0);
    assert.ok(isRunning(executable?.pid ?? 0));
    daemon = await startDaemon({ dir, cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
    try {
      const { executable: again } = await aether.runtime.getExecutable({ executable: executable?.id ?? "" });
      assert.equal(again?.state, ExecutableState.RUNNING);
      assert.equal(again?.pid, executable?.pid);
      await aether.runtime.stopExecutable({ executable: executable?.id ?? "", gracePeriod: { seconds: 0n } });
      await eventually(() => (isRunning(executable?.pid ?? 0) ? undefined : true), 5000, "the process to end");
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
