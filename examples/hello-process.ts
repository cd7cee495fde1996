#!/usr/bin/env aetherscript
// Hello, Aether: connect to aetherd, look at the node, run a process, follow its output live,
// and read how it ended. Run it with `npm run demo`, or against any aetherd:
//   AETHER_HOST=unix:///run/aether/aetherd.sock aetherscript examples/hello-process.ts
import { connect, observe } from "@aether/sdk";

const aether = await connect();
const { node } = await aether.node.getNodeInfo({});
console.log(
  `connected to ${aether.address}: ${node?.hostname}, aetherd ${node?.version}, cgroup controllers: ${node?.capabilities?.cgroup?.controllers.join(",")}`,
);

const { executable } = await aether.runtime.startExecutable({
  labels: { example: "hello-process" },
  argv: ["/bin/sh", "-c", 'for i in 1 2 3; do echo "hello from aether ($i)"; sleep 0.2; done; echo "warning: done" >&2'],
  env: { PATH: "/usr/bin:/bin" },
});
if (!executable) throw new Error("aetherd returned no executable");
console.log(`started ${executable.name} as pid ${executable.pid}`);

for await (const chunk of aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: executable.id, follow: true })) {
  const stream = chunk.channel === observe.LogChannel.STDERR ? "stderr" : "stdout";
  process.stdout.write(`[${stream}] ${new TextDecoder().decode(chunk.data)}`);
}

const { executable: done } = await aether.runtime.waitExecutable({ executable: executable.id });
console.log(`${done?.name} ${done?.stateReason}: exit code ${done?.exitCode}`);
await aether.runtime.deleteExecutable({ executable: executable.id });
aether.close();
