// Volume replication (issue 17): an incremental run of a ZFS volume with 64 MiB changed, through
// aetherd (RunReplication: the point's snapshot, the target asked for its point, zfs send -i
// streamed over a Connect client stream between two aetherd, zfs receive there, old points pruned)
// against the bare `zfs snapshot` + `zfs send -i | zfs receive` of a twin volume in the same run,
// between the same two pools. Runs alternate (aetherd, bare, aetherd, ...). Both volumes get the
// same kind of change: 64 MiB of fresh random bytes at a new offset each run. A third twin is sent
// with its pipe copied through a node process, to tell the cost of any user-space hop from aetherd's.
// BENCH_REPLICATION_RUNS (default 5). Run alone:
//   npx tsc -b && node --conditions=source --import tsx bench/replication.ts
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDaemon } from "../test/helpers/daemon.js";
import { startZfsPool } from "../test/helpers/zfs.js";
import { mib, ms, percentile } from "./stats.js";

const MiB = 1024 * 1024;
const CHANGED = 64 * MiB;

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, "r+");
  try {
    for (let at = 0; at < data.length; at += 4 * MiB) writeSync(fd, data, at, Math.min(4 * MiB, data.length - at), offset + at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const zfs = (...args: string[]) => execFileSync("zfs", args, { encoding: "utf8" });

/** `zfs send -i` piped into `zfs receive` through this process (a user-space copy, nothing else). */
function pipeThroughNode(sendArgs: string[], receiveArgs: string[]): Promise<void> {
  const send = spawn("zfs", sendArgs, { stdio: ["ignore", "pipe", "inherit"] });
  const receive = spawn("zfs", receiveArgs, { stdio: ["pipe", "ignore", "inherit"] });
  send.stdout.pipe(receive.stdin);
  const exit = (child: ReturnType<typeof spawn>) =>
    new Promise<void>((resolve, reject) =>
      child.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`zfs exited ${code}`)))),
    );
  return Promise.all([exit(send), exit(receive)]).then(() => undefined);
}

export interface ReplicationBench {
  rows: string[][];
  ratioP50: number;
  /** One user-space copy of the stream (no RPC, no TLS) against the bare pipe. */
  copyRatioP50: number;
  bytesRatio: number;
}

