// aether rollout status|list|promote|pause|resume|rollback: the rollouts of deployments on the
// cluster (issue 16), through aether-aggregator (found as aether deploy finds it). A rollout starts
// when a deployment's template changes and follows the deployment's strategy; these commands show
// where it is (with every decision and the figures it was based on) and steer it by hand.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { auction, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import {
  age,
  forPrograms,
  outputOptions,
  printEach,
  printFields,
  printList,
  printOne,
  shortId,
  type ListView,
  type OutputFlags,
} from "../output.js";
import { canRedraw } from "../progress.js";
import { clusterEvents, watch, watchOption, type WatchFlags } from "../watch.js";

const phaseName = (p: auction.RolloutPhase) => (auction.RolloutPhase[p] ?? String(p)).toLowerCase().replace(/_/g, " ");

export function strategyText(s: auction.DeploymentStrategy | undefined): string {
  switch (s?.kind.case) {
    case "immediate":
      return "immediate";
    case "canary": {
      const stages = s.kind.value.stages.length > 0 ? s.kind.value.stages : [5, 25, 50, 100];
      return `canary ${stages.join("/")} %`;
    }
    case "blueGreen":
      return "blue-green";
    case "ab":
      return `a/b ${s.kind.value.percent} % by ${s.kind.value.header !== "" ? `header ${s.kind.value.header}` : `cookie ${s.kind.value.cookie}`}`;
    case "rolling":
      return `rolling (surge ${s.kind.value.maxSurge}, unavailable ${s.kind.value.maxUnavailable})`;
    default:
      return "rolling";
  }
}

const ROLLOUTS: ListView<auction.Rollout> = {
  json: auction.RolloutSchema,
  name: (r) => r.deployment,
  columns: [
    { header: "DEPLOYMENT", cell: (r) => r.deployment },
    { header: "REVISIONS", cell: (r) => `${r.fromRevision} → ${r.toRevision}` },
    { header: "STRATEGY", cell: (r) => strategyText(r.strategy) },
    { header: "PHASE", cell: (r) => phaseName(r.phase) },
    { header: "STAGE", cell: (r) => String(r.stage + 1) },
    { header: "WEIGHT", cell: (r) => `${r.weight} %` },
    { header: "INSTANCES", cell: (r) => `${r.stableInstances} old, ${r.newInstances} new` },
    { header: "AGE", cell: (r) => age(r.createTime) },
    { header: "REASON", cell: (r) => r.phaseReason, clip: true, wideOnly: true },
    { header: "ID", cell: (r) => shortId(r.id), whole: (r) => r.id, wideOnly: true },
    { header: "TENANT", cell: (r) => r.tenant, wideOnly: true },
  ],
};

const DECISIONS: ListView<auction.RolloutDecision> = {
  json: auction.RolloutDecisionSchema,
  name: (h) => h.action,
  columns: [
    { header: "TIME", cell: (h) => (h.time ? new Date(timestampMs(h.time)).toISOString().slice(11, 23) : "-") },
    { header: "ACTION", cell: (h) => h.action },
    { header: "STAGE", cell: (h) => String(h.stage + 1) },
    { header: "WEIGHT", cell: (h) => `${h.weight} %` },
    { header: "REASON", cell: (h) => h.reason, clip: true },
    {
      header: "FIGURES",
      cell: (h) =>
        Object.entries(h.figures)
          .map(([k, v]) => `${k}=${v}`)
          .join(" "),
      wideOnly: true,
    },
  ],
};

function rolloutFields(r: auction.Rollout): Array<[string, string]> {
  return [
    ["deployment", `${r.deployment} (tenant ${r.tenant})`],
    ["rollout", r.id],
    ["revisions", `${r.fromRevision} → ${r.toRevision}`],
    ["strategy", strategyText(r.strategy)],
    ["phase", `${phaseName(r.phase)}${r.phaseReason ? `: ${r.phaseReason}` : ""}`],
    ["stage", `${r.stage + 1}, ${r.weight} % to revision ${r.toRevision}`],
    ["instances wanted", `${r.stableInstances} of revision ${r.fromRevision}, ${r.newInstances} of revision ${r.toRevision}`],
    ["started", r.createTime ? new Date(timestampMs(r.createTime)).toISOString() : "-"],
    ["ended", r.endTime ? new Date(timestampMs(r.endTime)).toISOString() : "-"],
  ];
}

/** The status of a rollout for people: its fields, then its decisions. */
function printStatus(o: OutputFlags, r: auction.Rollout): void {
  printFields(rolloutFields(r));
  process.stdout.write("\n");
  printList(o, DECISIONS, r.history);
}

