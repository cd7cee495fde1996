// A node's BidService in the test process, on its own loopback port (plain HTTP/2), whose behaviour
// the test sets: a fixed score, a decline with a reason, a hang, an error, a garbage score, a slow
// answer, an answer in another node's name, failing provisioning. It records every call it gets, so
// a test can check who was asked, who provisioned and who released.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  BidBreakdownSchema,
  BidFactorSchema,
  BidService,
  ExecuteProvisioningResponseSchema,
  RequestBidResponseSchema,
  type ExecuteProvisioningRequest,
  type ReleaseWorkloadRequest,
  type RequestBidRequest,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableSchema, ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellSchema } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { VmSchema } from "@aether/sdk/gen/aether/vm/v1/vm_pb";

export interface BidBehaviour {
  /** The score to answer (default 500); -1 declines, anything out of 1..1000 is garbage on purpose. */
  score?: number;
  /** decline_reason sent with -1. */
  declineReason?: string;
  /** Breakdown factors sent with the score (e.g. { name: "disk_wear", value: 0.9 }). */
  factors?: Array<{ name: string; value: number; weight?: number }>;
  /** Answer only after this long. */
  delayMs?: number;
  /** Never answer (until the caller gives up). */
  hang?: boolean;
  /** Fail the call with this code and message. */
  error?: { code: Code; message: string };
  /** Node id to put in the answer (default: this node's id); another id makes it a misrouted/duplicate answer. */
  answerAs?: string;
  /** Provisioning: succeed (default), fail with a message, or hang. */
  provision?: "ok" | "hang" | { fail: string };
}

export interface FakeBidder {
  readonly nodeId: string;
  /** http://127.0.0.1:<port>, the address to register. */
  readonly address: string;
  behaviour: BidBehaviour;
  readonly bidRequests: RequestBidRequest[];
  readonly provisioned: ExecuteProvisioningRequest[];
  readonly released: ReleaseWorkloadRequest[];
  close(): Promise<void>;
}

const wait = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Starts a fake node. By default on 127.0.0.1:<free port> (address http://...); with `socket`, on that
 * unix socket instead (address unix://...), as a local aetherd serves.
 */
export async function startFakeBidder(
  nodeId: string,
  behaviour: BidBehaviour = {},
  options: { socket?: string } = {},
): Promise<FakeBidder> {
  const bidRequests: RequestBidRequest[] = [];
  const provisioned: ExecuteProvisioningRequest[] = [];
  const released: ReleaseWorkloadRequest[] = [];
  const state = { behaviour };
  const routes = (router: ConnectRouter) =>
    router.service(BidService, {
      async requestBid(req, context) {
        bidRequests.push(req);
        const b = state.behaviour;
        if (b.hang) {
          await wait(3_600_000, context.signal);
          throw new ConnectError("the caller gave up", Code.Canceled);
        }
        if (b.delayMs !== undefined) await wait(b.delayMs, context.signal);
        if (b.error) throw new ConnectError(b.error.message, b.error.code);
        const score = b.score ?? 500;
        return create(RequestBidResponseSchema, {
          node: b.answerAs ?? nodeId,
          score,
          breakdown: create(BidBreakdownSchema, {
            factors: (b.factors ?? []).map((f) =>
              create(BidFactorSchema, { name: f.name, value: f.value, weight: f.weight ?? 1, detail: "set by the test" }),
            ),
            declineReason: score === -1 ? (b.declineReason ?? "") : "",
          }),
        });
      },
      async executeProvisioning(req, context) {
        provisioned.push(req);
        const p = state.behaviour.provision ?? "ok";
        if (p === "hang") {
          await wait(3_600_000, context.signal);
          throw new ConnectError("the caller gave up", Code.Canceled);
        }
        if (p !== "ok") throw new ConnectError(p.fail, Code.Internal);
        const spec = req.spec;
        const id = `${nodeId}-${spec?.workloadId ?? "none"}`;
        const name = spec?.name ?? "";
        switch (spec?.kind.case) {
          case "cell":
            return create(ExecuteProvisioningResponseSchema, {
              node: nodeId,
              resource: { case: "cell", value: create(CellSchema, { id, name }) },
            });
          case "vm":
            return create(ExecuteProvisioningResponseSchema, {
              node: nodeId,
              resource: { case: "vm", value: create(VmSchema, { id, name }) },
            });
          default:
            return create(ExecuteProvisioningResponseSchema, {
              node: nodeId,
              resource: { case: "executable", value: create(ExecutableSchema, { id, name, state: ExecutableState.RUNNING }) },
            });
        }
      },
      async releaseWorkload(req) {
        released.push(req);
        return { released: provisioned.some((p) => p.spec?.workloadId === req.workloadId) };
      },
    });
  const server = http2.createServer({}, connectNodeAdapter({ routes }));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (options.socket !== undefined) server.listen(options.socket, () => resolve());
    else server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = options.socket !== undefined ? `unix://${options.socket}` : `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    nodeId,
    address,
    get behaviour() {
      return state.behaviour;
    },
    set behaviour(b: BidBehaviour) {
      state.behaviour = b;
    },
    bidRequests,
    provisioned,
    released,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}
