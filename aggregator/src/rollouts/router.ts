// The traffic layer as rollouts see it: a deployment's endpoint (a proxy on one node, the instances
// its backends), its weights changed at runtime, a backend drained before its instance is stopped,
// and per-backend statistics. The implementation (haproxy-router.ts) calls aetherd's TrafficService
// on the node that hosts the endpoint.

export interface RouterBackend {
  /** The instance's name. */
  id: string;
  /** host:port of the instance. */
  address: string;
  /** 0..256. */
  weight: number;
  drain: boolean;
  /** Failing its command health check: takes nothing (HAProxy's MAINT). */
  maint?: boolean;
}

export interface RouterEndpoint {
  /** Endpoint name on its node (a DNS label). */
  name: string;
  /** Id or name of the node that runs it. */
  node: string;
  listen: string;
  backends: RouterBackend[];
  /** HTTP path checked on each backend; empty: TCP connect. */
  healthPath: string;
  healthIntervalMs: number;
  /** A/B: the header or cookie hashed, the backends of side B (the new revision) and its percent. */
  split?: { header?: string; cookie?: string; sideA: string[]; sideB: string[]; percentB: number };
}

export interface BackendFigures {
  id: string;
  /** UP in the proxy's own checks and not drained. */
  healthy: boolean;
  /** Health checks passed at least once (a fresh backend is not trusted before). */
  checked: boolean;
  requests: number;
  errors5xx: number;
  p95Ms: number | undefined;
  currentSessions: number;
}

export interface TrafficRouter {
  /** Creates or replaces the endpoint as a whole (idempotent; weights and backends applied at runtime). */
  ensureEndpoint(endpoint: RouterEndpoint): Promise<void>;
  /** Sets some backends' weights at once. */
  setWeights(node: string, name: string, weights: Record<string, number>): Promise<void>;
  /** Takes no new connection to the backend; the open ones finish. */
  drain(node: string, name: string, backend: string): Promise<void>;
  /** Per-backend figures of the endpoint, or undefined when it does not exist. */
  stats(node: string, name: string): Promise<Map<string, BackendFigures> | undefined>;
  /** Stops and removes the endpoint (nothing when it does not exist). */
  remove(node: string, name: string): Promise<void>;
}

/** HAProxy's largest server weight. */
export const MAX_WEIGHT = 256;

/**
 * Per-backend weights sending `percentNew` of the requests to the ready new backends and the rest to
 * the ready stable ones, evenly within each group; not-ready backends get 0. A group with no ready
 * backend gets nothing (its share goes to the other), so the endpoint never points at nobody.
 */
export function splitWeights(stableReady: string[], newReady: string[], percentNew: number): Map<string, number> {
  const weights = new Map<string, number>();
  let toNew = Math.max(0, Math.min(100, percentNew));
  if (newReady.length === 0) toNew = 0;
  if (stableReady.length === 0 && newReady.length > 0) toNew = 100;
  const perNew = newReady.length > 0 ? toNew / newReady.length : 0;
  const perStable = stableReady.length > 0 ? (100 - toNew) / stableReady.length : 0;
  const scale = MAX_WEIGHT / Math.max(perNew, perStable, 1e-9);
  for (const id of newReady) weights.set(id, Math.round(perNew * scale));
  for (const id of stableReady) weights.set(id, Math.round(perStable * scale));
  return weights;
}
