// aetherd speaks standard gRPC, not only Connect: a plain @grpc/grpc-js client built from proto/
// starts a process and streams its logs, and buf curl discovers every service by reflection.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { repoRoot, useDaemon } from "./helpers/daemon.js";

const run = promisify(execFile);
const BUF = join(repoRoot, "node_modules", ".bin", "buf");

interface GrpcExecutable {
  id: string;
  state: string;
  exitCode?: number;
}
type Unary<Req, Res> = (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;
interface RuntimeClient extends grpc.Client {
  startExecutable: Unary<object, { executable: GrpcExecutable }>;
  waitExecutable: Unary<object, { executable: GrpcExecutable }>;
}
interface ObserveClient extends grpc.Client {
  streamLogs(req: object): grpc.ClientReadableStream<{ channel: string; data: Buffer }>;
}

describe("interop with standard gRPC tooling", () => {
  const env = useDaemon();

  it("a @grpc/grpc-js client starts a process and streams its logs", async () => {
    const options = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [join(repoRoot, "proto")] };
    const definition = protoLoader.loadSync(["aether/runtime/v1/runtime.proto", "aether/observe/v1/observe.proto"], options);
    // proto-loader builds the clients at run time; these shapes are what it builds from proto/.
    type Ctor<C> = new (target: string, credentials: grpc.ChannelCredentials) => C;
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      aether: {
        runtime: { v1: { ExecutableService: Ctor<RuntimeClient> } };
        observe: { v1: { ObserveService: Ctor<ObserveClient> } };
      };
    };
    const target = `unix://${env.daemon.socket}`;
    const runtime = new loaded.aether.runtime.v1.ExecutableService(target, grpc.credentials.createInsecure());
    const observe = new loaded.aether.observe.v1.ObserveService(target, grpc.credentials.createInsecure());
    try {
      const start = promisify(runtime.startExecutable.bind(runtime));
      const wait = promisify(runtime.waitExecutable.bind(runtime));
      const { executable } = await start({ argv: ["/bin/sh", "-c", "echo from-grpc; sleep 0.2; echo again; exit 4"] });
      assert.match(executable.id, /^[0-9a-f-]{36}$/);

      const stream = observe.streamLogs({ source: "LOG_SOURCE_EXECUTABLE", target: executable.id, follow: true });
      let text = "";
      for await (const chunk of stream) {
        assert.equal(chunk.channel, "LOG_CHANNEL_STDOUT");
        text += chunk.data.toString();
      }
      assert.equal(text, "from-grpc\nagain\n");
      const done = await wait({ executable: executable.id });
      assert.equal(done.executable.state, "EXECUTABLE_STATE_EXITED");
      assert.equal(done.executable.exitCode, 4);

      // Errors arrive as standard gRPC status codes.
      await assert.rejects(start({ argv: [] }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.match(err.details, /argv is empty/);
        return true;
      });
    } finally {
      runtime.close();
      observe.close();
    }
  });

  it("buf curl lists every service through gRPC server reflection and calls one", async () => {
    const { stdout } = await run(BUF, [
      "curl",
      "--unix-socket",
      env.daemon.socket,
      "--http2-prior-knowledge",
      "--list-services",
      "http://localhost",
    ]);
    const services = stdout.trim().split("\n").sort();
    for (const s of [
      "aether.runtime.v1.ExecutableService",
      "aether.cells.v1.CellService",
      "aether.vm.v1.VmService",
      "aether.storage.v1.StorageService",
      "aether.fence.v1.FenceService",
      "aether.auction.v1.BidService",
      "aether.observe.v1.ObserveService",
      "aether.node.v1.NodeService",
    ]) {
      assert.ok(services.includes(s), `${s} is listed`);
    }
    const methods = await run(BUF, [
      "curl",
      "--unix-socket",
      env.daemon.socket,
      "--http2-prior-knowledge",
      "--list-methods",
      "http://localhost",
    ]);
    assert.match(methods.stdout, /aether\.runtime\.v1\.ExecutableService\/StartExecutable/);

    for (const protocol of ["grpc", "grpcweb", "connect"]) {
      const health = await run(BUF, [
        "curl",
        "--unix-socket",
        env.daemon.socket,
        "--http2-prior-knowledge",
        "--protocol",
        protocol,
        "-d",
        "{}",
        "http://localhost/aether.node.v1.NodeService/CheckHealth",
      ]);
      assert.equal((JSON.parse(health.stdout) as { status: string }).status, "HEALTH_STATUS_SERVING", protocol);
    }
  });
});
