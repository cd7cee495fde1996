// The aether CLI against a real aetherd, as operators type (issue 23): the short ids tables show are
// accepted wherever an id is (items 4), and errors speak the command's flags and sizes, not the API's
// fields and byte counts, and name objects by name (item 5).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";
import { sha256 } from "./helpers/disks.js";
import { runCommand } from "./helpers/run.js";

interface WithId {
  id: string;
  name: string;
}

/** A FAILED image record as aetherd keeps it, for two ids that share a prefix no random pair would. */
function plantImage(stateDir: string, id: string, name: string): void {
  const record = {
    id,
    name,
    tenant: "default",
    labels: {},
    createTimeMs: Date.now(),
    state: "failed",
    stateReason: "planted by the test",
    pool: "default",
    format: "raw",
    source: { kind: "local", value: "/nonexistent" },
    sha256: "0".repeat(64),
    sourceFormat: "",
    sizeBytes: 0,
    importedBytes: 0,
    sourceBytes: 0,
    hostPath: "",
    readyTimeMs: Date.now(),
    requestId: "",
  };
  writeFileSync(join(stateDir, "storage", "images", `${id}.json`), JSON.stringify(record));
}

describe("aether: short ids and errors in the CLI's words (issue 23, items 4 and 5)", () => {
  let daemon: TestDaemon;
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: daemon.address } });
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await aether(...args, "--json");
    assert.equal(r.code, 0, `aether ${args.join(" ")} --json: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };
  // Two images whose ids share "abcd" (and nothing longer), as the records of an earlier run.
  const planted = [`abcd1111-${randomUUID().slice(9)}`, `abcd2222-${randomUUID().slice(9)}`];

  before(async () => {
    const first = await startDaemon();
    assert.equal(await first.stop(), 0);
    for (const [i, id] of planted.entries()) plantImage(first.stateDir, id, `planted-${i}`);
    daemon = await startDaemon({ dir: join(first.stateDir, ".."), cgroupRoot: first.cgroupRoot });
  });
  after(async () => {
    if (daemon === undefined) return;
    try {
      const client = await daemon.client();
      await stopWorkloads(client);
      client.close();
      assert.equal(await daemon.stop(), 0);
    } finally {
      daemon.cleanup();
    }
  });

  it("the 8-hex id an exec list table shows is accepted by exec get and exec stop", async () => {
    const start = await aether("exec", "start", "--name", "refs-sleep", "/bin/sleep", "300");
    assert.equal(start.code, 0, start.stderr);
    const id = start.stdout.trim();
    const list = await aether("exec", "list");
    const short = id.slice(0, 8);
    assert.match(list.stdout, new RegExp(`refs-sleep\\s+.*${short}\\b|${short}\\s+.*refs-sleep`), "the table shows the short id");
    const get = await aether("exec", "get", short);
    assert.equal(get.code, 0, get.stderr);
    assert.match(get.stdout, /refs-sleep/);
    assert.equal((await json<WithId>("exec", "get", short.toUpperCase())).id, id, "in any case");
    assert.equal((await aether("exec", "stop", id.slice(0, 6), "--grace", "0")).code, 0);
    assert.equal((await aether("exec", "get", id.slice(0, 3))).code, 3, "3 characters are too few to be a prefix");
  });

  it("volumes, snapshots, cells and images by a prefix of their ids; a name wins over a prefix", async () => {
    const vol = await json<WithId>("storage", "create", "refs-vol", "--size", "8M");
    assert.equal((await json<WithId>("storage", "get", vol.id.slice(0, 8))).name, "refs-vol");
    const snap = await json<WithId>("storage", "snapshot", "refs-vol", "one");
    assert.equal((await aether("storage", "rollback", vol.id.slice(0, 5), snap.id.slice(0, 8))).code, 0, "volume and snapshot by prefix");
    assert.equal((await aether("storage", "delete-snapshot", "refs-vol", snap.id.slice(0, 8))).code, 0);
    assert.deepEqual(await json<WithId[]>("storage", "snapshots", "refs-vol"), []);

    // A volume named as the start of refs-vol's id is found by its name.
    const prefix = vol.id.slice(0, 8);
    const named = await json<WithId>("storage", "create", prefix, "--size", "4M");
    assert.equal((await json<WithId>("storage", "get", prefix)).id, named.id, "the exact name wins");
    assert.equal((await json<WithId>("storage", "get", vol.id.slice(0, 9))).id, vol.id, "a longer prefix still finds refs-vol");
    assert.equal((await aether("storage", "delete", prefix)).code, 0);

    const cell = await json<WithId>("cell", "allocate", "refs-cell");
    assert.equal((await json<WithId>("cell", "get", cell.id.slice(0, 8))).name, "refs-cell");
    assert.equal((await aether("cell", "free", cell.id.slice(0, 8))).code, 0);

    assert.equal((await json<WithId>("image", "get", "abcd2")).name, "planted-1");
    assert.equal((await aether("storage", "delete", "refs-vol")).code, 0);
  });

  it("an ambiguous prefix is refused (exit 1) naming the matches by id and name", async () => {
    const both = await aether("image", "get", "abcd");
    assert.equal(both.code, 1);
    assert.equal(both.stdout, "");
    assert.equal(
      both.stderr,
      `aether: "abcd" is the start of the id of 2 images in tenant default: ${planted[0]} (planted-0), ${planted[1]} (planted-1); give more of the id, or the name.\n`,
    );
    assert.equal((await aether("image", "delete", "abcd")).code, 1, "nothing is deleted on a guess");
    assert.equal((await json<WithId[]>("image", "list")).length, 2);
    for (const id of planted) assert.equal((await aether("image", "delete", id.slice(0, 5))).code, 0);
  });

  it("errors name the command's flags and commands, sizes in units, VMs by name (item 5)", async () => {
    const missing = await aether("exec", "get", "nope");
    assert.equal(missing.code, 3);
    assert.equal(missing.stderr, 'aether: no executable with id or name "nope" in tenant default; list them with aether exec list.\n');
    assert.match((await aether("storage", "get", "nope")).stderr, /list them with aether storage list\.$/m);

    // cell free: --stop, not stop_executables.
    assert.equal((await aether("cell", "allocate", "words-cell")).code, 0);
    assert.equal((await aether("exec", "start", "--cell", "words-cell", "--name", "words-sleep", "/bin/sleep", "300")).code, 0);
    const busy = await aether("cell", "free", "words-cell");
    assert.equal(busy.code, 1);
    assert.match(
      busy.stderr,
      /^aether: cell words-cell has 1 running executable\(s\) \(words-sleep\); stop them, or free with --stop\.\n$/,
    );
    assert.equal((await aether("cell", "free", "words-cell", "--stop")).code, 0);

    // Sizes: the issue's own example, and the flag that carries them.
    assert.equal((await aether("storage", "create", "big", "--size", "2G")).code, 0);
    const shrink = await aether("storage", "resize", "big", "1G");
    assert.equal(shrink.code, 1);
    assert.match(shrink.stderr, /^aether: the new size 1 GiB is smaller than volume big \(2 GiB\); volumes only grow/);
    const tiny = await aether("storage", "create", "tiny", "--size", "512K");
    assert.equal(tiny.code, 1);
    assert.equal(tiny.stderr, "aether: --size 512 KiB is too small: a volume is at least 1 MiB.\n");
    const memory = await aether("vm", "create", "words-vm", "--kernel", guestImage().kernel, "--memory", "32M");
    assert.equal(memory.code, 1);
    assert.equal(memory.stderr, "aether: --memory 32 MiB is below the guest minimum of 64 MiB.\n");
    const huge = await aether("vm", "create", "words-vm", "--kernel", guestImage().kernel, "--memory", "1T");
    assert.equal(huge.code, 1);
    assert.match(huge.stderr, /^aether: --memory 1 TiB is more than this host has \([\d.]+ GiB\)\.\n$/);

    // A failed import's reason, in the import's words: --format raw, not "source format RAW".
    const text = join(tmpdir(), `aether-cli-refs-${process.pid}.txt`);
    writeFileSync(text, "a".repeat(512));
    try {
      const notDisk = await aether("image", "import", "words-text", text, "--sha256", sha256(text));
      assert.equal(notDisk.code, 1);
      assert.match(notDisk.stderr, /if it really is a raw disk image, import it with --format raw\.\n$/);
      assert.equal((await aether("image", "delete", "words-text")).code, 0);
    } finally {
      rmSync(text, { force: true });
    }

    // storage delete: --with-snapshots; rollback: --destroy-newer.
    assert.equal((await aether("storage", "snapshot", "big", "first")).code, 0);
    assert.equal((await aether("storage", "snapshot", "big", "second")).code, 0);
    const withSnapshots = await aether("storage", "delete", "big");
    assert.equal(withSnapshots.code, 1);
    assert.equal(withSnapshots.stderr, "aether: volume big has 2 snapshot(s); delete them first or add --with-snapshots.\n");
    const newer = await aether("storage", "rollback", "big", "first");
    assert.equal(newer.code, 1);
    assert.equal(newer.stderr, "aether: volume big has 1 snapshot(s) newer than first (second); add --destroy-newer to delete them.\n");

    // A volume attached to a VM: the VM by its name (and short id), not a UUID.
    const vm = await json<WithId>("vm", "create", "words-vm", "--kernel", guestImage().kernel, "--volume", "big");
    const attached = await aether("storage", "delete", "big", "--with-snapshots");
    assert.equal(attached.code, 1);
    assert.equal(
      attached.stderr,
      `aether: volume big is attached to VM words-vm (${vm.id.slice(0, 8)}); delete the VM or detach the volume first.\n`,
    );
    assert.equal((await aether("vm", "delete", "words-vm")).code, 0);
    assert.equal((await aether("storage", "delete", "big", "--with-snapshots")).code, 0);
  });
});
