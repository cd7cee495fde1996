// The lvm-thin driver without device-mapper (these machines have none): the exact argv of every LVM
// and qemu-img command it runs, captured by a fake runner, and what probe() says when device-mapper,
// lvm2 or the thin pool is missing.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { HostCommandError, type HostCommandResult } from "../host/command.js";
import { LvmThinPool, lvmThinCommands, lvNames, parseLvsReport, roundUpToGranularity, type HostRunner } from "./lvm-thin-pool.js";
import { PoolUnavailableError } from "./pool.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const VOL = "0b4f6a52-8d1e-4c1a-9f7e-3d2c1b0a9e8f";
const IMG = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const SNAP1 = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const SNAP2 = "2a1b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const SNAP3 = "3b2c4d5e-6f70-4b8c-9dae-1f2a3b4c5d6e";
const NEW = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";

/** An lvs JSON report as lvm2 prints it. */
function lvsJson(rows: Record<string, string>[]): string {
  return JSON.stringify({ report: [{ lv: rows }] });
}

const POOL_REPORT = [
  "lvs",
  "--reportformat",
  "json",
  "--units",
  "b",
  "--nosuffix",
  "-o",
  "lv_size,data_percent,segtype,vg_extent_size",
  "vg0/pool0",
];
const LIST = ["lvs", "--reportformat", "json", "-o", "lv_name", "vg0"];
const healthyPool = lvsJson([{ lv_size: String(100 * GiB), data_percent: "25.00", segtype: "thin-pool", vg_extent_size: String(4 * MiB) }]);

type Reply = string | Error | undefined;

/** Records each command as [file, ...args]; `reply` answers by argv, the pool report by default. */
function fakeHost(reply: (argv: string[]) => Reply = () => undefined) {
  const calls: string[][] = [];
  const timeouts: (number | undefined)[] = [];
  const run: HostRunner = async (file, args, options): Promise<HostCommandResult> => {
    const argv = [file, ...args];
    calls.push(argv);
    timeouts.push(options.timeoutMs);
    let out = reply(argv);
    if (out === undefined && argv.join(" ") === POOL_REPORT.join(" ")) out = healthyPool;
    if (out instanceof Error) throw out;
    return { stdout: out ?? "", stderr: "" };
  };
  /** The calls after the (cached) probe. */
  const work = () => calls.filter((c) => c.join(" ") !== POOL_REPORT.join(" "));
  return { calls, timeouts, run, work };
}

function lvmError(argv: string[], stderr: string): HostCommandError {
  const command = argv.join(" ");
  return new HostCommandError(`${command} failed: ${stderr}`, command, stderr, 5);
}

/** A file standing in for /dev/mapper/control, so device-mapper "exists". */
function fakeControl(): string {
  const path = join(mkdtempSync(join(tmpdir(), "aether-lvm-")), "control");
  writeFileSync(path, "");
  return path;
}

const allTools = async (name: string) => `/usr/sbin/${name}`;

function pool(
  run: HostRunner,
  options: { which?: (name: string) => Promise<string | undefined>; control?: string; location?: string } = {},
) {
  const stagingDir = join(mkdtempSync(join(tmpdir(), "aether-lvm-staging-")), "staging");
  const p = new LvmThinPool("fast", options.location ?? "vg0/pool0", {
    stagingDir,
    run,
    which: options.which ?? allTools,
    mapperControlPath: options.control ?? fakeControl(),
  });
  return { p, stagingDir };
}

const disk = (id: string, name: string, sizeBytes: number) => ({
  id,
  hostPath: `/dev/vg0/${name}`,
  format: "lvm-thin" as const,
  sizeBytes,
});
const volume = disk(VOL, `aether-v-${VOL}`, 10 * GiB);
const image = disk(IMG, `aether-i-${IMG}`, 2 * GiB);

