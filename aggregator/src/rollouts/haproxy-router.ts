// The traffic router over aetherd's TrafficService (HAProxy run by aetherd on the endpoint's node):
// the endpoint put whole (idempotent; aetherd applies backend and weight changes at runtime, without
// a reload), weights through SetWeights, a drain through SetBackendState, figures from GetEndpoint.
import { Code, ConnectError } from "@connectrpc/connect";
import { BackendState, type Endpoint } from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import { failedPrecondition } from "@aether/server";
import type { NodeClients, NodeTarget } from "../nodes/node-clients.js";
import type { BackendFigures, RouterEndpoint, TrafficRouter } from "./router.js";

const CALL_TIMEOUT_MS = 10_000;
/** Check results that mean a check passed (layer 4, 6 or 7). */
const PASSED = /^L[467]OK/;

export class HaproxyRouter implements TrafficRouter {
  constructor(
    private readonly clients: NodeClients,
    private readonly findNode: (ref: string) => NodeTarget | undefined,
  ) {}

  async ensureEndpoint(e: RouterEndpoint): Promise<void> {
    const split = e.split;
    await this.client(e.node).putEndpoint(
      {
        spec: {
          name: e.name,
          listen: e.listen,
          backends: e.backends.map((b) => ({
            id: b.id,
            address: b.address,
            weight: b.weight,
            state: b.maint ? BackendState.MAINT : b.drain ? BackendState.DRAIN : BackendState.READY,
          })),
          healthCheck: {
            kind: e.healthPath === "" ? { case: "tcp", value: {} } : { case: "http", value: { path: e.healthPath, expectedStatus: 200 } },
            intervalMs: e.healthIntervalMs,
            timeoutMs: Math.min(e.healthIntervalMs, 1_000),
            rise: 1,
            fall: 2,
          },
          ...(split && {
            abSplit: {
              key: split.header !== undefined ? { case: "header", value: split.header } : { case: "cookie", value: split.cookie ?? "" },
              sideA: split.sideA,
              sideB: split.sideB,
              percentA: 100 - split.percentB,
            },
          }),
        },
      },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
  }

  async setWeights(node: string, name: string, weights: Record<string, number>): Promise<void> {
    await this.client(node).setWeights({ name, weights }, { timeoutMs: CALL_TIMEOUT_MS });
  }

  async drain(node: string, name: string, backend: string): Promise<void> {
    try {
      await this.client(node).setBackendState({ name, backend, state: BackendState.DRAIN }, { timeoutMs: CALL_TIMEOUT_MS });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return;
      throw err;
    }
  }

  async stats(node: string, name: string): Promise<Map<string, BackendFigures> | undefined> {
    let endpoint: Endpoint | undefined;
    try {
      endpoint = (await this.client(node).getEndpoint({ name }, { timeoutMs: CALL_TIMEOUT_MS })).endpoint;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
      throw err;
    }
    const out = new Map<string, BackendFigures>();
    for (const b of endpoint?.backends ?? [])
      out.set(b.id, {
        id: b.id,
        healthy: b.healthy,
        checked: PASSED.test(b.lastCheck),
        requests: Number(b.totalRequests),
        errors5xx: Number(b.responses5xx),
        p95Ms: b.responseTimeP95Ms,
        currentSessions: Number(b.currentSessions),
      });
    return out;
  }

  async remove(node: string, name: string): Promise<void> {
    try {
      await this.client(node).deleteEndpoint({ name }, { timeoutMs: CALL_TIMEOUT_MS });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return;
      throw err;
    }
  }

  private client(ref: string) {
    const node = this.findNode(ref);
    if (!node)
      throw failedPrecondition(
        `node ${ref}, which should run the deployment's endpoint, is not registered: set traffic.node to a node aether node list shows.`,
      );
    return this.clients.traffic(node);
  }
}
