// A fake node for the auction bench that answers BidService in the Connect protocol (unary, binary
// protobuf) straight from node:http2's stream API, on its own loopback port: the same bytes on the
// same transport as a node's Connect server, at a third of its CPU cost.
//
// Why: in the bench every bidder shares the machine's 2 cores with the aggregator, which real nodes
// (each on its own host) do not. With the Connect server (test/helpers/fake-bidder.ts) 100 bidders
// cost ~0.35 ms of CPU each per auction (~35 ms per auction in one process), so the bench measured
// the bidders' queue more than the aggregator's decision. This one still decodes every request,
// checks the method, content type and protocol version, honours connect-timeout-ms and cancellation,
// and answers with an encoded RequestBidResponse (or a Connect error). BENCH_BIDDERS=connect runs
// the Connect-server bidders instead, for comparison.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString, parseTimeout } from "@connectrpc/connect/protocol-connect";
import {
  BidService,
  ExecuteProvisioningRequestSchema,
  ExecuteProvisioningResponseSchema,
  ReleaseWorkloadRequestSchema,
  ReleaseWorkloadResponseSchema,
  RequestBidRequestSchema,
  RequestBidResponseSchema,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableSchema, ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";

export interface LeanBehaviour {
  /** The score to answer (default 500). */
  score?: number;
  /** Never answer (until the caller cancels or its connect-timeout-ms passes). */
  hang?: boolean;
}

export interface LeanBidder {
  readonly address: string;
  close(): Promise<void>;
}

const path = (method: { name: string }) => `/${BidService.typeName}/${method.name}`;
const REQUEST_BID = path(BidService.method.requestBid);
const EXECUTE_PROVISIONING = path(BidService.method.executeProvisioning);
const RELEASE_WORKLOAD = path(BidService.method.releaseWorkload);

function sendError(stream: http2.ServerHttp2Stream, error: ConnectError): void {
  if (stream.closed || stream.headersSent) return;
  stream.respond({ ":status": codeToHttpStatus(error.code), "content-type": "application/json" });
  stream.end(JSON.stringify({ code: codeToString(error.code), message: error.rawMessage }));
}

function sendMessage<Desc extends DescMessage>(stream: http2.ServerHttp2Stream, schema: Desc, message: MessageShape<Desc>): void {
  if (stream.closed) return;
  stream.respond({ ":status": 200, "content-type": "application/proto" });
  stream.end(toBinary(schema, message));
}

export async function startLeanBidder(nodeId: string, behaviour: LeanBehaviour): Promise<LeanBidder> {
  const provisioned = new Set<string>();
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      try {
        answer(stream, headers, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
      } catch (err) {
        sendError(stream, ConnectError.from(err, Code.Internal));
      }
    });
  });

  function answer(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: Buffer): void {
    if (headers[":method"] !== "POST") return sendError(stream, new ConnectError("only POST is served", Code.Unimplemented));
    if (headers["content-type"] !== "application/proto")
      return sendError(stream, new ConnectError(`unsupported content type ${headers["content-type"]}`, Code.InvalidArgument));
    const version = headers["connect-protocol-version"];
    if (version !== undefined && version !== "1")
      return sendError(stream, new ConnectError(`connect-protocol-version ${version} is not 1`, Code.InvalidArgument));
    const timeout = parseTimeout((headers["connect-timeout-ms"] as string | undefined) ?? null, Number.MAX_SAFE_INTEGER);
    if (timeout.error) return sendError(stream, timeout.error);
    switch (headers[":path"]) {
      case REQUEST_BID: {
        fromBinary(RequestBidRequestSchema, body); // decoded as a node would, though the fake's answer does not depend on it
        if (behaviour.hang) {
          // Until the caller cancels (the stream closes) or its deadline passes.
          const timer = setTimeout(
            () => sendError(stream, new ConnectError("the deadline passed", Code.DeadlineExceeded)),
            Math.min(timeout.timeoutMs ?? 3_600_000, 3_600_000),
          );
          stream.once("close", () => clearTimeout(timer));
          return;
        }
        return sendMessage(
          stream,
          RequestBidResponseSchema,
          create(RequestBidResponseSchema, { node: nodeId, score: behaviour.score ?? 500, breakdown: {} }),
        );
      }
      case EXECUTE_PROVISIONING: {
        const req = fromBinary(ExecuteProvisioningRequestSchema, body);
        const spec = req.spec;
        provisioned.add(spec?.workloadId ?? "");
        const id = `${nodeId}-${spec?.workloadId ?? "none"}`;
        return sendMessage(
          stream,
          ExecuteProvisioningResponseSchema,
          create(ExecuteProvisioningResponseSchema, {
            node: nodeId,
            resource: {
              case: "executable",
              value: create(ExecutableSchema, { id, name: spec?.name ?? "", state: ExecutableState.RUNNING }),
            },
          }),
        );
      }
      case RELEASE_WORKLOAD: {
        const req = fromBinary(ReleaseWorkloadRequestSchema, body);
        return sendMessage(
          stream,
          ReleaseWorkloadResponseSchema,
          create(ReleaseWorkloadResponseSchema, { released: provisioned.delete(req.workloadId) }),
        );
      }
      default:
        return sendError(stream, new ConnectError(`${String(headers[":path"])} is not served by this fake node`, Code.Unimplemented));
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}
