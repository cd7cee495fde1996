// The RPC metrics of a server: every call counted by service, method and the code its caller got,
// with the latency of unary calls; the interceptor listen() installs outermost when given a registry.
// And the debug line per RPC, which listen() always installs (silent unless the level is debug).
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createRequire } from "node:module";
import type { Logger } from "pino";
import type * as PromClient from "prom-client";
import type { Registry } from "prom-client";
import { callerOfRequest } from "./peer.js";

/** The gRPC code's canonical name, as Prometheus exporters of gRPC servers label it ("OK", "NOT_FOUND"). */
export function codeName(code: Code | undefined): string {
  if (code === undefined) return "OK";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Buckets from 1 ms to 30 s: a unary RPC on the socket takes about a millisecond, a VM boot seconds. */
export const LATENCY_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Counts every RPC by service, method and the code its caller got (aether_rpc_requests_total), and
 * the time a unary call took (aether_rpc_duration_seconds). A stream is counted when it ends, with
 * the code it ended with; its duration (a followed log may last days) is not a latency.
 */
export function rpcMetrics(registry: Registry): Interceptor {
  // prom-client (with the OpenTelemetry API it brings, some 80 CommonJS modules) is loaded by the
  // first server that counts, not at every start: most serve no metrics (issue 18, idle footprint).
  const { Counter, Histogram } = createRequire(import.meta.url)("prom-client") as typeof PromClient;
  const requests = new Counter({
    name: "aether_rpc_requests_total",
    help: "RPCs served, by service, method and the gRPC code the caller got (streams counted when they end).",
    labelNames: ["service", "method", "code"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "aether_rpc_duration_seconds",
    help: "Time to answer a unary RPC, by service, method and gRPC code.",
    labelNames: ["service", "method", "code"] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const codeOf = (err: unknown) => codeName(err instanceof ConnectError ? err.code : Code.Internal);
  // The bound series of each service/method/code, made once: an RPC then costs two lookups.
  const series = new Map<string, { count: () => void; observe: (seconds: number) => void }>();
  const seriesOf = (service: string, method: string, code: string) => {
    const key = `${service}/${method}/${code}`;
    let s = series.get(key);
    if (!s) {
      const labels = { service, method, code };
      const counter = requests.labels(labels);
      const histogram = duration.labels(labels);
      s = { count: () => counter.inc(), observe: (v) => histogram.observe(v) };
      series.set(key, s);
    }
    return s;
  };
  return (next) => async (req) => {
    const service = req.service.typeName;
    const method = req.method.name;
    const started = performance.now();
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      const s = seriesOf(service, method, codeOf(err));
      s.count();
      if (!req.stream) s.observe((performance.now() - started) / 1000);
      throw err;
    }
    if (!res.stream) {
      const s = seriesOf(service, method, "OK");
      s.count();
      s.observe((performance.now() - started) / 1000);
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        let code = "OK";
        try {
          yield* messages;
        } catch (err) {
          code = codeOf(err);
          throw err;
        } finally {
          seriesOf(service, method, code).count();
        }
      })(),
    };
  };
}

/**
 * At debug level, one line per RPC when it is answered: the method, the code, how long it took and
 * who called. Costs one level check per call otherwise (the level may change at runtime: SetLogLevel).
 */
export function rpcDebugLog(log: Logger): Interceptor {
  return (next) => async (req) => {
    if (!log.isLevelEnabled("debug")) return next(req);
    const started = process.hrtime.bigint();
    const line = (code: string) =>
      log.debug(
        {
          method: `${req.service.typeName}/${req.method.name}`,
          code,
          ms: Number(process.hrtime.bigint() - started) / 1e6,
          caller: callerOfRequest(req).identity,
        },
        "rpc",
      );
    try {
      const res = await next(req);
      // A stream's line is written when it opens; its end is not waited for.
      line("OK");
      return res;
    } catch (err) {
      line(codeName(err instanceof ConnectError ? err.code : Code.Internal));
      throw err;
    }
  };
}
