// Commitments, disk wear parsing, KVM confirmation and spec checks: the node-side figures of a bid.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { WorkloadSpecSchema, type WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { Hypervisor } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import type { CellRecord } from "../cells/registry.js";
import type { TrackedExecutable } from "../runtime/supervisor.js";
import type { VmRecord } from "../vm/record.js";
import { freshRuntime } from "../vm/record.js";
import { wearFromNvmeCli, wearFromSmartctl } from "../observe/telemetry.js";
import { commitments, KvmCheck, type CommitmentSources } from "./capacity.js";
import { checkSpec, VM_OVERHEAD_BYTES } from "./spec.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function cell(name: string, memoryMaxBytes: number, cpuQuotaUsec = 0, labels: Record<string, string> = {}): CellRecord {
  return {
    id: `id-${name}`,
    name,
    tenant: "default",
    labels,
    limits: {
      cpuWeight: 100,
      cpuQuotaUsec,
      cpuPeriodUsec: 100_000,
      cpusetCpus: "",
      cpusetMems: "",
      memoryMaxBytes,
      memoryHighBytes: 0,
      pidsMax: 0,
    },
    isolation: { pid: false, mount: false, network: false, uts: false, ipc: false },
    requestId: "",
    createTimeMs: 0,
    stateReason: "",
    phase: "ready",
  };
}

function vm(
  name: string,
  state: VmRecord["runtime"]["state"],
  memoryBytes: number,
  vcpus: number,
  extra: Partial<VmRecord["spec"]> = {},
  runtime: Partial<VmRecord["runtime"]> = {},
): VmRecord {
  return {
    spec: {
      id: `vm-${name}`,
      name,
      tenant: "default",
      labels: {},
      profile: "ephemeral",
      hypervisor: "qemu",
      acceleration: "auto",
      vcpus,
      memoryBytes,
      boot: "kernel",
      bootImageId: "",
      ownsBootVolume: false,
      kernelPath: "",
      initrdPath: "",
      cmdline: "",
      disks: [],
      nics: [],
      cell: "",
      guestAgent: false,
      bootWatchdogMs: 1000,
      requestId: "",
      createTimeMs: 0,
      ...extra,
    },
    runtime: { ...freshRuntime(), state, ...runtime },
  };
}

function exe(labels: Record<string, string>, status: TrackedExecutable["status"], cellName = ""): TrackedExecutable {
  return {
    spec: {
      id: "e",
      name: "e",
      tenant: "default",
      labels,
      argv: ["/bin/true"],
      env: {},
      cwd: "/",
      uid: 0,
      gid: 0,
      cell: cellName,
      cellId: "",
      cellOomKillsAtStart: 0,
      logLimitBytes: 1,
      requestId: "",
      createTimeMs: 0,
    },
    dir: "/nonexistent",
    status,
    reason: "",
    ended: Promise.resolve(),
  } as TrackedExecutable;
}

const none: CommitmentSources = { vms: [], cells: [], executables: [], holds: [], declared: new Map(), nowMs: 1000 };

