// Issue 22, the command line and the wire format under hostile use, against a real aetherd (and a
// real aether-aggregator) with the real aether command: a guest that fails makes `--wait` exit 1 with
// the VM's state reason (item 10); JSON with an unknown field or enum name is refused with
// INVALID_ARGUMENT instead of silently dropped (item 14); a number its proto field cannot hold is a
// usage error naming the option (exit 2), and a caller aetherd refuses exits 5, not 4 "unreachable"
// (item 15).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { DescMethod } from "@bufbuild/protobuf";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { AggregatorService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { startDaemon, useDaemon, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator } from "./helpers/aggregator.js";
import { checkUnaryResponse, envelope, parseEnvelopes, RawConnectClient } from "./helpers/fuzz-connect.js";
import { guestImage } from "./helpers/guest.js";
import { runCommand } from "./helpers/run.js";
import { createCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;

/** One unary Connect call with a JSON body as written (no typed client would send these). */
async function postJson(socket: string, method: DescMethod, body: string): Promise<{ code: string; message: string }> {
  const raw = new RawConnectClient(socket);
  try {
    const res = await raw.send({
      path: pathOf(method),
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: Buffer.from(body),
      hardDeadlineMs: 10_000,
    });
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
    const res = await raw.send({
      path: pathOf(method),
      headers: { "content-type": "application/grpc-web+json" },
      body: envelope(0, Buffer.from(body)),
      hardDeadlineMs: 10_000,
    });
    assert.equal(res.status, 200);
    const trailer =
      parseEnvelopes(res.body, false)
        .find((e) => (e.flags & 0x80) !== 0)
        ?.data.toString() ?? "";
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
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address } });

  it("vm create --start --wait and vm start --wait exit 1 with the VM's state reason when the guest fails (item 10)", async () => {
    // A real kernel with a 1 s boot watchdog: the guest is not ready in time, so aetherd fails it.
    const name = "hostile-wait";
    const failing = ["--kernel", guestImage().kernel, "--accel", "tcg", "--memory", "128M", "--watchdog", "1"];
    try {
      const create = await aether("vm", "create", name, ...failing, "--start", "--wait");
      assert.equal(create.code, 1, `exit code with a failed guest; stderr: ${create.stderr}`);
      assert.match(create.stdout, /^[0-9a-f-]{36}\n$/, "the VM exists: its id is printed for the script to clean up");
      assert.match(create.stderr, /^aether: hostile-wait is failed: the guest did not become ready within 1000 ms \(boot watchdog\)/);

      const start = await aether("vm", "start", name, "--wait", "--json");
      assert.equal(start.code, 1, `exit code with a failed guest; stderr: ${start.stderr}`);
      assert.equal((JSON.parse(start.stdout) as { state: string }).state, "VM_STATE_FAILED");
      assert.match(start.stderr, /^aether: hostile-wait is failed: the guest did not become ready within 1000 ms/);
    } finally {
      assert.equal((await aether("vm", "delete", name, "--force")).code, 0);
    }
  });

  it("refuses unknown JSON fields and enum names with INVALID_ARGUMENT, for Connect and gRPC-web (item 14)", async () => {
    const socket = env.daemon.socket;
    // Each of these succeeded before, the misspelt part silently dropped.
    const typo = await postJson(socket, CellService.method.allocateCell, '{"name":"hostile-json","tenantt":"b"}');
    assert.deepEqual(typo, {
      code: "invalid_argument",
      message: 'cannot decode message aether.cells.v1.AllocateCellRequest from JSON: key "tenantt" is unknown',
    });
    const vm =
      '{"name":"hostile-json","profile":"VM_PROFILE_NOPE","vcpus":1,"memoryBytes":"134217728","boot":{"kernel":{"kernelPath":"/bin/true"}}}';
    const profile = await postJson(socket, VmService.method.createVm, vm);
    assert.deepEqual(profile, {
      code: "invalid_argument",
      message: 'cannot decode enum aether.vm.v1.VmProfile from JSON: "VM_PROFILE_NOPE"',
    });
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
      assert.deepEqual(typo, {
        code: "invalid_argument",
        message: 'cannot decode message aether.auction.v1.ListNodesRequest from JSON: key "pageSizee" is unknown',
      });
      assert.equal((await postJson(agg.socket, AggregatorService.method.listNodes, '{"pageSize":5}')).code, "ok");
    } finally {
      assert.equal(await agg.stop(), 0);
      rmSync(agg.dir, { recursive: true, force: true });
    }
  });

  it("a number its proto field cannot hold is a usage error naming the option, in every command (item 15)", async () => {
    // [arguments, the option commander names, what the field holds]
    const cases: Array<[string[], string, RegExp]> = [
      [["storage", "create", "v", "--size", "99999999999999999999999G"], "--size <size>", /size in bytes from 0 to 18446744073709551615/],
      [["exec", "stop", "x", "--grace", "1e30"], "-g, --grace <duration>", /a duration like/],
      [["vm", "create", "v", "--kernel", "/k", "--vcpus", "-1"], "--vcpus <n>", /whole number from 0 to 4294967295/],
      [["vm", "logs", "v", "--tail", "-1"], "--tail <bytes>", /whole number from 0 to 18446744073709551615/],
      [["exec", "logs", "x", "--tail", "-1"], "-n, --tail <lines>", /whole number from 0 to 4294967295/],
      [["exec", "start", "--uid", "4294967296", "--", "/bin/true"], "--uid <uid>", /whole number from 0 to 4294967295/],
      [["cell", "allocate", "c", "--pids", "99999999999999999999"], "--pids <n>", /whole number from 0 to 18446744073709551615/],
      [["cell", "allocate", "c", "--cpu-weight", "12abc"], "--cpu-weight <n>", /a whole number\./],
      [["cell", "allocate", "c", "--cpu-max", `1${"0".repeat(400)}%`], "--cpu-max <limit>", /CPU time in µs from 0 to/],
      [["cluster", "events", "--tail", "-1"], "--tail <n>", /whole number from 0 to 4294967295/],
      [["fence", "off", "n", "--timeout", "400000000000s"], "--timeout <duration>", /at most 10000 years/],
    ];
    const results = await Promise.all(cases.map(([args]) => aether(...args)));
    results.forEach((r, i) => {
      const [args, option, holds] = cases[i] as [string[], string, RegExp];
      const what = `aether ${args.join(" ").slice(0, 80)}`;
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /serialize binary|cannot encode/, what);
      const first = r.stderr.split("\n")[0] ?? "";
      assert.ok(first.includes(`'${option}'`), `${what}: the error names ${option}: ${first}`);
      assert.match(first, holds, what);
    });
    // Refused before aetherd was asked: nothing was made.
    assert.deepEqual((await env.aether.runtime.listExecutables({})).executables, []);
  });
});

