// Where the replicas of each VM's volumes are: every heartbeat carries the replicas the node holds
// (aether.storage.v1 ReplicationService on aetherd), and the index keeps the last list of each
// node, in memory (a leader that takes over has it again within a heartbeat interval, well before
// a lease runs out and a node is fenced). When a node is fenced, a VM with replicas is placed again
// only on a live node that holds them, and starts there from their last consistent point.
import { invalidArgument, msOf } from "@aether/server";
import type { HeldReplica } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

const MAX_HELD = 10_000;

/** What a node holds of one workload's VM: when its last point was taken, and where the VM ran. */
interface Held {
  pointMs: number;
  sourceNode: string;
}

/** The nodes a workload's VM can start on from replicas, and the point each has. */
export interface ReplicaHolders {
  /** Node id to the time of its last consistent point (ms). */
  points: Map<string, number>;
}

export class ReplicaIndex {
  private readonly byNode = new Map<string, Map<string, Held>>();

  /** A heartbeat's list, checked at the edge (before the lease is renewed): workload id to point time. */
  static check(held: HeldReplica[]): Map<string, Held> {
    if (held.length > MAX_HELD) throw invalidArgument(`replicas lists ${held.length} VMs; at most ${MAX_HELD} are taken.`);
    const points = new Map<string, Held>();
    for (const [i, r] of held.entries()) {
      if (r.workloadId === "" || r.workloadId.length > 128) throw invalidArgument(`replicas[${i}].workload_id must be 1..128 characters.`);
      const ms = msOf(r.lastPointTime);
      if (!Number.isFinite(ms) || ms <= 0) throw invalidArgument(`replicas[${i}].last_point_time is missing.`);
      points.set(r.workloadId, { pointMs: ms, sourceNode: r.sourceNode });
    }
    return points;
  }

  /** What a node holds now (a checked list): replaces what it said before. */
  set(nodeId: string, points: Map<string, Held>): void {
    if (points.size === 0) this.byNode.delete(nodeId);
    else this.byNode.set(nodeId, points);
  }

  /**
   * The nodes (but the fenced one) holding replicas of a workload's VM sent by the fenced node
   * itself (by its name): a replica sent from where the VM ran before (it moved since) is older
   * than what the fenced node had, and does not count. Undefined when none does.
   */
  holders(workloadId: string, fenced: { id: string; name: string }): ReplicaHolders | undefined {
    const points = new Map<string, number>();
    for (const [node, held] of this.byNode) {
      const h = held.get(workloadId);
      if (node !== fenced.id && h !== undefined && h.sourceNode === fenced.name) points.set(node, h.pointMs);
    }
    return points.size === 0 ? undefined : { points };
  }
}
