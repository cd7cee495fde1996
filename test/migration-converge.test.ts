// Auto-converge, for real under TCG: a guest that rewrites 16 MiB of memory as fast as it can, sent
// at 16 MiB/s with a 20 ms downtime limit, does not converge by itself: without auto-converge the
// vCPUs are never throttled and the timeout cancels the migration cleanly (the guest runs on in the
// source, the target is empty). The same run with auto-converge and steep steps (from 80 %, +20 %
// each time the copy still falls behind; QEMU's default 20 % + 10 % takes about 45 s here) is seen
// to throttle the vCPUs, rising, and its copy completes within the same timeout (the switchover).
// Steps out of range, or given without auto-converge, are refused with a sentence.
//
// aetherd pauses a TCG guest while its memory is copied (QEMU 7.2's TCG misses pages a running guest
// writes during the copy, issue 14): the source here copies live (AETHER_UNSAFE_TCG_LIVE_COPY=1) to
// show QEMU's throttle at work, so the guest that lands on the target may be corrupt. aetherd asks it
// all the same before the migration commits: a guest that answers there makes the VM the target's
// with nothing left on the source; one that does not (the corruption seen) fails the migration, its
// copy removed from the target and the guest resumed on the source. Either way one copy runs.
// test/migration checks a migrated guest's health with aetherd's safe default.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, vm as vmApi, type AetherClient } from "@aether/sdk";
import { rejectsWith } from "./helpers/assertions.js";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { follow, MiB, sh, waitReady } from "./helpers/migration.js";

const TIMEOUT_S = 20n;
const STEPS = { cpuThrottleInitialPercent: 80, cpuThrottleIncrementPercent: 20 };

