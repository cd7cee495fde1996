// What an endpoint is, in the words of the traffic subsystem (no proto types): the API layer
// validates requests into these, the manager keeps them, the proxy driver makes them real.

/** Whether a backend takes traffic, as the caller set it (health is the proxy's own, in BackendSample). */
export type BackendState = "ready" | "drain" | "maint";

export interface BackendSpec {
  /** DNS label, unique in the endpoint; the proxy's server name. */
  id: string;
  /** IP literal of the instance. */
  host: string;
  port: number;
  /** Relative weight 0..256. */
  weight: number;
  state: BackendState;
}

export interface HealthCheckSpec {
  /** An HTTP GET of path expecting a status, or a TCP connect. */
  kind: { type: "http"; path: string; expectedStatus: number } | { type: "tcp" };
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
}

export interface AbSplitSpec {
  /** What identifies a caller: a request header or a cookie. */
  key: { type: "header" | "cookie"; name: string };
  sideA: string[];
  sideB: string[];
  /** Share of callers (by hash of the key, 0..99) sent to side A. */
  percentA: number;
}

export interface EndpointSpec {
  name: string;
  listenHost: string;
  listenPort: number;
  backends: BackendSpec[];
  healthCheck: HealthCheckSpec;
  abSplit?: AbSplitSpec;
}

/** One backend as the running proxy reports it. */
export interface BackendSample {
  id: string;
  /** The pool (proxy backend section) the server is in. */
  pool: string;
  /** "ip:port" as the proxy has it. */
  address: string;
  status: string;
  weight: number;
  currentSessions: number;
  responses: { "1xx": number; "2xx": number; "3xx": number; "4xx": number; "5xx": number };
  errors: number;
  responseTimeAvgMs: number;
  checkFailures: number;
  lastCheck: string;
}

export interface FrontendSample {
  currentSessions: number;
  totalRequests: number;
  responses5xx: number;
}

export interface ProxySample {
  backends: BackendSample[];
  frontend: FrontendSample;
  /** 95th percentile response time of the recent logged requests, by backend id. */
  p95ByBackend: Map<string, number>;
}

export const DEFAULT_HEALTH_CHECK: HealthCheckSpec = { kind: { type: "tcp" }, intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 2 };

/** "host:port" with brackets around an IPv6 host. */
export const hostPort = (host: string, port: number) => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);
