// A node's lifecycle beside its lease state: its name as people read it, the lifecycles in which the
// aggregator itself switches the node off, and where a registration leaves it (registry.ts).
import { msOf } from "@aether/server";
import { NodeLifecycle, type Node } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

const iso = (ms: number) => new Date(ms).toISOString();

/** The lifecycle's name as people read it: "ON_DUTY", "DRAINED". */
export const lifecycleName = (l: NodeLifecycle) => NodeLifecycle[l] ?? String(l);

/** Lifecycles in which the aggregator itself is switching the node off: its silence is expected. */
export const POWERING_OFF = new Set([NodeLifecycle.SHUTTING_DOWN, NodeLifecycle.DECOMMISSIONED]);

/** The lifecycle a registration leaves a node in (the record before it, and whether it rejoins after a fence). */
export function lifecycleOnRegister(
  existing: Node | undefined,
  rejoining: boolean,
): { lifecycle: NodeLifecycle; reason: string } | undefined {
  if (existing === undefined) return { lifecycle: NodeLifecycle.JOINING, reason: "registered; on duty once its registration is complete." };
  switch (existing.lifecycle) {
    case NodeLifecycle.DECOMMISSIONED:
      return {
        lifecycle: NodeLifecycle.DRAINED,
        reason: `registered again after it was shut down (${iso(msOf(existing.lifecycleTime))}); it takes no workloads until aether cluster uncordon ${existing.name}.`,
      };
    case NodeLifecycle.ON_DUTY:
    case NodeLifecycle.UNSPECIFIED:
      return rejoining
        ? { lifecycle: NodeLifecycle.JOINING, reason: "rejoining after a fence; on duty once its stale workloads are released." }
        : undefined;
    default:
      return undefined;
  }
}
