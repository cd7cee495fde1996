// How each kind of workload leaves a node being drained: a Mover per kind. The drain (drain.ts)
// picks the target by auction among the other ON_DUTY nodes and records the move (move.ts); the
// mover does the work on the nodes and must leave exactly one running copy, whatever happens:
//
// - an executable: its new copy is started on the target first (ExecuteProvisioning, the workload
//   id as request_id) and must be RUNNING; only then is the old one released on the source. If the
//   old copy cannot be released, the new one is released again and the workload stays on the source.
// - a VM: live migration, VmService.MigrateVm on the source node. That RPC is being built (issue 14,
//   items 1 to 4); until it is wired in here (VM_LIVE_MIGRATION below) a VM cannot move and the
//   drain stops with a sentence saying so, the VM running where it was.
// - a cell: its contents are started by its owner, so the aggregator cannot move it; the drain stops.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Node, WorkloadPlacement, WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
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
    const response = await this.ctx.clients
      .bid(to)
      .executeProvisioning({ auctionId, spec, requestId: placement.workloadId }, { timeoutMs: this.ctx.provisionTimeoutMs });
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
 * THE HOOK for VM live migration: moves a running VM from `step.from` to `step.to` with
 * VmService.MigrateVm on the source node (and WatchMigration until SUCCEEDED or FAILED), resolving
 * once the guest runs on the target and nothing of it is left on the source. Undefined while the
 * aggregator has no way to call it (MigrateVm is not in aether.vm.v1 yet): VMs then cannot move.
 */
export type VmLiveMigration = (step: MoveStep) => Promise<Moved>;

/** Set this when VmService.MigrateVm can be called from the aggregator; see VmLiveMigration. */
export const VM_LIVE_MIGRATION: VmLiveMigration | undefined = undefined;

/** The sentence for a VM whose source node cannot live-migrate it (no MigrateVm, or UNIMPLEMENTED). */
export function vmCannotMigrate(placement: WorkloadPlacement, from: Node, why: string): string {
  return `VM ${placement.name} (tenant ${placement.tenant}) cannot be live-migrated off node ${from.id} (${from.name}): ${why}; it stays running there. Stop or release it (aether cluster release ${placement.name}), then drain again`;
}

/** VMs: live migration through the hook above. */
export class VmMover implements Mover {
  constructor(private readonly migrate: VmLiveMigration | undefined = VM_LIVE_MIGRATION) {}

  check(placement: WorkloadPlacement, from: Node): void {
    if (this.migrate === undefined)
      throw new CannotMove(vmCannotMigrate(placement, from, "this aether-aggregator has no VmService.MigrateVm to call yet"));
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
  return { executable: new ExecutableMover(ctx), vm: new VmMover(), cell: new CellMover() };
}
