// aether health: is this node healthy, or with --aggregator the whole cluster (the aggregator's
// leadership and store, each node's health and whether it can be fenced). One line first, then
// every check; exits 1 when anything is DEGRADED, so a script or a probe can use it.
import type { Command } from "commander";
import { node as nodeApi } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatOf, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";

const WORD: Record<number, string> = {
  [nodeApi.HealthStatus.SERVING]: "ok",
  [nodeApi.HealthStatus.WARNING]: "warning",
  [nodeApi.HealthStatus.DEGRADED]: "DEGRADED",
};

const CHECKS: ListView<nodeApi.HealthCheck> = {
  json: nodeApi.HealthCheckSchema,
  name: (c) => c.name,
  columns: [
    { header: "STATUS", cell: (c) => WORD[c.status] ?? String(c.status) },
    { header: "CHECK", cell: (c) => c.name },
    { header: "WHAT", cell: (c) => c.message, clip: true },
  ],
};

export function healthCommand(program: Command): void {
  outputOptions(program.command("health"), "list")
    .description("is the node healthy (and why not); with --aggregator, the whole cluster")
    .option("--aggregator [address]", "the cluster's health from aether-aggregator (default: AETHER_AGGREGATOR)")
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
    .action(async (o: { aggregator?: string | true } & OutputFlags, cmd: Command) => {
      const aggregator = o.aggregator === true ? process.env.AETHER_AGGREGATOR : o.aggregator;
      if (o.aggregator === true && aggregator === undefined)
        cmd.error("error: --aggregator needs an address (or AETHER_AGGREGATOR), e.g. unix:///run/aether/aggregator.sock");
      const globals: GlobalOptions =
        aggregator === undefined ? program.opts<GlobalOptions>() : { address: aggregator, peer: "aether-aggregator" };
      let degraded = false;
      await withClient(globals, async (aether) => {
        const h = await aether.node.checkHealth({});
        degraded = h.status !== nodeApi.HealthStatus.SERVING || h.checks.some((c) => c.status === nodeApi.HealthStatus.DEGRADED);
        // JSON and YAML: the whole answer; name: the checks that are not serving.
        if (["json", "yaml"].includes(formatOf(o))) return printOne(o, { json: nodeApi.CheckHealthResponseSchema, name: () => "" }, h);
        if (formatOf(o) === "name")
          return printList(
            o,
            CHECKS,
            h.checks.filter((c) => c.status !== nodeApi.HealthStatus.SERVING),
          );
        const count = (s: nodeApi.HealthStatus) => h.checks.filter((c) => c.status === s).length;
        const problems = count(nodeApi.HealthStatus.DEGRADED);
        const warnings = count(nodeApi.HealthStatus.WARNING);
        const what = aggregator === undefined ? "node" : "cluster";
        process.stdout.write(
          `${what} ${degraded ? "DEGRADED" : "healthy"}: ${problems} problem(s), ${warnings} warning(s), ${h.checks.length} checks\n`,
        );
        printList(o, CHECKS, h.checks);
      });
      if (degraded) process.exit(EXIT.failed);
    });
}