describe("lvm-thin commands (pure argv)", () => {
  const c = lvmThinCommands("vg0", "pool0");

  it("names LVs from ids only, and refuses anything that is not an id", () => {
    assert.equal(lvNames.volume(VOL), `aether-v-${VOL}`);
    assert.equal(lvNames.image(IMG), `aether-i-${IMG}`);
    assert.equal(lvNames.snapshot(SNAP1), `aether-s-${SNAP1}`);
    assert.equal(lvNames.rollback(VOL), `aether-r-${VOL}`);
    for (const bad of ["", "../x", "a/b", "x_tdata", "a.b", "-x", "a b", "x".repeat(119)]) {
      assert.throws(() => lvNames.volume(bad), /server-assigned id/, bad);
    }
    assert.equal(lvNames.volume("x".repeat(118)).length, 127);
    assert.throws(() => lvmThinCommands("vg 0", "pool0"), /volume group/);
    assert.throws(() => lvmThinCommands("vg0", "-pool"), /thin pool/);
    assert.throws(() => c.remove(["../etc"]), /logical volume/);
  });

  it("builds each command as an argv array with sizes in bytes", () => {
    assert.deepEqual(c.createThin("aether-v-a", 10 * GiB), {
      file: "lvcreate",
      args: ["--type", "thin", "--virtualsize", "10737418240b", "--thinpool", "vg0/pool0", "--name", "aether-v-a", "--yes"],
    });
    assert.deepEqual(c.snapshot("aether-v-a", "aether-s-b"), {
      file: "lvcreate",
      args: ["--snapshot", "--setactivationskip", "y", "--name", "aether-s-b", "vg0/aether-v-a"],
    });
    assert.deepEqual(c.clone("aether-s-b", "aether-v-c"), {
      file: "lvcreate",
      args: ["--snapshot", "--setactivationskip", "n", "--name", "aether-v-c", "vg0/aether-s-b", "--yes"],
    });
    assert.deepEqual(c.activate("aether-v-c"), { file: "lvchange", args: ["--activate", "y", "--ignoreactivationskip", "vg0/aether-v-c"] });
    assert.deepEqual(c.extend("aether-v-c", 12 * GiB), { file: "lvextend", args: ["--size", "12884901888b", "vg0/aether-v-c"] });
    assert.deepEqual(c.rename("aether-r-a", "aether-v-a"), { file: "lvrename", args: ["vg0", "aether-r-a", "aether-v-a"] });
    assert.deepEqual(c.remove(["aether-s-b", "aether-v-a"]), { file: "lvremove", args: ["--yes", "vg0/aether-s-b", "vg0/aether-v-a"] });
    assert.deepEqual(c.poolReport(), { file: POOL_REPORT[0], args: POOL_REPORT.slice(1) });
    assert.deepEqual(c.lvReport("aether-v-a"), {
      file: "lvs",
      args: ["--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_size,data_percent", "vg0/aether-v-a"],
    });
    assert.deepEqual(c.listLvs(), { file: LIST[0], args: LIST.slice(1) });
    assert.deepEqual(c.imageInfo("/s/i.part", "qcow2"), { file: "qemu-img", args: ["info", "--output=json", "-f", "qcow2", "/s/i.part"] });
    assert.deepEqual(c.writeImage("/s/i.part", "raw", "aether-i-x"), {
      file: "qemu-img",
      args: ["convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw", "/s/i.part", "/dev/vg0/aether-i-x"],
    });
    assert.equal(c.devicePath("aether-v-a"), "/dev/vg0/aether-v-a");
    assert.throws(() => c.createThin("aether-v-a", 0), /not a size/);
    assert.throws(() => c.extend("aether-v-a", 1.5), /not a size/);
  });

  it("rounds sizes up to 4 MiB and parses lvs JSON reports", () => {
    assert.equal(roundUpToGranularity(1), 4 * MiB);
    assert.equal(roundUpToGranularity(4 * MiB), 4 * MiB);
    assert.equal(roundUpToGranularity(4 * MiB + 1), 8 * MiB);
    assert.deepEqual(parseLvsReport('{"report":[{"lv":[{"lv_name":"a"},{"lv_name":"b"}]}]}'), [{ lv_name: "a" }, { lv_name: "b" }]);
    assert.deepEqual(parseLvsReport('{"report":[{"lv":[]}]}'), []);
  });
});

