// The ways a live migration ends on the source, shared by the run (outgoing.ts) and by recovery
// after a crash (recovery.ts): cancelled before the switchover (the guest stays), the VM removed
// after the commit (the guest is the target's), or the question to the target when the source does
// not know which copy lives (in doubt at the switchover).
import type { Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { AetherClient } from "@aether/sdk";
import { IncomingState, type VmMigrationService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import type { StorageRegistry } from "../storage/registry.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import type { VmRecord } from "../vm/record.js";
import { cancelMemory, endMirrors, resumeIfPaused } from "./qemu-steps.js";
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
 * The source handed its state over but does not know whether the target resumed the guest: asks the
 * target. FINISHED: the VM is removed here ("moved"). PREPARED or ABSENT: the target's copy is
 * removed and the guest resumes here ("stayed"). No answer: throws; the guest stays paused here
 * (never two running copies) and recovery asks again.
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
): Promise<"moved" | "stayed"> {
  const t = target ?? (connectTarget ? await connectTarget(address) : undefined);
  if (!t) throw new Error(`cannot reach ${address}`);
  try {
    const { state } = await t.migration.queryIncoming({ migrationId }, { timeoutMs: 10_000 });
    if (state === IncomingState.FINISHED) {
      await stepTo(hooks, vm, "committed");
      await removeMigrated(hooks, storage, vm, address, log);
      return "moved";
    }
    const here = hooks.qmp(vm);
    if (state === IncomingState.PREPARED && !here) {
      // The source's QEMU is gone (it ended with its aetherd, or was killed): the target's copy, if
      // its incoming state is complete, is the only one left, so it is resumed there.
      const finished = await t.migration.finishIncoming({ migrationId }, { timeoutMs: 60_000 }).then(
        () => true,
        (err: unknown) => {
          log.error({ vm: vm.spec.name, err: describe(err) }, "the source's QEMU is gone and the target could not resume the guest");
          return false;
        },
      );
      if (finished) {
        await stepTo(hooks, vm, "committed");
        await removeMigrated(hooks, storage, vm, address, log);
        return "moved";
      }
    }
    if (state === IncomingState.PREPARED)
      await t.migration.abortIncoming({ migrationId, reason: "the source resumes the guest" }, { timeoutMs: 60_000 });
    await cancelOutgoing(hooks, vm, undefined, migrationId, { memoryStarted: true, mirrors: vm.spec.disks.length }, "in doubt", log);
    // Resumed here (it was paused for the switchover): RUNNING once its agent answers again.
    if (here) await hooks.resumed(vm, `the live migration to ${address} did not finish on the target; the guest resumed here`);
    return "stayed";
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
