// Validation at the edge, the aggregator's own rules (node ids, node addresses, idempotency keys);
// the general ones (names, tenants, labels, filters, pages) are every server's, in @aether/server.
import { clip, invalidArgument, isLoopbackHost } from "@aether/server";

const NODE_ID = /^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/;

/** A node id (aether.node.v1 NodeInfo.id, a UUID on aetherd): letters, digits, '.', '_', ':' and '-', at most 128. */
export function nodeId(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is empty: give the node's id (aether node info shows it).`);
  if (!NODE_ID.test(value)) {
    throw invalidArgument(
      `${field} ${JSON.stringify(clip(value))} is not a valid node id: use 1 to 128 letters, digits, '.', '_', ':' and '-'.`,
    );
  }
  return value;
}

/** An idempotency key: empty (none) or up to 128 printable characters without '/'. */
export function requestId(value: string): string {
  if (value.length > 128 || /[\u0000-\u001f\u007f/]/.test(value)) {
    throw invalidArgument(`request_id ${JSON.stringify(clip(value))} is invalid: use at most 128 printable characters without '/'.`);
  }
  return value;
}

/** Where the aggregator reaches a node's aetherd. */
export type NodeAddress =
  | { kind: "unix"; path: string; address: string }
  | { kind: "https"; url: string; address: string }
  | { kind: "http"; url: string; address: string };

/**
 * A node's address: `unix:///absolute/path.sock`, `https://host:port` (mutual TLS, as aetherd serves
 * TCP) or, on loopback only, plain `http://127.0.0.1:port`.
 */
export function nodeAddress(field: string, value: string): NodeAddress {
  const hint = "use unix:///path/to/aetherd.sock, https://host:port, or http://127.0.0.1:port on loopback.";
  if (value === "") throw invalidArgument(`${field} is empty: give the address the aggregator reaches this node's aetherd at; ${hint}`);
  if (value.length > 1024 || /[\u0000-\u001f\u007f\s]/.test(value))
    throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not an address; ${hint}`);
  if (value.startsWith("unix://")) {
    const path = value.slice("unix://".length);
    if (!path.startsWith("/"))
      throw invalidArgument(`${field} ${JSON.stringify(clip(value))} must name an absolute socket path (unix:///run/aether/aetherd.sock).`);
    return { kind: "unix", path, address: value };
  }
  if (value.startsWith("https://") || value.startsWith("http://")) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not a valid URL; ${hint}`);
    }
    if (url.port === "" || (url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.username !== "") {
      throw invalidArgument(`${field} ${JSON.stringify(clip(value))} must be scheme://host:port with nothing after the port; ${hint}`);
    }
    const base = `${url.protocol}//${url.host}`;
    if (url.protocol === "http:") {
      if (!isLoopbackHost(url.hostname)) {
        throw invalidArgument(
          `${field} ${JSON.stringify(clip(value))} is plain HTTP on a non-loopback host: aetherd serves TCP with mutual TLS, so use https://${url.host}.`,
        );
      }
      return { kind: "http", url: base, address: value };
    }
    return { kind: "https", url: base, address: value };
  }
  throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not understood; ${hint}`);
}
