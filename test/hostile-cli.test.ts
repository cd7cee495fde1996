// Issue 22, the wire format under hostile use, against a real aetherd and a real aether-aggregator:
// JSON with an unknown field or enum name is refused with INVALID_ARGUMENT instead of silently
// dropped (item 14).
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { describe, it } from "node:test";
import type { DescMethod } from "@bufbuild/protobuf";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { AggregatorService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { useDaemon } from "./helpers/daemon.js";
import { startAggregator } from "./helpers/aggregator.js";
import { checkUnaryResponse, envelope, parseEnvelopes, RawConnectClient } from "./helpers/fuzz-connect.js";

const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;

/** One unary Connect call with a JSON body as written (no typed client would send these). */
async function postJson(socket: string, method: DescMethod, body: string): Promise<{ code: string; message: string }> {
  const raw = new RawConnectClient(socket);
  try {
    const res = await raw.send({ path: pathOf(method), headers: { "content-type": "application/json", "connect-protocol-version": "1" }, body: Buffer.from(body), hardDeadlineMs: 10_000 });
    const { code, message } = checkUnaryResponse(method, res);
    return { code, message };
  } finally {
    raw.close();
  }
}

/** The same through gRPC-web (application/grpc-web+json): the status is in the headers or the trailer frame. */
async function postGrpcWebJson(socket: string, method: DescMethod, body: string): Promise<{ status: string; message: string }> {
  const raw = new RawConnectClient(socket);
  try {
    const res = await raw.send({ path: pathOf(method), headers: { "content-type": "application/grpc-web+json" }, body: envelope(0, Buffer.from(body)), hardDeadlineMs: 10_000 });
    assert.equal(res.status, 200);
    const trailer = parseEnvelopes(res.body, false).find((e) => (e.flags & 0x80) !== 0)?.data.toString() ?? "";
    const field = (name: string) => {
      const header = res.headers[name];
      return header !== undefined ? String(header) : (new RegExp(`^${name}:\\s*(.*?)\\r?$`, "m").exec(trailer)?.[1] ?? "");
    };
    return { status: field("grpc-status"), message: decodeURIComponent(field("grpc-message")) };
  } finally {
    raw.close();
  }
}

describe("hostile use of the CLI and of aetherd's JSON (issue 22)", () => {
  const env = useDaemon();

  it("refuses unknown JSON fields and enum names with INVALID_ARGUMENT, for Connect and gRPC-web (item 14)", async () => {
    const socket = env.daemon.socket;
    // Each of these succeeded before, the misspelt part silently dropped.
    const typo = await postJson(socket, CellService.method.allocateCell, '{"name":"hostile-json","tenantt":"b"}');
    assert.deepEqual(typo, { code: "invalid_argument", message: 'cannot decode message aether.cells.v1.AllocateCellRequest from JSON: key "tenantt" is unknown' });
    const vm = '{"name":"hostile-json","profile":"VM_PROFILE_NOPE","vcpus":1,"memoryBytes":"134217728","boot":{"kernel":{"kernelPath":"/bin/true"}}}';
    const profile = await postJson(socket, VmService.method.createVm, vm);
    assert.deepEqual(profile, { code: "invalid_argument", message: 'cannot decode enum aether.vm.v1.VmProfile from JSON: "VM_PROFILE_NOPE"' });
    const filter = await postJson(socket, ExecutableService.method.listExecutables, '{"state":"EXECUTABLE_STATE_NOPE"}');
    assert.equal(filter.code, "invalid_argument", filter.message);
    const grpcWeb = await postGrpcWebJson(socket, VmService.method.createVm, vm);
    assert.deepEqual(grpcWeb, { status: "3", message: 'cannot decode enum aether.vm.v1.VmProfile from JSON: "VM_PROFILE_NOPE"' });
    // Nothing was made; the same request spelt right still works.
    assert.deepEqual((await env.aether.vm.listVms({})).vms, []);
    assert.deepEqual((await env.aether.cells.listCells({})).cells, []);
    assert.equal((await postJson(socket, ExecutableService.method.listExecutables, '{"state":"EXECUTABLE_STATE_RUNNING"}')).code, "ok");
  });

  it("aether-aggregator refuses unknown JSON fields with INVALID_ARGUMENT too (item 14)", async () => {
    const agg = await startAggregator();
    try {
      const typo = await postJson(agg.socket, AggregatorService.method.listNodes, '{"pageSizee":5}');
      assert.deepEqual(typo, { code: "invalid_argument", message: 'cannot decode message aether.auction.v1.ListNodesRequest from JSON: key "pageSizee" is unknown' });
      assert.equal((await postJson(agg.socket, AggregatorService.method.listNodes, '{"pageSize":5}')).code, "ok");
    } finally {
      assert.equal(await agg.stop(), 0);
      rmSync(agg.dir, { recursive: true, force: true });
    }
  });
});
