// BidService against a real aetherd: bids from the kernel's figures, declines with reasons, holds
// that keep concurrent auctions from over-committing, and workloads really provisioned and released.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, observe, runtime, vm as vmApi } from "@aether/sdk";
import type { RequestBidResponse, WorkloadSpecSchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { collect, eventually, isRunning, useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { guestImage } from "./helpers/guest.js";

const GiB = 2n ** 30n;
const MiB = 2n ** 20n;

// The node's own labels come from its config file, as an operator would set them.
const configDir = mkdtempSync(join(tmpdir(), "aether-bidding-"));
const configFile = join(configDir, "aetherd.toml");
writeFileSync(
  configFile,
  `[node]\nlabels = { rack = "r7", tier = "ssd" }\n\n[bidding]\nmemory_overcommit = 1.0\ncpu_overcommit = 4.0\nhold_ms = 5000\n`,
);

type SpecInit = MessageInitShape<typeof WorkloadSpecSchema>;
let counter = 0;
const workloadId = () => `00000000-0000-4000-8000-${String(++counter).padStart(12, "0")}`;
type Extra = { name?: string; tenant?: string; labels?: Record<string, string>; requirements?: SpecInit["requirements"] };
const sleeper = (id: string, extra: Extra = {}): SpecInit => ({
  workloadId: id,
  name: `w${counter}`,
  kind: { case: "executable", value: { argv: ["/bin/sh", "-c", "echo provisioned; exec sleep 600"] } },
  ...extra,
});

function factor(bid: RequestBidResponse, name: string) {
  const f = bid.breakdown?.factors.find((x) => x.name === name);
  assert.ok(f, `factor ${name} in ${JSON.stringify(bid.breakdown?.factors.map((x) => x.name))}`);
  return f;
}

const hostMemory = BigInt(Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1]) * 1024);

