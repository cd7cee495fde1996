// Prometheus metrics, shared by aetherd and aether-aggregator: the HTTP endpoint a Prometheus scrapes
// (GET /metrics in the text exposition format, on its own listener, never on the API socket) and
// perScrape(), so the figures a program reads from its registries at scrape time are read once per
// scrape however many metric families use them. Nothing here polls: prom-client's collect() callbacks
// read the programs' state when Prometheus asks. The RPC metrics are rpc-metrics.ts.
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { loadTlsMaterial } from "./tls-material.js";
import { isLoopbackHost } from "./validate.js";
import { ListenError, splitHostPort } from "./listen.js";

export interface MetricsListenOptions {
  /** host:port; port 0 binds any free port (MetricsEndpoint.address tells which). */
  listen: string;
  /** Mutual TLS: Prometheus presents a certificate from client_ca. All three, or none (loopback only). */
  cert?: string;
  key?: string;
  client_ca?: string;
  crl?: string;
  /** The program's name in logs and sentences ("aetherd"). */
  program: string;
  /** How an operator sets the address, for the sentences ("[metrics] listen", "--metrics-listen"). */
  setting: string;
  /** How an operator gives TLS material, for the refusal of a non-loopback address without it. */
  tlsSetting: string;
}

export interface MetricsEndpoint {
  /** The address actually bound (port 0 resolved). */
  readonly address: string;
  readonly tls: boolean;
  close(): Promise<void>;
}

/**
 * Serves registry on GET /metrics. Without TLS material only a loopback address is accepted: the
 * figures name tenants, VMs and nodes, and anyone on the network could read them.
 */
export async function serveMetrics(options: MetricsListenOptions, registry: Registry, log: Logger): Promise<MetricsEndpoint> {
  const { host, port } = splitHostPort(options.listen);
  if (!/^\d{1,5}$/.test(String(port)) || port > 65535 || host === "")
    throw new ListenError(`${options.setting} ${options.listen} must be host:port, e.g. 127.0.0.1:9464.`);
  const tls = options.cert !== undefined || options.key !== undefined || options.client_ca !== undefined;
  if (!tls && !isLoopbackHost(host))
    throw new ListenError(
      `${options.setting} ${options.listen} is not a loopback address and no TLS is configured: anyone on the network could read the metrics; ` +
        `listen on 127.0.0.1 (or ::1), or give ${options.tlsSetting} so that Prometheus must present a certificate of the cluster CA.`,
    );
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`${options.program} serves its metrics on /metrics only.\n`);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }).end("GET /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(req.method === "HEAD" ? undefined : text),
      (err: unknown) => {
        log.error({ err: (err as Error).message }, "could not render the metrics");
        res
          .writeHead(500, { "content-type": "text/plain; charset=utf-8" })
          .end(`could not render the metrics: ${(err as Error).message}\n`);
      },
    );
  };
  let server: http.Server | https.Server;
  if (tls) {
    let material;
    try {
      material = await loadTlsMaterial(
        { listen: options.listen, cert: options.cert, key: options.key, client_ca: options.client_ca, crl: options.crl },
        options.program,
        log,
      );
    } catch (err) {
      throw new ListenError(`${options.setting}: ${(err as Error).message}`);
    }
    // Prometheus must present a certificate of the CA (tls_config cert_file/key_file in its scrape config).
    server = https.createServer({ ...material.options, requestCert: true, rejectUnauthorized: true }, handler);
  } else {
    server = http.createServer(handler);
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new ListenError(`${options.setting}: cannot listen on ${options.listen}: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
  log.info({ metrics: `${tls ? "https" : "http"}://${address}/metrics`, mtls: tls }, "serving Prometheus metrics");
  return {
    address,
    tls,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * read() at most once per scrape: the collect() callbacks of one scrape run together, and each
 * family that needs the same figures (a VM's block statistics: bytes and operations, read and
 * written) gets one reading. The reading is forgotten a moment later, so the next scrape reads anew.
 */
export function perScrape<T>(read: () => Promise<T>, ttlMs = 500): () => Promise<T> {
  let cached: { at: number; value: Promise<T> } | undefined;
  return () => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > ttlMs) cached = { at: now, value: read() };
    return cached.value;
  };
}
