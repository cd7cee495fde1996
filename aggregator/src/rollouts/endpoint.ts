// A deployment's endpoint as the router is asked for it: its name, its node, the instances as
// backends (each at its node's host and the port it was given, PORT in its environment), and the
// weights that send the rollout's share of requests to the new revision.
import type { Deployment, Rollout, WorkloadPlacement } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { RolloutPhase } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { msOf } from "@aether/server";
import type { RouterBackend, RouterEndpoint } from "./router.js";
import { splitWeights } from "./router.js";

export const DEFAULT_HEALTH_INTERVAL_MS = 1_000;
/** Environment variable that tells an instance the port it serves on. */
export const PORT_ENV = "PORT";

/** The endpoint's name on its node: the deployment's, prefixed by its tenant unless default. */
export function endpointName(d: Deployment): string {
  return (d.tenant === "default" ? d.name : `${d.tenant}-${d.name}`).slice(0, 63).replace(/-+$/, "");
}

/** The port an instance was given, or undefined. */
export function portOf(p: WorkloadPlacement): number | undefined {
  const env = p.spec?.kind.case === "executable" ? p.spec.kind.value.env : undefined;
  const port = Number(env?.[PORT_ENV]);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}

/** Host part of a node's registered address (http(s)://host:port; a unix socket is this machine). */
export function hostOf(address: string): string {
  try {
    const url = new URL(address);
    if (url.protocol === "http:" || url.protocol === "https:") return url.hostname.replace(/^\[|\]$/g, "");
  } catch {
    // not a URL: a unix socket path
  }
  return "127.0.0.1";
}

export interface Grouped {
  stable: string[];
  fresh: string[];
}

/**
 * The endpoint for these backends: ready ones weighted by the rollout (all the traffic to the
 * current revision without one), the others at weight 0, those being removed drained.
 */
export function endpointFor(
  d: Deployment,
  backends: Array<{ id: string; address: string; revision: bigint; ready: boolean; removing: boolean; maint?: boolean }>,
  r: Rollout | undefined,
): RouterEndpoint {
  const traffic = d.traffic;
  const fromRev = r?.fromRevision ?? d.revision;
  const toRev = r?.toRevision ?? d.revision;
  const usable = backends.filter((b) => b.ready && !b.removing);
  const stable = usable.filter((b) => b.revision === fromRev && fromRev !== toRev).map((b) => b.id);
  // Without a rollout every ready instance serves alike, whatever its revision.
  const fresh = usable.filter((b) => !r || b.revision === toRev).map((b) => b.id);
  let percentNew = 100;
  if (r && fromRev !== toRev)
    percentNew =
      r.phase === RolloutPhase.SUCCEEDED
        ? 100
        : r.phase === RolloutPhase.ROLLED_BACK || r.phase === RolloutPhase.ROLLING_BACK
          ? 0
          : r.weight;
  const ab =
    r?.strategy?.kind.case === "ab" && r.phase !== RolloutPhase.SUCCEEDED && r.phase !== RolloutPhase.ROLLED_BACK
      ? r.strategy.kind.value
      : undefined;
  // A/B: the proxy's hash picks the side; within a side every ready backend weighs the same.
  const weights = ab ? splitWeights([...stable, ...fresh], [], 0) : splitWeights(stable, fresh, percentNew);
  const list: RouterBackend[] = backends.map((b) => ({
    id: b.id,
    address: b.address,
    weight: weights.get(b.id) ?? 0,
    drain: b.removing,
    ...(b.maint && { maint: true }),
  }));
  const sideA = backends.filter((b) => b.revision !== toRev).map((b) => b.id);
  const sideB = backends.filter((b) => b.revision === toRev).map((b) => b.id);
  return {
    name: endpointName(d),
    node: traffic?.node ?? "",
    listen: traffic?.listen ?? "",
    backends: list,
    healthPath: traffic?.healthPath ?? "",
    healthIntervalMs: traffic?.healthInterval ? msOf(traffic.healthInterval) : DEFAULT_HEALTH_INTERVAL_MS,
    ...(ab &&
      sideA.length > 0 &&
      sideB.length > 0 && {
        split: { ...(ab.header !== "" ? { header: ab.header } : { cookie: ab.cookie }), sideA, sideB, percentB: ab.percent },
      }),
  };
}