describe("commitments", () => {
  it("is zero on an empty node", () => {
    assert.deepEqual(commitments(none), { cpuMillis: 0, memoryBytes: 0, heldMemoryBytes: 0, heldDiskBytes: 0, workloads: 0 });
  });

  it("counts active VMs with QEMU's overhead, not stopped ones, and not their own cells twice", () => {
    const c = commitments({
      ...none,
      vms: [vm("a", "running", GiB, 2), vm("b", "stopped", 4 * GiB, 4)],
      cells: [cell("vm-a", GiB + VM_OVERHEAD_BYTES, 200_000, { "aether.io/vm": "vm-a" })],
    });
    assert.equal(c.memoryBytes, GiB + VM_OVERHEAD_BYTES);
    assert.equal(c.cpuMillis, 2000);
    assert.equal(c.workloads, 1);
  });

  it("counts a cell's limits once: an enclosing cell's limit bounds its children", () => {
    const c = commitments({ ...none, cells: [cell("a", 2 * GiB, 50_000), cell("a/b", GiB, 20_000), cell("c", 0), cell("d", 512 * MiB)] });
    assert.equal(c.memoryBytes, 2 * GiB + 512 * MiB);
    assert.equal(c.cpuMillis, 500);
    assert.equal(c.workloads, 4);
  });

  it("a VM in a user cell with a memory limit is counted by the cell", () => {
    const c = commitments({ ...none, cells: [cell("box", 3 * GiB)], vms: [vm("in-box", "running", GiB, 1, { cell: "box" })] });
    assert.equal(c.memoryBytes, 3 * GiB);
  });

  it("counts provisioned executables' declared needs, and live holds only", () => {
    const c = commitments({
      ...none,
      executables: [exe({ "aether.io/workload": "w1" }, "running"), exe({ "aether.io/workload": "w2" }, "exited"), exe({}, "running")],
      declared: new Map([
        ["w1", { cpuMillis: 300, memoryBytes: GiB }],
        ["w2", { cpuMillis: 300, memoryBytes: GiB }],
      ]),
      holds: [
        { workloadId: "h1", cpuMillis: 100, memoryBytes: 2 * GiB, diskBytes: 5 * GiB, untilMs: 2000 },
        { workloadId: "h2", cpuMillis: 100, memoryBytes: 2 * GiB, diskBytes: 0, untilMs: 999 },
        { workloadId: "h3", cpuMillis: 100, memoryBytes: 2 * GiB, diskBytes: 0, untilMs: 5000 },
      ],
      exceptWorkload: "h3",
    });
    assert.equal(c.memoryBytes, GiB + 2 * GiB);
    assert.equal(c.cpuMillis, 400);
    assert.equal(c.heldMemoryBytes, 2 * GiB);
    assert.equal(c.heldDiskBytes, 5 * GiB);
    assert.equal(c.workloads, 3, "two running executables and one live hold");
  });
});

describe("disk wear", () => {
  it("reads smartctl's summary, the NVMe health log and the ATA device statistics", () => {
    assert.equal(wearFromSmartctl({ endurance_used: { current_percent: 7 } }), 7);
    assert.equal(wearFromSmartctl({ nvme_smart_health_information_log: { critical_warning: 0, percentage_used: 3 } }), 3);
    const ata = {
      ata_device_statistics: {
        pages: [
          { number: 1, table: [] },
          {
            number: 7,
            name: "Solid State Device Statistics",
            table: [{ offset: 8, name: "Percentage Used Endurance Indicator", value: 12 }],
          },
        ],
      },
    };
    assert.equal(wearFromSmartctl(ata), 12);
    assert.equal(wearFromNvmeCli({ critical_warning: 0, percent_used: 4 }), 4);
  });

  it("a disk without an endurance figure is unknown, never zero", () => {
    assert.equal(wearFromSmartctl({ device: { name: "/dev/vda" }, smartctl: { exit_status: 1 } }), undefined);
    assert.equal(wearFromSmartctl({ ata_smart_attributes: { table: [] }, rotation_rate: 7200 }), undefined);
    assert.equal(wearFromSmartctl("garbage"), undefined);
    assert.equal(wearFromNvmeCli({}), undefined);
  });
});

describe("KVM confirmation", () => {
  it("is unusable without /dev/kvm, unconfirmed without a booted guest, usable once a VM runs under KVM", () => {
    assert.match(new KvmCheck("/usr/bin/qemu", 1000, () => false).status([]).reason, /\/dev\/kvm is missing/);
    const unconfirmed = new KvmCheck("/usr/bin/qemu", 1000, () => true).status([]);
    assert.equal(unconfirmed.usable, false);
    assert.match(unconfirmed.reason, /no guest has booted under KVM/);
    const running = vm("fast", "running", GiB, 1, {}, { effectiveAcceleration: "kvm" });
    assert.equal(new KvmCheck("/usr/bin/qemu", 1000, () => true).status([running]).usable, true);
    const tcg = vm("slow", "running", GiB, 1, {}, { effectiveAcceleration: "tcg" });
    assert.match(new KvmCheck("/usr/bin/qemu", 1000, () => true).status([tcg]).reason, /runs under TCG/);
  });
});

