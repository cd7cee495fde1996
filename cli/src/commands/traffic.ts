// aether traffic list|get: the service endpoints of a node (aether.traffic.v1), each an HAProxy run
// by aetherd, with its backends' weights, health and live statistics as HAProxy reports them.
// Endpoints are made and changed by the cluster's rollouts (or PutEndpoint through the SDK).
import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { traffic } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { age, outputOptions, printFields, printList, printOne, formatOf, type ListView, type OutputFlags } from "../output.js";

const state = (s: traffic.BackendState) =>
  s === traffic.BackendState.DRAIN ? "drain" : s === traffic.BackendState.MAINT ? "maint" : "ready";
const proxyState = (e: traffic.Endpoint) => (e.proxy?.state === traffic.ProxyState.RUNNING ? "running" : "failed");

/** "v1 95, v2 5" */
const weights = (e: traffic.Endpoint) => (e.spec?.backends ?? []).map((b) => `${b.id} ${b.weight}`).join(", ");
const healthy = (e: traffic.Endpoint) => `${e.backends.filter((b) => b.healthy).length}/${e.backends.length}`;

const ENDPOINTS: ListView<traffic.Endpoint> = {
  json: traffic.EndpointSchema,
  name: (e) => e.spec?.name ?? "",
  columns: [
    { header: "NAME", cell: (e) => e.spec?.name ?? "" },
    { header: "LISTEN", cell: (e) => e.spec?.listen ?? "" },
    { header: "PROXY", cell: proxyState },
    { header: "HEALTHY", cell: healthy },
    { header: "WEIGHTS", cell: weights, clip: true },
    { header: "REQUESTS", cell: (e) => String(e.frontend?.totalRequests ?? 0n) },
    { header: "UP FOR", cell: (e) => age(e.proxy?.startTime) },
    { header: "PID", cell: (e) => String(e.proxy?.pid ?? 0), wideOnly: true },
    { header: "MESSAGE", cell: (e) => e.proxy?.message ?? "", wideOnly: true },
  ],
};

/** A backend's live statistics beside what was asked of it. */
interface BackendRow {
  stats: traffic.BackendStats;
  spec?: traffic.Backend;
}

const BACKENDS: ListView<BackendRow> = {
  json: (r) => toJson(traffic.BackendStatsSchema, r.stats),
  name: (r) => r.stats.id,
  columns: [
    { header: "BACKEND", cell: ({ stats: b }) => b.id },
    { header: "ADDRESS", cell: (r) => r.spec?.address ?? "" },
    { header: "STATE", cell: (r) => (r.spec ? state(r.spec.state) : "") },
    { header: "STATUS", cell: ({ stats: b }) => b.status },
    { header: "WEIGHT", cell: ({ stats: b }) => String(b.weight) },
    { header: "SESSIONS", cell: ({ stats: b }) => String(b.currentSessions) },
    { header: "REQUESTS", cell: ({ stats: b }) => String(b.totalRequests) },
    { header: "5XX", cell: ({ stats: b }) => String(b.responses5xx) },
    { header: "ERRORS", cell: ({ stats: b }) => String(b.errors) },
    { header: "AVG", cell: ({ stats: b }) => `${b.responseTimeAvgMs} ms` },
    { header: "P95", cell: ({ stats: b }) => (b.responseTimeP95Ms === undefined ? "-" : `${b.responseTimeP95Ms} ms`) },
    { header: "CHECK", cell: ({ stats: b }) => b.lastCheck },
  ],
};

export function trafficCommands(program: Command): void {
  const cmd = program
    .command("traffic")
    .description("the node's service endpoints: one HAProxy each, its backends' weights, health and statistics")
    .addHelpText(
      "after",
      `
An endpoint listens on an address and sends requests to its backends by weight (or splits callers
A/B by a header or cookie); rollouts change the weights at runtime, without reloading HAProxy.

Examples:
  aether traffic
  aether traffic list -o wide
  aether traffic get web
  aether traffic get web --json`,
    );
  outputOptions(cmd.command("list", { isDefault: true }), "list")
    .description("every endpoint: name, listen address, proxy state, healthy backends, weights, requests (the default)")
    .addHelpText("after", "\nExamples:\n  aether traffic\n  aether traffic list --json\n  aether traffic list -o name")
    .action(async (o: OutputFlags) =>
      withClient(program.opts<GlobalOptions>(), async (aether) => {
        const { endpoints } = await aether.traffic.listEndpoints({});
        if (endpoints.length === 0 && formatOf(o) === "table") {
          process.stdout.write("no endpoints on this node.\n");
          return;
        }
        printList(o, ENDPOINTS, endpoints);
      }),
    );
  outputOptions(cmd.command("get"))
    .description("one endpoint: its proxy, split and checks, and each backend's live statistics")
    .argument("<name>", "the endpoint's name")
    .addHelpText("after", "\nExamples:\n  aether traffic get web\n  aether traffic get web -o json")
    .action(async (name: string, o: OutputFlags) =>
      withClient(program.opts<GlobalOptions>(), async (aether) => {
        const { endpoint } = await aether.traffic.getEndpoint({ name });
        if (!endpoint) return;
        printOne(o, ENDPOINTS, endpoint);
        if (!["table", "wide"].includes(formatOf(o))) return;
        const spec = endpoint.spec;
        const check = spec?.healthCheck;
        const split = spec?.abSplit;
        printFields([
          ["name", spec?.name ?? ""],
          ["listen", spec?.listen ?? ""],
          [
            "proxy",
            `${proxyState(endpoint)}, pid ${endpoint.proxy?.pid ?? 0}, HAProxy ${endpoint.proxy?.version ?? ""}, restarts ${endpoint.proxy?.restarts ?? 0}`,
          ],
          ...(endpoint.proxy?.message ? ([["message", endpoint.proxy.message]] as Array<[string, string]>) : []),
          [
            "check",
            check?.kind.case === "http"
              ? `HTTP GET ${check.kind.value.path} expects ${check.kind.value.expectedStatus}, every ${check.intervalMs} ms (timeout ${check.timeoutMs} ms, rise ${check.rise}, fall ${check.fall})`
              : `TCP connect every ${check?.intervalMs ?? 0} ms (timeout ${check?.timeoutMs ?? 0} ms, rise ${check?.rise ?? 0}, fall ${check?.fall ?? 0})`,
          ],
          ...(split
            ? ([
                [
                  "a/b split",
                  `by ${split.key.case} ${split.key.value}: ${split.percentA}% to ${split.sideA.join(", ")}, the rest to ${split.sideB.join(", ")}`,
                ],
              ] as Array<[string, string]>)
            : []),
          ["requests", `${endpoint.frontend?.totalRequests ?? 0n} received, ${endpoint.frontend?.responses5xx ?? 0n} answered 5xx`],
          ["config", endpoint.proxy?.configPath ?? ""],
        ]);
        process.stdout.write("\n");
        const specs = new Map((spec?.backends ?? []).map((b) => [b.id, b]));
        printList(
          o,
          BACKENDS,
          endpoint.backends.map((b) => ({ stats: b, spec: specs.get(b.id) })),
        );
      }),
    );
}
