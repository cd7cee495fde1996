// Requests of aether.traffic.v1 into checked domain values (types.ts), each refusal a sentence that
// says what to give instead.
import { isIP } from "node:net";
import { clip, dnsLabel, invalidArgument } from "@aether/server";
import {
  BackendState as BackendStateMsg,
  EndpointMode,
  type AbSplit,
  type Backend,
  type EndpointSpec as EndpointSpecMsg,
  type HealthCheck,
} from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import {
  DEFAULT_HEALTH_CHECK,
  type AbSplitSpec,
  type BackendSpec,
  type BackendState,
  type EndpointSpec,
  type HealthCheckSpec,
} from "./types.js";

export const MAX_BACKENDS = 256;
export const MAX_WEIGHT = 256;
/** Header and cookie names, and check paths, in characters HAProxy's configuration syntax gives no meaning to. */
const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;
const PATH = /^\/[A-Za-z0-9\-._~/%?=&]{0,255}$/;

/** "host:port" with an IP literal host ("[v6]:port" for IPv6) into its parts. */
export function address(field: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || (m[1] !== undefined ? isIP(host) !== 6 : isIP(host) !== 4)) {
    throw invalidArgument(
      `${field} ${JSON.stringify(clip(value))} is not an address: give "ip:port" with an IP literal, e.g. "127.0.0.1:8080" or "[::1]:8080".`,
    );
  }
  if (port < 1 || port > 65535) throw invalidArgument(`${field} ${JSON.stringify(clip(value))} has port ${port}: give 1 to 65535.`);
  return { host, port };
}

export function weight(field: string, value: number): number {
  if (value > MAX_WEIGHT)
    throw invalidArgument(`${field} ${value} is out of range: give 0 to ${MAX_WEIGHT} (weights are relative; 0 sends no new requests).`);
  return value;
}

export function backendState(field: string, value: BackendStateMsg): BackendState {
  switch (value) {
    case BackendStateMsg.UNSPECIFIED:
    case BackendStateMsg.READY:
      return "ready";
    case BackendStateMsg.DRAIN:
      return "drain";
    case BackendStateMsg.MAINT:
      return "maint";
    default:
      throw invalidArgument(`${field} ${value} is not a backend state: give READY, DRAIN or MAINT.`);
  }
}

function backend(b: Backend, i: number): BackendSpec {
  const id = dnsLabel(`backends[${i}].id`, b.id);
  return {
    id,
    ...address(`backend ${id} address`, b.address),
    weight: weight(`backend ${id} weight`, b.weight),
    state: backendState(`backend ${id} state`, b.state),
  };
}

function bounded(field: string, value: number, fallback: number, min: number, max: number, unit = ""): number {
  if (value === 0) return fallback;
  if (value < min || value > max)
    throw invalidArgument(`${field} ${value}${unit} is out of range: give ${min} to ${max}${unit} (0 for ${fallback}${unit}).`);
  return value;
}

export function healthCheck(c: HealthCheck | undefined): HealthCheckSpec {
  if (!c) return DEFAULT_HEALTH_CHECK;
  const d = DEFAULT_HEALTH_CHECK;
  const intervalMs = bounded("health_check.interval_ms", c.intervalMs, d.intervalMs, 100, 60_000, " ms");
  const timeoutMs = bounded("health_check.timeout_ms", c.timeoutMs, Math.min(d.timeoutMs, intervalMs), 50, 60_000, " ms");
  if (timeoutMs > intervalMs)
    throw invalidArgument(
      `health_check.timeout_ms ${timeoutMs} is longer than interval_ms ${intervalMs}: a check must end before the next begins.`,
    );
  const rise = bounded("health_check.rise", c.rise, d.rise, 1, 100);
  const fall = bounded("health_check.fall", c.fall, d.fall, 1, 100);
  let kind: HealthCheckSpec["kind"];
  if (c.kind.case === "http") {
    const path = c.kind.value.path;
    if (!PATH.test(path))
      throw invalidArgument(
        `health_check.http.path ${JSON.stringify(clip(path))} is not a path: give one starting with '/', without spaces, e.g. "/healthz".`,
      );
    const expectedStatus = bounded("health_check.http.expected_status", c.kind.value.expectedStatus, 200, 100, 599);
    kind = { type: "http", path, expectedStatus };
  } else {
    kind = { type: "tcp" };
  }
  return { kind, intervalMs, timeoutMs, rise, fall };
}

function abSplit(s: AbSplit, ids: Set<string>): AbSplitSpec {
  if (s.key.case === undefined) throw invalidArgument("ab_split needs a header or a cookie: the request value that identifies a caller.");
  const name = s.key.value;
  if (!TOKEN.test(name))
    throw invalidArgument(
      `ab_split.${s.key.case} ${JSON.stringify(clip(name))} is not a ${s.key.case} name: use letters, digits and '-', e.g. "x-user".`,
    );
  if (s.sideA.length === 0 || s.sideB.length === 0)
    throw invalidArgument("ab_split needs at least one backend on side A and one on side B.");
  const seen = new Set<string>();
  for (const id of [...s.sideA, ...s.sideB]) {
    if (!ids.has(id))
      throw invalidArgument(`ab_split names backend ${JSON.stringify(clip(id))}, which is not among the endpoint's backends.`);
    if (seen.has(id)) throw invalidArgument(`ab_split puts backend ${id} on a side twice or on both sides; a backend is on one side.`);
    seen.add(id);
  }
  const missing = [...ids].filter((id) => !seen.has(id));
  if (missing.length > 0)
    throw invalidArgument(`ab_split leaves backend ${missing.join(", ")} on no side: put every backend on side A or side B.`);
  if (s.percentA > 100) throw invalidArgument(`ab_split.percent_a ${s.percentA} is out of range: give 0 to 100.`);
  return { key: { type: s.key.case, name: name.toLowerCase() }, sideA: [...s.sideA], sideB: [...s.sideB], percentA: s.percentA };
}

export function endpointSpec(spec: EndpointSpecMsg | undefined): EndpointSpec {
  if (!spec) throw invalidArgument("spec is required: give the endpoint's name, listen address and backends.");
  const name = dnsLabel("spec.name", spec.name);
  if (spec.mode !== EndpointMode.UNSPECIFIED && spec.mode !== EndpointMode.HTTP)
    throw invalidArgument(`spec.mode ${spec.mode} is not supported: give HTTP.`);
  const listen = address("spec.listen", spec.listen);
  if (spec.backends.length === 0 || spec.backends.length > MAX_BACKENDS) {
    throw invalidArgument(`endpoint ${name} has ${spec.backends.length} backends: give 1 to ${MAX_BACKENDS}.`);
  }
  const backends = spec.backends.map(backend);
  const ids = new Set<string>();
  for (const b of backends) {
    if (ids.has(b.id)) throw invalidArgument(`backend id ${b.id} appears twice in endpoint ${name}: ids are unique.`);
    ids.add(b.id);
  }
  return {
    name,
    listenHost: listen.host,
    listenPort: listen.port,
    backends,
    healthCheck: healthCheck(spec.healthCheck),
    ...(spec.abSplit && { abSplit: abSplit(spec.abSplit, ids) }),
  };
}
