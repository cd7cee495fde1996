// Where the aggregator's failures become RPC codes: a ConnectError passes as it is; the store's
// errors become UNAVAILABLE sentences (nothing was recorded, retry); anything else is logged with its
// stack and reaches the caller as INTERNAL.
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { describeError, internal, unavailable } from "@aether/server";
import { NotLeaderError, StoreUnavailableError } from "../store/store.js";

export function toConnectError(err: unknown, log: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof NotLeaderError)
    return unavailable(`this replica lost its leadership while acting (${err.message}); retry: another replica leads within seconds.`);
  if (err instanceof StoreUnavailableError) return unavailable(`the cluster store is unavailable, so nothing was recorded: ${err.message}`);
  log.error({ err: describeError(err), stack: (err as Error).stack }, "internal error");
  return internal(`internal error in aether-aggregator: ${describeError(err)}; its log has the details.`);
}
