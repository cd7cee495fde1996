// Authorization and tenants, against a real aetherd over mutual TLS: tenant A cannot list, read logs
// of, stop, exec into or delete tenant B's resources by any RPC (a table over every method of every
// service aetherd serves, so a new method fails this test until it has a row); an auditor reads but
// does not change; an identity the policy does not know gets nothing; a policy change applies
// without a restart.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { VmMigrationService, VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { ReplicaReceiverService, ReplicationService, StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { ObserveService, LogSource } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { FenceService } from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import { AggregatorService, BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { TrafficService } from "@aether/sdk/gen/aether/traffic/v1/traffic_pb";
import { startDaemon, eventually, type TestDaemon } from "./helpers/daemon.js";
import { createCa, type Pair, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const MiB = 1024n * 1024n;
const SERVICES: DescService[] = [
  ExecutableService,
  CellService,
  VmService,
  VmMigrationService,
  StorageService,
  ReplicationService,
  ReplicaReceiverService,
  ObserveService,
  NodeService,
  FenceService,
  BidService,
  AggregatorService,
  TrafficService,
];

type Outcome = { ok: true; items: unknown[] } | { ok: false; err: ConnectError };

/** Calls any method generically: unary, server stream (first few messages), client stream or bidi (one message in). */
async function call(transport: Transport, service: DescService, method: DescMethod, init: Record<string, unknown>): Promise<Outcome> {
  const client = createClient(service, transport) as unknown as Record<string, (...a: unknown[]) => unknown>;
  const fn = client[method.localName] as (...a: unknown[]) => unknown;
  const signal = AbortSignal.timeout(3000);
  try {
    if (method.methodKind === "unary") return { ok: true, items: [await (fn(init, { signal }) as Promise<unknown>)] };
    const input =
      method.methodKind === "bidi_streaming" || method.methodKind === "client_streaming"
        ? (async function* () {
            yield init;
            await new Promise((r) => setTimeout(r, 500));
          })()
        : init;
    // A client stream answers once, at its end.
    if (method.methodKind === "client_streaming") return { ok: true, items: [await (fn(input, { signal }) as Promise<unknown>)] };
    const items: unknown[] = [];
    for await (const item of fn(input, { signal }) as AsyncIterable<unknown>) {
      items.push(item);
      if (items.length >= 3) break;
    }
    return { ok: true, items };
  } catch (err) {
    const e = ConnectError.from(err);
    // A stream that followed until our own deadline answered nothing wrong.
    if (e.code === Code.DeadlineExceeded || e.code === Code.Canceled) return { ok: true, items: [] };
    return { ok: false, err: e };
  }
}

const hasTenant = (m: DescMethod) => m.input.fields.some((f) => f.localName === "tenant");

describe("authorization and tenants", () => {
  let daemon: TestDaemon;
  let ca: TestCa;
  let url: string;
  let policyPath: string;
  let admin: AetherClient;
  let alice: AetherClient; // tenant a
  let bob: AetherClient; // tenant b
  const ids: Record<string, string> = {};
  const asClient = (pair: Pair) => connect({ address: url, tls: { ca: ca.cert, cert: pair.cert, key: pair.key } });

  before(async () => {
    ca = createCa("cluster-ca");
    const server = ca.issue("aetherd", { server: true });
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    const dir = mkdtempSync(join(tmpdir(), "aether-authz-"));
    policyPath = join(dir, "policy.toml");
    writeFileSync(policyPath, basePolicy);
    daemon = await startDaemon({
      args: [
        "--listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
        "--policy",
        policyPath,
      ],
    });
    admin = await daemon.client();
    alice = await asClient(ca.issue("alice", { uri: "spiffe://test/tenant/a/user/alice" }));
    bob = await asClient(ca.issue("bob", { uri: "spiffe://test/tenant/b/user/bob" }));

    // Tenant b's resources, made by the admin on the unix socket.
    const exe = await admin.runtime.startExecutable({ name: "job", tenant: "b", argv: ["/bin/sleep", "600"] });
    ids.exe = exe.executable?.id ?? "";
    ids.cell = (await admin.cells.allocateCell({ name: "web", tenant: "b" })).cell?.id ?? "";
    const volume = await admin.storage.createVolume({
      name: "data",
      tenant: "b",
      source: { case: "empty", value: { sizeBytes: 16n * MiB } },
    });
    ids.volume = volume.volume?.id ?? "";
    ids.snapshot = (await admin.storage.snapshotVolume({ volume: "data", tenant: "b", name: "s1" })).snapshot?.id ?? "";
    const imageFile = join(dir, "tiny.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", imageFile, "16M"]);
    const sha256 = createHash("sha256").update(readFileSync(imageFile)).digest("hex");
    ids.image =
      (await admin.storage.importImage({ name: "tiny", tenant: "b", sha256, source: { source: { case: "localPath", value: imageFile } } }))
        .image?.id ?? "";
    await eventually(
      async () => ((await admin.storage.getImage({ image: ids.image, tenant: "b" })).image?.state === 2 ? true : undefined),
      20_000,
      "the image import",
    );
    const vm = await admin.vm.createVm({
      name: "vm1",
      tenant: "b",
      vcpus: 1,
      memoryBytes: 128n * MiB,
      boot: { source: { case: "kernel", value: { kernelPath: "/bin/true", initrdPath: "", cmdline: "" } } },
    });
    ids.vm = vm.vm?.id ?? "";
    for (const [k, v] of Object.entries(ids)) assert.ok(v, `tenant b's ${k} was made`);
  });

  after(async () => {
    alice?.close();
    bob?.close();
    await admin?.runtime.stopExecutable({ executable: ids.exe ?? "", tenant: "b", signal: "SIGKILL" }).catch(() => undefined);
    await daemon?.stop();
    daemon?.cleanup();
  });

  it("refuses every method that names tenant b to tenant a's identity", async () => {
    const refused: string[] = [];
    for (const service of SERVICES) {
      for (const method of service.methods.filter(hasTenant)) {
        const init = { ...crossById(ids)[`${service.name}/${method.name}`]?.init, tenant: "b" };
        const out = await call(alice.transport, service, method, init);
        assert.ok(!out.ok, `${service.name}/${method.name} with tenant b answered alice`);
        assert.equal(out.err.code, Code.PermissionDenied, `${service.name}/${method.name}: ${out.err.message}`);
        assert.match(out.err.message, /belongs to tenant a and may not act in tenant "b"|may not call/);
        refused.push(method.name);
      }
    }
    assert.ok(refused.length >= 40, `only ${refused.length} methods were tried`);
  });

  it("by id, with no tenant named, tenant a finds, lists, streams, stops and deletes nothing of tenant b's", async () => {
    const table = crossById(ids);
    const bIds = new Set(Object.values(ids));
    for (const service of SERVICES) {
      for (const method of service.methods) {
        const key = `${service.name}/${method.name}`;
        const row = table[key];
        assert.ok(row, `${key} has no row in the table: say what tenant a may do with it`);
        const out = await call(alice.transport, service, method, row.init);
        const seen = out.ok ? JSON.stringify(out.items, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) : "";
        switch (row.expect) {
          case "not_found":
            assert.ok(!out.ok, `${key} answered alice for tenant b's resource: ${seen.slice(0, 300)}`);
            assert.equal(out.err.code, Code.NotFound, `${key}: ${out.err.code} ${out.err.message}`);
            break;
          case "denied":
            assert.ok(!out.ok, `${key} answered alice though her role does not include it`);
            assert.equal(out.err.code, Code.PermissionDenied, `${key}: ${out.err.message}`);
            break;
          case "unimplemented":
            assert.ok(!out.ok && out.err.code === Code.Unimplemented, `${key}: ${out.ok ? "answered" : out.err.message}`);
            break;
          case "none_of_b":
            assert.ok(out.ok, `${key} failed for alice: ${out.ok ? "" : out.err.message}`);
            // Alice's own audit records name b's ids she tried: only her own records may show.
            if (key === "ObserveService/ListAuditRecords")
              assert.ok(!/"identity":"(?!spiffe:\/\/test\/tenant\/a\/user\/alice")/.test(seen), `${key} showed alice others' records`);
            else for (const id of bIds) assert.ok(!seen.includes(id), `${key} showed alice tenant b's ${id}`);
            assert.ok(!seen.includes('"tenant":"b"'), `${key} showed alice something of tenant b`);
            break;
        }
      }
    }
    // Nothing of b's was touched: the admin still sees every resource, the process still running.
    assert.equal(
      (await admin.runtime.getExecutable({ executable: ids.exe, tenant: "b" })).executable?.state,
      1,
      "b's executable still runs",
    );
    await admin.cells.getCell({ cell: ids.cell, tenant: "b" });
    await admin.storage.getVolume({ volume: ids.volume, tenant: "b" });
    await admin.storage.getImage({ image: ids.image, tenant: "b" });
    await admin.vm.getVm({ vm: ids.vm, tenant: "b" });
    assert.equal((await admin.storage.listSnapshots({ volume: ids.volume, tenant: "b" })).snapshots.length, 1);
  });

  it("tenant b sees its own resources, by id and in lists, with its tenant filled in", async () => {
    assert.equal((await bob.runtime.getExecutable({ executable: ids.exe })).executable?.name, "job");
    assert.deepEqual(
      (await bob.runtime.listExecutables({})).executables.map((e) => e.name),
      ["job"],
    );
    assert.equal((await bob.vm.getVm({ vm: ids.vm })).vm?.name, "vm1");
    assert.deepEqual(
      (await bob.storage.listVolumes({})).volumes.map((v) => v.name),
      ["data"],
    );
    const audit = await admin.observe.listAuditRecords({ tenant: "b" });
    assert.ok(audit.records.length > 0);
    // Alice's refused attempts on b are audited under her identity.
    const mine = (await admin.observe.listAuditRecords({})).records.filter((r) => r.identity === "spiffe://test/tenant/a/user/alice");
    assert.ok(
      mine.some((r) => r.result === "permission_denied"),
      "alice's refused calls are in the audit log",
    );
  });

  it("a tenant's processes never run as root; it may not read host files or aetherd's own log", async () => {
    // No uid is uid 0 of the tenant's own id block: never the host's root (hostile-tenants.test.ts goes further).
    const rootless = await alice.runtime.startExecutable({ name: "root", argv: ["/bin/true"] });
    assert.equal(rootless.executable?.uid, 0);
    assert.ok((rootless.executable?.hostUid ?? 0) >= 1_000_000_000, `host uid ${rootless.executable?.hostUid}`);
    const started = await alice.runtime.startExecutable({ name: "nobody", argv: ["/bin/true"], uid: 65534, gid: 65534 });
    assert.equal(started.executable?.tenant, "a");
    await assert.rejects(
      alice.storage.importImage({ name: "shadow", source: { source: { case: "localPath", value: "/etc/shadow" } } }),
      (e: ConnectError) => e.code === Code.PermissionDenied && /http\(s\) URL/.test(e.message),
    );
    // A client stream is held to the tenant too: the handler resolves in tenant a.
    const console = await call(alice.transport, VmService, VmService.method.attachConsole, { vm: "no-such-vm" });
    assert.ok(
      !console.ok && console.err.code === Code.NotFound && /in tenant a/.test(console.err.message),
      console.ok ? "answered" : console.err.message,
    );
    const logs = await call(alice.transport, ObserveService, ObserveService.method.streamLogs, { source: LogSource.DAEMON });
    assert.ok(!logs.ok && logs.err.code === Code.PermissionDenied, "aetherd's log is refused to a tenant");
  });

  it("an auditor reads every tenant but changes nothing; an identity the policy does not know gets nothing", async () => {
    const carol = await asClient(ca.issue("carol", { uri: "spiffe://test/audit/carol" }));
    assert.ok((await carol.runtime.listExecutables({})).executables.some((e) => e.id === ids.exe));
    await assert.rejects(
      carol.runtime.stopExecutable({ executable: ids.exe, tenant: "b" }),
      (e: ConnectError) => e.code === Code.PermissionDenied && /roles \(auditor\)/.test(e.message),
    );
    carol.close();
    // connect() asks for the node's identity first: it is refused already.
    await assert.rejects(
      asClient(ca.issue("stranger", { uri: null })),
      (e: ConnectError) => e.code === Code.PermissionDenied && /cn:stranger is unknown to the policy/.test(e.message),
    );
  });

  it("a policy change applies without a restart, and a broken policy file leaves the last good one in force", async () => {
    const pid = daemon.process.pid;
    await alice.vm.listVms({});
    writeFileSync(
      policyPath,
      `${basePolicy}\n[[rules]]\neffect = "deny"\nmembers = ["spiffe://test/tenant/a/**"]\nmethods = ["aether.vm.v1.VmService/List*"]\n`,
    );
    await eventually(
      async () =>
        await alice.vm.listVms({}).then(
          () => undefined,
          (e: ConnectError) => (e.code === Code.PermissionDenied ? e : undefined),
        ),
      10_000,
      "the deny rule to apply",
    );
    // Deny wins over the tenant role, and only for what it names.
    await alice.runtime.listExecutables({});
    writeFileSync(policyPath, "this is [not toml");
    process.kill(daemon.process.pid ?? 0, "SIGHUP");
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(alice.vm.listVms({}), (e: ConnectError) => e.code === Code.PermissionDenied);
    assert.match(daemon.log(), /the authorization policy was not reloaded/);
    writeFileSync(policyPath, basePolicy);
    await eventually(
      async () =>
        await alice.vm.listVms({}).then(
          () => true,
          () => undefined,
        ),
      10_000,
      "the deny rule to be lifted",
    );
    assert.equal(daemon.process.pid, pid, "the same daemon process throughout");
  });
});

