// A VM's placement follows a live migration its new node reports (ReportMigration): whoever started
// the migration (a drain, or `aether vm migrate` on the source aetherd), the node the guest runs on
// now tells the aggregator once it committed to it, and again until it is answered (aetherd keeps
// the report through restarts: daemon/src/migration/reports.ts). The placement then names that node
// and a WORKLOAD_MOVED event records the move with its duration and the guest's downtime. A report
// known already changes nothing: the placement names the node (a retry, or a drain that finished
// it), a drain is moving the VM (the drain records the move), or the placement is newer than the
// migration (an older report arriving late). A VM no placement is (created on its node directly) is
// recorded as an event only.
import { clone } from "@bufbuild/protobuf";
import {
  ClusterEventKind,
  PlacementState,
  WorkloadPlacementSchema,
  type Node,
  type ReportMigrationRequest,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { clip, durationMs, failedPrecondition, invalidArgument, msOf, tenant as parseTenant, timestamp } from "@aether/server";
import type { Context } from "../context.js";
import { nodeId } from "../validate.js";
import { LIVE_PLACEMENT } from "./book.js";

/** Migrations reported lately, so a retried report of an unplaced VM is one event (this replica's memory only). */
const RECENT_LIMIT = 1000;

export class MigrationReports {
  private readonly recent = new Set<string>();

  constructor(private readonly ctx: Context) {}

  /** Applies a report from node `to` (its caller checked by the membership room). */
  async report(req: ReportMigrationRequest): Promise<{ placementMoved: boolean }> {
    const r = checked(req);
    const to = this.ctx.registry.get(r.nodeId);
    if (!to)
      throw failedPrecondition(
        `node ${r.nodeId} is not registered: a node reports the migrations it received once it is registered (aetherd keeps the report and sends it again).`,
      );
    const placement = this.placementOf(r);
    if (!placement) {
      if (this.seen(r.migrationId)) return { placementMoved: false };
      await this.emit(r, to, undefined);
      return { placementMoved: false };
    }
    return this.ctx.book.track(placement.workloadId, async () => {
      const latest = this.ctx.book.placements.get(placement.workloadId);
      if (!latest || !LIVE_PLACEMENT.has(latest.state) || latest.node === to.id) return { placementMoved: false };
      // A drain moving it records the move itself (and may be moving it there right now).
      if (latest.state !== PlacementState.PLACED) return { placementMoved: false };
      if (r.finishMs > 0 && msOf(latest.placeTime) > r.finishMs) {
        this.ctx.log.info(
          { workload: latest.workloadId, migration: r.migrationId, node: to.id },
          "ignoring the report of a migration older than the placement",
        );
        return { placementMoved: false };
      }
      const from = latest.node;
      const moved = clone(WorkloadPlacementSchema, latest);
      moved.node = to.id;
      moved.targetNode = "";
      moved.placeTime = timestamp(r.finishMs > 0 ? r.finishMs : Date.now());
      moved.stateReason = `live-migrated from node ${from} to ${to.id} (migration ${r.migrationId}).`;
      await this.ctx.book.save(undefined, moved);
      this.seen(r.migrationId);
      await this.emit(r, to, moved, from);
      return { placementMoved: true };
    });
  }

  /** The VM's live placement: by its workload label, else by its id as the resource of a VM placement. */
  private placementOf(r: Checked): WorkloadPlacement | undefined {
    const isThisVm = (p: WorkloadPlacement | undefined) =>
      p !== undefined && p.tenant === r.tenant && p.resourceId === r.vmId && p.spec?.kind.case === "vm" && LIVE_PLACEMENT.has(p.state);
    const labelled = r.workloadId === "" ? undefined : this.ctx.book.placements.get(r.workloadId);
    if (isThisVm(labelled)) return labelled;
    for (const p of this.ctx.book.placements.values()) if (isThisVm(p)) return p;
    return undefined;
  }

  /** Whether the migration was reported lately (and remembers it). */
  private seen(migrationId: string): boolean {
    if (this.recent.has(migrationId)) return true;
    this.recent.add(migrationId);
    if (this.recent.size > RECENT_LIMIT) this.recent.delete(this.recent.values().next().value as string);
    return false;
  }

  private async emit(r: Checked, to: Node, placement: WorkloadPlacement | undefined, placedOn?: string): Promise<void> {
    const fromId = r.sourceNodeId || placedOn || "";
    const fromNode = fromId === "" ? undefined : this.ctx.registry.get(fromId);
    const from = fromNode ? `${fromNode.id} (${fromNode.name})` : fromId || r.sourceNode || "another node";
    const figures = [
      r.totalMs > 0 ? `in ${r.totalMs} ms` : "",
      r.downtimeMs > 0 || r.totalMs > 0 ? `(live migration, ${r.downtimeMs} ms downtime)` : "(live migration)",
    ].filter((s) => s !== "");
    const what = placement ? `workload ${placement.name}` : `VM ${r.vmName} (tenant ${r.tenant}; no placement of the aggregator)`;
    await this.ctx.emit({
      kind: ClusterEventKind.WORKLOAD_MOVED,
      node: to.id,
      workloadId: placement?.workloadId ?? "",
      tenant: r.tenant,
      message: `${what} was live-migrated from ${from} to ${to.id} (${to.name}) ${figures.join(" ")}.`,
      attributes: {
        how: "live_migration",
        migration: r.migrationId,
        vm: r.vmId,
        from_node: fromId,
        to_node: to.id,
        ...(r.totalMs > 0 && { migration_ms: String(r.totalMs) }),
        ...((r.downtimeMs > 0 || r.totalMs > 0) && { downtime_ms: String(r.downtimeMs) }),
      },
    });
  }
}

interface Checked {
  nodeId: string;
  migrationId: string;
  vmId: string;
  vmName: string;
  tenant: string;
  workloadId: string;
  sourceNodeId: string;
  sourceNode: string;
  totalMs: number;
  downtimeMs: number;
  finishMs: number;
}

function checked(req: ReportMigrationRequest): Checked {
  if (!/^[0-9a-f-]{36}$/.test(req.migrationId))
    throw invalidArgument(`migration_id ${JSON.stringify(clip(req.migrationId))} is not a migration id (a UUID).`);
  if (!/^[0-9a-f-]{36}$/.test(req.vmId)) throw invalidArgument(`vm_id ${JSON.stringify(clip(req.vmId))} is not a VM id (a UUID).`);
  if (req.workloadId !== "" && !/^[0-9a-f-]{36}$/.test(req.workloadId))
    throw invalidArgument(`workload_id ${JSON.stringify(clip(req.workloadId))} is not a workload id (a UUID, or empty).`);
  if (req.vmName.length > 253 || req.sourceNode.length > 512) throw invalidArgument("vm_name or source_node is too long.");
  const figure = (field: string, d: ReportMigrationRequest["totalTime"]) => {
    const ms = durationMs(field, d, 0);
    if (ms < 0 || ms > 7 * 24 * 3600_000) throw invalidArgument(`${field} is out of range (0 .. 7 days).`);
    return Math.round(ms);
  };
  return {
    nodeId: nodeId("node_id", req.nodeId),
    migrationId: req.migrationId,
    vmId: req.vmId,
    vmName: req.vmName,
    tenant: parseTenant(req.tenant),
    workloadId: req.workloadId,
    sourceNodeId: req.sourceNodeId === "" ? "" : nodeId("source_node_id", req.sourceNodeId),
    sourceNode: req.sourceNode,
    totalMs: figure("total_time", req.totalTime),
    downtimeMs: figure("downtime", req.downtime),
    finishMs: msOf(req.finishTime),
  };
}
