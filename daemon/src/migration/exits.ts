// The ways a live migration ends on the source, shared by the run (outgoing.ts) and by recovery
// after a crash (recovery.ts): cancelled before the switchover (the guest stays), the VM removed
// after the commit (the guest is the target's), the guest resumed here when it did not show it is
// healthy on the target (whose copy is gone by then), or the question to the target when the source
// does not know which copy lives (in doubt at the switchover or while the target confirms the guest).
import type { Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { AetherClient } from "@aether/sdk/client";
import { IncomingState, type VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import type { StorageRegistry } from "../storage/registry.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import type { VmRecord } from "../vm/record.js";
import { cancelMemory, endMirrors, QMP_STEP_MS, resumeIfPaused } from "./qemu-steps.js";
import { dropTlsCreds } from "./tls.js";

/** The target aetherd, connected with this node's identity. */
export interface Target {
  client: AetherClient;
  migration: Client<typeof VmMigrationService>;
}

/**
 * Cancels before the switchover: QEMU's migration and mirrors, the guest resumed if the migration
 * left it paused, the target told to remove its copy (it also does on its own at its deadline), the
 * intent cleared. Every step is tried whatever the others did.
 */
export async function cancelOutgoing(
  hooks: MigrationHooks,
  vm: VmRecord,
  target: Target | undefined,
  migrationId: string,
  started: { memoryStarted: boolean; mirrors: number },
  why: string,
  log: Logger,
): Promise<void> {
  const qmp = hooks.qmp(vm);
  const attempt = async (what: string, work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (err) {
      log.warn({ vm: vm.spec.name, what, err: describe(err) }, "a step of cancelling a live migration failed");
    }
  };
  if (qmp) {
    if (started.memoryStarted) await attempt("migrate_cancel", () => cancelMemory(qmp));
    await attempt("block-job-cancel", () => endMirrors(qmp, Math.max(started.mirrors, vm.spec.disks.length), false));
    await attempt("cont", () => resumeIfPaused(qmp));
    await attempt("object-del", () => dropTlsCreds(qmp));
  }
  if (target) await attempt("AbortIncoming", () => target.migration.abortIncoming({ migrationId, reason: why }, { timeoutMs: 60_000 }));
  vm.runtime.intent = undefined;
  hooks.release(vm);
  await attempt("save", () => hooks.save(vm));
}

/**
 * The target has no copy of the guest any more (it did not confirm it, or removed it): the copy
 * here, paused since it handed its state over, resumes (QMP cont, which also takes the disks back
 * from their post-migration inactive state), and the VM is RUNNING with the reason once its agent
 * answers again. Throws when the guest does not run here after it (it stays this node's, paused).
 */
export async function resumeHere(hooks: MigrationHooks, vm: VmRecord, migrationId: string, reason: string, log: Logger): Promise<void> {
  await cancelOutgoing(hooks, vm, undefined, migrationId, { memoryStarted: true, mirrors: vm.spec.disks.length }, reason, log);
  const qmp = hooks.qmp(vm);
  const status = qmp ? (await qmp.execute<{ status: string }>("query-status", undefined, QMP_STEP_MS)).status : "gone";
  if (status !== "running") {
    const why = `${reason}; but the guest's QEMU here is ${status} and could not be resumed (StartVm or ResumeVm it)`;
    await hooks.setState(vm, vm.runtime.state, why).catch(() => undefined);
    throw new Error(why);
  }
  await hooks.resumed(vm, reason);
}

/** After the commit: the source's QEMU ends, then the VM's volumes go, then its record (last). */
export async function removeMigrated(
  hooks: MigrationHooks,
  storage: StorageRegistry,
  vm: VmRecord,
  target: string,
  log: Logger,
): Promise<void> {
  await hooks.end(vm, `migrated to ${target}`);
  for (const d of vm.spec.disks) {
    if (d.volumeId === "" || !storage.volumeById(d.volumeId)) continue;
    await storage.deleteVolume(d.volumeId, vm.spec.tenant, true, "", { asOwner: vm.spec.id }).catch((err: Error) => {
      log.warn({ vm: vm.spec.name, volume: d.volumeId, err: err.message }, "a migrated VM's volume could not be deleted here");
    });
  }
  hooks.release(vm);
  await hooks.remove(vm, `VM ${vm.spec.name} migrated to ${target}`);
}

/**
 * The source handed its state over but does not know whether the target resumed the guest, or
 * whether the guest is confirmed there: asks the target. FINISHED: the VM is removed here ("moved").
 * RESUMED: the target confirms the guest or removes its copy (ConfirmIncoming) and this node follows.
 * PREPARED or ABSENT: the target's copy is removed and the guest resumes here ("stayed", with why).
 * No answer: throws; the guest stays paused here (never two running copies) and recovery asks again.
 */
export async function settleInDoubt(
  hooks: MigrationHooks,
  storage: StorageRegistry,
  vm: VmRecord,
  target: Target | undefined,
  migrationId: string,
  address: string,
  log: Logger,
  connectTarget?: (address: string) => Promise<Target>,
): Promise<"moved" | { reason: string }> {
  const t = target ?? (connectTarget ? await connectTarget(address) : undefined);
  if (!t) throw new Error(`cannot reach ${address}`);
  const moved = async () => {
    await stepTo(hooks, vm, "committed");
    await removeMigrated(hooks, storage, vm, address, log);
    return "moved" as const;
  };
  try {
    const { state } = await t.migration.queryIncoming({ migrationId }, { timeoutMs: 10_000 });
    if (state === IncomingState.FINISHED) return await moved();
    const here = hooks.qmp(vm);
    if ((state === IncomingState.PREPARED || state === IncomingState.RESUMED) && !here) {
      // The source's QEMU is gone (it ended with its aetherd, or was killed): the target's copy, if
      // its incoming state is complete, is the only one left, so it is resumed (or kept) there
      // without waiting for the guest's answer.
      const finished = await t.migration.finishIncoming({ migrationId }, { timeoutMs: 60_000 }).then(
        () => true,
        (err: unknown) => {
          log.error({ vm: vm.spec.name, err: describe(err) }, "the source's QEMU is gone and the target could not resume the guest");
          return false;
        },
      );
      if (finished) return await moved();
      // A guest running there unconfirmed is the only copy: it is never aborted for want of one here.
      if (state === IncomingState.RESUMED) throw new Error(`${address} could not commit the only running copy of the guest`);
    }
    if (state === IncomingState.RESUMED && here) {
      // The call's own bound is the target's wait for the guest (confirm_within) and its removal.
      const { confirmed, reason } = await t.migration.confirmIncoming({ migrationId }, { timeoutMs: 120_000 });
      if (confirmed) return await moved();
      const why = `${reason}; the target removed its copy`;
      await resumeHere(hooks, vm, migrationId, `the live migration to ${address} was not confirmed (${why}); the guest resumed here`, log);
      return { reason: why };
    }
    if (state === IncomingState.PREPARED || state === IncomingState.RESUMED)
      await t.migration.abortIncoming({ migrationId, reason: "the source resumes the guest" }, { timeoutMs: 60_000 });
    const reason = state === IncomingState.ABSENT ? "the target holds no copy of the VM" : "the target had not resumed the guest";
    if (!here) {
      await cancelOutgoing(hooks, vm, undefined, migrationId, { memoryStarted: true, mirrors: vm.spec.disks.length }, "in doubt", log);
      return { reason };
    }
    // Resumed here (it was paused for the switchover): RUNNING once its agent answers again.
    await resumeHere(hooks, vm, migrationId, `the live migration to ${address} did not finish on the target; the guest resumed here`, log);
    return { reason };
  } finally {
    if (!target) t.client.close();
  }
}

async function stepTo(hooks: MigrationHooks, vm: VmRecord, step: "committed"): Promise<void> {
  const migration = vm.runtime.intent?.migration;
  if (migration) migration.step = step;
  await hooks.save(vm);
}

export function describe(err: unknown): string {
  const e = err as { rawMessage?: string; message?: string };
  return e.rawMessage ?? e.message ?? String(err);
}
