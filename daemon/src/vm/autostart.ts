// Autostart: VMs marked autostart are started by aetherd at its start when the host has rebooted
// since aetherd last ran (the kernel's boot id differs from the one recorded in the state folder),
// as virsh autostart and qm onboot do, and also when they were running when aetherd stopped and
// their QEMU is gone (killed with it, or by the OOM killer). A VM an operator stopped stays stopped
// across restarts of aetherd within one boot of the host.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { writeJsonAtomic } from "@aether/server";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { VmManager } from "./manager.js";
import type { VmRecord } from "./record.js";

const BOOT_ID = "/proc/sys/kernel/random/boot_id";
const RECORD = "vm-autostart.json";

/** Whether aetherd's start should start this VM. */
export function shouldAutostart(
  vm: Pick<VmRecord, "spec" | "runtime">,
  facts: { firstStartSinceBoot: boolean; lostWhileAway: boolean; processRuns: boolean },
): boolean {
  if (!vm.spec.autostart || facts.processRuns) return false;
  if (!["created", "stopped", "failed"].includes(vm.runtime.state)) return false;
  return facts.firstStartSinceBoot || facts.lostWhileAway;
}

/** Starts the VMs that should start with aetherd; returns their names. Failures are logged, not thrown. */
export async function autostartVms(manager: VmManager, hooks: LifecycleHooks, stateDir: string, log: Logger): Promise<string[]> {
  const bootId = (await readFile(BOOT_ID, "utf8").catch(() => "")).trim();
  const path = join(stateDir, RECORD);
  const recorded = await readFile(path, "utf8").then(
    (t) => String((JSON.parse(t) as { bootId?: unknown }).bootId ?? ""),
    () => "",
  );
  const firstStartSinceBoot = bootId !== "" && bootId !== recorded;
  // Recorded before anything starts: aetherd crashing during the autostart does not make a second boot of it.
  if (bootId !== recorded) await writeJsonAtomic(path, { bootId });
  const lost = hooks.lostWhileAway();
  const started: string[] = [];
  for (const vm of manager.list()) {
    const facts = { firstStartSinceBoot, lostWhileAway: lost.has(vm.spec.id), processRuns: hooks.processRuns(vm) };
    if (!shouldAutostart(vm, facts)) continue;
    try {
      await manager.start(vm);
      started.push(vm.spec.name);
      log.info({ vm: vm.spec.name, firstStartSinceBoot }, "autostarted a VM");
    } catch (err) {
      log.error({ vm: vm.spec.name, err: (err as Error).message }, "could not autostart a VM");
      await hooks.setState(vm, vm.runtime.state, `autostart failed: ${(err as Error).message}`).catch(() => undefined);
    }
  }
  log.info({ started, firstStartSinceBoot }, "autostart checked");
  return started;
}
