// Storage: a thin clone of a 10 GiB image through aetherd against the bare tool doing the same
// clone (qemu-img create -b on the dir pool, zfs clone on a zfs-fuse pool), interleaved, plus the
// space a clone takes before any write and what 100 clones in a row cost in time and space.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { AetherClient } from "@aether/sdk";
import { ImageState } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { startDaemon } from "../test/helpers/daemon.js";
import { sha256 } from "../test/helpers/disks.js";
import { startZfsPool } from "../test/helpers/zfs.js";
import { runZfs } from "../daemon/src/host/zfs-command.js";
import { mib, ms, percentile } from "./stats.js";

const run = promisify(execFile);
const GiB = 1024 * 1024 * 1024;

export interface StorageBenchResult {
  rows: string[][];
  spaceRows: string[][];
  dirRatio: number;
  dirP50Ms: number;
  zfsRatio: number;
}

interface PoolRun {
  viaAetherd: number[];
  bare: number[];
  /** Space the clones take on disk, summed, through aetherd and bare. */
  aetherdBytes: number;
  bareBytes: number;
  firstCloneBytes: number;
}

async function cloneRun(
  aether: AetherClient,
  pool: string,
  image: string,
  count: number,
  bareClone: (i: number) => Promise<void>,
  bareSpace: () => Promise<number>,
): Promise<PoolRun> {
  const result: PoolRun = { viaAetherd: [], bare: [], aetherdBytes: 0, bareBytes: 0, firstCloneBytes: 0 };
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    let t = performance.now();
    const { volume } = await aether.storage.createVolume({ name: `${pool}-clone-${i}`, source: { case: "image", value: { image } } });
    result.viaAetherd.push(performance.now() - t);
    ids.push(volume?.id ?? "");
    t = performance.now();
    await bareClone(i);
    result.bare.push(performance.now() - t);
  }
  const { volumes } = await aether.storage.listVolumes({ pool, pageSize: 1000 });
  result.aetherdBytes = volumes.reduce((sum, v) => sum + Number(v.allocatedBytes), 0);
  result.firstCloneBytes = Number(volumes.find((v) => v.name === `${pool}-clone-0`)?.allocatedBytes ?? 0);
  result.bareBytes = await bareSpace();
  for (const id of ids) await aether.storage.deleteVolume({ volume: id });
  return result;
}

async function importAndWait(aether: AetherClient, name: string, pool: string, path: string): Promise<{ id: string; hostPath: string }> {
  await aether.storage.importImage({ name, pool, source: { source: { case: "localPath", value: path } }, sha256: sha256(path) });
  for await (const u of aether.storage.watchImage({ image: name })) {
    if (u.image?.state === ImageState.FAILED) throw new Error(`importing ${name} failed: ${u.image.stateReason}`);
  }
  const image = (await aether.storage.getImage({ image: name })).image;
  return { id: image?.id ?? "", hostPath: image?.hostPath ?? "" };
}

