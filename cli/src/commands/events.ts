// aether events: the node's lifecycle events (ObserveService.StreamEvents), as they happen (issue 23,
// item 12). It follows, as `docker events` does and `kubectl get events -w` does: aetherd keeps no
// history of these events (StreamEvents is live only), so there is nothing to print and end on.
// --count ends after that many events, for scripts that wait for one.
import type { Command } from "commander";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, observe } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { uint32 } from "../numbers.js";
import { outputOptions, printEach, type OutputFlags, type View } from "../output.js";
import { watchParent } from "../watch.js";

const EVENTS: View<observe.Event> = { json: observe.EventSchema, name: (e) => e.resourceName || e.resourceId };

/** One line for people: when, kind, tenant/name, the sentence. */
export function eventLine(e: observe.Event): string {
  const when = e.time ? new Date(timestampMs(e.time)).toISOString() : "-";
  return `${when}  ${e.kind}  ${e.tenant}/${e.resourceName || e.resourceId}  ${e.message}`;
}

export function eventsCommand(program: Command): void {
  outputOptions(
    program
      .command("events")
      .description("the node's lifecycle events as they happen (executables, VMs, cells, fencing); Ctrl-C to stop")
      .option("--tenant <tenant>", "only this tenant's (default: every tenant you may see)", "")
      .option("--kind <prefix>", 'only kinds starting with this (repeatable), e.g. "vm." or "executable.exited"', collect)
      .option("--count <n>", "end after this many events", uint32)
      .addHelpText(
        "after",
        `
aetherd keeps no history of these events: the command shows what happens while it runs, and follows
until Ctrl-C (or --count). The cluster's events (nodes, placements) are aether cluster events.

Examples:
  aether events
  aether events --kind vm. --kind executable.exited
  aether events -o json --count 1 | jq .kind
  aether events --tenant team-a`,
      ),
  ).action(async (o: { tenant: string; kind?: string[]; count?: number } & OutputFlags) =>
    withClient(program.opts<GlobalOptions>(), async (aether) => {
      let seen = 0;
      if (o.count === 0) return;
      // It follows until told to stop, or until whoever started it is gone (watch.ts).
      watchParent();
      const abort = new AbortController();
      const stream = aether.observe.streamEvents({ tenant: o.tenant, kindPrefixes: o.kind ?? [] }, { signal: abort.signal });
      for await (const { event } of stream) {
        if (!event) continue;
        printEach(o, EVENTS, event, eventLine(event));
        if (o.count !== undefined && ++seen >= o.count) {
          abort.abort();
          return;
        }
      }
      // aetherd ends the stream only when it stops.
      throw new ConnectError(`the event stream of aetherd at ${aether.address} ended (did it stop?).`, Code.Unavailable);
    }),
  );
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
