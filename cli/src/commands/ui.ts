// aether ui: the web console on the operator's machine (issue 20). Serves the built app (ui/dist of
// @aether/ui) and forwards its calls to aetherd and aether-aggregator with this user's client config,
// like `kubectl proxy`; see ../ui/server.ts for the guards.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import { connect, resolveTarget } from "@aether/sdk/client";
import type { GlobalOptions } from "../client.js";
import { fail } from "../exit-codes.js";
import { startUiServer } from "../ui/server.js";
import { openUpstream } from "../ui/upstream.js";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** Where the built app is: @aether/ui's dist folder. */
export function uiStaticDir(): string {
  return join(dirname(createRequire(import.meta.url).resolve("@aether/ui/package.json")), "dist");
}

export function uiCommand(program: Command): void {
  program
    .command("ui")
    .description("the web console: serve it on loopback and forward its calls with your own credentials")
    .option("--listen <host:port>", "where to listen (port 0: any free port)", "127.0.0.1:8080")
    .option("--open", "open the console in the default browser (xdg-open)")
    .option("--aggregator <address>", "aether-aggregator for the cluster views (default: AETHER_AGGREGATOR; none: they are hidden)")
    .option("--allow-non-loopback", "listen on an address other people can reach (the token then guards the port alone)")
    .addHelpText(
      "after",
      `
The console talks to aetherd (--address, AETHER_HOST or the client config) and, when one is given,
to aether-aggregator, with the certificate and key of your client config, which never reach the
browser: the page can do what your identity may. It answers only to Host <listen address>, refuses
cross-origin requests, and wants the random token in the URL it prints (kept as a cookie).

Examples:
  aether ui
  aether ui --listen 127.0.0.1:9000 --open
  aether ui --aggregator unix:///run/aether/aggregator.sock
  aether --context prod ui --listen 127.0.0.1:0`,
    )
    .action(async (o: { listen: string; open?: boolean; aggregator?: string; allowNonLoopback?: boolean }, cmd: Command) => {
      const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(o.listen);
      if (match === null) cmd.error(`error: --listen wants host:port, e.g. 127.0.0.1:8080 (got ${o.listen})`, { exitCode: 2 });
      const host = (match[1] ?? match[2]) as string;
      const port = Number(match[3]);
      if (!LOOPBACK.test(host) && !o.allowNonLoopback)
        cmd.error(
          `error: ${host} is not a loopback address; the console acts with your credentials, so say --allow-non-loopback to listen there`,
          {
            exitCode: 2,
          },
        );
      try {
        const { address } = program.opts<GlobalOptions>();
        const nodeOptions = address !== undefined ? { address } : {};
        const aggregator = o.aggregator ?? process.env.AETHER_AGGREGATOR;
        const cluster = aggregator !== undefined && aggregator !== "" ? aggregator : undefined;
        const ui = await startUiServer(
          {
            staticDir: uiStaticDir(),
            node: openUpstream(resolveTarget(nodeOptions)),
            ...(cluster !== undefined && {
              cluster: openUpstream(resolveTarget({ address: cluster })),
              nodeAddress: nodeAddresses(cluster),
            }),
            open: (at) => openUpstream(resolveTarget({ address: at })),
            connectTo: (at) => connect({ ...(at === undefined ? nodeOptions : { address: at }), verify: false }),
          },
          host,
          port,
        );
        process.stdout.write(`aether ui: the web console is at ${ui.url()}\n(Ctrl-C stops it)\n`);
        if (o.open)
          spawn("xdg-open", [ui.url()], { stdio: "ignore", detached: true })
            .on("error", () => undefined)
            .unref();
        const stop = () => void ui.close().then(() => process.exit(0));
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      } catch (err) {
        fail(err);
      }
    });
}

/** A node's registered address by id, from the aggregator (asked again at most every 5 s). */
function nodeAddresses(aggregator: string): (id: string) => Promise<string | undefined> {
  let known = new Map<string, string>();
  let asked = 0;
  return async (id) => {
    if (!known.has(id) && Date.now() - asked > 5000) {
      asked = Date.now();
      const aether = await connect({ address: aggregator, peer: "aether-aggregator", verify: false });
      try {
        known = new Map((await aether.aggregator.listNodes({ pageSize: 1000 })).nodes.map((n) => [n.id, n.address]));
      } finally {
        aether.close();
      }
    }
    return known.get(id);
  };
}
