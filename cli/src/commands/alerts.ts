// aether alerts [thresholds [set <name> <value>]]: the alerts aether-aggregator raises when a node's
// telemetry (load per CPU, memory in use, pressure, disk wear) or lease age crosses a threshold, and
// the thresholds themselves, changeable at runtime. The aggregator is found as `aether cluster`
// finds it: --aggregator, else AETHER_AGGREGATOR, else the node address every other command uses.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, type Command } from "commander";
import { auction } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { nodeNames } from "./cluster.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { age, formatOf, forPrograms, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";

const severity = (s: auction.AlertSeverity) => (auction.AlertSeverity[s] ?? String(s)).toLowerCase();
const figure = (n: number) => String(Number(n.toPrecision(6)));

/** Active alerts; the table names the nodes (node: id to name), JSON keeps the ids. */
const alertsView = (node: (id: string) => string): ListView<auction.Alert> => ({
  json: auction.AlertSchema,
  name: (a) => `${node(a.node)}/${a.metric}`,
  columns: [
    { header: "NODE", cell: (a) => node(a.node) },
    { header: "ALERT", cell: (a) => a.metric },
    { header: "SEVERITY", cell: (a) => severity(a.severity) },
    { header: "VALUE", cell: (a) => figure(a.value) },
    { header: "THRESHOLD", cell: (a) => `${a.thresholdName} ${figure(a.threshold)}` },
    { header: "SINCE", cell: (a) => (a.since ? timestampDate(a.since).toISOString() : "-") },
    { header: "FOR", cell: (a) => age(a.since) },
    { header: "NODE ID", cell: (a) => a.node, wideOnly: true },
  ],
});

const THRESHOLDS: ListView<auction.AlertThreshold> = {
  json: auction.AlertThresholdSchema,
  name: (t) => t.name,
  columns: [
    { header: "NAME", cell: (t) => t.name },
    { header: "VALUE", cell: (t) => figure(t.value) },
    { header: "DEFAULT", cell: (t) => figure(t.defaultValue) },
    { header: "RANGE", cell: (t) => `${figure(t.min)}..${figure(t.max)}` },
    { header: "MEASURES", cell: (t) => t.description, clip: true },
  ],
};

/** A threshold's value as typed: a decimal number ("0.75", "20"); anything else is a usage error. */
function thresholdValue(value: string): number {
  const text = value.trim();
  if (!/^-?(\d+(\.\d*)?|\.\d+)$/.test(text)) throw new InvalidArgumentError("It must be a decimal number, such as 0.75 or 20.");
  return Number(text);
}

export function alertsCommands(program: Command): void {
  const alerts = program
    .command("alerts")
    .description(
      "the cluster's active alerts (a node's load, memory, pressure, disk wear or lease age past a threshold), and the thresholds",
    )
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      `
Every heartbeat carries the node's load, pressure (PSI), memory and disk wear; the aggregator holds
them against its thresholds ([alerts] in its configuration, changed at runtime with
aether alerts thresholds set) and its own sweep holds each node's lease age against lease_age_*.
Raised and cleared alerts are also cluster events (aether cluster events).

Examples:
  aether alerts
  aether alerts list --node n1 --json
  aether alerts thresholds
  aether alerts thresholds set cpu_warning 0.75
  aether alerts thresholds set cpu_critical 0.90`,
    );
  const globals = (): GlobalOptions => {
    const address =
      alerts.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  outputOptions(alerts.command("list", { isDefault: true }), "list")
    .description("the active alerts, oldest first: node, alert, severity, value, threshold, since when (the default)")
    .option("--node <node>", "only this node's (id or name)")
    .addHelpText("after", "\nExamples:\n  aether alerts\n  aether alerts list --node n1\n  aether alerts --json\n  aether alerts -o name")
    .action(async (o: { node?: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { alerts: active } = await aether.aggregator.listAlerts({ node: o.node ?? "" });
        if (active.length === 0 && !forPrograms(o)) {
          process.stdout.write("no active alerts.\n");
          return;
        }
        printList(o, alertsView(["json", "yaml"].includes(formatOf(o)) ? (id) => id : await nodeNames(aether)), active);
      }),
    );

  const thresholds = alerts
    .command("thresholds")
    .description("the alert thresholds: list them (the default), or set one at runtime")
    .addHelpText(
      "after",
      "\nExamples:\n  aether alerts thresholds\n  aether alerts thresholds --json\n  aether alerts thresholds set cpu_warning 0.75",
    );
  outputOptions(thresholds.command("list", { isDefault: true }), "list")
    .description("every threshold: name, value, default, range, what it measures")
    .addHelpText(
      "after",
      "\nExamples:\n  aether alerts thresholds\n  aether alerts thresholds list --json\n  aether alerts thresholds list -o wide",
    )
    .action(async (o: OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { thresholds: all } = await aether.aggregator.listAlertThresholds({});
        printList(o, THRESHOLDS, all);
      }),
    );
  dryRunOption(outputOptions(thresholds.command("set")))
    .description("change one threshold now (kept by the aggregator across restarts and leader changes)")
    .argument("<name>", "the threshold (aether alerts thresholds lists them): cpu_warning, memory_critical, psi_io_warning, ...")
    .argument("<value>", "its new value (a decimal number within its range)", thresholdValue)
    .addHelpText(
      "after",
      "\nExamples:\n  aether alerts thresholds set cpu_warning 0.75\n  aether alerts thresholds set lease_age_warning 8",
    )
    .action(async (name: string, value: number, o: OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const { thresholds: all } = await aether.aggregator.listAlertThresholds({});
          const t = all.find((x) => x.name === name);
          if (!t)
            return sayWould(
              `set ${name} to ${figure(value)}, but the aggregator would refuse: there is no threshold ${name} (aether alerts thresholds)`,
            );
          const out =
            value < t.min || value > t.max
              ? `, but the aggregator would refuse: ${figure(value)} is outside ${figure(t.min)}..${figure(t.max)}`
              : "";
          return sayWould(`set ${name} from ${figure(t.value)} to ${figure(value)}${out}`);
        }
        const { threshold } = await aether.aggregator.setAlertThreshold({ name, value });
        if (!threshold) return;
        if (forPrograms(o)) return printOne(o, THRESHOLDS, threshold);
        process.stdout.write(
          `${threshold.name} is ${figure(threshold.value)} (default ${figure(threshold.defaultValue)}): ${threshold.description}\n`,
        );
      }),
    );
}
