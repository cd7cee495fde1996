#!/usr/bin/env aetherscript
// Fence a node by hand through its BMC (Redfish), the way the aggregator's deadman switch does:
// register the BMC with this aetherd, read the power state, switch the node off and read back
// "Off", then power it on again and forget the BMC.
//   AETHER_BMC_USERNAME=fence AETHER_BMC_PASSWORD=... AETHER_BMC_CA=bmc-ca.pem aetherscript \
//     --allow-env=AETHER_BMC_USERNAME,AETHER_BMC_PASSWORD,AETHER_BMC_CA --allow-read=bmc-ca.pem \
//     examples/fence.ts node-b https://10.0.1.12
// The credentials come from the environment, never from argv; aetherd seals them at rest and never
// shows them again.
import { readFileSync } from "node:fs";
import { connect, fence } from "@aether/sdk";

const [node, endpoint] = process.argv.slice(2);
const { AETHER_BMC_USERNAME: username, AETHER_BMC_PASSWORD: password, AETHER_BMC_CA: caFile } = process.env;
if (!node || !endpoint || !username || !password) {
  console.error(
    "usage: AETHER_BMC_USERNAME=... AETHER_BMC_PASSWORD=... [AETHER_BMC_CA=ca.pem] aetherscript examples/fence.ts <node> <https://bmc>",
  );
  process.exit(2);
}
const aether = await connect();

const { bmc } = await aether.fence.registerBmc({
  node,
  endpoint,
  profile: fence.BmcProfile.ILO5,
  credentials: { username, password },
  ...(caFile && { tls: { verification: { case: "caPem", value: readFileSync(caFile, "utf8") } } }),
  replace: true,
});
console.log(`BMC of ${node}: ${bmc?.manufacturer} ${bmc?.model}, firmware ${bmc?.firmwareVersion}`);

const status = await aether.fence.getPowerStatus({ bmc: node });
console.log(`power: ${status.rawPowerState}; allowed resets: ${status.allowableResetTypes.join(", ")}`);

// Fence: ForceOff, then PowerState is read until it is exactly "Off" (or the deadline passes).
const off = await aether.fence.fence({ bmc: node, timeout: { seconds: 60n }, reason: "fenced by examples/fence.ts" });
if (!off.confirmed) {
  console.error(`NOT fenced: ${off.reason}`);
  process.exit(1);
}
console.log(`fenced: ${off.reason}`);

const on = await aether.fence.powerOn({ bmc: node, timeout: { seconds: 60n } });
console.log(`powered on: ${on.rawPowerState}`);
await aether.fence.unregisterBmc({ bmc: node });
console.log(`forgot the BMC of ${node}`);
aether.close();
