// What NodeService.CheckHealth checks on aetherd, each with a sentence: the state directory can be
// written, the process shim is there and its spawner answers, the cells' cgroup root is present, the
// clock is sane, every pool is available, and the QEMU of every running VM answers on QMP. A check
// that is not fine says what is wrong and what to do; DEGRADED ones make the node DEGRADED.
import { access, constants } from "node:fs/promises";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import type { VmRecord } from "../vm/record.js";
import type { QmpClient } from "../vm/qmp.js";

export interface Check {
  name: string;
  status: HealthStatus;
  message: string;
  tenant: string;
}

export interface HealthDeps {
  stateDir: string;
  shimPath: string;
  startTimeMs: number;
  spawnerWaitingMs(): number;
  cellsRoot(): { paths: string[]; present: boolean; cells: number } | undefined;
  pools(): Promise<Array<{ name: string; available: boolean; reason: string }>>;
  vms: { list(): VmRecord[]; qmp(vm: VmRecord): QmpClient | undefined; pidOf(vm: VmRecord): number };
}

/** A start the spawner has not reported after this long means it hangs. */
const SPAWNER_STALL_MS = 10_000;
/** How long a running VM's QEMU may take to answer query-status. */
const QMP_TIMEOUT_MS = 2_000;
/** Wall-clock time before this is not a real date (an unset RTC starts in 1970 or 2000). */
const SANE_CLOCK_MS = Date.UTC(2024, 0, 1);

const ok = (name: string, message: string, tenant = ""): Check => ({ name, status: HealthStatus.SERVING, message, tenant });
const bad = (name: string, message: string, tenant = ""): Check => ({ name, status: HealthStatus.DEGRADED, message, tenant });

export async function checkHealth(deps: HealthDeps, lastCheck: { wallMs: number; monoMs: number }): Promise<Check[]> {
  const checks: Check[] = [];
  checks.push(
    await access(deps.stateDir, constants.W_OK).then(
      () => ok("state_dir", `${deps.stateDir} is writable.`),
      (err: Error) =>
        bad(
          "state_dir",
          `the state directory ${deps.stateDir} is not writable (${err.message}): nothing new can be recorded; fix its permissions or the disk.`,
        ),
    ),
  );
  checks.push(
    await access(deps.shimPath, constants.X_OK).then(
      () => ok("shim", `the process shim ${deps.shimPath} is there.`),
      () =>
        bad(
          "shim",
          `the process shim ${deps.shimPath} is missing or not executable: no executable or VM can start; restart aetherd to build it again.`,
        ),
    ),
  );
  const waiting = deps.spawnerWaitingMs();
  checks.push(
    waiting > SPAWNER_STALL_MS
      ? bad(
          "spawner",
          `the process spawner has not reported a start for ${Math.round(waiting / 1000)} s: starts hang; restart aetherd (running processes stay).`,
        )
      : ok("spawner", "the process spawner answers."),
  );
  const root = deps.cellsRoot();
  if (root === undefined)
    checks.push({
      name: "cgroup_root",
      status: HealthStatus.WARNING,
      message: "cells are unavailable on this host (see aether node info).",
      tenant: "",
    });
  else if (root.present) checks.push(ok("cgroup_root", `the cells' cgroup root is present (${root.paths.join(", ")}).`));
  else if (root.cells > 0)
    checks.push(
      bad(
        "cgroup_root",
        `the cells' cgroup root (${root.paths.join(", ")}) is gone while ${root.cells} cell(s) are recorded: their limits no longer apply; restart aetherd to recreate them.`,
      ),
    );
  else checks.push(ok("cgroup_root", "no cell yet: the cgroup root is made with the first one."));

  // The clock: a real date, and not gone backwards since the last check (or since aetherd started).
  const now = Date.now();
  const mono = performance.now();
  const expected = lastCheck.wallMs + (mono - lastCheck.monoMs);
  if (now < SANE_CLOCK_MS)
    checks.push(
      bad("clock", `the clock says ${new Date(now).toISOString()}: set the time (NTP); certificates, leases and records depend on it.`),
    );
  else if (now < expected - 2_000)
    checks.push(
      bad(
        "clock",
        `the clock went back ${Math.round((expected - now) / 1000)} s since ${new Date(lastCheck.wallMs).toISOString()}: check NTP; leases and timestamps depend on it.`,
      ),
    );
  else checks.push(ok("clock", `the clock reads ${new Date(now).toISOString()}.`));
  lastCheck.wallMs = now;
  lastCheck.monoMs = mono;

  for (const pool of await deps.pools()) {
    checks.push(
      pool.available
        ? ok(`pool/${pool.name}`, `pool ${pool.name} is available.`)
        : bad(`pool/${pool.name}`, `pool ${pool.name} is unavailable: ${pool.reason}`),
    );
  }

  // Every VM whose QEMU should be running answers query-status, in parallel, each within 2 s.
  const running = deps.vms.list().filter((vm) => ["running", "paused"].includes(vm.runtime.state) && vm.spec.hypervisor === "qemu");
  checks.push(
    ...(await Promise.all(
      running.map(async (vm): Promise<Check> => {
        const name = `vm/${vm.spec.name}`;
        const pid = deps.vms.pidOf(vm);
        const qmp = deps.vms.qmp(vm);
        if (qmp === undefined)
          return bad(
            name,
            `VM ${vm.spec.name} is ${vm.runtime.state} but aetherd has no QMP connection to its QEMU (pid ${pid}): stop and start it.`,
            vm.spec.tenant,
          );
        try {
          const status = await qmp.execute<{ status: string }>("query-status", undefined, QMP_TIMEOUT_MS);
          return ok(name, `the QEMU of VM ${vm.spec.name} (pid ${pid}) answers: ${status.status}.`, vm.spec.tenant);
        } catch (err) {
          return bad(
            name,
            `the QEMU of VM ${vm.spec.name} (pid ${pid}) is unreachable: QMP query-status failed (${(err as Error).message}); the guest may be hung: stop it with force.`,
            vm.spec.tenant,
          );
        }
      }),
    )),
  );
  return checks;
}