describe("a caller aetherd refuses exits 5, apart from 4 'unreachable' (issue 22, item 15)", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-hostile-cli-"));
  const ca = createCa("cluster-ca", dir);
  let daemon: TestDaemon;
  /** aether as a user with this certificate, through its client config (~/.config/aether/config.toml). */
  let as: (who: string, caPem: string, pair: { cert: string; key: string }, ...args: string[]) => ReturnType<typeof runCommand>;

  before(async () => {
    const server = ca.issue("aetherd", { server: true });
    const port = await freePort();
    daemon = await startDaemon({
      args: ["--listen", `127.0.0.1:${port}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert],
    });
    as = (who, caPem, pair, ...args) => {
      const xdg = join(dir, who);
      mkdirSync(join(xdg, "aether"), { recursive: true });
      writeFileSync(
        join(xdg, "aether", "config.toml"),
        `address = "https://127.0.0.1:${port}"\nca = ${JSON.stringify(caPem)}\ncert = ${JSON.stringify(pair.cert)}\nkey = ${JSON.stringify(pair.key)}\n`,
      );
      return runCommand("aether", args, { env: { AETHER_HOST: "", XDG_CONFIG_HOME: xdg } });
    };
  });
  after(async () => {
    assert.equal(await daemon?.stop(), 0);
    daemon?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("PERMISSION_DENIED (another tenant's resources) and UNAUTHENTICATED (a foreign certificate) exit 5 with aetherd's sentence", async () => {
    const alice = ca.issue("alice", { uri: "spiffe://test/tenant/a/user/alice" });
    const own = await as("alice", ca.cert, alice, "exec", "list", "--json");
    assert.equal(own.code, 0, own.stderr);
    const other = await as("alice", ca.cert, alice, "exec", "list", "--tenant", "b");
    assert.equal(other.code, 5, other.stderr);
    assert.match(other.stderr, /^aether: .*alice belongs to tenant a and may not act in tenant "b"/);

    mkdirSync(join(dir, "other"));
    const foreign = createCa("other-ca", join(dir, "other"));
    const mallory = foreign.issue("mallory", { uri: "spiffe://test/tenant/a/user/mallory" });
    const refused = await as("mallory", ca.cert, mallory, "node", "info");
    assert.equal(refused.code, 5, refused.stderr);
    assert.match(refused.stderr, /^aether: the client certificate was refused/);

    const help = await as("alice", ca.cert, alice, "--help");
    assert.match(help.stdout, /\n {2}5 {2}aetherd refused the caller/);
  });
});
