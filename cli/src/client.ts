// Every command connects the same way: --address, else AETHER_HOST, the client config, the default socket.
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk/client";
import { fail } from "./exit-codes.js";

export interface GlobalOptions {
  address?: string;
  /** What answers there, for error sentences (default aetherd; the cluster commands: aether-aggregator). */
  peer?: string;
}

/**
 * A cluster command that reached an aetherd instead of the aggregator (aetherd answers the
 * aggregator's service with UNIMPLEMENTED, saying it is an aetherd): says where the aggregator's
 * address goes. An UNIMPLEMENTED from the aggregator itself is left as it is.
 */
function notTheAggregator(err: unknown, address: string): unknown {
  if (!(err instanceof ConnectError) || err.code !== Code.Unimplemented || !err.rawMessage.includes("by this aetherd")) return err;
  return new ConnectError(
    `${address} is an aetherd, not aether-aggregator: give the aggregator's address with --aggregator or AETHER_AGGREGATOR (e.g. aether cluster --aggregator unix:///run/aether/aggregator.sock nodes).`,
    Code.Unimplemented,
  );
}

/** Connects, runs the command's work, closes, and turns any error into a message and an exit code. */
export async function withClient(globals: GlobalOptions, work: (aether: AetherClient) => Promise<void>): Promise<void> {
  let aether: AetherClient | undefined;
  try {
    aether = await connect({
      ...(globals.address !== undefined && { address: globals.address }),
      ...(globals.peer !== undefined && { peer: globals.peer }),
    });
    await work(aether);
  } catch (err) {
    aether?.close();
    fail(aether !== undefined && globals.peer === "aether-aggregator" ? notTheAggregator(err, aether.address) : err);
  }
  aether.close();
}
