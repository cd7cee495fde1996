// Validation of a deployment's command health check (DeploymentTraffic.command_check).
import type { CommandHealthCheck } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { invalidArgument } from "@aether/server";
import { commandCheckSettings } from "./command-health.js";

const MAX_ARGS = 64;

export function validateCommandCheck(field: string, c: CommandHealthCheck, hasExecutable: boolean): void {
  if (c.argv.length === 0)
    throw invalidArgument(`${field}.argv is empty: give the program and its arguments, e.g. ["/usr/bin/test", "-f", "/tmp/ready"].`);
  if (c.argv.length > MAX_ARGS) throw invalidArgument(`${field}.argv has ${c.argv.length} arguments: give at most ${MAX_ARGS}.`);
  const empty = c.argv.findIndex((a) => a === "");
  if (empty >= 0) throw invalidArgument(`${field}.argv[${empty}] is empty: every argument must be non-empty (no shell splits them).`);
  if (hasExecutable && !c.argv[0]!.startsWith("/"))
    throw invalidArgument(`${field}.argv[0] ${JSON.stringify(c.argv[0])} must be an absolute path on the node (e.g. /usr/bin/test).`);
  const s = commandCheckSettings(c);
  if (s.intervalMs < 500 || s.intervalMs > 300_000) throw invalidArgument(`${field}.interval must be 500 ms to 5 min.`);
  if (s.timeoutMs < 100 || s.timeoutMs > 60_000) throw invalidArgument(`${field}.timeout must be 100 ms to 1 min.`);
  if (s.timeoutMs > s.intervalMs)
    throw invalidArgument(`${field}.timeout (${s.timeoutMs} ms) must be at most the interval (${s.intervalMs} ms): one check at a time.`);
  if (s.rise > 100) throw invalidArgument(`${field}.rise ${s.rise}: give 1 to 100 consecutive passes.`);
  if (s.fall > 100) throw invalidArgument(`${field}.fall ${s.fall}: give 1 to 100 consecutive failures.`);
}
