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

const node = createConnectTransport({ baseUrl: `${location.origin}/api/node` });
const cluster = createConnectTransport({ baseUrl: `${location.origin}/api/cluster` });

export const api = {
  vm: createClient(VmService, node),
  storage: createClient(StorageService, node),
  runtime: createClient(ExecutableService, node),
  cells: createClient(CellService, node),
  observe: createClient(ObserveService, node),
  node: createClient(NodeService, node),
  aggregator: createClient(AggregatorService, cluster),
};

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
