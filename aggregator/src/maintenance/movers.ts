// How each kind of workload leaves a node being drained: a Mover per kind. The drain (drain.ts)
// picks the target by auction among the other ON_DUTY nodes and records the move (move.ts); the
// mover does the work on the nodes and must leave exactly one running copy, whatever happens:
//
// - an executable: its new copy is started on the target first (ExecuteProvisioning, the workload
//   id as request_id) and must be RUNNING; only then is the old one released on the source. If the
//   old copy cannot be released, the new one is released again and the workload stays on the source.
// - a VM: live migration, VmService.MigrateVm on the source node to the target's address, followed
//   with WatchMigration to SUCCEEDED (the guest runs on the target, nothing is left on the source)
//   or FAILED (cancelled before the switchover: it runs on the source as before). A source whose
//   aetherd answers UNIMPLEMENTED (no live migration there) stops the drain with a sentence saying
//   the VM cannot be live-migrated; it keeps running where it was. The request_id of a move is its
//   auction and target, so a replica that takes over asks again and follows the same migration.
// - a cell: its contents are started by its owner, so the aggregator cannot move it; the drain stops.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Node, WorkloadPlacement, WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { MigrationState, type Migration } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { describeError, duration } from "@aether/server";
import type { Context } from "../context.js";
import { resourceIdOf } from "../auction/run.js";
import { DEFAULT_GRACE_MS } from "../placements/book.js";

/** One move: the workload, where it runs and where the auction sent it. */
export interface MoveStep {
  placement: WorkloadPlacement;
  spec: WorkloadSpec;
  from: Node;
  to: Node;
  auctionId: string;
}

/** What a move did, for the WORKLOAD_MOVED event. */
export interface Moved {
  /** Id of the resource on the target (executable or VM id). */
  resourceId: string;
  /** Figures for the event's attributes (when the new copy started, when the old one was released). */
  attributes: Record<string, string>;
}

/**
 * A refusal that no other target would change (a VM without live migration, a cell): the drain
 * stops at once instead of trying the next bidder.
 */
export class CannotMove extends Error {}

/** Moves one kind of workload off a node. */
export interface Mover {
  /** Throws CannotMove when this workload cannot move off `from` at all (before any auction is held). */
  check(placement: WorkloadPlacement, from: Node): void;
  /**
   * Puts the workload on `to` and takes it off `from`, in that order. Throws when it could not: the
   * workload then still runs on `from` and nothing of it is left on `to`.
   */
  move(step: MoveStep): Promise<Moved>;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Executables: start the new copy, see it RUNNING, then release the old one. */
export class ExecutableMover implements Mover {
  constructor(private readonly ctx: Context) {}

  check(): void {}

  async move({ placement, spec, from, to, auctionId }: MoveStep): Promise<Moved> {
    let response;
    try {
      response = await this.ctx.clients
        .bid(to)
        .executeProvisioning({ auctionId, spec, requestId: placement.workloadId }, { timeoutMs: this.ctx.provisionTimeoutMs });
    } catch (err) {
      // Whatever the target may have started (a call that timed out can still have provisioned) goes.
      await this.releaseOn(to, placement).catch(() => undefined);
      throw err;
    }
    const startedMs = Date.now();
    const resourceId = resourceIdOf(response);
    const executable = response.resource.case === "executable" ? response.resource.value : undefined;
    if (executable && executable.state !== ExecutableState.RUNNING) {
      await this.releaseOn(to, placement).catch(() => undefined);
      throw new Error(
        `its new copy on ${to.id} is ${ExecutableState[executable.state] ?? executable.state}, not RUNNING${executable.stateReason ? ` (${executable.stateReason.replace(/\.$/, "")})` : ""}, so the old one was kept`,
      );
    }
    // The new copy runs: now the old one may stop. Twice, before giving up and keeping the old one.
    const releaseStartMs = Date.now();
    let lastError: unknown;
    for (let attempt = 1; attempt <= 2; attempt++) {
      try {
        await this.releaseOn(from, placement);
        return {
          resourceId,
          attributes: {
            new_started_at: iso(startedMs),
            old_release_started_at: iso(releaseStartMs),
            old_released_at: iso(Date.now()),
          },
        };
      } catch (err) {
        lastError = err;
      }
    }
    await this.releaseOn(to, placement).catch((err: unknown) =>
      this.ctx.log.warn({ node: to.id, workload: placement.workloadId, err: describeError(err) }, "could not release the new copy again"),
    );
    throw new Error(
      `its old copy on ${from.id} could not be released (${describeError(lastError).replace(/\.$/, "")}), so the new copy on ${to.id} was released again`,
    );
  }

