// aether version: this command line's version and the version of the aetherd it talks to (issue 23,
// item 12). The client's is printed first, so it shows even when no daemon answers; then the
// daemon's, or the error that says why it could not be asked (exit 4 when it cannot be reached).
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { connect, type AetherClient } from "@aether/sdk/client";
import type { GlobalOptions } from "../client.js";
import { fail } from "../exit-codes.js";
import { formatOf, outputOptions, printOne, type OutputFlags, type View } from "../output.js";

interface Versions {
  client: { version: string; node: string };
  server?: { version: string; address: string; hostname: string; nodeId: string };
}

const VERSIONS: View<Versions> = { json: (v) => v, name: (v) => v.server?.version ?? v.client.version };

export function clientVersion(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

export function versionCommand(program: Command): void {
  outputOptions(
    program
      .command("version")
      .description("the versions of this command line and of the aetherd it talks to")
      .option("--client", "only this command line's (asks no daemon)")
      .addHelpText(
        "after",
        `
Examples:
  aether version
  aether version --client
  aether --context lab version -o json`,
      ),
  ).action(async (o: { client?: boolean } & OutputFlags) => {
    const versions: Versions = { client: { version: clientVersion(), node: process.version } };
    const forPeople = ["table", "wide"].includes(formatOf(o));
    if (forPeople) process.stdout.write(`client: aether ${versions.client.version} (node ${versions.client.node})\n`);
    if (o.client) {
      if (!forPeople) printOne(o, VERSIONS, versions);
      return;
    }
    let aether: AetherClient | undefined;
    try {
      const { address } = program.opts<GlobalOptions>();
      aether = await connect(address === undefined ? {} : { address });
      const { node } = await aether.node.getNodeInfo({});
      if (!node) throw new Error("aetherd returned no node");
      versions.server = { version: node.version, address: aether.address, hostname: node.hostname, nodeId: node.id };
      if (forPeople) process.stdout.write(`server: aetherd ${node.version} on ${node.hostname} at ${aether.address}\n`);
      else printOne(o, VERSIONS, versions);
    } catch (err) {
      // A script asking for JSON gets the client's part even when the daemon is not there.
      if (!forPeople) printOne(o, VERSIONS, versions);
      aether?.close();
      fail(err);
    }
    aether.close();
  });
}
