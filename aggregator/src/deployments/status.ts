// A deployment as callers see it: its record plus what its placements say now (how many instances
// run, how many are being placed, the state and a sentence), and its instances. Computed on every
// read from the placement book, never stored, so it cannot drift from the placements.
import { clone, create } from "@bufbuild/protobuf";
import {
  DeploymentInstanceSchema,
  DeploymentSchema,
  DeploymentState,
  PlacementState,
  type Deployment,
  type DeploymentInstance,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { msOf } from "@aether/server";
import { LIVE_PLACEMENT, newestFirst, type PlacementBook } from "../placements/book.js";

/** How many ended instances GetDeployment lists after the live ones. */
export const ENDED_SHOWN = 10;
const RUNNING = new Set([PlacementState.PLACED, PlacementState.MOVING]);

/** Whether a placement is an instance of this deployment (not of an older one of the same name). */
export function isInstanceOf(p: WorkloadPlacement, d: Deployment): boolean {
  return p.deployment === d.name && p.tenant === d.tenant && msOf(p.createTime) >= msOf(d.createTime);
}

/** The deployment's live instances (being placed, placed, moving), newest first. */
export function liveInstances(book: PlacementBook, d: Deployment): WorkloadPlacement[] {
  return [...book.placements.values()]
    .filter((p) => isInstanceOf(p, d) && LIVE_PLACEMENT.has(p.state))
    .sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
}

/** How many instances should be live: the wanted number less those that finished and are not replaced. */
export function wanted(d: Deployment): number {
  return Math.max(0, d.instances - d.finishedInstances);
}

/** The deployment with its computed fields; `failure` is why the last placement failed, if it did. */
export function withStatus(book: PlacementBook, d: Deployment, failure: string | undefined): Deployment {
  const out = clone(DeploymentSchema, d);
  const live = liveInstances(book, d);
  const running = live.filter((p) => RUNNING.has(p.state));
  out.runningInstances = running.length;
  out.pendingInstances = live.length - running.length;
  const want = wanted(d);
  const current = running.filter((p) => p.deploymentRevision === d.revision).length;
  const finished = d.finishedInstances > 0 ? `; ${d.finishedInstances} finished and not replaced (restart policy)` : "";
  if (d.state === DeploymentState.DELETING) {
    out.state = DeploymentState.DELETING;
    out.stateReason = `being deleted: ${live.length} instance(s) left to release.`;
  } else if (current === want && live.length === want) {
    out.state = DeploymentState.AVAILABLE;
    out.stateReason = `${running.length} of ${want} instance(s) run, all of revision ${d.revision}${finished}.`;
  } else if (failure !== undefined && running.length < want) {
    out.state = DeploymentState.DEGRADED;
    out.stateReason = `${running.length} of ${want} instance(s) run; ${want - running.length} could not be placed: ${failure}`;
  } else {
    out.state = DeploymentState.PROGRESSING;
    const old = live.length - live.filter((p) => p.deploymentRevision === d.revision).length;
    out.stateReason = `${running.length} of ${want} instance(s) run, ${out.pendingInstances} being placed${old > 0 ? `, ${old} of an older revision to replace` : ""}${finished}.`;
  }
  return out;
}

/** The deployment's instances: the live ones, then up to ENDED_SHOWN that ended most recently (newest first). */
export function instancesOf(book: PlacementBook, d: Deployment): DeploymentInstance[] {
  const all = [...book.placements.values()].filter((p) => isInstanceOf(p, d)).sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
  const live = all.filter((p) => LIVE_PLACEMENT.has(p.state));
  const ended = all.filter((p) => !LIVE_PLACEMENT.has(p.state)).slice(0, ENDED_SHOWN);
  return [...live, ...ended].map((p) =>
    create(DeploymentInstanceSchema, {
      workloadId: p.workloadId,
      name: p.name,
      state: p.state,
      stateReason: p.stateReason,
      node: p.node,
      resourceId: p.resourceId,
      revision: p.deploymentRevision,
      createTime: p.createTime,
      placeTime: p.placeTime,
      auctionId: p.auctionId,
    }),
  );
}