export async function benchReplication(runs: number): Promise<ReplicationBench> {
  const [poolA, poolB] = await Promise.all([startZfsPool("aetherbrepa"), startZfsPool("aetherbrepb")]);
  const dirA = mkdtempSync(join(tmpdir(), "aetherd-bench-"));
  const dirB = mkdtempSync(join(tmpdir(), "aetherd-bench-"));
  const config = (dir: string, dataset: string) => {
    const file = join(dir, "aetherd.toml");
    writeFileSync(file, `[[pools]]\nname = "tank"\ndriver = "zfs"\nlocation = "${dataset}"\ndefault = true\n`);
    return file;
  };
  const [a, b] = await Promise.all([
    startDaemon({ dir: dirA, args: ["--config", config(dirA, poolA.dataset)] }),
    startDaemon({ dir: dirB, args: ["--config", config(dirB, poolB.dataset)] }),
  ]);
  try {
    const nodeA = await a.client();
    const size = 1024 * MiB;
    const volume = (await nodeA.storage.createVolume({ name: "bench", source: { case: "empty", value: { sizeBytes: BigInt(size) } } }))
      .volume;
    const hostPath = volume?.hostPath ?? "";
    // The bare twin: a dataset with a file of the same size, next to the pool's, received into pool B.
    const src = `${poolA.pool}/bare`;
    const dst = `${poolB.pool}/bare`;
    zfs("create", src);
    const bareFile = join(poolA.mountpoint, "bare", "disk.raw");
    execFileSync("truncate", ["-s", String(size), bareFile]);
    // A third twin, sent through this process: what one user-space copy of the stream costs.
    const copySrc = `${poolA.pool}/copy`;
    const copyDst = `${poolB.pool}/copy`;
    zfs("create", copySrc);
    const copyFile = join(poolA.mountpoint, "copy", "disk.raw");
    execFileSync("truncate", ["-s", String(size), copyFile]);
    // Both start from the same 64 MiB of data, copied whole once (not measured).
    const seed = randomBytes(CHANGED);
    writeAt(hostPath, 0, seed);
    writeAt(bareFile, 0, seed);
    writeAt(copyFile, 0, seed);
    await nodeA.replication.setReplicationPolicy({
      volume: "bench",
      targets: [b.address],
      interval: { seconds: 86_400n, nanos: 0 },
      retention: 2,
    });
    const first = await nodeA.replication.runReplication({ policy: "bench" });
    const err = first.policy?.volumes[0]?.targets[0]?.lastError;
    if (err) throw new Error(`the first replication failed: ${err}`);
    let previous = "p0";
    zfs("snapshot", `${src}@${previous}`);
    execFileSync("sh", ["-c", `zfs send ${src}@${previous} | zfs receive ${dst}@${previous}`]);
    zfs("snapshot", `${copySrc}@${previous}`);
    execFileSync("sh", ["-c", `zfs send ${copySrc}@${previous} | zfs receive ${copyDst}@${previous}`]);

    const through: number[] = [];
    const bare: number[] = [];
    const copied: number[] = [];
    let throughBytes = 0;
    let bareBytes = 0;
    for (let i = 1; i <= runs; i++) {
      const offset = (i * CHANGED) % (size - CHANGED);
      const change = randomBytes(CHANGED);
      writeAt(hostPath, offset, change);
      let t0 = performance.now();
      const r = await nodeA.replication.runReplication({ policy: "bench" });
      through.push(performance.now() - t0);
      const copy = r.policy?.volumes[0]?.targets[0];
      if (copy?.lastError) throw new Error(`replication run ${i} failed: ${copy.lastError}`);
      throughBytes += Number(copy?.lastSentBytes ?? 0);

      writeAt(bareFile, offset, change);
      const point = `p${i}`;
      t0 = performance.now();
      zfs("snapshot", `${src}@${point}`);
      execFileSync("sh", ["-c", `zfs send -i ${src}@${previous} ${src}@${point} | zfs receive -F ${dst}@${point}`]);
      bare.push(performance.now() - t0);
      bareBytes += Number(
        execFileSync("sh", ["-c", `zfs send -i ${src}@${previous} ${src}@${point} | wc -c`], { encoding: "utf8" }).trim(),
      );

      writeAt(copyFile, offset, change);
      t0 = performance.now();
      zfs("snapshot", `${copySrc}@${point}`);
      await pipeThroughNode(["send", "-i", `${copySrc}@${previous}`, `${copySrc}@${point}`], ["receive", "-F", `${copyDst}@${point}`]);
      copied.push(performance.now() - t0);
      previous = point;
    }
    const p50 = (xs: number[]) => percentile(xs, 50);
    nodeA.close();
    if (process.env.BENCH_REPLICATION_PROFILE === "1") {
      // Where aetherd's time goes: each run's phases on the sender and on the receiver.
      for (const [side, d] of [
        ["sender", a],
        ["receiver", b],
      ] as const)
        for (const line of d.log().split("\n"))
          if (/replication (run|receive) phases|replication stream sent/.test(line)) {
            const {
              msg,
              time: _t,
              level: _l,
              pid: _p,
              hostname: _h,
              room: _r,
              volume: _v,
              replica: _rp,
              ...rest
            } = JSON.parse(line) as Record<string, unknown>;
            console.error(`${side}: ${String(msg)} ${JSON.stringify(rest)}`);
          }
    }
    return {
      rows: [
        [
          "through aetherd (RunReplication)",
          ms(p50(through)),
          ms(Math.min(...through)),
          ms(Math.max(...through)),
          mib(throughBytes / runs),
        ],
        ["bare zfs snapshot + send -i | receive", ms(p50(bare)), ms(Math.min(...bare)), ms(Math.max(...bare)), mib(bareBytes / runs)],
        [
          "the same, the pipe copied by a node process",
          ms(p50(copied)),
          ms(Math.min(...copied)),
          ms(Math.max(...copied)),
          mib(bareBytes / runs),
        ],
      ],
      ratioP50: p50(through) / p50(bare),
      copyRatioP50: p50(copied) / p50(bare),
      bytesRatio: throughBytes / bareBytes,
    };
  } finally {
    await a.stop();
    await b.stop();
    a.cleanup();
    b.cleanup();
    await poolA.destroy();
    await poolB.destroy();
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const runs = Number(process.env.BENCH_REPLICATION_RUNS ?? 5);
  const r = await benchReplication(runs);
  console.log(`replication: ${runs} incremental runs of a ZFS volume with 64 MiB changed, interleaved`);
  for (const row of r.rows) console.log(row.join("  "));
  console.log(
    `ratio aetherd/bare at p50: ${r.ratioP50.toFixed(2)}x (goal < 1.2x); the bare pipe copied by a node process: ${r.copyRatioP50.toFixed(2)}x; bytes sent ratio ${r.bytesRatio.toFixed(3)}`,
  );
}