describe("lvm-thin probe", () => {
  it("on this host, reports device-mapper missing (or, where it exists, goes on to check lvm2)", async () => {
    const host = fakeHost();
    const p = new LvmThinPool("fast", "vg0/pool0", { stagingDir: tmpdir(), run: host.run, which: async () => undefined });
    const status = await p.probe();
    assert.equal(status.available, false);
    if (!existsSync("/dev/mapper/control")) {
      assert.equal(
        status.reason,
        "device-mapper is not available on this host (no /dev/mapper/control): load the dm_thin_pool module (modprobe dm_thin_pool) or use a dir or zfs pool",
      );
    } else {
      assert.match(status.reason, /install lvm2/);
    }
    assert.deepEqual(host.calls, []);
  });

  it("reports device-mapper missing for a control path that does not exist", async () => {
    const host = fakeHost();
    const { p } = pool(host.run, { control: join(tmpdir(), "aether-no-such-dir", "control") });
    const status = await p.probe();
    assert.deepEqual({ ...status, reason: "" }, { available: false, reason: "", capacityBytes: 0, usedBytes: 0 });
    assert.match(
      status.reason,
      /^device-mapper is not available on this host \(no .*aether-no-such-dir\/control\): load the dm_thin_pool module/,
    );
  });

  it("says to install lvm2 when lvcreate or lvs is missing", async () => {
    const host = fakeHost();
    const { p } = pool(host.run, { which: async (name) => (name === "lvs" ? undefined : `/usr/sbin/${name}`) });
    const status = await p.probe();
    assert.equal(status.available, false);
    assert.equal(
      status.reason,
      "the LVM tools are not installed (lvs not found on PATH): install lvm2 (apt-get install lvm2, or dnf install lvm2)",
    );
    assert.deepEqual(host.calls, []);
  });

  it("explains a thin pool that does not exist, with lvs's own message", async () => {
    const host = fakeHost((argv) => (argv[0] === "lvs" ? lvmError(argv, 'Failed to find logical volume "vg0/pool0"') : undefined));
    const { p } = pool(host.run);
    const status = await p.probe();
    assert.equal(status.available, false);
    assert.match(
      status.reason,
      /^the thin pool vg0\/pool0 does not exist \(.*Failed to find logical volume "vg0\/pool0"\): create it \(e\.g\. lvcreate --type thin-pool -L 100G -n pool0 vg0\)/,
    );
    assert.deepEqual(host.calls, [POOL_REPORT]);

    const noVg = fakeHost((argv) => (argv[0] === "lvs" ? lvmError(argv, 'Volume group "vg0" not found') : undefined));
    assert.match((await pool(noVg.run).p.probe()).reason, /^the thin pool vg0\/pool0 does not exist .*Volume group "vg0" not found/);

    const denied = fakeHost((argv) =>
      argv[0] === "lvs" ? lvmError(argv, "/run/lock/lvm/P_global:aux: open failed: Permission denied") : undefined,
    );
    assert.match((await pool(denied.run).p.probe()).reason, /^lvs could not read the thin pool vg0\/pool0 .*Permission denied.*needs root/);
  });

  it("refuses an LV that is not a thin pool and a VG whose extents do not divide 4 MiB", async () => {
    const linear = fakeHost(() =>
      lvsJson([{ lv_size: String(GiB), data_percent: "", segtype: "linear", vg_extent_size: String(4 * MiB) }]),
    );
    assert.match((await pool(linear.run).p.probe()).reason, /^vg0\/pool0 is a linear LV, not a thin pool/);
    const bigExtents = fakeHost(() =>
      lvsJson([{ lv_size: String(GiB), data_percent: "1.00", segtype: "thin-pool", vg_extent_size: String(32 * MiB) }]),
    );
    assert.match((await pool(bigExtents.run).p.probe()).reason, /extent size of 33554432 bytes/);
    const smallExtents = fakeHost(() =>
      lvsJson([{ lv_size: String(GiB), data_percent: "1.00", segtype: "thin-pool", vg_extent_size: String(MiB) }]),
    );
    assert.equal((await pool(smallExtents.run).p.probe()).available, true);
  });

  it("reports a healthy pool's data size and the share written", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    assert.deepEqual(await p.probe(), { available: true, reason: "", capacityBytes: 100 * GiB, usedBytes: 25 * GiB });
    assert.deepEqual(p.formats(), ["lvm-thin"]);
    assert.equal(p.granularityBytes, 4 * MiB);
    assert.equal(p.driver, "lvm-thin");
    assert.equal(p.location, "vg0/pool0");
  });

  it("reports a malformed location instead of throwing from the constructor", async () => {
    for (const location of ["vg0", "vg0/pool0/x", "vg 0/pool0", "/pool0"]) {
      const host = fakeHost();
      const { p } = pool(host.run, { location });
      const status = await p.probe();
      assert.equal(status.available, false, location);
      assert.match(status.reason, /is not a thin pool as "vg\/thinpool"/, location);
      await assert.rejects(
        p.createVolume(VOL, GiB, "lvm-thin"),
        (err: unknown) => err instanceof PoolUnavailableError && /vg\/thinpool/.test(err.message),
      );
      assert.deepEqual(host.calls, []);
    }
  });
});

