// Live migrations that a crash or kill -9 of aetherd cut short, settled at its next start from the
// intents in the VM records, so that exactly one copy of each VM runs:
// - source, "copying": the guest never left; the migration is cancelled (QEMU's migration and
//   mirrors, the target told to remove its copy) and the guest keeps running here;
// - source, "switching" or "confirming": the target is asked (QueryIncoming) which copy lives, and the
//   other goes (a guest resumed there unconfirmed is confirmed or removed there first, ConfirmIncoming);
//   while it does not answer, the guest stays paused here and aetherd asks again;
// - source, "committed": the guest runs on the target; what is left here is removed;
// - target, "committed": the guest is resumed here if it is not running yet (an uncommitted incoming
//   VM, resumed unconfirmed or not, was already removed by the VM manager's recovery: the source
//   then hears ABSENT and resumes its paused copy).
import type { Logger } from "pino";
import type { StorageRegistry } from "../storage/registry.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import type { VmRecord } from "../vm/record.js";
import { settleCommitted } from "./incoming.js";
import type { MigrationReports } from "./reports.js";
import { cancelOutgoing, removeMigrated, settleInDoubt, type Target } from "./exits.js";

const RETRY_MS = 5000;

export class MigrationRecovery {
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly o: {
      hooks: MigrationHooks;
      storage: StorageRegistry;
      connectTarget: (address: string) => Promise<Target>;
      reports: MigrationReports;
      log: Logger;
    },
  ) {}

  /** Settles every migration the records say was under way. */
  async settle(): Promise<void> {
    for (const vm of this.o.hooks.list()) {
      const intent = vm.runtime.intent;
      if (intent?.op !== "migrate-out" && intent?.op !== "migrate-in") continue;
      await this.settleOne(vm).catch((err: Error) => this.retry(vm, err));
    }
  }

  /** Settles the VM's migration later (a migration in doubt: the target did not answer at the switchover). */
  later(vm: VmRecord): void {
    this.retry(vm, new Error("the target did not answer at the switchover"));
  }

  private retry(vm: VmRecord, err: Error): void {
    this.o.log.warn(
      { vm: vm.spec.name, err: err.message, retryMs: RETRY_MS },
      "could not settle an interrupted live migration; trying again",
    );
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.settleOne(vm).catch((e: Error) => this.retry(vm, e));
    }, RETRY_MS);
    timer.unref();
    this.timers.add(timer);
  }

  private async settleOne(vm: VmRecord): Promise<void> {
    const { hooks, storage, log } = this.o;
    const intent = vm.runtime.intent;
    const migration = intent?.migration;
    if (!hooks.byId(vm.spec.id) || !migration) return;
    if (intent.op === "migrate-in") {
      if (migration.step !== "committed") return; // the VM manager removed it already
      log.warn(
        { vm: vm.spec.name, migration: migration.id },
        "finishing an incoming live migration that was committed before aetherd stopped",
      );
      await settleCommitted(hooks, storage, vm, this.o.reports);
      return;
    }
    hooks.claim(vm, `settling its live migration to ${migration.peer}`);
    try {
      if (migration.step === "copying") {
        log.warn({ vm: vm.spec.name, migration: migration.id }, "cancelling a live migration that aetherd did not finish");
        const target = await this.o.connectTarget(migration.peer).catch(() => undefined);
        try {
          const why = "the source aetherd restarted during the migration";
          await cancelOutgoing(hooks, vm, target, migration.id, { memoryStarted: true, mirrors: vm.spec.disks.length }, why, log);
        } finally {
          target?.client.close();
        }
        if (vm.runtime.state === "running")
          await hooks.setState(
            vm,
            "running",
            `the live migration to ${migration.peer} was cancelled: aetherd restarted during it; the guest kept running here`,
          );
      } else if (migration.step === "switching" || migration.step === "confirming") {
        log.warn({ vm: vm.spec.name, migration: migration.id }, "asking the target which copy of a migrated VM lives");
        await settleInDoubt(hooks, storage, vm, undefined, migration.id, migration.peer, log, this.o.connectTarget);
      } else {
        log.warn({ vm: vm.spec.name, migration: migration.id }, "removing what is left of a VM that was migrated away");
        await removeMigrated(hooks, storage, vm, migration.peer, log);
      }
    } finally {
      hooks.release(vm);
    }
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
  }
}