export function rolloutCommands(program: Command): void {
  const rollout = program
    .command("rollout")
    .description("rollouts of deployments: a new revision brought in by the deployment's strategy (canary, blue-green, rolling, a/b)")
    .option("--aggregator <address>", "aether-aggregator to talk to (default: AETHER_AGGREGATOR, else the node address)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether rollout status web\n  aether rollout status web -w      a live view until it ends\n  aether rollout list\n  aether rollout pause web\n  aether rollout promote web\n  aether rollout rollback web",
    );
  const globals = (): GlobalOptions => {
    const address =
      rollout.opts<{ aggregator?: string }>().aggregator ?? process.env.AETHER_AGGREGATOR ?? program.opts<GlobalOptions>().address;
    return address === undefined ? { peer: "aether-aggregator" } : { address, peer: "aether-aggregator" };
  };

  outputOptions(rollout.command("status"))
    .description("where a deployment's latest rollout is: phase, stage, weight, and every decision with its figures")
    .argument("<name>", "deployment name or id, or rollout id")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-w, --watch", "keep it on screen, redrawn at each change until the rollout ends (Ctrl-C to stop)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether rollout status web\n  aether rollout status web -w\n  aether rollout status web -o json\n  aether rollout status web -w -o json   one JSON object per change",
    )
    .action(async (name: string, o: { tenant: string; watch?: boolean } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        if (!o.watch) {
          const { rollout: r } = await aether.aggregator.getRollout({ rollout: name, tenant: o.tenant });
          if (!r) throw new Error("the aggregator returned no rollout");
          if (forPrograms(o)) return printOne(o, ROLLOUTS, r);
          return printStatus(o, r);
        }
        const redraw = !forPrograms(o) && canRedraw(process.stdout);
        for await (const { rollout: r } of aether.aggregator.watchRollout({ rollout: name, tenant: o.tenant })) {
          if (!r) continue;
          if (forPrograms(o)) {
            printEach(o, ROLLOUTS, r, "");
            continue;
          }
          process.stdout.write(redraw ? "\x1b[H\x1b[2J" : "\n");
          printStatus(o, r);
        }
      }),
    );

  const list = rollout
    .command("list")
    .description("rollouts, newest first (the running ones and the last ten of each deployment)")
    .option("--tenant <tenant>", "only this tenant's", "")
    .option("--deployment <name>", "only this deployment's", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether rollout list\n  aether rollout list --deployment web -o wide\n  aether rollout list --json\n  aether rollout list -w",
    );
  watchOption(outputOptions(list, "list")).action(async (o: { tenant: string; deployment: string } & OutputFlags & WatchFlags) =>
    withClient(globals(), async (aether) => {
      const read = async () =>
        (await aether.aggregator.listRollouts({ tenant: o.tenant, deployment: o.deployment, pageSize: 1000 })).rollouts;
      if (o.watch)
        return watch({
          what: `rollouts on ${aether.address}`,
          list: read,
          view: ROLLOUTS,
          output: o,
          key: (r) => r.id,
          changes: clusterEvents(aether, o.tenant),
        });
      printList(o, ROLLOUTS, await read());
    }),
  );

  type Steer = (aether: AetherClient, req: { rollout: string; tenant: string }) => Promise<{ rollout?: auction.Rollout }>;
  const act = (verb: "promote" | "pause" | "resume" | "rollback", description: string, call: Steer) =>
    outputOptions(rollout.command(verb))
      .description(description)
      .argument("<name>", "deployment name or id, or rollout id")
      .option("--tenant <tenant>", "tenant to resolve a name in", "")
      .addHelpText("after", `\nExamples:\n  aether rollout ${verb} web\n  aether rollout ${verb} web --json`)
      .action(async (name: string, o: { tenant: string } & OutputFlags) =>
        withClient(globals(), async (aether) => {
          const { rollout: r } = await call(aether, { rollout: name, tenant: o.tenant });
          if (!r) throw new Error("the aggregator returned no rollout");
          if (forPrograms(o)) return printOne(o, ROLLOUTS, r);
          process.stdout.write(`rollout of ${r.deployment} (revision ${r.fromRevision} → ${r.toRevision}): ${r.phaseReason}\n`);
        }),
      );
  act("pause", "hold a rollout where it is: no further stage, no evaluation (resume goes on)", (a, req) => a.aggregator.pauseRollout(req));
  act("resume", "let a paused rollout go on from its stage (the stage's hold counts again)", (a, req) => a.aggregator.resumeRollout(req));
  act("promote", "skip the remaining stages: the new revision takes every instance and all the traffic once ready", (a, req) =>
    a.aggregator.promoteRollout(req),
  );
  act("rollback", "send all traffic back to the previous revision, stop the new one and restore the previous template", (a, req) =>
    a.aggregator.rollbackRollout(req),
  );
}
