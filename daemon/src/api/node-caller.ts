// The node-to-node services (live migration's target side, replication's receiving side) answer only
// another aetherd: a node certificate of this cluster over mutual TLS, or the unix socket (tests and
// tools on the same host). One check, so both services agree on what a node is.
import type { HandlerContext } from "@connectrpc/connect";
import { permissionDenied, scopeKey } from "@aether/server";

/**
 * The calling node's name (from spiffe://<cluster>/node/<name>), "" for the unix socket; anything
 * else is refused, naming the service and what calls it (`calledBy`, e.g. "a live migration").
 */
export function requireNodeCaller(ctx: HandlerContext, service: string, calledBy: string): string {
  const { identity } = ctx.values.get(scopeKey);
  if (identity.startsWith("unix:")) return "";
  const node = /^spiffe:\/\/[^/]+\/node\/([^/]+)$/.exec(identity)?.[1];
  if (node !== undefined) return node;
  throw permissionDenied(
    `${identity || "this caller"} is not a node: ${service} is called by the source aetherd of ${calledBy}, with its node certificate (spiffe://<cluster>/node/<name>).`,
  );
}