  private async releaseOn(node: Node, placement: WorkloadPlacement): Promise<void> {
    await this.ctx.clients
      .bid(node)
      .releaseWorkload(
        { workloadId: placement.workloadId, tenant: placement.tenant, gracePeriod: duration(DEFAULT_GRACE_MS) },
        { timeoutMs: DEFAULT_GRACE_MS + 15_000 },
      );
  }
}

/**
 * The hook for VM live migration: moves a running VM from `step.from` to `step.to`, resolving once
 * the guest runs on the target and nothing of it is left on the source; throws when it did not
 * move (the guest still runs on the source). liveMigration() below is the real one.
 */
export type VmLiveMigration = (step: MoveStep) => Promise<Moved>;

/** The request_id of a move's migration: its auction and its target (at most 128 characters, no '/'). */
export const migrationRequestId = (auctionId: string, targetNode: string) => `${auctionId}:${targetNode}`.slice(0, 128);

/** How long a live migration may run before the drain gives up on it (its own timeout is the source's). */
const MIGRATION_WATCH_MS = 30 * 60_000;

/**
 * Live-migrates a VM with VmService.MigrateVm on the source node and follows it with WatchMigration
 * until it ends; resolves with how it ended (the source aetherd guarantees one running copy).
 */
export async function migrateVm(ctx: Context, placement: WorkloadPlacement, from: Node, to: Node, requestId: string): Promise<Migration> {
  const vms = ctx.clients.vm(from);
  const started = await vms.migrateVm(
    { vm: placement.resourceId || placement.name, tenant: placement.tenant, target: to.address, requestId },
    { timeoutMs: 60_000 },
  );
  let last = started.migration;
  if (!last) throw new Error(`node ${from.id} answered MigrateVm without a migration`);
  if (last.state === MigrationState.RUNNING) {
    for await (const r of vms.watchMigration({ migration: last.id, tenant: placement.tenant }, { timeoutMs: MIGRATION_WATCH_MS })) {
      if (r.migration) last = r.migration;
      if (last.state !== MigrationState.RUNNING) break;
    }
  }
  return last;
}

const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);

/** VMs move by live migration through the source node's VmService.MigrateVm. */
export function liveMigration(ctx: Context): VmLiveMigration {
  return async ({ placement, from, to, auctionId }) => {
    const t0 = performance.now();
    const migration = await migrateVm(ctx, placement, from, to, migrationRequestId(auctionId, to.id));
    const observedMs = performance.now() - t0;
    if (migration.state !== MigrationState.SUCCEEDED) {
      throw new Error(
        `the live migration to ${to.id} ${migration.state === MigrationState.FAILED ? "failed" : "did not end"}${migration.stateReason ? ` (${migration.stateReason.replace(/\.$/, "")})` : ""}; the VM keeps running on ${from.id}`,
      );
    }
    return {
      resourceId: migration.vmId,
      attributes: {
        how: "live_migration",
        migration: migration.id,
        downtime_ms: ms(migration.downtime).toFixed(1),
        migration_ms: ms(migration.totalTime).toFixed(1),
        // From the MigrateVm call to the report of its end, as the aggregator saw it.
        migration_observed_ms: observedMs.toFixed(1),
      },
    };
  };
}

/** The sentence for a VM whose source node cannot live-migrate it (no MigrateVm, or UNIMPLEMENTED). */
export function vmCannotMigrate(placement: WorkloadPlacement, from: Node, why: string): string {
  return `VM ${placement.name} (tenant ${placement.tenant}) cannot be live-migrated off node ${from.id} (${from.name}): ${why}; it stays running there. Stop or release it (aether cluster release ${placement.name}), then drain again`;
}

/** VMs: live migration through the hook (liveMigration, unless a test gives another). */
export class VmMover implements Mover {
  constructor(private readonly migrate: VmLiveMigration | undefined) {}

  check(placement: WorkloadPlacement, from: Node): void {
    if (this.migrate === undefined)
      throw new CannotMove(vmCannotMigrate(placement, from, "this aether-aggregator has no way to live-migrate VMs"));
  }

  async move(step: MoveStep): Promise<Moved> {
    this.check(step.placement, step.from);
    try {
      return await (this.migrate as VmLiveMigration)(step);
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented)
        throw new CannotMove(
          vmCannotMigrate(step.placement, step.from, `its aetherd answers MigrateVm with UNIMPLEMENTED (${err.rawMessage})`),
        );
      throw err;
    }
  }
}

/** Cells cannot be moved by the aggregator. */
export class CellMover implements Mover {
  check(placement: WorkloadPlacement, from: Node): void {
    throw new CannotMove(
      `cell ${placement.name} (tenant ${placement.tenant}) cannot be moved off node ${from.id} (${from.name}): what runs in a cell is started by its owner, not by the aggregator; it stays there. Release it (aether cluster release ${placement.name}) once its owner has moved its work, then drain again`,
    );
  }

  async move(step: MoveStep): Promise<Moved> {
    this.check(step.placement, step.from);
    throw new Error("unreachable");
  }
}

/** The mover for each kind of workload. */
export function moversFor(ctx: Context): Record<"executable" | "vm" | "cell", Mover> {
  return { executable: new ExecutableMover(ctx), vm: new VmMover(liveMigration(ctx)), cell: new CellMover() };
}
