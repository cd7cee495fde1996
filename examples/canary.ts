#!/usr/bin/env aetherscript
// A canary rollout: a deployment of a tiny HTTP service behind an endpoint (HAProxy run by the node's
// aetherd), then a new version rolled out 5 % → 25 % → 50 % → 100 % of the traffic, each stage held
// and judged on the proxy's figures (error rate, p95 against the stable version); a stage that fails
// rolls back on its own. `aether.rollouts.wait` resolves when the rollout succeeded and rejects when
// it was rolled back. Run against the aggregator, naming the node that runs the endpoint:
//   AETHER_HOST=unix:///run/aether/aggregator.sock aetherscript examples/canary.ts node-a 127.0.0.1:8080
// While it runs, `curl http://127.0.0.1:8080/` answers v1 or v2 in the stage's proportion.
import { auction, connect, RolloutFailedError } from "@aether/sdk";

const [node = "example-node", listen = `127.0.0.1:${20_000 + Math.floor(Math.random() * 20_000)}`] = process.argv.slice(2);
const aether = await connect();
const name = `canary-${Date.now().toString(36)}`;

/** The service: answers its version on /, "ok" on /healthz, on the port the aggregator gives it (PORT). */
const service = (version: string) => ({
  requirements: { cpuMillis: 10, memoryBytes: 32n << 20n },
  kind: {
    case: "executable" as const,
    value: {
      argv: [
        "/usr/bin/python3",
        "-c",
        `import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else b"${version}"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()`,
      ],
    },
  },
});

const ports = 40_000 + Math.floor(Math.random() * 200) * 100;
await aether.aggregator.createDeployment({
  deployment: {
    name,
    instances: 2,
    labels: { example: "canary" },
    template: service("v1"),
    // Short holds for the example; by default each stage is held 30 s.
    strategy: { kind: { case: "canary", value: { stages: [5, 25, 50, 100], hold: { seconds: 2n } } } },
    traffic: { listen, node, backendPortFirst: ports, backendPortLast: ports + 99, healthPath: "/healthz" },
  },
});
for await (const { deployment: d } of aether.aggregator.watchDeployment({ deployment: name }))
  if (d?.state === auction.DeploymentState.AVAILABLE) break;
console.log(`${name}: revision 1 serving on ${listen}`);

// A new template is a new revision: the deployment's strategy rolls it out.
await aether.aggregator.updateDeployment({ deployment: name, template: service("v2") });
try {
  const done = await aether.rollouts.wait(name, {
    onChange: (r) =>
      console.log(`stage ${r.stage + 1}: ${r.weight} % to revision ${r.toRevision} (${auction.RolloutPhase[r.phase]}) ${r.phaseReason}`),
  });
  console.log(`rollout succeeded: revision ${done.toRevision} serves all traffic`);
  for (const h of done.history) console.log(`  ${h.action}: ${JSON.stringify(h.figures)}`);
} catch (err) {
  if (!(err instanceof RolloutFailedError)) throw err;
  console.log(`rolled back: ${err.message}`);
}

// Deleting it releases its instances and removes its endpoint.
await aether.aggregator.deleteDeployment({ deployment: name, gracePeriod: { seconds: 1n } });
for await (const { deployment: d } of aether.aggregator.watchDeployment({ deployment: name }))
  if (d?.state === auction.DeploymentState.DELETED) break;
console.log(`deleted ${name}`);
aether.close();
