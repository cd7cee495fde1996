// Which VMs aetherd's start starts: marked autostart, not running, and either the host rebooted
// since aetherd last ran or the VM was running when aetherd stopped and its QEMU is gone.
import assert from "node:assert/strict";
import { it } from "node:test";
import { shouldAutostart } from "./autostart.js";
import { freshRuntime, type VmRecord } from "./record.js";

function vm(autostart: boolean, state: VmRecord["runtime"]["state"]): Pick<VmRecord, "spec" | "runtime"> {
  return { spec: { autostart } as VmRecord["spec"], runtime: { ...freshRuntime(), state } };
}
const facts = (f: Partial<{ firstStartSinceBoot: boolean; lostWhileAway: boolean; processRuns: boolean }>) => ({
  firstStartSinceBoot: false,
  lostWhileAway: false,
  processRuns: false,
  ...f,
});

it("starts a marked VM at aetherd's first start after a host reboot, whatever state it was left in", () => {
  for (const state of ["created", "stopped", "failed"] as const)
    assert.equal(shouldAutostart(vm(true, state), facts({ firstStartSinceBoot: true })), true, state);
});

it("starts a marked VM whose QEMU was gone when aetherd came back (it was running)", () => {
  assert.equal(shouldAutostart(vm(true, "stopped"), facts({ lostWhileAway: true })), true);
});

it("leaves a VM its operator stopped alone when only aetherd restarted", () => {
  assert.equal(shouldAutostart(vm(true, "stopped"), facts({})), false);
});

it("never starts an unmarked VM, one whose QEMU runs, or one that is running", () => {
  assert.equal(shouldAutostart(vm(false, "stopped"), facts({ firstStartSinceBoot: true, lostWhileAway: true })), false);
  assert.equal(shouldAutostart(vm(true, "stopped"), facts({ firstStartSinceBoot: true, processRuns: true })), false);
  assert.equal(shouldAutostart(vm(true, "running"), facts({ firstStartSinceBoot: true })), false);
});