describe("live migration: auto-converge", () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let source: AetherClient;
  let target: AetherClient;

  before(async () => {
    [a, b] = await Promise.all([startDaemon({ env: { AETHER_UNSAFE_TCG_LIVE_COPY: "1" } }), startDaemon()]);
    [source, target] = await Promise.all([a.client(), b.client()]);
  });
  after(async () => {
    for (const d of [a, b]) {
      if (!d) continue;
      await stopWorkloads(await d.client()).catch(() => undefined);
      assert.equal(await d.stop(), 0, "aetherd exits 0 on SIGTERM");
      d.cleanup();
    }
  });

  it("refuses throttle steps out of 1..99, or without auto-converge, with a sentence", async () => {
    const migrate = (options: Parameters<AetherClient["vm"]["migrateVm"]>[0]["options"]) =>
      source.vm.migrateVm({ vm: "busy", target: b.address, options });
    await rejectsWith(
      migrate({ cpuThrottleInitialPercent: 0 }),
      Code.InvalidArgument,
      /cpu_throttle_initial_percent 0 is outside 1 \.\. 99/,
    );
    await rejectsWith(
      migrate({ cpuThrottleIncrementPercent: 100 }),
      Code.InvalidArgument,
      /cpu_throttle_increment_percent 100 is outside 1 \.\. 99/,
    );
    await rejectsWith(
      migrate({ autoConverge: false, cpuThrottleInitialPercent: 50 }),
      Code.InvalidArgument,
      /cpu_throttle_initial_percent is given with auto_converge false.*turn auto_converge on/,
    );
  });

  it("without auto-converge a migration that cannot converge is cancelled at its timeout; with steep steps it throttles the vCPUs and completes", async () => {
    const g = guestImage();
    await source.vm.createVm({
      name: "busy",
      acceleration: vmApi.Acceleration.TCG,
      memoryBytes: 128n * MiB,
      vcpus: 1,
      guestAgent: true,
      boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
      start: true,
    });
    const vmId = (await waitReady(source, "busy")).id;
    await sh(
      source,
      "busy",
      "dd if=/dev/urandom of=/run/src bs=1M count=16 2>/dev/null; setsid sh -c 'while :; do cp /run/src /run/blob; done' </dev/null >/dev/null 2>&1 &",
    );

    const run = async (autoConverge: boolean, steps: Partial<typeof STEPS> = {}) => {
      const started = Date.now();
      const { migration } = await source.vm.migrateVm({
        vm: "busy",
        target: b.address,
        options: {
          maxBandwidthBytesPerSecond: 16n * MiB,
          maxDowntime: { seconds: 0n, nanos: 20_000_000 },
          autoConverge,
          timeout: { seconds: TIMEOUT_S, nanos: 0 },
          ...steps,
        },
      });
      const reports = await follow(source, migration?.id ?? "");
      const throttles = reports.map((r) => r.cpuThrottlePercent);
      const dirty = Math.max(...reports.map((r) => Number(r.dirtyRateBytesPerSecond)));
      process.stdout.write(
        `# auto-converge ${autoConverge ? "on" : "off"}: ${vmApi.MigrationState[reports.at(-1)?.state ?? 0]} after ${Date.now() - started} ms, throttle ${[...new Set(throttles)].join(" > ")} %, dirty rate up to ${(dirty / 2 ** 20).toFixed(1)} MiB/s\n`,
      );
      return { reports, throttles, dirty, last: reports.at(-1) };
    };

    // Without auto-converge: never throttled, cancelled at the timeout, the guest still here.
    const free = await run(false);
    assert.ok(free.dirty > 0, "QEMU measured the guest's dirty rate");
    assert.ok(
      free.throttles.every((t) => t === 0),
      "without auto-converge the vCPUs are never throttled",
    );
    assert.equal(free.last?.state, vmApi.MigrationState.FAILED);
    assert.match(
      free.last?.stateReason ?? "",
      new RegExp(`failed during (memory|switchover) \\(it did not finish within the timeout of ${TIMEOUT_S * 1000n} ms.*kept running here`),
    );
    assert.equal(free.last?.options?.cpuThrottleInitialPercent, undefined, "no throttle steps without auto-converge");
    const vm = (await source.vm.getVm({ vm: "busy" })).vm;
    assert.equal(vm?.state, vmApi.VmState.RUNNING);
    assert.equal(await sh(source, "busy", "echo alive"), "alive", "the guest answers on the source");
    assert.deepEqual((await target.vm.listVms({})).vms, [], "the target is empty");

    // The same run with auto-converge and steep steps: throttled, rising, and it completes.
    const throttled = await run(true, STEPS);
    assert.ok(
      throttled.reports.some((r) => r.phase === vmApi.MigrationPhase.SWITCHOVER),
      `the copy converged and reached the switchover (${throttled.last?.stateReason})`,
    );
    assert.equal(throttled.last?.options?.cpuThrottleInitialPercent, STEPS.cpuThrottleInitialPercent);
    assert.equal(throttled.last?.options?.cpuThrottleIncrementPercent, STEPS.cpuThrottleIncrementPercent);
    const seen = throttled.throttles.filter((t) => t > 0);
    assert.ok(
      seen.length > 0 && Math.max(...seen) >= STEPS.cpuThrottleInitialPercent,
      `auto-converge throttled the vCPUs (${seen.join(", ")})`,
    );
    assert.equal(throttled.throttles[0], 0, "the throttle rose from 0");
    assert.ok(
      seen.every((t, i) => i === 0 || t >= (seen[i - 1] ?? 0)),
      `the throttle only rose (${seen.join(", ")})`,
    );
    if (throttled.last?.state === vmApi.MigrationState.SUCCEEDED) {
      const moved = (await target.vm.listVms({})).vms.map((v) => [v.name, v.id]);
      assert.deepEqual(moved, [["busy", vmId]], "the VM is the target's");
      assert.deepEqual((await source.vm.listVms({})).vms, [], "nothing of the VM is left on the source");
    } else {
      // The live copy under TCG broke the guest on the target: it did not answer there, so it was not moved.
      assert.equal(throttled.last?.state, vmApi.MigrationState.FAILED);
      assert.match(
        throttled.last?.stateReason ?? "",
        /did not answer on the target.*the target removed its copy.*the guest kept running here/,
      );
      assert.deepEqual((await target.vm.listVms({})).vms, [], "the target is empty");
      assert.equal((await source.vm.getVm({ vm: "busy" })).vm?.state, vmApi.VmState.RUNNING);
      assert.equal(await sh(source, "busy", "echo alive"), "alive", "the guest answers on the source");
    }
  });
});