describe("lvm-thin pool unavailable", () => {
  it("rejects every operation with PoolUnavailableError naming the reason, running nothing", async () => {
    const host = fakeHost();
    const { p } = pool(host.run, { control: join(tmpdir(), "aether-no-such-dir", "control") });
    const isUnavailable = (err: unknown) =>
      err instanceof PoolUnavailableError && /^device-mapper is not available on this host/.test(err.message);
    await assert.rejects(p.createVolume(VOL, GiB, "lvm-thin"), isUnavailable);
    await assert.rejects(p.cloneImage(image, NEW, 4 * GiB), isUnavailable);
    await assert.rejects(p.snapshot(volume, SNAP1), isUnavailable);
    await assert.rejects(p.cloneSnapshot(volume, SNAP1, NEW, GiB), isUnavailable);
    await assert.rejects(p.rollback(volume, SNAP1, []), isUnavailable);
    await assert.rejects(p.deleteSnapshot(volume, SNAP1, undefined, undefined), isUnavailable);
    await assert.rejects(p.resize(volume, 20 * GiB), isUnavailable);
    await assert.rejects(p.deleteVolume(volume, []), isUnavailable);
    await assert.rejects(p.stagingPath(IMG), isUnavailable);
    await assert.rejects(p.finishImport(IMG, "/tmp/x.part", "raw"), isUnavailable);
    await assert.rejects(p.deleteImage(IMG), isUnavailable);
    await assert.rejects(p.allocatedBytes(volume), isUnavailable);
    assert.deepEqual(host.calls, []);
  });

  it("on this host's real /dev/mapper/control, an operation names the device-mapper reason", async (t) => {
    const host = fakeHost();
    const p = new LvmThinPool("fast", "vg0/pool0", { stagingDir: tmpdir(), run: host.run, which: allTools });
    const reason = (await p.probe()).reason;
    if (existsSync("/dev/mapper/control")) {
      // A host with device-mapper reaches the (fake) lvs instead; the pool is then available.
      assert.equal(reason, "");
      t.diagnostic("this host has /dev/mapper/control; checked the available path instead");
      return;
    }
    await assert.rejects(
      p.createVolume(VOL, GiB, "lvm-thin"),
      (err: unknown) => err instanceof PoolUnavailableError && err.message === reason,
    );
    assert.match(reason, /no \/dev\/mapper\/control/);
  });

  it("probes again after a failure, so fixing the host needs no restart, and caches success", async () => {
    let tools = false;
    const host = fakeHost();
    const { p } = pool(host.run, { which: async (name) => (tools ? `/usr/sbin/${name}` : undefined) });
    await assert.rejects(
      p.createVolume(VOL, GiB, "lvm-thin"),
      (err: unknown) => err instanceof PoolUnavailableError && /install lvm2/.test(err.message),
    );
    tools = true;
    await p.createVolume(VOL, GiB, "lvm-thin");
    await p.snapshot(volume, SNAP1);
    assert.equal(host.calls.filter((c) => c.join(" ") === POOL_REPORT.join(" ")).length, 1);
    assert.equal(host.work().length, 2);
  });
});

