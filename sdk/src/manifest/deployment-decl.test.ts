// A deployment's strategy and endpoint in a cluster manifest: validated with the field named, and
// turned into the DeploymentStrategy and DeploymentTraffic the aggregator takes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DeploymentStrategySchema, DeploymentTrafficSchema } from "../gen/aether/auction/v1/auction_pb.js";
import { defineManifest, ManifestError } from "./define.js";
import { deploymentStrategy, deploymentTraffic } from "./deployment-decl.js";

const web = (extra: Record<string, unknown>) =>
  defineManifest({
    name: "shop",
    target: "cluster",
    deployments: [{ name: "web", instances: 2, template: { executable: { argv: ["/usr/bin/python3", "/srv/web.py"] } }, ...extra }],
  } as Parameters<typeof defineManifest>[0]);

describe("deployment strategy and endpoint in manifests", () => {
  it("a canary with an endpoint becomes the aggregator's messages", () => {
    const m = web({
      strategy: { kind: "canary", stages: [10, 50, 100], holdSeconds: 1.5, maxErrorRate: 0.02 },
      traffic: { listen: "127.0.0.1:8080", node: "node-a", ports: [20000, 20099], healthPath: "/healthz" },
    });
    const d = m.deployments[0];
    assert.ok(d);
    const s = create(DeploymentStrategySchema, deploymentStrategy(d));
    assert.equal(s.kind.case, "canary");
    assert.deepEqual(s.kind.case === "canary" && s.kind.value.stages, [10, 50, 100]);
    assert.deepEqual(s.kind.case === "canary" && s.kind.value.hold, {
      $typeName: "google.protobuf.Duration",
      seconds: 1n,
      nanos: 500_000_000,
    });
    const t = create(DeploymentTrafficSchema, deploymentTraffic(d));
    assert.equal(t.backendPortFirst, 20000);
    assert.equal(t.backendPortLast, 20099);
    assert.equal(t.healthPath, "/healthz");
  });

  it("a command health check becomes traffic.command_check; an empty argv is refused naming the field", () => {
    const d = web({
      traffic: {
        listen: "127.0.0.1:8080",
        node: "node-a",
        ports: [20000, 20099],
        commandCheck: { argv: ["/usr/bin/test", "-f", "/srv/ready"], intervalMs: 1500, fall: 3 },
      },
    }).deployments[0];
    assert.ok(d);
    const c = create(DeploymentTrafficSchema, deploymentTraffic(d)).commandCheck;
    assert.deepEqual(c?.argv, ["/usr/bin/test", "-f", "/srv/ready"]);
    assert.equal(c?.interval?.nanos, 500_000_000);
    assert.equal(c?.interval?.seconds, 1n);
    assert.equal(c?.timeout, undefined);
    assert.equal(c?.rise, 0);
    assert.equal(c?.fall, 3);
    assert.throws(
      () => web({ traffic: { listen: "127.0.0.1:8080", node: "a", ports: [20000, 20099], commandCheck: { argv: [] } } }),
      (e: ManifestError) => e.field.startsWith("deployments.0.traffic.commandCheck.argv"),
    );
  });

  it("refuses an A/B without a header or cookie, and an unknown kind, naming the field", () => {
    assert.throws(
      () => web({ strategy: { kind: "ab", percent: 30 } }),
      (e: ManifestError) => e.field === "deployments.0.strategy",
    );
    assert.throws(
      () => web({ strategy: { kind: "sideways" } }),
      (e: ManifestError) => e.field.startsWith("deployments.0.strategy"),
    );
    assert.throws(
      () => web({ traffic: { listen: "8080", node: "a", ports: [20000, 20099] } }),
      (e: ManifestError) => e.field === "deployments.0.traffic.listen",
    );
  });
});
