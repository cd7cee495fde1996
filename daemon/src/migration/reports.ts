// The target's report of a finished live migration to the aggregator (AggregatorService.
// ReportMigration), so that the VM's placement follows it there and the move is a cluster event,
// whoever started the migration (a drain, or `aether vm migrate` on the source). The report is an
// outbox: a file under <state_dir>/migration-reports, written when the target commits to the guest
// (incoming.ts) and removed once the aggregator answered, sent again after a restart and while the
// aggregator does not answer. A kill -9 of either aetherd therefore loses no report: the source's
// death does not matter past the commit, and the target writes it again when recovery finishes a
// committed migration (settleCommitted). A report is only sent while this node holds the VM as the
// one that migration brought: a file written just before a commit that a crash undid is dropped.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { duration, timestamp, writeJsonAtomic } from "@aether/server";
import type { Membership } from "../auction/membership.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";

const ReportSchema = z.object({
  migrationId: z.string(),
  vmId: z.string(),
  vmName: z.string(),
  tenant: z.string(),
  workloadId: z.string(),
  sourceNodeId: z.string(),
  sourceNode: z.string(),
  totalMs: z.number(),
  downtimeMs: z.number(),
  finishMs: z.number(),
});
export type MigrationReport = z.infer<typeof ReportSchema>;

/** Sends one report; resolves once the aggregator took it. */
export type SendReport = (report: MigrationReport) => Promise<void>;

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export class MigrationReports {
  private timer: NodeJS.Timeout | undefined;
  private retryMs = FIRST_RETRY_MS;
  private flushing: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(
    private readonly o: {
      dir: string;
      hooks: Pick<MigrationHooks, "byId">;
      /** Unset: this node is in no cluster, nothing is written or sent. */
      send: SendReport | undefined;
      log: Logger;
    },
  ) {}

  /** Keeps the report (durably) and sends it soon. */
  async record(report: MigrationReport): Promise<void> {
    if (!this.o.send) return;
    await mkdir(this.o.dir, { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.file(report.migrationId), report);
  }

  /** Whether a report of this migration is kept (recovery writes one only when none is). */
  async has(migrationId: string): Promise<boolean> {
    return readFile(this.file(migrationId)).then(
      () => true,
      () => false,
    );
  }

  /** Sends what is kept now (and again later while the aggregator does not take it). */
  flush(): void {
    if (!this.o.send || this.closed) return;
    if (this.flushing) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.flushing = this.sendAll()
      .then((left) => {
        if (left > 0) this.later();
        else this.retryMs = FIRST_RETRY_MS;
      })
      .finally(() => {
        this.flushing = undefined;
        if (this.again) {
          this.again = false;
          this.flush();
        }
      });
  }

  /** Resolves once the flush under way (if any) is done; for tests and shutdown. */
  async settled(): Promise<void> {
    await this.flushing;
  }

  private later(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), this.retryMs);
    this.timer.unref();
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
  }

  /** Sends every kept report; returns how many are left to send again. */
  private async sendAll(): Promise<number> {
    const files = await readdir(this.o.dir).catch(() => [] as string[]);
    let left = 0;
    for (const name of files.filter((f) => f.endsWith(".json"))) {
      const path = join(this.o.dir, name);
      let report: MigrationReport;
      try {
        report = ReportSchema.parse(JSON.parse(await readFile(path, "utf8")));
      } catch (err) {
        this.o.log.error({ file: path, err: (err as Error).message }, "dropping an unreadable migration report");
        await rm(path, { force: true });
        continue;
      }
      const standing = this.standing(report);
      if (standing === "wait") {
        left++;
        continue;
      }
      if (standing === "void") {
        this.o.log.info({ migration: report.migrationId, vm: report.vmName }, "dropping the report of a migration this node does not hold");
        await rm(path, { force: true });
        continue;
      }
      try {
        await (this.o.send as SendReport)(report);
        await rm(path, { force: true });
        this.o.log.info({ migration: report.migrationId, vm: report.vmName }, "reported the live migration to the aggregator");
      } catch (err) {
        left++;
        this.o.log.warn(
          { migration: report.migrationId, vm: report.vmName, err: (err as { rawMessage?: string }).rawMessage ?? (err as Error).message },
          "could not report a live migration to the aggregator; trying again",
        );
      }
    }
    return left;
  }

  /**
   * "send": this node holds the VM that migration brought (committed); "wait": the migration is not
   * committed here yet; "void": it never was (a crash before the commit removed the VM) or the VM
   * left again (the node it went to reports that move).
   */
  private standing(report: MigrationReport): "send" | "wait" | "void" {
    const vm = this.o.hooks.byId(report.vmId);
    if (!vm) return "void";
    const incoming = vm.runtime.intent?.op === "migrate-in" ? vm.runtime.intent.migration : undefined;
    if (incoming?.id === report.migrationId) return incoming.step === "committed" ? "send" : "wait";
    return vm.runtime.migratedIn === report.migrationId ? "send" : "void";
  }

  private file(migrationId: string): string {
    return join(this.o.dir, `${migrationId}.json`);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }
}

/** Sends reports as ReportMigration calls through the node's connection to the aggregator (membership). */
export function reportThrough(membership: () => Membership | undefined, nodeId: string): SendReport {
  return async (r) => {
    const m = membership();
    if (!m) throw new Error("this node is not connected to the aggregator yet");
    await m.call((aggregator) =>
      aggregator.aggregator.reportMigration(
        {
          nodeId,
          migrationId: r.migrationId,
          vmId: r.vmId,
          vmName: r.vmName,
          tenant: r.tenant,
          workloadId: r.workloadId,
          sourceNodeId: r.sourceNodeId,
          sourceNode: r.sourceNode,
          totalTime: duration(r.totalMs),
          downtime: duration(r.downtimeMs),
          finishTime: timestamp(r.finishMs),
        },
        { timeoutMs: 10_000 },
      ),
    );
  };
}
