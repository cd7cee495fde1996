// A fenced node that registers again rejoins as a new member: first every workload it had when it
// was fenced is released on it (they run elsewhere now, or were given up), then it counts as
// incarnation n+1. Registration is refused (UNAVAILABLE) while a release fails; the node retries.
// A suspect or fence-failed node that registers again simply recovers: its episode ends.
import { NodeState, type Node, type RegisterNodeRequest } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, unavailable } from "@aether/server";
import type { Rejoin } from "../nodes/registry.js";
import type { DeadmanHost, FencingRecord } from "./deadman-model.js";

/** Grace period for stopping a stale workload on a node that rejoins. */
const STALE_GRACE_MS = 1000;
const STALE_CALL_TIMEOUT_MS = 4000;

/**
 * Before a node registers: a fenced node rejoins as a new member once every workload it had when
 * it was fenced is released on it (they run elsewhere now). Returns the rejoin, or undefined for
 * an ordinary registration; throws UNAVAILABLE when the release fails (the node retries).
 */
export async function rejoinOf(
  host: Pick<DeadmanHost, "registry" | "release">,
  record: FencingRecord | undefined,
  req: RegisterNodeRequest,
): Promise<Rejoin | undefined> {
  const node = host.registry.get(req.nodeId);
  if (node?.state === NodeState.FENCING) return undefined; // The registry refuses it with a sentence.
  if (node?.state !== NodeState.FENCED && record?.phase !== "fenced") return undefined;
  const stale = record?.stale ?? [];
  const results = await Promise.allSettled(
    stale.map((w) => host.release({ address: req.address, name: req.name }, w.workloadId, w.tenant, STALE_GRACE_MS, STALE_CALL_TIMEOUT_MS)),
  );
  const failures = results.flatMap((r, i) =>
    r.status === "rejected" ? [`${stale[i]?.name} (${stale[i]?.workloadId}): ${describeError(r.reason).replace(/\.$/, "")}`] : [],
  );
  if (failures.length > 0) {
    throw unavailable(
      `node ${req.nodeId} was fenced and rejoins only once the workloads it had then are released on it (they run elsewhere now); releasing ${failures.length} of ${stale.length} failed: ${failures.join("; ")}. It registers again by itself; nothing was changed.`,
    );
  }
  const had = results.filter((r) => r.status === "fulfilled" && r.value).length;
  const names = stale.map((w) => w.name).join(", ");
  return {
    incarnation: (record?.incarnation ?? 1) + 1,
    summary:
      stale.length === 0
        ? "it had no workloads when it was fenced; none is resumed there."
        : `its ${stale.length} workload(s) from before the fence (${names}) were released on it (${had} still known there) and are not resumed there: they run elsewhere or were given up.`,
    attributes: {
      stale_released: String(stale.length),
      stale_found: String(had),
      ...(stale.length > 0 && { stale_workloads: stale.map((w) => w.workloadId).join(",") }),
    },
  };
}

/** After a node registered: the record that makes a rejoin the new member or ends a recovered node's episode (none if there is nothing to record). */
export function memberRecord(node: Node, record: FencingRecord | undefined, rejoin: Rejoin | undefined): FencingRecord | undefined {
  if (!record && !rejoin) return undefined;
  return {
    node: node.id,
    incarnation: rejoin?.incarnation ?? record?.incarnation ?? 1,
    phase: "member",
    leaseId: node.lease?.id ?? "",
    attempts: 0,
    stale: rejoin ? [] : (record?.stale ?? []),
  };
}
