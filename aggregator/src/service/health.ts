// The cluster's health as NodeService.CheckHealth answers it on aether-aggregator: its own checks
// (does this replica lead; does the store answer) decide its status, and beside them each
// registered node's: its lease state, its own CheckHealth (asked in parallel, 5 s each), and whether
// it can be fenced (a node without a BMC is a warning: a silent one would stay SUSPECT, its
// workloads where they are).
import { HealthStatus, type HealthCheck } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { create } from "@bufbuild/protobuf";
import { HealthCheckSchema } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { NodeState, type Node } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError } from "@aether/server";
import type { ClusterStore } from "../store/store.js";
import { fenceTargetOf, type Fencer } from "../fencing/fencing.js";

export interface ClusterHealthDeps {
  leading: boolean;
  /** The standby's sentence naming the leader, when not leading. */
  standby: string;
  store: ClusterStore;
  nodes: Node[];
  nodeHealth(node: Node, timeoutMs: number): Promise<{ status: HealthStatus; reasons: string[] }>;
  /** Undefined: no BMC is configured at all. */
  fencer: Fencer | undefined;
}

// Longer than a node takes to find a hung QEMU (2 s), so the node names it rather than time out.
const NODE_TIMEOUT_MS = 5_000;
const STORE_TIMEOUT_MS = 2_000;

const check = (name: string, status: HealthStatus, message: string): HealthCheck => create(HealthCheckSchema, { name, status, message });

function within<T>(ms: number, work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Every check; the aggregator's status is DEGRADED when "leader" or "store" is. */
export async function clusterHealth(deps: ClusterHealthDeps): Promise<HealthCheck[]> {
  const checks: HealthCheck[] = [];
  checks.push(
    deps.leading
      ? check("leader", HealthStatus.SERVING, "this replica leads the cluster.")
      : check("leader", HealthStatus.DEGRADED, deps.standby),
  );
  checks.push(
    await within(STORE_TIMEOUT_MS, deps.store.get("health"), `the store (${deps.store.description})`).then(
      () => check("store", HealthStatus.SERVING, `the store answers (${deps.store.description}).`),
      (err: unknown) =>
        check(
          "store",
          HealthStatus.DEGRADED,
          `the store does not answer (${deps.store.description}): ${describeError(err)}; nothing can be recorded.`,
        ),
    ),
  );
  if (!deps.leading) return checks;

  const perNode = await Promise.all(
    deps.nodes.map(async (node): Promise<HealthCheck[]> => {
      const who = node.name || node.id;
      const out: HealthCheck[] = [];
      if (node.state !== NodeState.READY) {
        out.push(
          check(
            `node/${who}`,
            HealthStatus.DEGRADED,
            `node ${who} is ${NodeState[node.state]?.toLowerCase() ?? node.state}: ${node.stateReason || "its lease ran out"}`,
          ),
        );
      } else {
        try {
          const h = await deps.nodeHealth(node, NODE_TIMEOUT_MS);
          out.push(
            h.status === HealthStatus.SERVING
              ? check(`node/${who}`, HealthStatus.SERVING, `node ${who} is ready and healthy.`)
              : check(`node/${who}`, HealthStatus.DEGRADED, `node ${who} is degraded: ${h.reasons.join(" ")}`),
          );
        } catch (err) {
          out.push(
            check(
              `node/${who}`,
              HealthStatus.DEGRADED,
              `node ${who} holds its lease but its health could not be read: ${describeError(err)}`,
            ),
          );
        }
      }
      const location = deps.fencer?.locate(fenceTargetOf(node));
      if (location === undefined)
        out.push(
          check(
            `fencing/${who}`,
            HealthStatus.WARNING,
            `node ${who} has no BMC (none is configured: [[bmcs]] / --bmcs): if it goes silent it stays SUSPECT and its workloads stay where they are.`,
          ),
        );
      else if ("none" in location)
        out.push(
          check(
            `fencing/${who}`,
            HealthStatus.WARNING,
            `node ${who} cannot be fenced: ${location.none}; if it goes silent it stays SUSPECT and its workloads stay where they are.`,
          ),
        );
      else out.push(check(`fencing/${who}`, HealthStatus.SERVING, `node ${who} can be fenced through ${location.found.description}.`));
      return out;
    }),
  );
  return [...checks, ...perNode.flat()];
}
