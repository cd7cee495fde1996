#!/usr/bin/env aetherscript
// Stopping politely, then firmly: a process that ignores SIGTERM is killed after the grace period,
// and the executable records exactly what happened.
import { connect } from "@aether/sdk";

const aether = await connect();
const { executable } = await aether.runtime.startExecutable({
  name: `stubborn-${Date.now().toString(36)}`,
  argv: ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
});
await new Promise((r) => setTimeout(r, 200)); // let the shell install its trap
const { executable: stopped } = await aether.runtime.stopExecutable({
  executable: executable?.id ?? "",
  signal: "SIGTERM",
  gracePeriod: { seconds: 1n },
});
console.log(`${stopped?.name}: ${stopped?.stateReason} (signal ${stopped?.signal})`);
await aether.runtime.deleteExecutable({ executable: stopped?.id ?? "" });
aether.close();
