// aether health: is this node healthy, or with --aggregator the whole cluster (the aggregator's
// leadership and store, each node's health and whether it can be fenced). One line first, then
// every check; exits 1 when anything is DEGRADED, so a script or a probe can use it.
import type { Command } from "commander";
import { node as nodeApi } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { printJson, printTable } from "../output.js";

const WORD: Record<number, string> = {
  [nodeApi.HealthStatus.SERVING]: "ok",
  [nodeApi.HealthStatus.WARNING]: "warning",
  [nodeApi.HealthStatus.DEGRADED]: "DEGRADED",
};

export function healthCommand(program: Command): void {
  program
    .command("health")
    .description("is the node healthy (and why not); with --aggregator, the whole cluster")
    .option("--aggregator [address]", "the cluster's health from aether-aggregator (default: AETHER_AGGREGATOR)")
    .option("--json", "print the CheckHealth answer as JSON")
    .addHelpText(
      "after",
      `
aetherd checks its state directory, process shim and spawner, cgroup root, clock, pools and the
QEMU of every running VM. aether-aggregator checks its leadership and store, asks every node for
its health, and warns about nodes it could not fence (no BMC). Exits 1 when a check is DEGRADED.

Examples:
  aether health
  aether health --aggregator unix:///run/aether/aggregator.sock
  aether health --json | jq '.checks[] | select(.status != "HEALTH_STATUS_SERVING")'`,
    )
    .action(async (o: { aggregator?: string | true; json?: boolean }, cmd: Command) => {
      const aggregator = o.aggregator === true ? process.env.AETHER_AGGREGATOR : o.aggregator;
      if (o.aggregator === true && aggregator === undefined)
        cmd.error("error: --aggregator needs an address (or AETHER_AGGREGATOR), e.g. unix:///run/aether/aggregator.sock");
      const globals: GlobalOptions =
        aggregator === undefined ? program.opts<GlobalOptions>() : { address: aggregator, peer: "aether-aggregator" };
      let degraded = false;
      await withClient(globals, async (aether) => {
        const h = await aether.node.checkHealth({});
        degraded = h.status !== nodeApi.HealthStatus.SERVING || h.checks.some((c) => c.status === nodeApi.HealthStatus.DEGRADED);
        if (o.json) return printJson(nodeApi.CheckHealthResponseSchema, h);
        const count = (s: nodeApi.HealthStatus) => h.checks.filter((c) => c.status === s).length;
        const problems = count(nodeApi.HealthStatus.DEGRADED);
        const warnings = count(nodeApi.HealthStatus.WARNING);
        const what = aggregator === undefined ? "node" : "cluster";
        process.stdout.write(
          `${what} ${degraded ? "DEGRADED" : "healthy"}: ${problems} problem(s), ${warnings} warning(s), ${h.checks.length} checks\n`,
        );
        printTable(
          ["STATUS", "CHECK", "WHAT"],
          h.checks.map((c) => [WORD[c.status] ?? String(c.status), c.name, c.message]),
        );
      });
      if (degraded) process.exit(EXIT.failed);
    });
}