describe("workload specs", () => {
  const spec = (init: Parameters<typeof create<typeof WorkloadSpecSchema>>[1]): WorkloadSpec => create(WorkloadSpecSchema, init);
  const invalid = (s: WorkloadSpec | undefined, pattern: RegExp) =>
    assert.throws(
      () => checkSpec(s),
      (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument && pattern.test(err.rawMessage),
    );

  it("derives requirements from the spec as the contract says", () => {
    const exeSpec = checkSpec(spec({ workloadId: "w1", name: "web", kind: { case: "executable", value: { argv: ["/bin/true"] } } }));
    assert.equal(exeSpec.requirements.cpuMillis, 100);
    assert.equal(exeSpec.requirements.memoryBytes, 0);
    const cellSpec = checkSpec(
      spec({
        workloadId: "w2",
        name: "box",
        kind: { case: "cell", value: { limits: { memoryMaxBytes: BigInt(GiB), cpuMax: { quotaUsec: 150_000n, periodUsec: 100_000n } } } },
      }),
    );
    assert.equal(cellSpec.requirements.memoryBytes, GiB);
    assert.equal(cellSpec.requirements.cpuMillis, 1500);
    assert.equal(cellSpec.requirements.needsCells, true);
    const vmSpec = checkSpec(
      spec({
        workloadId: "w3",
        name: "guest",
        kind: {
          case: "vm",
          value: {
            vcpus: 2,
            memoryBytes: BigInt(GiB),
            hypervisor: Hypervisor.FIRECRACKER,
            boot: { source: { case: "kernel", value: { kernelPath: "/k" } } },
          },
        },
      }),
    );
    assert.equal(vmSpec.requirements.cpuMillis, 2000);
    assert.equal(vmSpec.requirements.memoryBytes, GiB + VM_OVERHEAD_BYTES);
    assert.equal(vmSpec.requirements.requireKvm, true, "Firecracker needs KVM");
    assert.equal(vmSpec.requirements.hypervisor, "firecracker");
    const explicit = checkSpec(
      spec({
        workloadId: "w4",
        requirements: { cpuMillis: 250, memoryBytes: 5n * BigInt(GiB) },
        kind: { case: "vm", value: { name: "g", vcpus: 4, boot: { source: { case: "kernel", value: { kernelPath: "/k" } } } } },
      }),
    );
    assert.equal(explicit.requirements.cpuMillis, 250);
    assert.equal(explicit.requirements.memoryBytes, 5 * GiB);
    assert.equal(explicit.name, "g", "the kind's name when the workload has none");
  });

  it("refuses specs that are not well formed, with a sentence", () => {
    invalid(undefined, /spec is required/);
    invalid(spec({ name: "x", kind: { case: "executable", value: { argv: ["/bin/true"] } } }), /workload_id is empty/);
    invalid(spec({ workloadId: "w", name: "x" }), /no kind: give exactly one of executable, cell or vm/);
    invalid(
      spec({ workloadId: "w", name: "Not_A_Label", kind: { case: "executable", value: { argv: ["/bin/true"] } } }),
      /spec.name "Not_A_Label" is not a valid name/,
    );
    invalid(
      spec({ workloadId: "w", name: "x", kind: { case: "executable", value: { argv: ["true"] } } }),
      /argv\[0\] "true" is not an absolute path/,
    );
    invalid(spec({ workloadId: "w", kind: { case: "cell", value: {} } }), /a cell workload needs a name/);
    invalid(spec({ workloadId: "w", name: "v", kind: { case: "vm", value: { vcpus: 0 } } }), /vcpus is 0/);
    invalid(
      spec({ workloadId: "w", name: "x", tenant: "BAD", kind: { case: "executable", value: { argv: ["/bin/true"] } } }),
      /tenant "BAD"/,
    );
    invalid(spec({ workloadId: "w w", name: "x", kind: { case: "executable", value: { argv: ["/bin/true"] } } }), /is not an id/);
  });
});