export async function benchStorage(count: number): Promise<StorageBenchResult> {
  const work = mkdtempSync(join(tmpdir(), "aether-bench-storage-"));
  const zfs = await startZfsPool("aetherbench");
  const config = join(work, "aetherd.toml");
  writeFileSync(
    config,
    `[[pools]]\nname = "dir"\ndriver = "dir"\nlocation = "${join(work, "dir-pool")}"\ndefault = true\n\n[[pools]]\nname = "zfs"\ndriver = "zfs"\nlocation = "${zfs.dataset}"\n`,
  );
  const daemon = await startDaemon({ args: ["--config", config] });
  try {
    const aether = await daemon.client();
    // A 10 GiB qcow2 image with 64 MiB of data in it, like a small installed system.
    const source = join(work, "image.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", source, String(10 * GiB)]);
    await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x42 0 64M", source]);

    const dirImage = await importAndWait(aether, "ten-gib", "dir", source);
    const imageBytes = statSync(dirImage.hostPath).blocks * 512;
    const bareDir = join(work, "bare");
    await run("mkdir", ["-p", bareDir]);
    const dir = await cloneRun(
      aether,
      "dir",
      "ten-gib",
      count,
      async (i) =>
        void (await run("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-F",
          "qcow2",
          "-b",
          dirImage.hostPath,
          join(bareDir, `bare-${i}.qcow2`),
        ])),
      async () => {
        let total = 0;
        for (let i = 0; i < count; i++) total += statSync(join(bareDir, `bare-${i}.qcow2`)).blocks * 512;
        return total;
      },
    );

    const zfsImage = await importAndWait(aether, "ten-gib-zfs", "zfs", source);
    await runZfs("zfs", ["create", "-p", `${zfs.dataset}/bare`]);
    const zfsRun = await cloneRun(
      aether,
      "zfs",
      "ten-gib-zfs",
      count,
      // Through the same host lock aetherd takes on zfs-fuse (daemon/src/host/zfs-command.ts), so
      // the ratio compares aetherd's own work, not the lock it must take to avoid zfs-fuse's deadlock.
      async (i) => void (await runZfs("zfs", ["clone", `${zfs.dataset}/images/${zfsImage.id}@base`, `${zfs.dataset}/bare/b${i}`])),
      async () => Number((await runZfs("zfs", ["get", "-Hp", "-o", "value", "used", `${zfs.dataset}/bare`])).stdout.trim()),
    );
    // zfs-fuse refuses to destroy a mounted dataset ("busy"); unmounting first avoids that.
    for (let i = 0; i < count; i++) {
      for (let attempt = 0; ; attempt++) {
        await runZfs("zfs", ["unmount", `${zfs.dataset}/bare/b${i}`]).catch(() => undefined);
        const done = await runZfs("zfs", ["destroy", `${zfs.dataset}/bare/b${i}`]).then(
          () => true,
          (err: Error) => (attempt >= 20 ? Promise.reject(err) : false),
        );
        if (done) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await aether.storage.deleteImage({ image: "ten-gib" });
    await aether.storage.deleteImage({ image: "ten-gib-zfs" });
    aether.close();

    const p50 = (xs: number[]) => percentile(xs, 50);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const rows = [
      ["dir: CreateVolume from image via aetherd", ms(p50(dir.viaAetherd)), ms(percentile(dir.viaAetherd, 99)), ms(sum(dir.viaAetherd))],
      ["dir: bare qemu-img create -b", ms(p50(dir.bare)), ms(percentile(dir.bare, 99)), ms(sum(dir.bare))],
      [
        "zfs: CreateVolume from image via aetherd",
        ms(p50(zfsRun.viaAetherd)),
        ms(percentile(zfsRun.viaAetherd, 99)),
        ms(sum(zfsRun.viaAetherd)),
      ],
      ["zfs: bare zfs clone", ms(p50(zfsRun.bare)), ms(percentile(zfsRun.bare, 99)), ms(sum(zfsRun.bare))],
    ];
    const spaceRows = [
      ["dir: one clone before any write (aetherd)", mib(dir.firstCloneBytes)],
      [`dir: ${count} clones via aetherd / bare`, `${mib(dir.aetherdBytes)} / ${mib(dir.bareBytes)}`],
      ["zfs: one clone before any write (aetherd)", mib(zfsRun.firstCloneBytes)],
      [`zfs: ${count} clones via aetherd / bare`, `${mib(zfsRun.aetherdBytes)} / ${mib(zfsRun.bareBytes)}`],
      ["the image (10 GiB virtual, 64 MiB written)", mib(imageBytes)],
    ];
    return {
      rows,
      spaceRows,
      dirRatio: p50(dir.viaAetherd) / p50(dir.bare),
      dirP50Ms: p50(dir.viaAetherd),
      zfsRatio: p50(zfsRun.viaAetherd) / p50(zfsRun.bare),
    };
  } finally {
    await daemon.stop();
    daemon.cleanup();
    await zfs.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}
