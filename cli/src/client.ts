// Every command connects the same way: --address, else AETHER_HOST, the client config, the default socket.
import { connect, type AetherClient } from "@aether/sdk";
import { fail } from "./exit-codes.js";

export interface GlobalOptions {
  address?: string;
  /** What answers there, for error sentences (default aetherd; the cluster commands: aether-aggregator). */
  peer?: string;
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
    fail(err);
  }
  aether.close();
}
