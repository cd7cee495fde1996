// The SDK in the browser: the generated service descriptors of @aether/sdk over
// @connectrpc/connect-web, to `aether ui`, which forwards /api/node to aetherd and /api/cluster to
// aether-aggregator with the operator's credentials.
import { createClient, ConnectError } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { ObserveService } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { AggregatorService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";

const cluster = createConnectTransport({ baseUrl: `${location.origin}/api/cluster` });

/** The cluster's aggregator. */
export const aggregator = createClient(AggregatorService, cluster);

function nodeClients(baseUrl: string) {
  const node = createConnectTransport({ baseUrl });
  return {
    vm: createClient(VmService, node),
    storage: createClient(StorageService, node),
    runtime: createClient(ExecutableService, node),
    cells: createClient(CellService, node),
    observe: createClient(ObserveService, node),
    node: createClient(NodeService, node),
  };
}

/** The clients of one aetherd's services. */
export type NodeApi = ReturnType<typeof nodeClients>;
const nodes = new Map<string, NodeApi>();

/**
 * The clients of a node: the aetherd `aether ui` was started for (no id), or a cluster node by
 * its id, which `aether ui` reaches at the address the aggregator registered for it.
 */
export function nodeApi(id?: string): NodeApi {
  const key = id ?? "";
  let found = nodes.get(key);
  if (found === undefined)
    nodes.set(
      key,
      (found = nodeClients(id === undefined ? `${location.origin}/api/node` : `${location.origin}/api/nodes/${encodeURIComponent(id)}`)),
    );
  return found;
}

/** What `aether ui` talks to: aetherd's address, and the aggregator's when one is configured. */
export interface UiConfig {
  node: string;
  cluster: string | null;
}

export async function loadConfig(): Promise<UiConfig> {
  const r = await fetch("/config.json");
  if (!r.ok) throw new Error(await r.text());
  return (await r.json()) as UiConfig;
}

/** The server's sentence, without the RPC code Connect puts before it. */
export function sentence(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : String((err as Error)?.message ?? err);
}