const basePolicy = `# test policy: the built-in bindings, plus spiffe://test/audit/* as auditors
[groups]
auditors = ["spiffe://test/audit/*"]

[[bindings]]
members = ["group:auditors"]
role = "auditor"
`;

type Expect = "not_found" | "denied" | "none_of_b" | "unimplemented";

/** What tenant a sends to reach tenant b's resources by id (no tenant named), and what it must get. */
function crossById(ids: Record<string, string>): Record<string, { init: Record<string, unknown>; expect: Expect }> {
  const nf = (init: Record<string, unknown>) => ({ init, expect: "not_found" as const });
  const none = (init: Record<string, unknown> = {}) => ({ init, expect: "none_of_b" as const });
  const denied = (init: Record<string, unknown> = {}) => ({ init, expect: "denied" as const });
  const unimplemented = (init: Record<string, unknown> = {}) => ({ init, expect: "unimplemented" as const });
  return {
    // runtime
    "ExecutableService/StartExecutable": nf({ name: "intruder", argv: ["/bin/true"], uid: 65534, gid: 65534, cell: ids.cell }),
    "ExecutableService/StopExecutable": nf({ executable: ids.exe, signal: "SIGKILL" }),
    "ExecutableService/WaitExecutable": nf({ executable: ids.exe }),
    "ExecutableService/GetExecutable": nf({ executable: ids.exe }),
    "ExecutableService/ListExecutables": none(),
    "ExecutableService/DeleteExecutable": nf({ executable: ids.exe }),
    // cells
    "CellService/AllocateCell": none({ name: "web" }), // its own "web", not b's
    "CellService/FreeCell": nf({ cell: ids.cell }),
    "CellService/UpdateCell": nf({ cell: ids.cell, limits: { pidsMax: 10n } }),
    "CellService/GetCell": nf({ cell: ids.cell }),
    "CellService/ListCells": none(),
    "CellService/GetCellStats": nf({ cell: ids.cell }),
    // vm
    "VmService/CreateVm": nf({
      name: "thief",
      vcpus: 1,
      memoryBytes: 128n * MiB,
      boot: { source: { case: "disk", value: { volume: ids.volume } } },
    }),
    "VmService/StartVm": nf({ vm: ids.vm }),
    "VmService/StopVm": nf({ vm: ids.vm, force: true }),
    "VmService/PauseVm": nf({ vm: ids.vm }),
    "VmService/ResumeVm": nf({ vm: ids.vm }),
    "VmService/DeleteVm": nf({ vm: ids.vm, force: true }),
    "VmService/GetVm": nf({ vm: ids.vm }),
    "VmService/ListVms": none(),
    "VmService/StreamConsole": nf({ vm: ids.vm }),
    "VmService/AttachConsole": nf({ vm: ids.vm, input: new TextEncoder().encode("reboot\n") }),
    "VmService/ExecVm": nf({ vm: ids.vm, argv: ["/bin/true"] }),
    "VmService/WaitVmReady": nf({ vm: ids.vm }),
    // A tenant does not choose the node its VMs run on; node-to-node calls are for nodes only.
    "VmService/MigrateVm": denied({ vm: ids.vm, target: "unix:///run/aether/other.sock" }),
    "VmService/WatchMigration": nf({ migration: "00000000-0000-0000-0000-000000000000" }),
    "VmService/RebootVm": nf({ vm: ids.vm }),
    "VmService/ResetVm": nf({ vm: ids.vm }),
    "VmService/UpdateVm": nf({ vm: ids.vm, memoryBytes: 256n * MiB, autostart: true }),
    "VmService/AttachVmDisk": nf({ vm: ids.vm, disk: { source: { case: "volume", value: ids.volume } } }),
    "VmService/DetachVmDisk": nf({ vm: ids.vm, disk: ids.volume }),
    "VmService/AttachVmNic": nf({ vm: ids.vm, nic: { bridge: "br0" } }),
    "VmService/DetachVmNic": nf({ vm: ids.vm, nic: "52:54:00:00:00:01" }),
    "VmService/CreateVmSnapshot": nf({ vm: ids.vm, name: "s1" }),
    "VmService/ListVmSnapshots": nf({ vm: ids.vm }),
    "VmService/DeleteVmSnapshot": nf({ vm: ids.vm, name: "s1" }),
    "VmService/RollbackVmSnapshot": nf({ vm: ids.vm, name: "s1" }),
    "VmService/CloneVm": nf({ vm: ids.vm, name: "stolen" }),
    "VmService/ReadVmFile": nf({ vm: ids.vm, path: "/etc/hostname" }),
    "VmService/WriteVmFile": nf({ vm: ids.vm, path: "/tmp/x", data: new Uint8Array([1]) }),
    "VmMigrationService/PrepareIncoming": denied({ migrationId: "00000000-0000-0000-0000-000000000000" }),
    "VmMigrationService/FinishIncoming": denied({ migrationId: "00000000-0000-0000-0000-000000000000" }),
    "VmMigrationService/ConfirmIncoming": denied({ migrationId: "00000000-0000-0000-0000-000000000000" }),
    "VmMigrationService/AbortIncoming": denied({ migrationId: "00000000-0000-0000-0000-000000000000" }),
    "VmMigrationService/QueryIncoming": denied({ migrationId: "00000000-0000-0000-0000-000000000000" }),
    // storage
    "StorageService/ListPools": none(),
    "StorageService/GetPool": none({ pool: "default" }),
    "StorageService/CreateVolume": nf({ name: "stolen", source: { case: "snapshot", value: { snapshot: ids.snapshot } } }),
    "StorageService/CloneVolume": nf({ volume: ids.volume, snapshot: ids.snapshot, name: "stolen2" }),
    "StorageService/ResizeVolume": nf({ volume: ids.volume, sizeBytes: 32n * MiB }),
    "StorageService/DeleteVolume": nf({ volume: ids.volume, deleteSnapshots: true }),
    "StorageService/GetVolume": nf({ volume: ids.volume }),
    "StorageService/ListVolumes": none(),
    "StorageService/SnapshotVolume": nf({ volume: ids.volume, name: "s2" }),
    "StorageService/ListSnapshots": nf({ volume: ids.volume }),
    "StorageService/DeleteSnapshot": nf({ volume: ids.volume, snapshot: ids.snapshot }),
    "StorageService/RollbackVolume": nf({ volume: ids.volume, snapshot: ids.snapshot }),
    "StorageService/ImportImage": denied({ name: "copy", source: { source: { case: "localPath", value: "/etc/hostname" } } }),
    "StorageService/WatchImage": nf({ image: ids.image }),
    "StorageService/GetImage": nf({ image: ids.image }),
    "StorageService/ListImages": none(),
    "StorageService/DeleteImage": nf({ image: ids.image }),
    // Replication chooses the nodes a tenant's data is copied to: the operators' (not in a tenant's
    // role); the receiving side is for nodes only.
    "ReplicationService/SetReplicationPolicy": denied({ volume: ids.volume, targets: ["unix:///run/aether/other.sock"] }),
    "ReplicationService/ListReplications": denied(),
    "ReplicationService/DeleteReplicationPolicy": denied({ policy: ids.volume }),
    "ReplicationService/RunReplication": denied({ policy: ids.volume }),
    "ReplicationService/ListReplicas": denied(),
    "ReplicationService/DeleteReplica": denied({ replica: ids.volume }),
    "ReplicaReceiverService/GetReplicaPoint": denied({ sourceVolumeId: ids.volume }),
    "ReplicaReceiverService/ReceiveReplica": denied({ part: { case: "chunk", value: new Uint8Array([1]) } }),
    // observe
    "ObserveService/StreamLogs": nf({ source: LogSource.EXECUTABLE, target: ids.exe }),
    "ObserveService/StreamEvents": none(),
    "ObserveService/GetTelemetry": denied(),
    "ObserveService/ListAuditRecords": none(),
    // node: harmless host facts
    "NodeService/GetNodeInfo": none(),
    "NodeService/CheckHealth": none(),
    // a server's log level is the cluster's operators' (SetLogLevel is not in a tenant's role)
    "NodeService/SetLogLevel": denied({ level: "debug" }),
    // out of a tenant's role entirely
    "FenceService/RegisterBmc": denied({ node: "b-node" }),
    "FenceService/UnregisterBmc": denied({ bmc: "b-node" }),
    "FenceService/ListBmcs": denied(),
    "FenceService/GetPowerStatus": denied({ bmc: "b-node" }),
    "FenceService/Fence": denied({ bmc: "b-node" }),
    "FenceService/PowerOn": denied({ bmc: "b-node" }),
    "FenceService/Reset": denied({ bmc: "b-node", resetType: "ForceOff" }),
    // Service endpoints listen on the node's addresses: the operators' and the cluster's (rollouts), not a tenant's.
    "TrafficService/PutEndpoint": denied({
      spec: { name: "web", listen: "127.0.0.1:1", backends: [{ id: "a", address: "127.0.0.1:2", weight: 1 }] },
    }),
    "TrafficService/SetWeights": denied({ name: "web", weights: { a: 0 } }),
    "TrafficService/SetBackendState": denied({ name: "web", backend: "a", state: 2 }),
    "TrafficService/GetEndpoint": denied({ name: "web" }),
    "TrafficService/ListEndpoints": denied(),
    "TrafficService/DeleteEndpoint": denied({ name: "web" }),
    "BidService/RequestBid": denied(),
    "BidService/ExecuteProvisioning": denied(),
    "BidService/ReleaseWorkload": denied({ workload: ids.exe }),
    // aether-aggregator serves these; aetherd says so (tenants may use the cluster's workload calls)
    "AggregatorService/RegisterNode": denied(),
    "AggregatorService/Heartbeat": denied(),
    "AggregatorService/DeregisterNode": denied(),
    "AggregatorService/ReportMigration": denied(),
    "AggregatorService/ListNodes": denied(),
    "AggregatorService/Deploy": unimplemented(),
    "AggregatorService/ReleasePlacement": unimplemented(),
    "AggregatorService/GetPlacement": unimplemented(),
    "AggregatorService/ListPlacements": unimplemented(),
    "AggregatorService/GetAuction": unimplemented(),
    "AggregatorService/ListAuctions": unimplemented(),
    "AggregatorService/StreamClusterEvents": unimplemented(),
    "AggregatorService/CreateDeployment": unimplemented(),
    "AggregatorService/GetDeployment": unimplemented(),
    "AggregatorService/ListDeployments": unimplemented(),
    "AggregatorService/UpdateDeployment": unimplemented(),
    "AggregatorService/DeleteDeployment": unimplemented(),
    "AggregatorService/ScaleDeployment": unimplemented(),
    "AggregatorService/WatchDeployment": unimplemented(),
    "AggregatorService/GetRollout": unimplemented(),
    "AggregatorService/ListRollouts": unimplemented(),
    "AggregatorService/WatchRollout": unimplemented(),
    "AggregatorService/PauseRollout": unimplemented(),
    "AggregatorService/ResumeRollout": unimplemented(),
    "AggregatorService/PromoteRollout": unimplemented(),
    "AggregatorService/RollbackRollout": unimplemented(),
    // Maintenance and backups are the operators' (a tenant's role has no row for them).
    "AggregatorService/CordonNode": denied({ node: "b-node" }),
    "AggregatorService/DrainNode": denied({ node: "b-node" }),
    "AggregatorService/UncordonNode": denied({ node: "b-node" }),
    "AggregatorService/ShutdownNode": denied({ node: "b-node" }),
    "AggregatorService/ListBackups": denied(),
    "AggregatorService/TriggerBackup": denied(),
    "AggregatorService/RestoreBackup": denied({ commit: "0000000" }),
    // Alerts are about the cluster's nodes: the operators' (and auditors') view, not a tenant's.
    "AggregatorService/ListAlerts": denied(),
    "AggregatorService/ListAlertThresholds": denied(),
    "AggregatorService/SetAlertThreshold": denied({ name: "cpu_warning", value: 0.5 }),
  };
}
