// A TCP listener that carries each connection to a unix socket, run inside a network namespace so
// that a server of this test process (listening on a unix socket, reachable from every namespace)
// gets an address in that namespace: `ip netns exec NS node tcp-unix-relay.mjs HOST PORT SOCKET`.
// Prints "ready" once it listens; exits when its stdin closes (the test process went away).
import { connect, createServer } from "node:net";

const [host, port, socket] = process.argv.slice(2);
if (!host || !port || !socket) {
  process.stderr.write("usage: tcp-unix-relay.mjs HOST PORT SOCKET\n");
  process.exit(2);
}
const server = createServer((inbound) => {
  const outbound = connect(socket);
  inbound.pipe(outbound).pipe(inbound);
  const end = () => {
    inbound.destroy();
    outbound.destroy();
  };
  inbound.on("error", end).on("close", end);
  outbound.on("error", end).on("close", end);
});
server.listen(Number(port), host, () => process.stdout.write("ready\n"));
process.stdin.resume();
process.stdin.on("close", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
