// aether.traffic.v1.TrafficService: validates requests (validate.ts), lets Endpoints and its proxy
// driver do the work, and turns endpoint views into the contract's messages. Domain errors become
// RPC codes in listen()'s interceptor (rpcError).
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { dnsLabel, invalidArgument, timestamp } from "@aether/server";
import {
  BackendState as BackendStateMsg,
  BackendStatsSchema,
  EndpointMode,
  EndpointSchema,
  EndpointSpecSchema,
  FrontendStatsSchema,
  ProxyState,
  ProxyStatusSchema,
  TrafficService,
  type Endpoint,
} from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import type { EndpointView, Endpoints } from "./endpoints.js";
import { backendState, endpointSpec, weight } from "./validate.js";
import { hostPort, type BackendState, type EndpointSpec } from "./types.js";

const STATE: Record<BackendState, BackendStateMsg> = {
  ready: BackendStateMsg.READY,
  drain: BackendStateMsg.DRAIN,
  maint: BackendStateMsg.MAINT,
};

function specMessage(spec: EndpointSpec) {
  const c = spec.healthCheck;
  return create(EndpointSpecSchema, {
    name: spec.name,
    listen: hostPort(spec.listenHost, spec.listenPort),
    mode: EndpointMode.HTTP,
    backends: spec.backends.map((b) => ({ id: b.id, address: hostPort(b.host, b.port), weight: b.weight, state: STATE[b.state] })),
    healthCheck: {
      kind:
        c.kind.type === "http"
          ? { case: "http", value: { path: c.kind.path, expectedStatus: c.kind.expectedStatus } }
          : { case: "tcp", value: {} },
      intervalMs: c.intervalMs,
      timeoutMs: c.timeoutMs,
      rise: c.rise,
      fall: c.fall,
    },
    ...(spec.abSplit && {
      abSplit: {
        key: { case: spec.abSplit.key.type, value: spec.abSplit.key.name },
        sideA: spec.abSplit.sideA,
        sideB: spec.abSplit.sideB,
        percentA: spec.abSplit.percentA,
      },
    }),
  });
}

/** HAProxy's status text counts as healthy when the server takes traffic: checked UP (or going down), not in maintenance or drain. */
const healthy = (status: string) => /^(UP|no check)/.test(status) && !/DRAIN|MAINT/.test(status);

export function endpointMessage(view: EndpointView): Endpoint {
  const samples = new Map(view.sample?.backends.map((b) => [b.id, b]));
  return create(EndpointSchema, {
    spec: specMessage(view.spec),
    proxy: create(ProxyStatusSchema, {
      state: view.proxy.running ? ProxyState.RUNNING : ProxyState.FAILED,
      pid: view.proxy.pid,
      version: view.proxy.version,
      ...(view.proxy.startMs > 0 && { startTime: timestamp(view.proxy.startMs) }),
      restarts: view.proxy.restarts,
      configPath: view.proxy.files.config,
      adminSocket: view.proxy.files.adminSocket,
      message: view.proxy.message,
    }),
    backends: view.spec.backends.map((b) => {
      const s = samples.get(b.id);
      if (!s) return create(BackendStatsSchema, { id: b.id, status: view.sample ? "absent" : "unknown" });
      const r = s.responses;
      const p95 = view.sample?.p95ByBackend.get(b.id);
      return create(BackendStatsSchema, {
        id: b.id,
        status: s.status,
        healthy: healthy(s.status),
        weight: s.weight,
        currentSessions: BigInt(s.currentSessions),
        totalRequests: BigInt(r["1xx"] + r["2xx"] + r["3xx"] + r["4xx"] + r["5xx"]),
        responses1xx: BigInt(r["1xx"]),
        responses2xx: BigInt(r["2xx"]),
        responses3xx: BigInt(r["3xx"]),
        responses4xx: BigInt(r["4xx"]),
        responses5xx: BigInt(r["5xx"]),
        errors: BigInt(s.errors),
        responseTimeAvgMs: s.responseTimeAvgMs,
        ...(p95 !== undefined && { responseTimeP95Ms: p95 }),
        checkFailures: BigInt(s.checkFailures),
        lastCheck: s.lastCheck,
      });
    }),
    ...(view.sample && {
      frontend: create(FrontendStatsSchema, {
        currentSessions: BigInt(view.sample.frontend.currentSessions),
        totalRequests: BigInt(view.sample.frontend.totalRequests),
        responses5xx: BigInt(view.sample.frontend.responses5xx),
      }),
    }),
  });
}

export function trafficService(endpoints: Endpoints): ServiceImpl<typeof TrafficService> {
  return {
    async putEndpoint(req) {
      const { view, created, restarted } = await endpoints.put(endpointSpec(req.spec));
      return { endpoint: endpointMessage(view), created, restarted };
    },
    async setWeights(req) {
      const name = dnsLabel("name", req.name);
      const entries = Object.entries(req.weights);
      if (entries.length === 0) throw invalidArgument("weights is empty: give at least one backend id and its new weight (0 to 256).");
      const weights = Object.fromEntries(entries.map(([id, w]) => [dnsLabel("backend id", id), weight(`weight of ${id}`, w)]));
      return { endpoint: endpointMessage(await endpoints.setWeights(name, weights)) };
    },
    async setBackendState(req) {
      const name = dnsLabel("name", req.name);
      const backend = dnsLabel("backend", req.backend);
      if (req.state === BackendStateMsg.UNSPECIFIED) throw invalidArgument("state is required: give READY, DRAIN or MAINT.");
      return { endpoint: endpointMessage(await endpoints.setBackendState(name, backend, backendState("state", req.state))) };
    },
    async getEndpoint(req) {
      return { endpoint: endpointMessage(await endpoints.get(dnsLabel("name", req.name))) };
    },
    async listEndpoints() {
      return { endpoints: (await endpoints.list()).map(endpointMessage) };
    },
    async deleteEndpoint(req) {
      await endpoints.delete(dnsLabel("name", req.name));
      return {};
    },
  };
}
