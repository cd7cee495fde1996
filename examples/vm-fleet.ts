#!/usr/bin/env aetherscript
// A small fleet of VMs as a deployment: the aggregator places each instance by auction (spread over
// the nodes), keeps them running, scales them and deletes them. The guest is the project's test
// guest (npm run guest builds it into .aether/images/guest). Run against the aggregator:
//   AETHER_HOST=unix:///run/aether/aggregator.sock aetherscript examples/vm-fleet.ts
import { auction, connect } from "@aether/sdk";

const image = new URL("../.aether/images/guest/", import.meta.url).pathname;
const [kernelPath = `${image}vmlinuz`, initrdPath = `${image}initramfs.cpio.gz`] = process.argv.slice(2);
const aether = await connect();
const name = `fleet-${Date.now().toString(36)}`;

/** Follows the deployment until `done` says so, printing each change. */
async function follow(done: (d: auction.Deployment) => boolean): Promise<void> {
  for await (const { deployment: d, instances } of aether.aggregator.watchDeployment({ deployment: name })) {
    if (!d) continue;
    const where = instances.filter((i) => i.state === auction.PlacementState.PLACED).map((i) => i.name);
    console.log(`${name}: ${auction.DeploymentState[d.state]}, ${d.runningInstances}/${d.instances} running ${where.join(" ")}`);
    // A deployment that cannot place its instances says why (the auction's reasons).
    if (d.state === auction.DeploymentState.DEGRADED) console.log(`  ${d.stateReason}`);
    if (done(d)) return;
  }
}

await aether.aggregator.createDeployment({
  deployment: {
    name,
    instances: 2,
    labels: { example: "vm-fleet" },
    template: {
      restartPolicy: auction.RestartPolicy.ALWAYS,
      kind: {
        case: "vm",
        value: {
          vcpus: 1,
          memoryBytes: 128n * 1024n * 1024n,
          guestAgent: true,
          boot: { source: { case: "kernel", value: { kernelPath, initrdPath, cmdline: "quiet" } } },
          cloudInit: { userData: "#!/bin/sh\necho 'one of a fleet' > /run/motd\n" },
        },
      },
    },
  },
});
await follow((d) => d.state === auction.DeploymentState.AVAILABLE && d.runningInstances === 2);

await aether.aggregator.scaleDeployment({ deployment: name, instances: 1 });
await follow((d) => d.state === auction.DeploymentState.AVAILABLE && d.runningInstances === 1);
console.log(`scaled ${name} to 1`);

await aether.aggregator.deleteDeployment({ deployment: name, gracePeriod: { seconds: 5n } });
await follow((d) => d.state === auction.DeploymentState.DELETED);
console.log(`deleted ${name}`);
aether.close();
