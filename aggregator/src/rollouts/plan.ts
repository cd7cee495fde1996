// What the reconcile loop keeps live while a rollout acts on a deployment: so many instances of the
// stable revision (with its template, kept in the rollout) and so many of the new one. A rollout that
// has just ended still says so until the losing revision's instances are gone, because those are
// drained at the proxy and stopped by the controller, never cut by the reconcile loop mid-request.
import {
  PlacementState,
  RolloutPhase,
  type Deployment,
  type DeploymentTemplate,
  type Rollout,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { PlacementBook } from "../placements/book.js";
import { liveInstances, wanted } from "../deployments/status.js";
import { isActive, type RolloutBook } from "./book.js";

export interface RevisionTarget {
  revision: bigint;
  /** Instances of the revision to keep live; the reconcile loop places missing ones, never removes surplus. */
  count: number;
  template: DeploymentTemplate | undefined;
}

/** The deployment's latest rollout, if any. */
export function latestRollout(rollouts: RolloutBook, d: Deployment): Rollout | undefined {
  return rollouts.of(d.id)[0];
}

/** The revision a rollout that ended left in place, and the one it removes. */
export function winnerAndLoser(r: Rollout): { winner: bigint; loser: bigint } | undefined {
  if (r.phase === RolloutPhase.SUCCEEDED) return { winner: r.toRevision, loser: r.fromRevision };
  if (r.phase === RolloutPhase.ROLLED_BACK) return { winner: r.fromRevision, loser: r.toRevision };
  return undefined;
}

/** The per-revision targets for the deployment now, or undefined when the reconcile loop is on its own. */
export function revisionTargets(rollouts: RolloutBook, book: PlacementBook, d: Deployment): RevisionTarget[] | undefined {
  const r = latestRollout(rollouts, d);
  if (!r) return undefined;
  if (isActive(r)) {
    // During a rollback the deployment already holds the stable template again.
    const toTemplate = d.revision === r.toRevision ? d.template : undefined;
    return [
      { revision: r.fromRevision, count: r.stableInstances, template: r.fromTemplate },
      { revision: r.toRevision, count: r.phase === RolloutPhase.ROLLING_BACK ? 0 : r.newInstances, template: toTemplate },
    ];
  }
  const ended = winnerAndLoser(r);
  if (!ended || d.revision !== ended.winner) return undefined;
  const losers = liveInstances(book, d).filter((p) => p.deploymentRevision === ended.loser);
  if (losers.length === 0) return undefined;
  return [
    { revision: ended.winner, count: wanted(d), template: d.template },
    { revision: ended.loser, count: 0, template: undefined },
  ];
}

/** Running on its node (its process or VM exists). */
export function isRunning(p: WorkloadPlacement): boolean {
  return p.state === PlacementState.PLACED && p.resourceId !== "";
}
