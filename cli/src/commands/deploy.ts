// aether deploy apply|list|get|delete|watch and aether scale: deployments on the cluster (issue 15),
// through aether-aggregator (found as aether cluster finds it: --aggregator, AETHER_AGGREGATOR, else
// the node address). A deployment file is TOML: the Deployment message in the proto3 JSON mapping
// (field names as in the .proto or in camelCase), with two conveniences people expect of a file they
// write by hand: sizes as text ("256M") in any *_bytes field, and restart_policy as always,
// on-failure or never.
//
//   name = "web"
//   instances = 3
//   labels = { team = "a" }
//   [template]
//   restart_policy = "always"
//   requirements = { cpu_millis = 100, memory_bytes = "64M", node_selector = { zone = "a" } }
//   [template.executable]
//   argv = ["/usr/bin/python3", "-m", "http.server", "8080"]
import { readFileSync } from "node:fs";
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { parse as parseToml } from "smol-toml";
import { auction, Code, ConnectError } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import {
  age,
  forPrograms,
  labelsText,
  outputOptions,
  printEach,
  printFields,
  printList,
  printOne,
  shortId,
  type ListView,
  type OutputFlags,
} from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { uint32 } from "../numbers.js";
import { parseBytes } from "../units.js";
import { canRedraw } from "../progress.js";
import { nodeNames } from "./cluster.js";
import { strategyText } from "./rollout.js";

const enumName = (names: Record<number, string>, value: number) => (names[value] ?? String(value)).toLowerCase().replace(/_/g, " ");
const deploymentState = (s: auction.DeploymentState) => enumName(auction.DeploymentState, s);
const placementState = (s: auction.PlacementState) => enumName(auction.PlacementState, s);
const restartPolicy = (p: auction.RestartPolicy | undefined) =>
  p === auction.RestartPolicy.NEVER ? "never" : p === auction.RestartPolicy.ON_FAILURE ? "on-failure" : "always";
const kindOf = (d: auction.Deployment) =>
  d.template?.kind.case === "vm" ? "vm" : d.template?.kind.case === "executable" ? "executable" : "-";

const DEPLOYMENTS: ListView<auction.Deployment> = {
  json: auction.DeploymentSchema,
  name: (d) => d.name,
  columns: [
    { header: "NAME", cell: (d) => d.name },
    { header: "TENANT", cell: (d) => d.tenant },
    { header: "KIND", cell: (d) => kindOf(d) },
    { header: "READY", cell: (d) => `${d.runningInstances}/${d.instances}` },
    { header: "REVISION", cell: (d) => String(d.revision) },
    { header: "STATE", cell: (d) => deploymentState(d.state) + (d.stateReason ? ` (${d.stateReason})` : ""), clip: true },
    { header: "AGE", cell: (d) => age(d.createTime) },
    { header: "ID", cell: (d) => shortId(d.id), whole: (d) => d.id, wideOnly: true },
    { header: "LABELS", cell: (d) => labelsText(d.labels), wideOnly: true },
  ],
};

function instancesView(node: (id: string) => string): ListView<auction.DeploymentInstance> {
  return {
    json: auction.DeploymentInstanceSchema,
    name: (i) => i.name,
    columns: [
      { header: "INSTANCE", cell: (i) => i.name },
      { header: "STATE", cell: (i) => placementState(i.state) + (i.stateReason ? ` (${i.stateReason})` : ""), clip: true },
      { header: "NODE", cell: (i) => node(i.node) },
      { header: "REVISION", cell: (i) => String(i.revision) },
      { header: "PLACED", cell: (i) => age(i.placeTime) },
      { header: "WORKLOAD", cell: (i) => shortId(i.workloadId), whole: (i) => i.workloadId },
      { header: "RESOURCE", cell: (i) => shortId(i.resourceId), whole: (i) => i.resourceId, wideOnly: true },
    ],
  };
}

/** The JSON of a deployment with its instances (get, watch). */
const viewJson = (d: auction.Deployment | undefined, instances: auction.DeploymentInstance[]) => ({
  deployment: d ? toJson(auction.DeploymentSchema, d) : null,
  instances: instances.map((i) => toJson(auction.DeploymentInstanceSchema, i)),
});

