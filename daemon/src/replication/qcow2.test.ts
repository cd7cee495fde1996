// The dir pool's replication driver against a real QEMU (no guest: -machine none with the volume as
// a drive, written through qemu-io on its monitor) and real qemu-img: a whole point, then an
// increment that carries only what was written (zeroed clusters included, which must not show
// the base's data on the target); a stream cut short leaves the replica at its point; a volume no
// QEMU has open is copied whole, and the bitmap qemu-img added lets the QEMU that opens it next
// take an increment.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pino from "pino";
import { DirPool } from "../storage/dir-pool.js";
import { qemuImg } from "../storage/qemu-img.js";
import { QmpClient } from "../vm/qmp.js";
import type { ReplicaStore, ReplicationSource, StreamStep } from "./driver.js";
import { qcow2ReplicaStore } from "./qcow2-replicas.js";
import { qcow2Source } from "./qcow2-source.js";

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const ID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/** The raw contents of an image, as a digest. */
async function digest(path: string, dir: string): Promise<string> {
  const raw = join(dir, `read-${Date.now()}.raw`);
  await qemuImg(["convert", "-U", "-O", "raw", path, raw]);
  try {
    return createHash("sha256")
      .update(await readFile(raw))
      .digest("hex");
  } finally {
    await rm(raw, { force: true });
  }
}

async function ship(source: ReplicationSource, store: ReplicaStore, step: StreamStep, cutAfter?: number): Promise<void> {
  const out = source.open(step, new AbortController().signal);
  const incoming = await store.apply(ID, step, new AbortController().signal);
  let sent = 0;
  try {
    for await (const chunk of out.stream as AsyncIterable<Buffer>) {
      if (cutAfter !== undefined && sent + chunk.length > cutAfter) throw new Error("the source went away");
      sent += chunk.length;
      if (!incoming.sink.write(chunk)) await new Promise((resolve) => incoming.sink.once("drain", resolve));
    }
    incoming.sink.end();
    await incoming.done;
    await incoming.commit();
  } catch (err) {
    out.stream.destroy();
    await Promise.resolve(out.done).catch(() => undefined);
    await incoming.abort();
    throw err;
  }
}

describe("dir pool replication: QEMU incremental backups applied to a qcow2 replica", () => {
  let dir: string;
  let volume: string;
  let qemu: ChildProcess | undefined;
  let qmp: QmpClient | undefined;
  let source: ReplicationSource;
  let store: ReplicaStore;
  const log = pino({ level: "silent" });

  async function startQemu(): Promise<void> {
    const socket = join(dir, `qmp-${Date.now()}.sock`);
    qemu = spawn(
      "qemu-system-x86_64",
      [
        "-machine",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-qmp",
        `unix:${socket},server=on,wait=off`,
        "-drive",
        `file=${volume},if=none,id=disk0,format=qcow2`,
      ],
      { stdio: "ignore" },
    );
    for (let i = 0; ; i++) {
      try {
        qmp = await QmpClient.connect(socket, 2000);
        return;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async function stopQemu(): Promise<void> {
    if (qmp) await qmp.execute("quit").catch(() => undefined);
    qmp?.close();
    qmp = undefined;
    if (qemu && qemu.exitCode === null) await new Promise((resolve) => qemu?.once("exit", resolve));
    qemu = undefined;
  }

  /** The volume as QEMU sees it: its caches written out first (qcow2 metadata included). */
  const volumeDigest = async () => {
    await write("flush");
    return digest(volume, dir);
  };

  const write = (command: string) => qmp?.execute("human-monitor-command", { "command-line": `qemu-io disk0 "${command}"` });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "aether-qcow2-repl-"));
    const pool = new DirPool("files", join(dir, "target"));
    await pool.initialize();
    store = qcow2ReplicaStore(pool);
    volume = join(dir, "volume.qcow2");
    await qemuImg(["create", "-q", "-f", "qcow2", volume, String(SIZE)]);
    source = qcow2Source(
      { id: ID, name: "data", hostPath: volume, sizeBytes: SIZE },
      { poolLocation: join(dir, "source"), qmp: () => qmp, log },
    );
    await startQemu();
  });
  after(async () => {
    await stopQemu();
    await rm(dir, { recursive: true, force: true });
  });

  it("sends a whole point, then an increment of what was written; zeroed clusters stay zero on the replica", async () => {
    await write("write -P 0x11 0 8M");
    await source.take("aether-repl-1700000000001", []);
    const [full] = await source.plan([], "aether-repl-1700000000001");
    assert.deepEqual(full, { base: "", point: "aether-repl-1700000000001" });
    await ship(source, store, full as StreamStep);
    assert.deepEqual(await store.points(ID), ["aether-repl-1700000000001"]);

    // 1 MiB new, and 1 MiB of what the first point had zeroed.
    await write("write -P 0x22 16M 1M");
    await write("write -z 2M 1M");
    const held = await store.points(ID);
    await source.take("aether-repl-1700000000002", [held]);
    const steps = await source.plan(held, "aether-repl-1700000000002");
    assert.deepEqual(steps, [{ base: "aether-repl-1700000000001", point: "aether-repl-1700000000002" }]);
    const incrementBytes = (await readFile(join(dir, "source", "replication", ID, "aether-repl-1700000000002.qcow2"))).length;
    assert.ok(incrementBytes < 4 * MiB, `the increment holds what changed (${incrementBytes} bytes), not the 8 MiB written before`);
    await ship(source, store, steps[0] as StreamStep);
    assert.deepEqual(await store.points(ID), ["aether-repl-1700000000002"]);
    const replica = join(dir, "target", "replicas", ID, "aether-repl-1700000000002.qcow2");
    assert.equal(await digest(replica, dir), await volumeDigest(), "the replica reads as the volume");
  });

  it("a stream cut short leaves the replica at its point; the next one goes on from it", async () => {
    const before = await digest(join(dir, "target", "replicas", ID, "aether-repl-1700000000002.qcow2"), dir);
    await write("write -P 0x33 20M 4M");
    await source.take("aether-repl-1700000000003", [await store.points(ID)]);
    const [step] = await source.plan(await store.points(ID), "aether-repl-1700000000003");
    await assert.rejects(ship(source, store, step as StreamStep, 1 * MiB), /went away/);
    assert.deepEqual(await store.points(ID), ["aether-repl-1700000000002"], "still the previous point");
    assert.equal(await digest(join(dir, "target", "replicas", ID, "aether-repl-1700000000002.qcow2"), dir), before);
    await ship(source, store, step as StreamStep);
    assert.deepEqual(await store.points(ID), ["aether-repl-1700000000003"]);
  });

  it("a volume no QEMU has open is copied whole, and its bitmap lets the next QEMU take an increment", async () => {
    await stopQemu();
    await source.take("aether-repl-1700000000004", [await store.points(ID)]);
    const [whole] = await source.plan(await store.points(ID), "aether-repl-1700000000004");
    assert.equal(whole?.base, "", "no QEMU: a whole point");
    await ship(source, store, whole as StreamStep);
    await startQemu();
    await write("write -P 0x44 28M 1M");
    await source.take("aether-repl-1700000000005", [await store.points(ID)]);
    const [inc] = await source.plan(await store.points(ID), "aether-repl-1700000000005");
    assert.equal(inc?.base, "aether-repl-1700000000004", "the bitmap qemu-img added was loaded by QEMU and tracked the write");
    await ship(source, store, inc as StreamStep);
    const replica = join(dir, "target", "replicas", ID, "aether-repl-1700000000005.qcow2");
    assert.equal(await digest(replica, dir), await volumeDigest());
  });
});