describe("bidding", () => {
  const env = useDaemon({ args: ["--config", configFile] });
  after(() => rmSync(configDir, { recursive: true, force: true }));
  const bid = (spec: SpecInit | undefined) => env.aether.bid.requestBid({ auctionId: "a-test", spec });

  it("bids 1..1000 for a small executable, with a breakdown of factors in 0..1 and a hold", async () => {
    const { node } = await env.aether.node.getNodeInfo({});
    const before = Date.now();
    const r = await bid(sleeper(workloadId()));
    assert.equal(r.node, node?.id);
    assert.ok(r.score >= 1 && r.score <= 1000, `score ${r.score}`);
    assert.equal(r.breakdown?.declineReason, "");
    const names = r.breakdown?.factors.map((f) => f.name) ?? [];
    assert.deepEqual(names, ["free_memory", "free_cpu", "pressure", "load", "disk_wear", "spread"]);
    for (const f of r.breakdown?.factors ?? []) {
      assert.ok(f.value >= 0 && f.value <= 1, `${f.name} = ${f.value}`);
      assert.ok(f.weight > 0 && f.detail !== "", `${f.name} has a weight and a detail`);
    }
    // This machine's disk (virtio) reports no wear: unknown and neutral, never invented.
    assert.match(factor(r, "disk_wear").detail, /^unknown|most worn disk/);
    const holdMs = Number(r.holdUntil?.seconds ?? 0n) * 1000 - before;
    assert.ok(holdMs > 3000 && holdMs < 7000, `hold of about 5 s, got ${holdMs} ms`);
  });

  it("declines a workload needing more memory than the host has, naming memory", async () => {
    const r = await bid(sleeper(workloadId(), { requirements: { memoryBytes: hostMemory * 2n } }));
    assert.equal(r.score, -1);
    assert.match(r.breakdown?.declineReason ?? "", /not enough memory/);
    assert.equal(r.holdUntil, undefined, "a decline holds nothing");
  });

  it("declines require_kvm: KVM is not confirmed usable on this host", async () => {
    const { node } = await env.aether.node.getNodeInfo({});
    const r = await bid(sleeper(workloadId(), { requirements: { requireKvm: true } }));
    assert.equal(r.score, -1);
    assert.match(r.breakdown?.declineReason ?? "", /needs KVM; this node has no usable KVM/);
    // The node probe agrees: /dev/kvm alone is not trusted (or is absent).
    assert.match(node?.capabilities?.kvm?.reason ?? "", /probe guest|does not exist|cannot be opened/);
  });

  it("matches node_selector against the node's configured labels", async () => {
    const miss = await bid(sleeper(workloadId(), { requirements: { nodeSelector: { rack: "r1" } } }));
    assert.equal(miss.score, -1);
    assert.match(miss.breakdown?.declineReason ?? "", /node_selector rack=r1 does not match: this node's rack is "r7"/);
    const hit = await bid(sleeper(workloadId(), { requirements: { nodeSelector: { rack: "r7", tier: "ssd" } } }));
    assert.ok(hit.score > 0, hit.breakdown?.declineReason);
    const { node } = await env.aether.node.getNodeInfo({});
    const excluded = await bid(sleeper(workloadId(), { requirements: { excludeNodes: [node?.id ?? ""] } }));
    assert.equal(excluded.score, -1);
    assert.match(excluded.breakdown?.declineReason ?? "", /excludes this node/);
  });

  it("answers INVALID_ARGUMENT with a sentence for specs that are not well formed", async () => {
    await rejectsWith(bid(undefined), Code.InvalidArgument, /spec is required/);
    await rejectsWith(
      bid({ workloadId: workloadId(), name: "nokind" }),
      Code.InvalidArgument,
      /no kind: give exactly one of executable, cell or vm/,
    );
    await rejectsWith(bid(sleeper(workloadId(), { name: "Bad_Name" })), Code.InvalidArgument, /spec.name "Bad_Name" is not a valid name/);
    await rejectsWith(bid(sleeper("")), Code.InvalidArgument, /workload_id is empty/);
    await rejectsWith(
      bid({ workloadId: workloadId(), name: "rel", kind: { case: "executable", value: { argv: ["sleep", "1"] } } }),
      Code.InvalidArgument,
      /argv\[0\] "sleep" is not an absolute path/,
    );
    await rejectsWith(
      env.aether.bid.executeProvisioning({ spec: { workloadId: workloadId(), name: "x" } }),
      Code.InvalidArgument,
      /no kind/,
    );
    await rejectsWith(env.aether.bid.releaseWorkload({ workloadId: "" }), Code.InvalidArgument, /workload_id is empty/);
  });

  it("a held bid reduces the next bid's free memory, and GetTelemetry counts it as committed", async () => {
    const small = () => bid(sleeper(workloadId()));
    const baseline = factor(await small(), "free_memory").value;
    const committedBefore = (await env.aether.observe.getTelemetry({})).telemetry?.memoryCommittedBytes ?? 0n;
    const bigSpec = sleeper(workloadId(), { requirements: { memoryBytes: 4n * GiB } });
    const big = await bid(bigSpec);
    assert.ok(big.score > 0, big.breakdown?.declineReason);
    const after = factor(await small(), "free_memory").value;
    const share = Number(4n * GiB) / Number(hostMemory);
    assert.ok(baseline - after > share * 0.8, `free_memory fell from ${baseline} to ${after}; the 4 GiB hold is ${share} of the host`);
    const committedAfter = (await env.aether.observe.getTelemetry({})).telemetry?.memoryCommittedBytes ?? 0n;
    assert.ok(committedAfter - committedBefore >= 4n * GiB, `committed ${committedBefore} -> ${committedAfter}`);
    // Asking again for the same workload renews its hold instead of adding a second one.
    assert.ok((await bid(bigSpec)).score > 0);
    const again = factor(await small(), "free_memory").value;
    assert.ok(Math.abs(again - after) < share * 0.2, `free_memory ${after} -> ${again} after a repeated bid`);
    // Releasing the workload drops its hold.
    await env.aether.bid.releaseWorkload({ workloadId: bigSpec.workloadId ?? "" });
    const released = factor(await small(), "free_memory").value;
    assert.ok(released - again > share * 0.8, `free_memory ${again} -> ${released} after the release`);
  });

  it("concurrent auctions cannot over-commit the node: holds are taken one bid at a time", async () => {
    const { telemetry } = await env.aether.observe.getTelemetry({});
    const byCommitments = hostMemory - (telemetry?.memoryCommittedBytes ?? 0n);
    const byKernel = telemetry?.memoryAvailableBytes ?? 0n;
    const room = byKernel < byCommitments ? byKernel : byCommitments;
    const each = (room * 4n) / 10n; // two fit, a third does not
    const specs = [1, 2, 3, 4].map(() => sleeper(workloadId(), { requirements: { memoryBytes: each } }));
    const bids = await Promise.all(specs.map((s) => bid(s)));
    const won = bids.filter((b) => b.score > 0);
    assert.equal(won.length, 2, `scores ${bids.map((b) => b.score).join(", ")}`);
    for (const b of bids.filter((x) => x.score < 0)) assert.match(b.breakdown?.declineReason ?? "", /not enough memory/);
    for (const s of specs) await env.aether.bid.releaseWorkload({ workloadId: s.workloadId ?? "" });
  });

  it("ExecuteProvisioning really runs an executable, once, however often it is retried", async () => {
    const id = workloadId();
    const spec = sleeper(id, { name: "provisioned-exe", tenant: "bids", labels: { team: "a" } });
    assert.ok((await bid(spec)).score > 0);
    const first = await env.aether.bid.executeProvisioning({ auctionId: "a1", spec, requestId: id });
    assert.equal(first.resource.case, "executable");
    const exe = first.resource.case === "executable" ? first.resource.value : undefined;
    assert.equal(exe?.name, "provisioned-exe");
    assert.equal(exe?.tenant, "bids");
    assert.equal(exe?.labels["aether.io/workload"], id);
    assert.equal(exe?.labels.team, "a");
    const { executable } = await env.aether.runtime.getExecutable({ executable: exe?.id ?? "", tenant: "bids" });
    assert.equal(executable?.state, runtime.ExecutableState.RUNNING);
    assert.ok(isRunning(executable?.pid ?? 0));
    await eventually(
      async () => {
        const logs = await collect(
          env.aether.observe.streamLogs({ source: observe.LogSource.EXECUTABLE, target: exe?.id ?? "", tenant: "bids" }),
        );
        return (logs[observe.LogChannel.STDOUT] ?? "").includes("provisioned") ? true : undefined;
      },
      10_000,
      "the executable's output",
    );

    const retries = await Promise.all([1, 2, 3].map(() => env.aether.bid.executeProvisioning({ auctionId: "a1", spec, requestId: id })));
    for (const retry of retries)
      assert.equal(retry.resource.case === "executable" ? retry.resource.value.id : "", exe?.id, "a retry returns the same executable");
    const all = await env.aether.runtime.listExecutables({ tenant: "bids", filter: `aether.io/workload=${id}`, pageSize: 100 });
    assert.equal(all.executables.length, 1, "a retry does not start a second one");

    const released = await env.aether.bid.releaseWorkload({ workloadId: id, tenant: "bids", gracePeriod: { seconds: 1n } });
    assert.equal(released.released, true);
    await rejectsWith(env.aether.runtime.getExecutable({ executable: exe?.id ?? "", tenant: "bids" }), Code.NotFound, /no executable/);
    assert.ok(!isRunning(executable?.pid ?? 0), "the process is gone");
  });

  it("a cell workload allocates a real cell; ReleaseWorkload frees it and stops what runs in it", async () => {
    const id = workloadId();
    const spec: SpecInit = { workloadId: id, name: "bid-cell", kind: { case: "cell", value: { limits: { memoryMaxBytes: 128n * MiB } } } };
    const b = await bid(spec);
    assert.ok(b.score > 0, b.breakdown?.declineReason);
    const r = await env.aether.bid.executeProvisioning({ auctionId: "a2", spec, requestId: id });
    assert.equal(r.resource.case, "cell");
    const cell = r.resource.case === "cell" ? r.resource.value : undefined;
    assert.equal(cell?.name, "bid-cell");
    assert.equal(cell?.labels["aether.io/workload"], id);
    assert.equal(cell?.limits?.memoryMaxBytes, 128n * MiB);
    const paths = Object.values(cell?.cgroupPaths ?? {});
    assert.ok(paths.length > 0 && paths.every((p) => existsSync(p)), `cgroup folders exist: ${paths.join(", ")}`);
    const inside = (await env.aether.runtime.startExecutable({ cell: "bid-cell", argv: ["/bin/sleep", "600"] })).executable;
    assert.ok(isRunning(inside?.pid ?? 0));

    const released = await env.aether.bid.releaseWorkload({ workloadId: id, gracePeriod: { seconds: 0n } });
    assert.equal(released.released, true);
    await rejectsWith(env.aether.cells.getCell({ cell: "bid-cell" }), Code.NotFound, /bid-cell/);
    assert.ok(
      paths.every((p) => !existsSync(p)),
      "the cgroup folders are removed",
    );
    await eventually(() => (isRunning(inside?.pid ?? 0) ? undefined : true), 15_000, "the executable in the cell to stop");
  });

  it("a VM workload is created and started; its memory and QEMU's count as committed until it is released", async () => {
    const id = workloadId();
    const boot = {
      source: { case: "kernel" as const, value: { kernelPath: guestImage().kernel, initrdPath: guestImage().initrd, cmdline: "" } },
    };
    const spec: SpecInit = {
      workloadId: id,
      name: "bid-vm",
      kind: { case: "vm", value: { vcpus: 1, memoryBytes: 160n * MiB, acceleration: vmApi.Acceleration.TCG, boot } },
    };
    const b = await bid(spec);
    assert.ok(b.score > 0, b.breakdown?.declineReason);
    const before = (await env.aether.observe.getTelemetry({})).telemetry?.memoryCommittedBytes ?? 0n;
    const r = await env.aether.bid.executeProvisioning({ auctionId: "a4", spec, requestId: id });
    assert.equal(r.resource.case, "vm");
    const v = r.resource.case === "vm" ? r.resource.value : undefined;
    assert.equal(v?.name, "bid-vm");
    assert.equal(v?.labels["aether.io/workload"], id);
    assert.ok(v?.state === vmApi.VmState.STARTING || v?.state === vmApi.VmState.RUNNING, `state ${v?.state}`);
    assert.ok(isRunning(v?.pid ?? 0), "QEMU runs");
    const retry = await env.aether.bid.executeProvisioning({ auctionId: "a4", spec, requestId: id });
    assert.equal(retry.resource.case === "vm" ? retry.resource.value.id : "", v?.id, "a retry returns the same VM");
    // The hold (160 MiB + 384 MiB) became the running VM's commitment of the same size.
    const during = (await env.aether.observe.getTelemetry({})).telemetry?.memoryCommittedBytes ?? 0n;
    assert.equal(during - before, 0n, `committed ${before} with the hold, ${during} with the VM`);

    assert.equal((await env.aether.bid.releaseWorkload({ workloadId: id, gracePeriod: { seconds: 0n } })).released, true);
    await rejectsWith(env.aether.vm.getVm({ vm: v?.id ?? "" }), Code.NotFound, /no VM/);
    await eventually(() => (isRunning(v?.pid ?? 0) ? undefined : true), 15_000, "QEMU to end");
    const after = (await env.aether.observe.getTelemetry({})).telemetry?.memoryCommittedBytes ?? 0n;
    assert.equal(before - after, 160n * MiB + 384n * MiB);
  });

  it("releasing a workload the node does not know is not an error", async () => {
    const r = await env.aether.bid.releaseWorkload({ workloadId: workloadId() });
    assert.equal(r.released, false);
  });

  it("refuses to provision what no longer fits, instead of over-committing", async () => {
    const id = workloadId();
    await rejectsWith(
      env.aether.bid.executeProvisioning({
        auctionId: "a3",
        spec: sleeper(id, { requirements: { memoryBytes: hostMemory * 2n } }),
        requestId: id,
      }),
      Code.ResourceExhausted,
      /can no longer host workload .*not enough memory/,
    );
    const left = await env.aether.runtime.listExecutables({ filter: `aether.io/workload=${id}`, pageSize: 100 });
    assert.equal(left.executables.length, 0);
  });
});
