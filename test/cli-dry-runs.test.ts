// Issue 23, item 14's gaps, with the real aether against a real aetherd (and aether-aggregator for
// deployments): the dry runs of the VM lifecycle, of vm cp and of storage replication say what would
// happen, foresee aetherd's refusals and change nothing; aether deploy delete deletes by selector
// (-l, --all) with a confirmation, or --yes, as the other deletes do. The VM is created and never
// started: a dry run only looks it up, so no guest needs to boot.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { auction, storage as storageApi, vm as vmApi } from "@aether/sdk";
import { useDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { runCommand } from "./helpers/run.js";

const MiB = 1024n * 1024n;

describe("aether's dry runs of the VM lifecycle, vm cp and replication; deploy delete by selector", () => {
  const env = useDaemon();
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address } });
  const local = mkdtempSync(join(tmpdir(), "aether-dry-runs-"));
  after(() => rmSync(local, { recursive: true, force: true }));

  /** What aetherd has of the VM, to compare before and after a dry run. */
  const snapshotOf = async () => {
    const { vm: v } = await env.aether.vm.getVm({ vm: "dry-vm" });
    const { snapshots } = await env.aether.vm.listVmSnapshots({ vm: "dry-vm" });
    const { vms } = await env.aether.vm.listVms({ pageSize: 1000 });
    return {
      state: v?.state,
      vcpus: v?.vcpus,
      memory: v?.memoryBytes,
      autostart: v?.autostart,
      disks: v?.disks.map((d) => d.source.value),
      snapshots: snapshots.map((s) => s.name),
      vms: vms.map((x) => x.name).sort(),
    };
  };

  before(async () => {
    for (const name of ["dry-data", "dry-spare"])
      await env.aether.storage.createVolume({ name, source: { case: "empty", value: { sizeBytes: 8n * MiB } } });
    // A raw file in the dir pool: the one kind of volume there replication refuses.
    await env.aether.storage.createVolume({
      name: "dry-raw",
      format: storageApi.VolumeFormat.RAW,
      source: { case: "empty", value: { sizeBytes: 8n * MiB } },
    });
    await env.aether.vm.createVm({
      name: "dry-vm",
      vcpus: 1,
      memoryBytes: 128n * MiB,
      boot: { source: { case: "kernel", value: { kernelPath: "/bin/true", initrdPath: "", cmdline: "" } } },
      disks: [{ source: { case: "volume", value: "dry-data" } }],
    });
    await env.aether.vm.createVmSnapshot({ vm: "dry-vm", name: "s1" });
    await env.aether.vm.createVmSnapshot({ vm: "dry-vm", name: "s2" });
  });

  it("the VM lifecycle dry runs say what would happen, and aetherd's refusals, and change nothing", async () => {
    const before = await snapshotOf();
    assert.equal(before.state, vmApi.VmState.CREATED, "created, never started");
    const cases: Array<[string[], RegExp]> = [
      [["reboot", "dry-vm"], /^would reboot vm dry-vm \(created\), but aetherd would refuse: dry-vm is created, not running$/],
      [
        ["reset", "dry-vm"],
        /^would reset vm dry-vm \(created\): no shutdown, unwritten data lost, but aetherd would refuse: dry-vm is created/,
      ],
      [
        ["set", "dry-vm", "--cpus", "2", "--memory", "256M"],
        /^would set vm dry-vm to 2 vCPUs and 256\.0 MiB \(now 1, 128\.0 MiB\), from its next start$/,
      ],
      [["autostart", "dry-vm", "on"], /^would turn autostart on for vm dry-vm \(now off\)$/],
      [["attach-disk", "dry-vm", "dry-spare"], /^would attach dry-spare to vm dry-vm \(from its next start\)$/],
      [
        ["attach-disk", "dry-vm", "dry-data"],
        /^would attach dry-data .*, but aetherd would refuse: dry-data is attached to dry-vm already$/,
      ],
      [["detach-disk", "dry-vm", "dry-data"], /^would detach dry-data from vm dry-vm$/],
      [["detach-disk", "dry-vm", "dry-spare"], /, but aetherd would refuse: dry-vm has no disk dry-spare$/],
      [["snapshot", "create", "dry-vm", "s3"], /^would snapshot the 1 disk\(s\) of vm dry-vm as s3$/],
      [["snapshot", "create", "dry-vm", "s1"], /, but aetherd would refuse: dry-vm has a snapshot s1 already$/],
      [["snapshot", "delete", "dry-vm", "s2"], /^would delete snapshot s2 of vm dry-vm$/],
      [["snapshot", "delete", "dry-vm", "nope"], /, but aetherd would refuse: dry-vm has no snapshot nope$/],
      [["snapshot", "rollback", "dry-vm", "s1"], /, but aetherd would refuse: newer snapshots exist \(s2\); add --destroy-newer$/],
      [["snapshot", "rollback", "dry-vm", "s1", "--destroy-newer"], /^would roll the disks of vm dry-vm back to s1, deleting s2$/],
      [["clone", "dry-vm", "dry-copy", "--start"], /^would clone vm dry-vm into dry-copy \(thin clones of its 1 disk\(s\)\) and start it$/],
      [["clone", "dry-vm", "dry-vm"], /, but aetherd would refuse: a VM named dry-vm exists$/],
    ];
    for (const [args, said] of cases) {
      const r = await aether("vm", ...args, "--dry-run");
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stdout.trimEnd(), said, args.join(" "));
    }
    assert.deepEqual(await snapshotOf(), before, "nothing changed");
    const missing = await aether("vm", "snapshot", "create", "no-such-vm", "s1", "--dry-run");
    assert.equal(missing.code, 3, "a VM that does not exist fails as it would");
  });

  it("vm cp --dry-run says what would be copied where and reads nothing from the guest", async () => {
    const file = join(local, "app.conf");
    writeFileSync(file, "x".repeat(2048));
    const into = await aether("vm", "cp", file, "dry-vm:/etc/app.conf", "--dry-run");
    assert.equal(into.code, 0, into.stderr);
    assert.equal(
      into.stdout,
      `would copy ${file} (2.0 KiB) into vm dry-vm at /etc/app.conf, but aetherd would refuse: dry-vm is created, not running\n`,
    );
    const out = join(local, "hostname");
    const outOf = await aether("vm", "cp", "dry-vm:/etc/hostname", out, "--dry-run");
    assert.equal(outOf.code, 0, outOf.stderr);
    assert.match(outOf.stdout, new RegExp(`^would copy /etc/hostname out of vm dry-vm to ${out}, but aetherd would refuse`));
    assert.throws(() => rmSync(out), /ENOENT/, "no local file was written");
    const toStdout = await aether("vm", "cp", "dry-vm:/etc/hostname", "-", "--dry-run");
    assert.match(toStdout.stdout, /^would copy \/etc\/hostname out of vm dry-vm to stdout/);
    assert.equal((await aether("vm", "cp", join(local, "missing"), "dry-vm:/x", "--dry-run")).code, 1, "a missing local file");
    assert.equal((await aether("vm", "cp", file, "no-such-vm:/x", "--dry-run")).code, 3, "a missing VM");
  });

  it("replication dry runs: set foresees that a raw file in a dir pool is refused, run and delete need a policy; nothing is set", async () => {
    const target = "unix:///run/nowhere.sock";
    const dry = await aether("storage", "replication", "set", "--volume", "dry-raw", "--target", target, "--dry-run");
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      /^would replicate volume dry-raw to unix:\/\/\/run\/nowhere\.sock every 300s, keeping 3 points, but aetherd would refuse: volume dry-raw is a raw file in dir pool \S+; only qcow2 volumes of a dir pool can be replicated\n$/,
    );
    const real = await aether("storage", "replication", "set", "--volume", "dry-raw", "--target", target);
    assert.notEqual(real.code, 0, "aetherd refuses it for real, as the dry run said");
    assert.match(real.stderr, /only qcow2 volumes of a dir pool can be replicated/);
    // The VM's volume is qcow2 in the dir pool: replicated by QEMU's incremental backups, nothing refused.
    const vm = await aether("storage", "replication", "set", "--vm", "dry-vm", "--target", target, "--dry-run");
    assert.equal(vm.code, 0, vm.stderr);
    assert.match(vm.stdout, /^would replicate VM dry-vm to unix:\/\/\/run\/nowhere\.sock every 300s, keeping 3 points\n$/);
    assert.deepEqual((await env.aether.replication.listReplications({ pageSize: 1000 })).policies, [], "no policy was set");
    for (const verb of ["run", "delete"]) {
      const none = await aether("storage", "replication", verb, "dry-vm", "--dry-run");
      assert.equal(none.code, 3, `${verb}: ${none.stderr}`);
      assert.match(none.stderr, /no replication policy protects dry-vm/);
    }
  });

  describe("aether deploy delete by selector", () => {
    let agg: TestAggregator;
    const deploy = (...args: string[]) => runCommand("aether", ["deploy", ...args], { env: { AETHER_AGGREGATOR: `unix://${agg.socket}` } });
    const onTerminal = (args: string[], input: string) =>
      runCommand("script", ["-qec", ["aether", "deploy", ...args].map((a) => `'${a}'`).join(" "), "/dev/null"], {
        env: { AETHER_AGGREGATOR: `unix://${agg.socket}`, TERM: "dumb" },
        input,
      });
    /** The deployments the aggregator has (not being deleted), by name. */
    const has = async () =>
      (await agg.client.aggregator.listDeployments({ pageSize: 1000 })).deployments
        .filter((d) => d.state !== auction.DeploymentState.DELETING && d.state !== auction.DeploymentState.DELETED)
        .map((d) => d.name)
        .sort();
    before(async () => {
      agg = await startAggregator();
      for (const [name, team] of [
        ["web", "a"],
        ["api", "a"],
        ["db", "b"],
      ] as const)
        await agg.client.aggregator.createDeployment({
          deployment: {
            name,
            labels: { team },
            instances: 2,
            template: { kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
          },
        });
    });
    after(async () => {
      if (agg) assert.equal(await agg.stop(), 0);
      if (agg) rmSync(agg.dir, { recursive: true, force: true });
    });

    it("lists what it would delete with --dry-run, refuses without --yes off a terminal, asks on one, deletes with --yes", async () => {
      const dry = await deploy("delete", "-l", "team=a", "--dry-run");
      assert.equal(dry.code, 0, dry.stderr);
      const lines = dry.stdout.trimEnd().split("\n").sort();
      assert.equal(lines.length, 2, dry.stdout);
      assert.match(lines[0] ?? "", /^would delete deployment api \([0-9a-f]{8}\) and release its \d+ instance\(s\)$/);
      assert.match(lines[1] ?? "", /^would delete deployment web \([0-9a-f]{8}\) and release its \d+ instance\(s\)$/);
      assert.match((await deploy("delete", "db", "--dry-run")).stdout, /^would delete deployment db \(/);

      const refused = await deploy("delete", "-l", "team=a");
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /refusing to delete deployments selected by -l team=a without confirmation.*--yes/);
      assert.equal((await deploy("delete")).code, 2, "neither names nor a selector");
      assert.equal((await deploy("delete", "web", "--all", "--yes")).code, 2, "names and --all");
      assert.deepEqual(await has(), ["api", "db", "web"], "nothing deleted");

      const no = await onTerminal(["delete", "--all"], "n\n");
      assert.match(no.stdout, /delete 3 deployments \(--all\): \w+, \w+, \w+\? \[y\/N\]/);
      assert.deepEqual(await has(), ["api", "db", "web"], "answered no: nothing deleted");

      const yes = await deploy("delete", "-l", "team=a", "--yes", "--wait");
      assert.equal(yes.code, 0, yes.stderr);
      assert.deepEqual(yes.stdout.trimEnd().split("\n").sort(), ["deployment api deleted", "deployment web deleted"]);
      assert.deepEqual(await has(), ["db"]);

      const one = await deploy("delete", "db");
      assert.equal(one.code, 0, one.stderr);
      assert.equal(one.stdout, "deployment db is being deleted\n", "by name, as before");
      assert.deepEqual(await has(), []);
    });
  });
});
