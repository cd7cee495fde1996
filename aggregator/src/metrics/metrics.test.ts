// The aggregator's metric families read from the rooms at scrape time: here the deployments, from
// what the composition hands over (the same computed views GetDeployment answers with).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DeploymentSchema, DeploymentState } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { aggregatorMetrics } from "./metrics.js";

describe("aggregator metrics", () => {
  it("count deployments by tenant and state, and each one's wanted, running and pending instances", async () => {
    const deployments = [
      create(DeploymentSchema, {
        name: "web",
        tenant: "acme",
        instances: 3,
        runningInstances: 2,
        pendingInstances: 1,
        state: DeploymentState.PROGRESSING,
      }),
      create(DeploymentSchema, { name: "db", tenant: "acme", instances: 1, runningInstances: 1, state: DeploymentState.AVAILABLE }),
    ];
    const registry = aggregatorMetrics({
      replica: "r1",
      leading: () => true,
      nodes: () => [],
      placements: () => [],
      auctions: () => [],
      deployments: () => deployments,
    });
    const text = await registry.metrics();
    for (const line of [
      'aether_deployments{tenant="acme",state="progressing"} 1',
      'aether_deployments{tenant="acme",state="available"} 1',
      'aether_deployment_instances{tenant="acme",deployment="web",status="wanted"} 3',
      'aether_deployment_instances{tenant="acme",deployment="web",status="running"} 2',
      'aether_deployment_instances{tenant="acme",deployment="web",status="pending"} 1',
      'aether_deployment_instances{tenant="acme",deployment="db",status="running"} 1',
    ])
      assert.ok(text.split("\n").includes(line), `${line} in:\n${text}`);

    deployments.pop();
    const after = await registry.metrics();
    assert.ok(!after.includes('deployment="db"'), "a deleted deployment's series go with it");
  });
});