function deploymentFields(d: auction.Deployment): Array<[string, string]> {
  return [
    ["name", d.name],
    ["tenant", d.tenant],
    ["id", d.id],
    ["state", `${deploymentState(d.state)}${d.stateReason ? `: ${d.stateReason}` : ""}`],
    ["instances", `${d.runningInstances} running, ${d.pendingInstances} being placed, ${d.instances} wanted`],
    ["revision", String(d.revision)],
    ["kind", kindOf(d)],
    ["restart policy", restartPolicy(d.template?.restartPolicy)],
    ["strategy", strategyText(d.strategy)],
    ["endpoint", d.traffic ? `${d.traffic.listen} on node ${d.traffic.node}` : "-"],
    ["labels", labelsText(d.labels) || "-"],
    ["created", d.createTime ? new Date(timestampMs(d.createTime)).toISOString() : "-"],
  ];
}

/** Sizes as text in *_bytes fields, and short restart policies, turned into what the JSON mapping reads. */
function conveniences(value: unknown, key = ""): unknown {
  if (Array.isArray(value)) return value.map((v) => conveniences(v));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = conveniences(v, k);
    return out;
  }
  if (typeof value === "string" && /(_bytes|Bytes)$/.test(key) && !/^\d+$/.test(value)) return parseBytes(value).toString();
  if (typeof value === "string" && (key === "restart_policy" || key === "restartPolicy") && !value.startsWith("RESTART_POLICY_"))
    return `RESTART_POLICY_${value.toUpperCase().replace(/-/g, "_")}`;
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** Reads a deployment file; a file that cannot be read or does not describe a deployment is a usage error (exit 2). */
export function readDeploymentFile(path: string, cmd: Command): auction.Deployment {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    cmd.error(`error: cannot read ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = parseToml(text);
  } catch (err) {
    cmd.error(`error: ${path} is not TOML: ${(err as Error).message.split("\n")[0]}`);
  }
  try {
    return fromJson(auction.DeploymentSchema, conveniences(parsed) as JsonValue);
  } catch (err) {
    cmd.error(`error: ${path} does not describe a deployment: ${(err as Error).message}`);
  }
}

export function deployCommands(program: Command): void {
  const deploy = program
    .command("deploy")
    .description("deployments on the cluster: a template and a number of instances that aether-aggregator keeps running")
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether deploy apply web.toml\n  aether deploy list\n  aether deploy get web\n  aether deploy watch web\n  aether scale web --instances 5\n  aether deploy delete web",
    );
  const globals = (cmd: Command = deploy): GlobalOptions => {
    const address =
      cmd.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  dryRunOption(outputOptions(deploy.command("apply")))
    .description("create the deployment a TOML file describes, or update it to match (a changed template is a new revision)")
    .argument("<file>", "deployment file (TOML: name, instances, labels, [template] with executable or vm)")
    .option("--tenant <tenant>", "tenant, when the file names none")
    .option("--request-id <id>", "idempotency key for the create: a retry returns the first deployment")
    .addHelpText(
      "after",
      `
Examples:
  aether deploy apply web.toml
  aether deploy apply web.toml --dry-run
  aether deploy apply fleet.toml --json

A file:
  name = "web"
  instances = 3
  [template]
  restart_policy = "always"          # always | on-failure | never
  requirements = { cpu_millis = 100, memory_bytes = "64M", node_selector = { zone = "a" } }
  [template.executable]
  argv = ["/usr/bin/python3", "-m", "http.server", "8080"]
A VM: [template.vm] as CreateVmRequest (vcpus, memory_bytes = "256M", boot, disks, nics, cloud_init).`,
    )
    .action(async (file: string, o: { tenant?: string; requestId?: string } & OutputFlags & DryRunFlags, cmd: Command) => {
      const wanted = readDeploymentFile(file, cmd);
      if (wanted.name === "") cmd.error(`error: ${file} names no deployment: add name = "..." at its top`);
      if (o.tenant !== undefined && wanted.tenant === "") wanted.tenant = o.tenant;
      return withClient(globals(), async (aether) => {
        const existing = await aether.aggregator.getDeployment({ deployment: wanted.name, tenant: wanted.tenant }).then(
          (r) => r.deployment,
          (err: unknown) => {
            if (ConnectError.from(err).code === Code.NotFound) return undefined;
            throw err;
          },
        );
        if (o.dryRun) {
          if (!existing) return sayWould(`create deployment ${wanted.name} with ${wanted.instances} instance(s)`);
          return sayWould(
            `update deployment ${wanted.name} to ${wanted.instances} instance(s) (revision ${existing.revision} goes up only if the template changed)`,
          );
        }
        let result: auction.Deployment | undefined;
        let said: string;
        if (!existing) {
          result = (await aether.aggregator.createDeployment({ deployment: wanted, requestId: o.requestId ?? "" })).deployment;
          said = `deployment ${wanted.name} created: ${wanted.instances} instance(s) of revision ${result?.revision}`;
        } else {
          const updated = await aether.aggregator.updateDeployment({
            deployment: existing.id,
            tenant: existing.tenant,
            ...(wanted.template && { template: wanted.template }),
            instances: wanted.instances,
            labels: wanted.labels,
            replaceLabels: true,
            ...(wanted.strategy && { strategy: wanted.strategy }),
            ...(wanted.traffic && { traffic: wanted.traffic }),
          });
          result = updated.deployment;
          said = updated.templateChanged
            ? `deployment ${wanted.name} updated: revision ${result?.revision}, rolled out by its strategy (${strategyText(result?.strategy)}; aether rollout status ${wanted.name} -w follows it)`
            : `deployment ${wanted.name} updated: ${wanted.instances} instance(s), revision ${result?.revision} unchanged`;
        }
        if (forPrograms(o) && result) return printOne(o, DEPLOYMENTS, result);
        process.stdout.write(`${said} (aether deploy watch ${wanted.name} follows it)\n`);
      });
    });

  const list = deploy
    .command("list")
    .description("deployments, newest first: instances running of those wanted, revision and state")
    .option("--tenant <tenant>", "only this tenant's", "")
    .addHelpText("after", "\nExamples:\n  aether deploy list\n  aether deploy list -l team=a -o wide\n  aether deploy list --json");
  selectorOptions(outputOptions(list, "list")).action(async (o: { tenant: string } & SelectorFlags & OutputFlags) =>
    withClient(globals(), async (aether) => {
      const selector = selectorOf(o);
      const { deployments } = await aether.aggregator.listDeployments({ pageSize: 1000, tenant: o.tenant, filter: serverFilter(selector) });
      printList(
        o,
        DEPLOYMENTS,
        deployments.filter((d) => selects(selector, d.labels)),
      );
    }),
  );

  outputOptions(deploy.command("get"))
    .description("one deployment and its instances (where each runs, its state and revision)")
    .argument("<deployment>", "deployment name or id")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether deploy get web\n  aether deploy get web -o yaml")
    .action(async (name: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { deployment: d, instances } = await aether.aggregator.getDeployment({ deployment: name, tenant: o.tenant });
        if (!d) throw new Error("the aggregator returned no deployment");
        if (forPrograms(o)) {
          const json = viewJson(d, instances);
          return printOne(o, { json: () => json, name: () => d.name }, json);
        }
        printFields(deploymentFields(d));
        process.stdout.write("\n");
        printList(o, instancesView(await nodeNames(aether)), instances);
      }),
    );

  const remove = deploy
    .command("delete")
    .description(
      "delete deployments: every instance is released on its node, then the deployment is gone; by name, by label selector, or all",
    )
    .argument("[deployment...]", "deployment names or ids")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .option("--grace <seconds>", "how long each instance may take to stop before it is killed", uint32)
    .option("--wait", "return once the deployments and their instances are gone")
    .addHelpText(
      "after",
      "\nExamples:\n  aether deploy delete web\n  aether deploy delete web --wait --grace 5\n  aether deploy delete web --dry-run\n  aether deploy delete -l team=a --dry-run\n  aether deploy delete -l team=a --yes",
    )
    .action(async (refs: string[], o: { tenant: string; grace?: number; wait?: boolean } & DeleteFlags) =>
      withClient(globals(), async (aether) => {
        // A selected deployment is deleted by its id in its own tenant.
        const tenantOf = new Map<string, string>();
        const instances = (d: auction.Deployment) => d.runningInstances + d.pendingInstances;
        return deleteMany(refs, o, {
          kind: "deployment",
          list: async (selector) =>
            (await aether.aggregator.listDeployments({ pageSize: 1000, tenant: o.tenant, filter: serverFilter(selector) })).deployments,
          labels: (d) => d.labels,
          target: (d) => {
            tenantOf.set(d.id, d.tenant);
            return { name: d.name, id: d.id, detail: `and release its ${instances(d)} instance(s)` };
          },
          get: async (ref) => {
            const { deployment: d } = await aether.aggregator.getDeployment({ deployment: ref, tenant: o.tenant });
            if (!d) throw new Error("the aggregator returned no deployment");
            return d;
          },
          remove: async (ref) => {
            const { deployment: d } = await aether.aggregator.deleteDeployment({
              deployment: ref,
              tenant: tenantOf.get(ref) ?? o.tenant,
              ...(o.grace !== undefined && { gracePeriod: { seconds: BigInt(o.grace) } }),
            });
            if (!o.wait) return void process.stdout.write(`deployment ${d?.name} is being deleted\n`);
            try {
              for await (const r of aether.aggregator.watchDeployment({ deployment: d?.id ?? ref, tenant: d?.tenant ?? o.tenant }))
                if (r.deployment?.state === auction.DeploymentState.DELETED) break;
            } catch (err) {
              // Gone before the watch began (nothing was placed to release): deleted already.
              if (ConnectError.from(err).code !== Code.NotFound) throw err;
            }
            process.stdout.write(`deployment ${d?.name} deleted\n`);
          },
          removeSays: true,
        });
      }),
    );
  deleteManyOptions(remove, "deployment");

  outputOptions(deploy.command("watch"))
    .description("a live table of a deployment's instances, redrawn as they change, until it is deleted (Ctrl-C to stop)")
    .argument("<deployment>", "deployment name or id")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether deploy watch web\n  aether deploy watch web --json      one JSON object per change")
    .action(async (name: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const node = forPrograms(o) ? shortId : await nodeNames(aether);
        const redraw = !forPrograms(o) && canRedraw(process.stdout);
        for await (const r of aether.aggregator.watchDeployment({ deployment: name, tenant: o.tenant })) {
          const d = r.deployment;
          if (!d) continue;
          if (forPrograms(o)) {
            const json = viewJson(d, r.instances);
            printEach(o, { json: () => json, name: () => `${d.name} ${deploymentState(d.state)}` }, json, "");
            continue;
          }
          if (redraw) process.stdout.write("\x1b[H\x1b[2J");
          else process.stdout.write("\n");
          process.stdout.write(
            `${d.name}: ${deploymentState(d.state)}, ${d.runningInstances}/${d.instances} running, revision ${d.revision}${d.stateReason ? ` — ${d.stateReason}` : ""}\n`,
          );
          if (r.instances.length > 0) printList(o, instancesView(node), r.instances);
        }
      }),
    );

  const scale = program
    .command("scale")
    .description("set how many instances of a deployment run (scaling down removes the newest first)")
    .argument("<deployment>", "deployment name or id")
    .requiredOption("--instances <n>", "how many instances should run (0..1000)", uint32)
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether scale web --instances 5\n  aether scale web --instances 0\n  aether scale web --instances 3 --json",
    );
  dryRunOption(outputOptions(scale)).action(async (name: string, o: { instances: number; tenant: string } & OutputFlags & DryRunFlags) =>
    withClient(globals(scale), async (aether) => {
      if (o.dryRun) {
        const { deployment: now } = await aether.aggregator.getDeployment({ deployment: name, tenant: o.tenant });
        if (!now) throw new Error("the aggregator returned no deployment");
        return sayWould(
          `scale deployment ${now.name} from ${now.instances} to ${o.instances} instance(s) (${now.runningInstances} running now)`,
        );
      }
      const { deployment: d } = await aether.aggregator.scaleDeployment({ deployment: name, tenant: o.tenant, instances: o.instances });
      if (!d) throw new Error("the aggregator returned no deployment");
      if (forPrograms(o)) return printOne(o, DEPLOYMENTS, d);
      process.stdout.write(`deployment ${d.name} scaled to ${d.instances} instance(s) (${d.runningInstances} running now)\n`);
    }),
  );
}
