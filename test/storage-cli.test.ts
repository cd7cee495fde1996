// aether storage and aether image against a real aetherd and its dir pool: tables for people, JSON
// for scripts, progress on a terminal, the bytes of every volume checked through qemu-io, and exit
// codes to trust.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stripVTControlCharacters } from "node:util";
import { after, before, describe, it } from "node:test";
import { useDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { hasPattern, makeRawDisk, MiB, sha256, writePattern } from "./helpers/disks.js";
import { runCommand } from "./helpers/run.js";

const IMAGE_SIZE = 64 * MiB;
// script(1) (Debian's essential bsdutils) gives the CLI a terminal, where import progress is shown.

interface VolumeJson {
  id: string;
  name: string;
  tenant: string;
  state: string;
  pool: string;
  format: string;
  sizeBytes: string;
  hostPath: string;
  labels?: Record<string, string>;
  backing?: { image?: string; snapshot?: string };
  snapshotCount?: number;
}
interface ImageJson {
  id: string;
  name: string;
  state: string;
  stateReason?: string;
  format: string;
  sha256: string;
  sizeBytes?: string;
  importedBytes?: string;
  sourceBytes?: string;
  source: { localPath?: string; url?: string };
  hostPath?: string;
}
interface SnapshotJson {
  id: string;
  name: string;
  volume: string;
  state: string;
  sizeBytes: string;
}

describe("aether storage and aether image", () => {
  const env = useDaemon();
  const work = mkdtempSync(join(tmpdir(), "aether-storage-cli-"));
  const base = join(work, "base.raw");
  let baseSha = "";
  const aetherEnv = () => ({ AETHER_HOST: env.daemon.address });
  const aether = (...args: string[]) => runCommand("aether", args, { env: aetherEnv(), cwd: work });
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await aether(...args, "--json");
    assert.equal(r.code, 0, `aether ${args.join(" ")} --json: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  before(() => {
    baseSha = makeRawDisk(base, IMAGE_SIZE, 0xab);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it("image import of a local file (relative to the cwd) shows progress on a terminal and ends READY", async () => {
    // A sized pseudo-terminal, as an operator's would be; stdout and stderr both land in it.
    const tty = await runCommand(
      "script",
      ["-qefc", `stty cols 120 rows 40; aether image import base base.raw --sha256 ${baseSha}`, "/dev/null"],
      { env: aetherEnv(), cwd: work },
    );
    const screen = stripVTControlCharacters(tty.stdout);
    assert.equal(tty.code, 0, screen);
    assert.match(screen, /base is ready: 64\.0 MiB imported, checksum verified/);
    assert.match(screen, /state\s+│ ready\s+│/, "then the image itself");

    const image = await json<ImageJson>("image", "get", "base");
    assert.equal(image.state, "IMAGE_STATE_READY");
    assert.equal(image.source.localPath, base, "the relative path was sent as an absolute one");
    assert.equal(image.sha256, baseSha);
    assert.equal(image.format, "VOLUME_FORMAT_RAW");
    assert.equal(image.sizeBytes, String(IMAGE_SIZE));
    assert.equal(image.importedBytes, String(IMAGE_SIZE));
    assert.ok(image.hostPath && hasPattern(image.hostPath, "raw", MiB, MiB, 0xab), "the stored image has the file's bytes");
  });

  it("a slow download shows its percentage on a terminal while it runs", async () => {
    // A server that sends the image in 4 MiB pieces 50 ms apart, so the import surely takes long
    // enough (about 0.8 s) for progress to be reported in between. CI is unset for the command:
    // with CI in the environment no progress is drawn (rightly), only the first and last lines.
    const server = createServer((req, res) => {
      const data = readFileSync(base);
      res.writeHead(200, { "content-length": String(data.length) });
      let offset = 0;
      const next = () => {
        if (offset >= data.length) return void res.end();
        res.write(data.subarray(offset, offset + 4 * MiB));
        offset += 4 * MiB;
        setTimeout(next, 50);
      };
      next();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/base.raw`;
      const tty = await runCommand(
        "script",
        ["-qefc", `stty cols 120 rows 40; env -u CI aether image import slow-url ${url} --sha256 ${baseSha}`, "/dev/null"],
        { env: aetherEnv(), cwd: work },
      );
      const screen = stripVTControlCharacters(tty.stdout);
      assert.equal(tty.code, 0, screen);
      assert.match(screen, /importing slow-url: \d+% of 64\.0 MiB/, "a percentage while it imports");
      assert.match(screen, /slow-url is ready: 64\.0 MiB imported, checksum verified/);
    } finally {
      server.close();
    }
    assert.equal((await aether("image", "delete", "slow-url")).code, 0);
  });

  it("image import without a terminal prints only the result: the image table, or JSON with --json", async () => {
    const table = await aether(
      "image",
      "import",
      "base-table",
      "./base.raw",
      "--sha256",
      baseSha.toUpperCase(),
      "--format",
      "raw",
      "-l",
      "os=test",
    );
    assert.equal(table.code, 0, table.stderr);
    assert.equal(table.stderr, "", "no spinner output when stderr is not a terminal");
    assert.match(table.stdout, /name\s+base-table\s+/);
    assert.match(table.stdout, /state\s+ready\s+/);
    assert.match(table.stdout, new RegExp(`sha256\\s+${baseSha}`), "the checksum is sent in lowercase");

    const imported = await json<ImageJson>("image", "import", "base-json", base, "--sha256", baseSha);
    assert.equal(imported.state, "IMAGE_STATE_READY");
    assert.equal(imported.name, "base-json");
    assert.equal(imported.sourceBytes, String(IMAGE_SIZE));

    const started = await json<ImageJson>("image", "import", "base-nowait", base, "--sha256", baseSha, "--no-wait");
    assert.equal(started.state, "IMAGE_STATE_IMPORTING", "--no-wait returns as the import starts");

    const list = await aether("image", "list", "--filter", "os=test");
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /NAME\s+TENANT\s+STATE\s+POOL\s+FORMAT\s+SIZE\s+ALLOCATED\s+CLONES/);
    assert.match(list.stdout, /base-table\s+default\s+ready\s+default\s+raw\s+64\.0 MiB\s+/);
    assert.doesNotMatch(list.stdout, /base-json/, "--filter keeps only the labelled image");
    const names = (await json<ImageJson[]>("image", "list")).map((i) => i.name).sort();
    assert.deepEqual(
      names.filter((n) => n.startsWith("base")),
      ["base", "base-json", "base-nowait", "base-table"],
    );

    for (const name of ["base-table", "base-json", "base-nowait"]) assert.equal((await aether("image", "delete", name)).code, 0);
    const gone = await aether("image", "get", "base-json");
    assert.equal(gone.code, 3);
    assert.match(gone.stderr, /^aether: no image/);
  });

  it("a wrong checksum fails the import: exit 1, the reason on stderr and in image list; the retry replaces the FAILED image (issue 23)", async () => {
    const bad = await aether("image", "import", "bad-sum", "base.raw", "--sha256", "0".repeat(64));
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, "");
    assert.match(
      bad.stderr,
      new RegExp(`^aether: importing image bad-sum failed: the checksum does not match: the source's SHA-256 is ${baseSha}, not 0{64}`),
    );
    const badJson = await aether("image", "import", "bad-sum-json", "base.raw", "--sha256", "0".repeat(64), "--json");
    assert.equal(badJson.code, 1);
    assert.equal((JSON.parse(badJson.stdout) as ImageJson).state, "IMAGE_STATE_FAILED", "--json still prints the image");
    assert.match(badJson.stderr, /checksum does not match/);
    const got = await json<ImageJson>("image", "get", "bad-sum");
    assert.equal(got.state, "IMAGE_STATE_FAILED");
    assert.match(got.stateReason ?? "", /checksum does not match/);
    const missing = await aether("image", "import", "nofile", "no-such.raw", "--sha256", baseSha);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, new RegExp(`^aether: .*${join(work, "no-such.raw").replace(/[.]/g, "\\.")}.*does not exist`));

    // image list says why, in a REASON column (clipped to fit; whole in image get and --json).
    const list = await aether("image", "list");
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /NAME\s+.*SOURCE\s+REASON\s+/);
    assert.match(
      list.stdout,
      new RegExp(`bad-sum\\s+default\\s+failed\\s+.*the checksum does not match: the source's SHA-256 is ${baseSha.slice(0, 8)}`),
    );
    assert.match(list.stdout, /bad-sum\s+.*…\s+/, "the long reason is clipped");
    assert.match(list.stdout, /\bbase\s+default\s+ready\s+.*-\s+/, "a ready image has no reason");

    // The failed import does not hold its name: the retry with the right checksum just works.
    const retry = await aether("image", "import", "bad-sum", "base.raw", "--sha256", baseSha);
    assert.equal(retry.code, 0, retry.stderr);
    assert.match(retry.stdout, /state\s+ready\s+/);
    const replaced = await json<ImageJson>("image", "get", "bad-sum");
    assert.equal(replaced.state, "IMAGE_STATE_READY");
    assert.notEqual(replaced.id, got.id, "a new image, the failed one deleted");
    assert.equal((await aether("image", "get", got.id)).code, 3);
    assert.equal((await json<ImageJson[]>("image", "list")).filter((i) => i.name === "bad-sum").length, 1);
    assert.match(env.daemon.log(), /a new import replaces this failed image/, "the replaced failure is in aetherd's log with its reason");
    // A ready image keeps its name.
    const taken = await aether("image", "import", "bad-sum", "base.raw", "--sha256", baseSha);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, /^aether: an image named bad-sum already exists in tenant default/);
    for (const name of ["bad-sum", "bad-sum-json"]) assert.equal((await aether("image", "delete", name)).code, 0);
  });

  it("storage pools: the embedded dir pool, as a table and as JSON", async () => {
    const table = await aether("storage", "pools");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /NAME\s+DRIVER\s+LOCATION\s+DEFAULT\s+AVAILABLE\s+CAPACITY\s+ALLOCATED\s+USED\s+FORMATS/);
    assert.match(
      table.stdout,
      new RegExp(`default\\s+dir\\s+${join(env.daemon.stateDir, "pools", "default")}\\s+yes\\s+yes\\s+\\d+\\.\\d (GiB|TiB)\\s+.*qcow2,raw`),
    );
    const pools = await json<
      Array<{ name: string; driver: string; defaultPool: boolean; available: boolean; capacityBytes: string; formats: string[] }>
    >("storage", "pools");
    assert.equal(pools.length, 1);
    assert.equal(pools[0]?.driver, "POOL_DRIVER_DIR");
    assert.equal(pools[0]?.available, true);
    assert.ok(BigInt(pools[0]?.capacityBytes ?? "0") > 0n);
    assert.deepEqual(pools[0]?.formats, ["VOLUME_FORMAT_QCOW2", "VOLUME_FORMAT_RAW"]);
  });

  it("storage create (empty, raw, from an image), list and get; snapshot, clone, rollback, resize and delete, checked on the bytes", async () => {
    // Empty volumes: the id on stdout, or the volume as JSON.
    const created = await aether("storage", "create", "data", "--size", "32M", "-l", "team=a");
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^[0-9a-f-]{36}\n$/);
    const data = await json<VolumeJson>("storage", "get", "data");
    assert.equal(data.id, created.stdout.trim());
    assert.equal(data.state, "VOLUME_STATE_READY");
    assert.equal(data.format, "VOLUME_FORMAT_QCOW2", "the pool's default format");
    assert.equal(data.sizeBytes, String(32 * MiB));
    assert.deepEqual(data.labels, { team: "a" });
    const raw = await json<VolumeJson>("storage", "create", "scratch", "--size", "8388608", "--format", "raw");
    assert.equal(raw.format, "VOLUME_FORMAT_RAW");
    assert.equal(raw.sizeBytes, String(8 * MiB));
    assert.equal(JSON.parse(execFileSync("qemu-img", ["info", "--output=json", raw.hostPath], { encoding: "utf8" }))["format"], "raw");

    // A thin clone of the image, grown: it reads the image's bytes.
    const image = await json<ImageJson>("image", "get", "base");
    const web = await json<VolumeJson>("storage", "create", "web", "--image", "base", "--size", "128M");
    assert.equal(web.backing?.image, image.id);
    assert.equal(web.sizeBytes, String(128 * MiB));
    assert.ok(hasPattern(web.hostPath, "qcow2", MiB, MiB, 0xab), "the clone reads the image's data");
    const refused = await aether("image", "delete", "base");
    assert.equal(refused.code, 1, "an image with clones stays");
    assert.match(refused.stderr, /^aether: .*web/);

    const list = await aether("storage", "list");
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /NAME\s+TENANT\s+STATE\s+POOL\s+FORMAT\s+SIZE\s+ALLOCATED\s+BACKING\s+USED BY/);
    assert.match(list.stdout, /web\s+default\s+ready\s+default\s+qcow2\s+128\.0 MiB\s+[\d.]+ (B|KiB|MiB)\s+image base\s+-/);
    assert.match(list.stdout, /data\s+default\s+ready\s+default\s+qcow2\s+32\.0 MiB\s+[\d.]+ (B|KiB|MiB)\s+-\s+-/);
    assert.match(list.stdout, /scratch\s+default\s+ready\s+default\s+raw\s+8\.0 MiB/);
    assert.deepEqual(
      (await json<VolumeJson[]>("storage", "list", "--filter", "team=a")).map((v) => v.name),
      ["data"],
    );
    assert.deepEqual(
      (await json<VolumeJson[]>("storage", "list", "--pool", "default", "--tenant", "default")).map((v) => v.name),
      ["web", "scratch", "data"],
      "newest first",
    );
    const get = await aether("storage", "get", "web");
    assert.match(get.stdout, /size\s+128\.0 MiB/);
    assert.match(get.stdout, /backing\s+image base/);
    assert.match(get.stdout, new RegExp(`host path\\s+${web.hostPath}`));

    // Snapshots: "one" holds 0x01, an unnamed one 0x02; the volume then holds 0x03.
    writePattern(data.hostPath, "qcow2", 0, MiB, 0x01);
    const one = await aether("storage", "snapshot", "data", "one");
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, "one\n");
    writePattern(data.hostPath, "qcow2", 0, MiB, 0x02);
    const auto = await json<SnapshotJson>("storage", "snapshot", "data");
    assert.match(auto.name, /^s\d{8}t\d{6}z$/, "an unnamed snapshot is named by its UTC time");
    assert.equal(auto.volume, data.id);
    writePattern(data.hostPath, "qcow2", 0, MiB, 0x03);
    const snapshots = await aether("storage", "snapshots", "data");
    assert.match(snapshots.stdout, /VOLUME\s+SNAPSHOT\s+TENANT\s+STATE\s+SIZE/);
    assert.match(snapshots.stdout, /data\s+one\s+default\s+ready\s+32\.0 MiB/);
    assert.deepEqual(
      (await json<SnapshotJson[]>("storage", "snapshots", "data")).map((s) => s.name),
      [auto.name, "one"],
      "newest first",
    );

    // Clones: of snapshot "one" (sees 0x01), and of "now" (a snapshot taken for it; sees 0x03).
    const atOne = await json<VolumeJson>("storage", "clone", "data", "data-at-one", "--snapshot", "one", "--size", "48M");
    assert.equal(atOne.sizeBytes, String(48 * MiB));
    assert.ok(hasPattern(atOne.hostPath, "qcow2", 0, MiB, 0x01), "the clone of one reads 0x01");
    const now = await aether("storage", "clone", "data", "data-now");
    assert.equal(now.code, 0, now.stderr);
    const dataNow = await json<VolumeJson>("storage", "get", now.stdout.trim());
    assert.equal(dataNow.name, "data-now");
    assert.ok(hasPattern(dataNow.hostPath, "qcow2", 0, MiB, 0x03));
    assert.match((await aether("storage", "list")).stdout, /data-at-one\s+.*snapshot data@one\s+/);
    const fromSnapshot = await json<VolumeJson>("storage", "create", "data-copy", "--snapshot", "data/one");
    assert.ok(hasPattern(fromSnapshot.hostPath, "qcow2", 0, MiB, 0x01), "create --snapshot VOLUME/SNAPSHOT");
    for (const name of ["data-now", "data-copy"]) assert.equal((await aether("storage", "delete", name)).code, 0);
    assert.equal((await aether("storage", "delete-snapshot", "data", "clone-data-now")).code, 0);

    // Rollback to "one": refused while a newer snapshot exists, then done with --destroy-newer.
    const blocked = await aether("storage", "rollback", "data", "one");
    assert.equal(blocked.code, 1);
    assert.match(blocked.stderr, /^aether: volume data has 1 snapshot\(s\) newer than one/);
    assert.ok(hasPattern(data.hostPath, "qcow2", 0, MiB, 0x03), "a refused rollback changes nothing");
    const rolled = await aether("storage", "rollback", "data", "one", "--destroy-newer", "--json");
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.match(rolled.stderr, new RegExp(`deleted 1 newer snapshot\\(s\\): ${auto.id}`));
    assert.equal((JSON.parse(rolled.stdout) as VolumeJson).snapshotCount, 1);
    assert.ok(hasPattern(data.hostPath, "qcow2", 0, MiB, 0x01), "the volume is back to snapshot one");

    // Resize: grows, never shrinks.
    const grown = await json<VolumeJson>("storage", "resize", "data", "64M");
    assert.equal(grown.sizeBytes, String(64 * MiB));
    assert.equal(
      JSON.parse(execFileSync("qemu-img", ["info", "--output=json", data.hostPath], { encoding: "utf8" }))["virtual-size"],
      64 * MiB,
    );
    const shrink = await aether("storage", "resize", "data", "16M");
    assert.equal(shrink.code, 1);
    assert.match(shrink.stderr, /only grow/);

    // Delete: refused while a clone depends on it or it has snapshots; then gone, file and all.
    const withClone = await aether("storage", "delete", "data", "--with-snapshots");
    assert.equal(withClone.code, 1);
    assert.match(withClone.stderr, /clones that depend/);
    assert.equal((await aether("storage", "delete", "data-at-one")).code, 0);
    const withSnapshot = await aether("storage", "delete", "data");
    assert.equal(withSnapshot.code, 1);
    assert.match(withSnapshot.stderr, /1 snapshot\(s\)/);
    assert.equal((await aether("storage", "delete", "data", "--with-snapshots")).code, 0);
    assert.equal(existsSync(data.hostPath), false);
    assert.equal((await aether("storage", "get", "data")).code, 3);
    for (const name of ["web", "scratch"]) assert.equal((await aether("storage", "rm", name)).code, 0);
    assert.equal((await aether("image", "delete", "base")).code, 0, "without clones the image can go");
    assert.deepEqual(await json<VolumeJson[]>("storage", "list"), []);
  });

  it("exit codes: a bad size or contradictory flags are usage errors (2), a missing volume is not found (3)", async () => {
    const badSize = await aether("storage", "create", "x", "--size", "ten gigs");
    assert.equal(badSize.code, 2);
    assert.equal(badSize.stdout, "");
    assert.match(badSize.stderr, /"ten gigs" is not a size like 64M/);
    const badResize = await aether("storage", "resize", "x", "ten gigs");
    assert.equal(badResize.code, 2);
    assert.match(badResize.stderr, /"ten gigs" is not a size/);
    const noSource = await aether("storage", "create", "x");
    assert.equal(noSource.code, 2);
    assert.match(noSource.stderr, /give --size for an empty volume/);
    const both = await aether("storage", "create", "x", "--image", "i", "--snapshot", "v/s");
    assert.equal(both.code, 2);
    assert.match(both.stderr, /cannot be used with/);
    assert.equal((await aether("storage", "create", "x", "--size", "1G", "--format", "vmdk")).code, 2);
    assert.equal((await aether("storage", "create", "x", "--image", "i", "--format", "raw")).code, 2);
    assert.equal((await aether("image", "import", "x", "x.raw")).code, 2, "--sha256 is required");
    assert.equal((await aether("storage", "get", "x")).code, 3, "no usage error reached aetherd");

    const missing = await aether("storage", "get", "nope");
    assert.equal(missing.code, 3);
    assert.equal(missing.stdout, "");
    assert.match(missing.stderr, /^aether: no volume with id or name "nope"/);
    assert.equal((await aether("storage", "delete", "nope")).code, 3);
    assert.equal((await aether("storage", "resize", "nope", "1G")).code, 3);
    assert.equal((await aether("storage", "snapshots", "nope")).code, 3);
    assert.equal((await aether("image", "get", "nope")).code, 3);
  });

  it("aether vm create --image boots the VM from its own clone of the image, which goes with the VM", async () => {
    const disk = guestImage().disk;
    assert.equal((await aether("image", "import", "guest", disk, "--sha256", sha256(disk))).code, 0);
    const help = await aether("vm", "create", "--help");
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /Examples:\n.*\n  aether vm create app --image debian/);
    const both = await aether("vm", "create", "x", "--image", "guest", "--kernel", "/vmlinuz");
    assert.equal(both.code, 2);
    assert.match(both.stderr, /exactly one of --kernel/);
    assert.equal((await aether("vm", "create", "x", "--kernel", "/vmlinuz", "--disk-size", "1G")).code, 2);

    const created = await json<{ name: string; state: string; boot: { disk: { volume: string; image: string } } }>(
      "vm",
      "create",
      "fromcli",
      "--image",
      "guest",
      "--disk-size",
      "48M",
      "--accel",
      "tcg",
      "--memory",
      "192M",
      "--start",
      "--wait",
    );
    assert.equal(created.state, "VM_STATE_RUNNING");
    const boot = await json<VolumeJson>("storage", "get", "fromcli-boot");
    assert.equal(boot.id, created.boot.disk.volume);
    assert.equal(boot.sizeBytes, String(48 * MiB));
    assert.ok(boot.backing?.image, "the boot volume is a clone of the image");
    const inGuest = await aether("vm", "exec", "fromcli", "--", "/bin/cat", "/sys/block/vda/size");
    assert.equal(Number(inGuest.stdout.trim()) * 512, 48 * MiB);
    assert.equal((await aether("vm", "delete", "fromcli", "--force")).code, 0);
    assert.equal((await aether("storage", "get", "fromcli-boot")).code, 3, "the clone went with the VM");
    assert.equal((await aether("image", "delete", "guest")).code, 0);
  });

  it("--help of every storage and image command shows examples", async () => {
    const commands = [
      ["storage"],
      ["storage", "pools"],
      ["storage", "list"],
      ["storage", "get"],
      ["storage", "create"],
      ["storage", "clone"],
      ["storage", "resize"],
      ["storage", "delete"],
      ["storage", "snapshot"],
      ["storage", "snapshots"],
      ["storage", "rollback"],
      ["storage", "delete-snapshot"],
      ["image"],
      ["image", "import"],
      ["image", "list"],
      ["image", "get"],
      ["image", "delete"],
    ];
    for (const command of commands) {
      const help = await aether(...command, "--help");
      assert.equal(help.code, 0, command.join(" "));
      assert.match(help.stdout, new RegExp(`Examples:\\n  aether ${command.join(" ")}`), `aether ${command.join(" ")} --help`);
    }
    assert.match((await aether("--help")).stdout, /aether storage create/);
  });
});