describe("lvm-thin operations (argv through a fake runner)", () => {
  it("creates a thin volume of the rounded size at /dev/<vg>/<lv>", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    const created = await p.createVolume(VOL, 10 * GiB + 1, "lvm-thin");
    assert.deepEqual(created, { hostPath: `/dev/vg0/aether-v-${VOL}`, format: "lvm-thin", sizeBytes: 10 * GiB + 4 * MiB });
    assert.deepEqual(host.calls, [
      POOL_REPORT,
      [
        "lvcreate",
        "--type",
        "thin",
        "--virtualsize",
        `${10 * GiB + 4 * MiB}b`,
        "--thinpool",
        "vg0/pool0",
        "--name",
        `aether-v-${VOL}`,
        "--yes",
      ],
    ]);
    assert.ok(host.timeouts.every((t) => t === 120_000));
    await assert.rejects(p.createVolume(NEW, GiB, "qcow2"), /not qcow2/);
    assert.equal(host.calls.length, 2);
  });

  it("clones an image: thin snapshot without activation skip, activated, extended when larger", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    assert.deepEqual(await p.cloneImage(image, NEW, 8 * GiB), {
      hostPath: `/dev/vg0/aether-v-${NEW}`,
      format: "lvm-thin",
      sizeBytes: 8 * GiB,
    });
    assert.deepEqual(host.work(), [
      ["lvcreate", "--snapshot", "--setactivationskip", "n", "--name", `aether-v-${NEW}`, `vg0/aether-i-${IMG}`, "--yes"],
      ["lvchange", "--activate", "y", "--ignoreactivationskip", `vg0/aether-v-${NEW}`],
      ["lvextend", "--size", `${8 * GiB}b`, `vg0/aether-v-${NEW}`],
    ]);

    const same = fakeHost();
    assert.equal((await pool(same.run).p.cloneImage(image, NEW, 2 * GiB)).sizeBytes, 2 * GiB);
    assert.deepEqual(
      same.work().map((c) => c[0]),
      ["lvcreate", "lvchange"],
    );
  });

  it("removes a clone again when activating it fails", async () => {
    const host = fakeHost((argv) => (argv[0] === "lvchange" ? lvmError(argv, "activation failed") : undefined));
    const { p } = pool(host.run);
    await assert.rejects(p.cloneImage(image, NEW, 8 * GiB), /activation failed/);
    assert.deepEqual(host.work().at(-1), ["lvremove", "--yes", `vg0/aether-v-${NEW}`]);
  });

  it("snapshots a volume as an inactive thin snapshot (activation skip set)", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    await p.snapshot(volume, SNAP1);
    assert.deepEqual(host.work(), [
      ["lvcreate", "--snapshot", "--setactivationskip", "y", "--name", `aether-s-${SNAP1}`, `vg0/aether-v-${VOL}`],
    ]);
  });

  it("clones a snapshot from the snapshot's own size", async () => {
    const snapReport = [
      "lvs",
      "--reportformat",
      "json",
      "--units",
      "b",
      "--nosuffix",
      "-o",
      "lv_size,data_percent",
      `vg0/aether-s-${SNAP1}`,
    ];
    const host = fakeHost((argv) =>
      argv.join(" ") === snapReport.join(" ") ? lvsJson([{ lv_size: String(4 * GiB), data_percent: "" }]) : undefined,
    );
    const { p } = pool(host.run);
    assert.deepEqual(await p.cloneSnapshot(volume, SNAP1, NEW, 6 * GiB), {
      hostPath: `/dev/vg0/aether-v-${NEW}`,
      format: "lvm-thin",
      sizeBytes: 6 * GiB,
    });
    assert.deepEqual(host.work(), [
      snapReport,
      ["lvcreate", "--snapshot", "--setactivationskip", "n", "--name", `aether-v-${NEW}`, `vg0/aether-s-${SNAP1}`, "--yes"],
      ["lvchange", "--activate", "y", "--ignoreactivationskip", `vg0/aether-v-${NEW}`],
      ["lvextend", "--size", `${6 * GiB}b`, `vg0/aether-v-${NEW}`],
    ]);
  });

  it("rolls back by cloning the snapshot, swapping it in by name, and removing newer snapshots", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    await p.rollback(volume, SNAP1, [{ id: SNAP2 }, { id: SNAP3 }]);
    assert.deepEqual(host.work(), [
      ["lvcreate", "--snapshot", "--setactivationskip", "n", "--name", `aether-r-${VOL}`, `vg0/aether-s-${SNAP1}`, "--yes"],
      ["lvremove", "--yes", `vg0/aether-v-${VOL}`],
      ["lvrename", "vg0", `aether-r-${VOL}`, `aether-v-${VOL}`],
      ["lvchange", "--activate", "y", "--ignoreactivationskip", `vg0/aether-v-${VOL}`],
      ["lvremove", "--yes", `vg0/aether-s-${SNAP2}`, `vg0/aether-s-${SNAP3}`],
    ]);

    const newest = fakeHost();
    await pool(newest.run).p.rollback(volume, SNAP3, []);
    assert.deepEqual(
      newest.work().map((c) => c[0]),
      ["lvcreate", "lvremove", "lvrename", "lvchange"],
    );
  });

  it("leaves an open volume untouched when rollback cannot remove it", async () => {
    const busy = `vg0/aether-v-${VOL}`;
    const host = fakeHost((argv) =>
      argv[0] === "lvremove" && argv.includes(busy) ? lvmError(argv, `Logical volume ${busy} in use.`) : undefined,
    );
    const { p } = pool(host.run);
    await assert.rejects(p.rollback(volume, SNAP1, [{ id: SNAP2 }]), /in use/);
    assert.deepEqual(host.work(), [
      ["lvcreate", "--snapshot", "--setactivationskip", "n", "--name", `aether-r-${VOL}`, `vg0/aether-s-${SNAP1}`, "--yes"],
      ["lvremove", "--yes", busy],
      ["lvremove", "--yes", `vg0/aether-r-${VOL}`],
    ]);
  });

  it("deletes a snapshot with lvremove, and a snapshot already gone without error", async () => {
    const host = fakeHost((argv) =>
      argv.join(" ") === LIST.join(" ") ? lvsJson([{ lv_name: `aether-s-${SNAP1}` }, { lv_name: `aether-v-${VOL}` }]) : undefined,
    );
    const { p } = pool(host.run);
    await p.deleteSnapshot(volume, SNAP1, { id: SNAP2 }, undefined);
    assert.deepEqual(host.work(), [LIST, ["lvremove", "--yes", `vg0/aether-s-${SNAP1}`]]);

    const gone = fakeHost((argv) => (argv.join(" ") === LIST.join(" ") ? lvsJson([]) : undefined));
    await pool(gone.run).p.deleteSnapshot(volume, SNAP1, undefined, undefined);
    assert.deepEqual(gone.work(), [LIST]);
  });

  it("deletes a volume with its snapshots (and a leftover rollback LV), skipping what is gone", async () => {
    const present = [`aether-v-${VOL}`, `aether-r-${VOL}`, `aether-s-${SNAP1}`, `aether-s-${SNAP3}`, "root", "swap"];
    const host = fakeHost((argv) => (argv.join(" ") === LIST.join(" ") ? lvsJson(present.map((lv_name) => ({ lv_name }))) : undefined));
    const { p } = pool(host.run);
    await p.deleteVolume(volume, [{ id: SNAP1 }, { id: SNAP2 }, { id: SNAP3 }]);
    assert.deepEqual(host.work(), [
      LIST,
      ["lvremove", "--yes", `vg0/aether-v-${VOL}`, `vg0/aether-r-${VOL}`, `vg0/aether-s-${SNAP1}`, `vg0/aether-s-${SNAP3}`],
    ]);

    const gone = fakeHost((argv) => (argv.join(" ") === LIST.join(" ") ? lvsJson([{ lv_name: "root" }]) : undefined));
    await pool(gone.run).p.deleteVolume(volume, [{ id: SNAP1 }]);
    assert.deepEqual(gone.work(), [LIST]);
  });

  it("grows a volume to the rounded size, and does nothing when the size is unchanged", async () => {
    const host = fakeHost();
    const { p } = pool(host.run);
    await p.resize(volume, 20 * GiB - 1);
    assert.deepEqual(host.work(), [["lvextend", "--size", `${20 * GiB}b`, `vg0/aether-v-${VOL}`]]);
    await p.resize(volume, volume.sizeBytes);
    assert.equal(host.work().length, 1);
  });

  it("reports a volume's allocated bytes as data_percent of its size, 0 when unknown", async () => {
    const report = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_size,data_percent", `vg0/aether-v-${VOL}`];
    const host = fakeHost((argv) =>
      argv.join(" ") === report.join(" ") ? lvsJson([{ lv_size: String(10 * GiB), data_percent: "12.50" }]) : undefined,
    );
    const { p } = pool(host.run);
    assert.equal(await p.allocatedBytes(volume), 10 * GiB * 0.125);
    assert.deepEqual(host.work(), [report]);

    const inactive = fakeHost((argv) =>
      argv.join(" ") === report.join(" ") ? lvsJson([{ lv_size: String(10 * GiB), data_percent: "" }]) : undefined,
    );
    assert.equal(await pool(inactive.run).p.allocatedBytes(volume), 0);
    const failing = fakeHost((argv) =>
      argv.includes(`vg0/aether-v-${VOL}`) ? lvmError(argv, "Failed to find logical volume") : undefined,
    );
    assert.equal(await pool(failing.run).p.allocatedBytes(volume), 0);
    assert.equal(await pool(fakeHost().run).p.allocatedBytes({ hostPath: "/srv/other/disk.qcow2", format: "qcow2", sizeBytes: GiB }), 0);
  });
});

describe("lvm-thin image import", () => {
  it("stages in the staging directory, writes the image into a thin LV, and removes the staged file", async () => {
    const info = JSON.stringify({ format: "qcow2", "virtual-size": 2 * GiB + 512, "actual-size": 300 * MiB });
    const host = fakeHost((argv) => (argv[0] === "qemu-img" && argv[1] === "info" ? info : undefined));
    const { p, stagingDir } = pool(host.run);
    const staged = await p.stagingPath(IMG);
    assert.equal(staged, join(stagingDir, `${IMG}.part`));
    assert.ok(existsSync(stagingDir));
    writeFileSync(staged, "qcow2 bytes");

    const stored = await p.finishImport(IMG, staged, "qcow2");
    const size = 2 * GiB + 4 * MiB;
    assert.deepEqual(stored, { hostPath: `/dev/vg0/aether-i-${IMG}`, format: "lvm-thin", sizeBytes: size });
    assert.deepEqual(host.work(), [
      ["qemu-img", "info", "--output=json", "-f", "qcow2", staged],
      ["lvcreate", "--type", "thin", "--virtualsize", `${size}b`, "--thinpool", "vg0/pool0", "--name", `aether-i-${IMG}`, "--yes"],
      ["qemu-img", "convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw", staged, `/dev/vg0/aether-i-${IMG}`],
    ]);
    assert.equal(host.timeouts.at(-1), 3 * 60 * 60 * 1000);
    assert.equal(existsSync(staged), false);
    await assert.rejects(p.stagingPath("../../etc/passwd"), /server-assigned id/);
  });

  it("removes the half-written LV and keeps the staged file when writing fails", async () => {
    const host = fakeHost((argv) => {
      if (argv[1] === "info") return JSON.stringify({ format: "raw", "virtual-size": 8 * MiB });
      if (argv[1] === "convert") return lvmError(argv, "error while writing at byte 0: No space left on device");
      return undefined;
    });
    const { p } = pool(host.run);
    const staged = await p.stagingPath(IMG);
    writeFileSync(staged, "raw bytes");
    await assert.rejects(p.finishImport(IMG, staged, "raw"), /No space left/);
    assert.deepEqual(host.work().at(-1), ["lvremove", "--yes", `vg0/aether-i-${IMG}`]);
    assert.equal(existsSync(staged), true);
  });

  it("deletes an image's LV and its staged file; an image already gone is not an error", async () => {
    const host = fakeHost((argv) => (argv.join(" ") === LIST.join(" ") ? lvsJson([{ lv_name: `aether-i-${IMG}` }]) : undefined));
    const { p } = pool(host.run);
    const staged = await p.stagingPath(IMG);
    writeFileSync(staged, "partial");
    await p.deleteImage(IMG);
    assert.equal(existsSync(staged), false);
    assert.deepEqual(host.work(), [LIST, ["lvremove", "--yes", `vg0/aether-i-${IMG}`]]);

    const gone = fakeHost((argv) => (argv.join(" ") === LIST.join(" ") ? lvsJson([]) : undefined));
    await pool(gone.run).p.deleteImage(IMG);
    assert.deepEqual(gone.work(), [LIST]);
  });
});
