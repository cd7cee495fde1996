// Storage on the embedded dir pool, proved on the bytes: clones read their parent's data through
// real qcow2 backing chains, writes stay in the clone, snapshots and rollbacks restore what was
// written, and every refusal leaves the pool as it was.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createReadStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { execFileSync } from "node:child_process";
import { Code, type AetherClient } from "@aether/sdk";
import {
  ImageFileFormat,
  ImageState,
  PoolDriver,
  VolumeFormat,
  VolumeState,
  type Image,
} from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { eventually, startDaemon, useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { hasPattern, makeRawDisk, MiB, sha256, writePattern } from "./helpers/disks.js";

const IMAGE_SIZE = 64 * MiB;

/** Imports an image and waits (through WatchImage) for its import to end. */
async function importImage(
  aether: AetherClient,
  name: string,
  source: { localPath: string } | { url: string },
  sha: string,
  extra: { sourceFormat?: ImageFileFormat } = {},
): Promise<Image> {
  const src = "localPath" in source ? { case: "localPath" as const, value: source.localPath } : { case: "url" as const, value: source.url };
  await aether.storage.importImage({ name, source: { source: src }, sha256: sha, ...extra });
  let last: Image | undefined;
  for await (const update of aether.storage.watchImage({ image: name })) last = update.image;
  assert.ok(last);
  return last;
}

describe("storage: dir pool", () => {
  const env = useDaemon();
  const work = mkdtempSync(join(tmpdir(), "aether-storage-"));
  const base = join(work, "base.raw");
  let baseSha = "";
  let pool = "";

  before(async () => {
    baseSha = makeRawDisk(base, IMAGE_SIZE, 0xab);
    const { pools } = await env.aether.storage.listPools({});
    pool = join(env.daemon.stateDir, "pools", "default");
    assert.equal(pools.length, 1);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it("the embedded default is an available dir pool of qcow2 and raw files", async () => {
    const { pools } = await env.aether.storage.listPools({});
    const p = pools[0];
    assert.equal(p?.name, "default");
    assert.equal(p?.driver, PoolDriver.DIR);
    assert.equal(p?.location, pool);
    assert.equal(p?.defaultPool, true);
    assert.equal(p?.available, true, p?.unavailableReason);
    assert.ok((p?.capacityBytes ?? 0n) > 0n);
    assert.deepEqual(p?.formats, [VolumeFormat.QCOW2, VolumeFormat.RAW]);
  });

  it("imports a local raw disk with its checksum; a clone reads the image's bytes, costs almost nothing and keeps its writes", async () => {
    const image = await importImage(env.aether, "base", { localPath: base }, baseSha);
    assert.equal(image.state, ImageState.READY, image.stateReason);
    assert.equal(image.sizeBytes, BigInt(IMAGE_SIZE));
    assert.equal(image.importedBytes, BigInt(IMAGE_SIZE));
    assert.ok(image.hostPath.startsWith(`${pool}/images/`), image.hostPath);

    const { volume } = await env.aether.storage.createVolume({ name: "web-1", source: { case: "image", value: { image: "base" } } });
    assert.equal(volume?.state, VolumeState.READY);
    assert.equal(volume?.format, VolumeFormat.QCOW2);
    assert.equal(volume?.sizeBytes, BigInt(IMAGE_SIZE));
    assert.equal(volume?.backing?.parent.value, image.id);
    const path = volume?.hostPath ?? "";
    assert.ok(path.startsWith(`${pool}/volumes/`), path);
    assert.ok(Number(volume?.allocatedBytes) < MiB, `a fresh clone takes ${volume?.allocatedBytes} bytes`);
    assert.ok(hasPattern(path, "qcow2", MiB, MiB, 0xab), "the clone reads the image's data");

    writePattern(path, "qcow2", MiB, 64 * 1024, 0x11);
    assert.ok(hasPattern(path, "qcow2", MiB, 64 * 1024, 0x11));
    assert.ok(hasPattern(image.hostPath, "raw", MiB, MiB, 0xab), "the image is untouched by the clone's writes");
    assert.equal(sha256(image.hostPath), baseSha);

    const { image: withClone } = await env.aether.storage.getImage({ image: "base" });
    assert.deepEqual(withClone?.clones, [volume?.id]);
    await rejectsWith(env.aether.storage.deleteImage({ image: "base" }), Code.FailedPrecondition, /web-1.*delete them first/);

    const grown = (
      await env.aether.storage.createVolume({
        name: "web-big",
        source: { case: "image", value: { image: "base", sizeBytes: BigInt(2 * IMAGE_SIZE) } },
      })
    ).volume;
    assert.equal(grown?.sizeBytes, BigInt(2 * IMAGE_SIZE));
    assert.ok(hasPattern(grown?.hostPath ?? "", "qcow2", MiB, MiB, 0xab));
    await rejectsWith(
      env.aether.storage.createVolume({
        name: "web-small",
        source: { case: "image", value: { image: "base", sizeBytes: BigInt(IMAGE_SIZE / 2) } },
      }),
      Code.InvalidArgument,
      new RegExp(`^size_bytes ${IMAGE_SIZE / 2} is smaller than image base \\(${IMAGE_SIZE / MiB} MiB\\); a clone can only keep or grow`),
    );
  });

  it("snapshots, clones of a snapshot, rollback and snapshot deletion keep every layer's bytes right", async () => {
    const { volume } = await env.aether.storage.createVolume({
      name: "data",
      source: { case: "empty", value: { sizeBytes: BigInt(32 * MiB) } },
    });
    const path = volume?.hostPath ?? "";
    writePattern(path, "qcow2", 0, MiB, 0x01);
    const s1 = (await env.aether.storage.snapshotVolume({ volume: "data", name: "one" })).snapshot;
    assert.equal(s1?.name, "one");
    assert.equal((await env.aether.storage.getVolume({ volume: "data" })).volume?.hostPath, path, "the volume's path never changes");
    writePattern(path, "qcow2", 0, MiB, 0x02);
    await env.aether.storage.snapshotVolume({ volume: "data", name: "two" });
    writePattern(path, "qcow2", 0, MiB, 0x03);

    // A clone of snapshot "one" sees 0x01 and nothing written later.
    const clone = (await env.aether.storage.cloneVolume({ volume: "data", snapshot: "one", name: "data-at-one" })).volume;
    assert.ok(hasPattern(clone?.hostPath ?? "", "qcow2", 0, MiB, 0x01));
    assert.ok(hasPattern(path, "qcow2", 0, MiB, 0x03));
    // A clone without a snapshot named takes one now ("clone-<name>") and sees the current bytes.
    const now = await env.aether.storage.cloneVolume({ volume: "data", name: "data-now" });
    assert.equal(now.snapshot?.name, "clone-data-now");
    assert.ok(hasPattern(now.volume?.hostPath ?? "", "qcow2", 0, MiB, 0x03));

    const listed = (await env.aether.storage.listSnapshots({ volume: "data" })).snapshots.map((s) => s.name);
    assert.deepEqual(listed, ["clone-data-now", "two", "one"], "newest first");
    assert.equal((await env.aether.storage.getVolume({ volume: "data" })).volume?.snapshotCount, 3);

    // Refusals: a snapshot with clones, a volume with clones, rollback past snapshots with clones.
    await rejectsWith(env.aether.storage.deleteSnapshot({ volume: "data", snapshot: "one" }), Code.FailedPrecondition, /data-at-one/);
    await rejectsWith(
      env.aether.storage.deleteVolume({ volume: "data", deleteSnapshots: true }),
      Code.FailedPrecondition,
      /clones that depend/,
    );
    await rejectsWith(
      env.aether.storage.rollbackVolume({ volume: "data", snapshot: "two" }),
      Code.FailedPrecondition,
      /newer than two.*destroy_newer_snapshots/,
    );
    await rejectsWith(
      env.aether.storage.rollbackVolume({ volume: "data", snapshot: "two", destroyNewerSnapshots: true }),
      Code.FailedPrecondition,
      /clone-data-now.*has clones/,
    );

    await env.aether.storage.deleteVolume({ volume: "data-now" });
    await env.aether.storage.deleteSnapshot({ volume: "data", snapshot: "clone-data-now" });
    assert.ok(hasPattern(path, "qcow2", 0, MiB, 0x03), "deleting the newest snapshot keeps the volume's bytes");

    const rolled = await env.aether.storage.rollbackVolume({ volume: "data", snapshot: "two" });
    assert.deepEqual(rolled.deletedSnapshots, []);
    assert.ok(hasPattern(path, "qcow2", 0, MiB, 0x02), "rolled back to snapshot two");

    // Deleting "two" (the newest, above "one") merges it into the volume: bytes unchanged.
    await env.aether.storage.deleteSnapshot({ volume: "data", snapshot: "two" });
    assert.ok(hasPattern(path, "qcow2", 0, MiB, 0x02));
    assert.ok(hasPattern(clone?.hostPath ?? "", "qcow2", 0, MiB, 0x01), "the clone of one still reads its bytes");

    await env.aether.storage.deleteVolume({ volume: "data-at-one" });
    await rejectsWith(env.aether.storage.deleteVolume({ volume: "data" }), Code.FailedPrecondition, /1 snapshot\(s\).*delete_snapshots/);
    await env.aether.storage.deleteVolume({ volume: "data", deleteSnapshots: true });
    assert.equal(existsSync(path), false);
    assert.deepEqual(readdirSync(join(pool, "snapshots")), []);
  });

  it("grows a volume and refuses to shrink it", async () => {
    await env.aether.storage.createVolume({
      name: "grow",
      format: VolumeFormat.RAW,
      source: { case: "empty", value: { sizeBytes: BigInt(8 * MiB) } },
    });
    const { volume } = await env.aether.storage.resizeVolume({ volume: "grow", sizeBytes: BigInt(16 * MiB) });
    assert.equal(volume?.sizeBytes, BigInt(16 * MiB));
    assert.equal(
      JSON.parse(execFileSync("qemu-img", ["info", "--output=json", volume?.hostPath ?? ""], { encoding: "utf8" }))["virtual-size"],
      16 * MiB,
    );
    await rejectsWith(env.aether.storage.resizeVolume({ volume: "grow", sizeBytes: BigInt(4 * MiB) }), Code.InvalidArgument, /only grow/);
    await rejectsWith(
      env.aether.storage.snapshotVolume({ volume: "grow" }),
      Code.FailedPrecondition,
      /raw volumes in a dir pool have no snapshots/,
    );
    await env.aether.storage.deleteVolume({ volume: "grow" });
  });

  it("refuses bad names, sizes, pools and sources with a sentence, touching nothing", async () => {
    const before = readdirSync(join(pool, "volumes")).sort();
    for (const name of ["../evil", "/etc/passwd", "a\u0000b", "UPPER", "", "x".repeat(64)]) {
      await rejectsWith(
        env.aether.storage.createVolume({ name, source: { case: "empty", value: { sizeBytes: BigInt(MiB) } } }),
        Code.InvalidArgument,
        /not a valid name/,
      );
    }
    await rejectsWith(
      env.aether.storage.createVolume({ name: "zero", source: { case: "empty", value: { sizeBytes: 0n } } }),
      Code.InvalidArgument,
      /size_bytes is 0/,
    );
    await rejectsWith(
      env.aether.storage.createVolume({ name: "tiny", source: { case: "empty", value: { sizeBytes: 1000n } } }),
      Code.InvalidArgument,
      /at least 1 MiB/,
    );
    await rejectsWith(
      env.aether.storage.createVolume({ name: "huge", source: { case: "empty", value: { sizeBytes: 1n << 62n } } }),
      Code.InvalidArgument,
      /beyond what aetherd handles/,
    );
    await rejectsWith(
      env.aether.storage.createVolume({ name: "huge", source: { case: "empty", value: { sizeBytes: 1n << 52n } } }),
      Code.InvalidArgument,
      /larger than pool default can ever hold/,
    );
    await rejectsWith(env.aether.storage.createVolume({ name: "nosource" }), Code.InvalidArgument, /source is required/);
    await rejectsWith(
      env.aether.storage.createVolume({ name: "elsewhere", pool: "nope", source: { case: "empty", value: { sizeBytes: BigInt(MiB) } } }),
      Code.InvalidArgument,
      /pool "nope" is not configured/,
    );
    await rejectsWith(
      env.aether.storage.createVolume({ name: "c", source: { case: "image", value: { image: "../../etc/shadow" } } }),
      Code.InvalidArgument,
      /neither an id nor a name/,
    );
    await rejectsWith(
      env.aether.storage.createVolume({ name: "c", source: { case: "image", value: { image: "missing" } } }),
      Code.NotFound,
      /no image .*ListImages/,
    );
    await rejectsWith(env.aether.storage.getVolume({ volume: "missing" }), Code.NotFound, /ListVolumes/);
    await rejectsWith(env.aether.storage.deleteVolume({ volume: "missing" }), Code.NotFound, /no volume/);
    await rejectsWith(env.aether.storage.getPool({ pool: "missing" }), Code.NotFound, /configured pools \(default\)/);
    const dup = { name: "dup", source: { case: "empty" as const, value: { sizeBytes: BigInt(MiB) } } };
    await env.aether.storage.createVolume(dup);
    await rejectsWith(env.aether.storage.createVolume(dup), Code.AlreadyExists, /already exists/);
    await env.aether.storage.deleteVolume({ volume: "dup" });
    assert.deepEqual(readdirSync(join(pool, "volumes")).sort(), before);
  });

  it("a failed import says why: wrong checksum, not a disk image, a qcow2 pointing at a host file, a missing file", async () => {
    const wrong = await importImage(env.aether, "wrong-sum", { localPath: base }, "0".repeat(64));
    assert.equal(wrong.state, ImageState.FAILED);
    assert.match(wrong.stateReason, new RegExp(`checksum does not match: the source's SHA-256 is ${baseSha}`));

    const text = join(work, "notes.txt");
    writeFileSync(text, "this is not a disk\n".repeat(1000));
    const notDisk = await importImage(env.aether, "not-disk", { localPath: text }, sha256(text));
    assert.equal(notDisk.state, ImageState.FAILED);
    assert.match(notDisk.stateReason, /not a whole number of 512-byte sectors|neither qcow2 nor a raw disk/);

    const sneaky = join(work, "sneaky.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", sneaky]);
    const backing = await importImage(env.aether, "sneaky", { localPath: sneaky }, sha256(sneaky));
    assert.equal(backing.state, ImageState.FAILED);
    assert.match(backing.stateReason, /refers to another file/);

    const aligned = join(work, "zeros.bin");
    writeFileSync(aligned, Buffer.alloc(MiB));
    const guessed = await importImage(env.aether, "zeros", { localPath: aligned }, sha256(aligned));
    assert.match(guessed.stateReason, /import it with source format RAW/);
    const declared = await importImage(env.aether, "zeros-raw", { localPath: aligned }, sha256(aligned), {
      sourceFormat: ImageFileFormat.RAW,
    });
    assert.equal(declared.state, ImageState.READY, declared.stateReason);

    await rejectsWith(
      env.aether.storage.importImage({
        name: "gone",
        source: { source: { case: "localPath", value: join(work, "missing.raw") } },
        sha256: baseSha,
      }),
      Code.FailedPrecondition,
      /does not exist/,
    );
    await rejectsWith(
      env.aether.storage.importImage({ name: "rel", source: { source: { case: "localPath", value: "base.raw" } }, sha256: baseSha }),
      Code.InvalidArgument,
      /not an absolute path/,
    );
    await rejectsWith(
      env.aether.storage.importImage({ name: "ftp", source: { source: { case: "url", value: "ftp://example.org/x" } }, sha256: baseSha }),
      Code.InvalidArgument,
      /http:\/\/ or https:\/\//,
    );
    await rejectsWith(
      env.aether.storage.importImage({ name: "nosum", source: { source: { case: "localPath", value: base } }, sha256: "abc" }),
      Code.InvalidArgument,
      /64 lowercase hex/,
    );
    for (const name of ["wrong-sum", "not-disk", "sneaky", "zeros", "zeros-raw"]) await env.aether.storage.deleteImage({ image: name });
    assert.deepEqual(readdirSync(join(pool, ".staging")), [], "failed imports leave no staged files");
  });

  it("imports from an http URL, reporting progress, and fails a 404 with the server's answer", async () => {
    const server: Server = createServer((req, res) => {
      if (req.url !== "/base.raw") {
        res.writeHead(404).end("no such file");
        return;
      }
      res.writeHead(200, { "content-length": String(IMAGE_SIZE) });
      createReadStream(base).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      const image = await importImage(env.aether, "from-url", { url: `http://127.0.0.1:${port}/base.raw` }, baseSha);
      assert.equal(image.state, ImageState.READY, image.stateReason);
      assert.equal(image.sourceBytes, BigInt(IMAGE_SIZE));
      assert.equal(sha256(image.hostPath), baseSha);
      const missing = await importImage(env.aether, "url-404", { url: `http://127.0.0.1:${port}/nope.raw` }, baseSha);
      assert.equal(missing.state, ImageState.FAILED);
      assert.match(missing.stateReason, /answered HTTP 404/);
      await env.aether.storage.deleteImage({ image: "from-url" });
      await env.aether.storage.deleteImage({ image: "url-404" });
    } finally {
      server.close();
    }
  });

  it("100 rounds of two clones of one image at once, and a delete racing a clone, leave consistent state", async () => {
    const s = env.aether.storage;
    const small = join(work, "race.raw");
    const smallSha = makeRawDisk(small, 4 * MiB, 0x5a);
    const outcomes = { deleted: 0, refused: 0 };
    for (let round = 0; round < 100; round++) {
      const image = `race-${round}`;
      await s.importImage({ name: image, source: { source: { case: "localPath", value: small } }, sha256: smallSha });
      await eventually(
        async () => ((await s.getImage({ image })).image?.state === ImageState.READY ? true : undefined),
        10_000,
        "the race image",
      );
      // The calls are issued in a different order each round, so that the delete sometimes comes
      // before every clone, sometimes between them and sometimes after.
      const calls = [
        () => s.createVolume({ name: `${image}-a`, source: { case: "image", value: { image } } }),
        () => s.createVolume({ name: `${image}-b`, source: { case: "image", value: { image } } }),
        () => s.createVolume({ name: `${image}-c`, source: { case: "image", value: { image } } }),
        () => s.deleteImage({ image }),
      ];
      const deleteAt = round % 4;
      [calls[3], calls[deleteAt]] = [calls[deleteAt] as (typeof calls)[number], calls[3] as (typeof calls)[number]];
      const results = await Promise.allSettled(calls.map((call) => call()));
      const del = results[deleteAt];
      const clones = results.filter((_, i) => i !== deleteAt);
      const made = clones.filter((r) => r.status === "fulfilled").length;
      const { volumes } = await s.listVolumes({ pageSize: 1000 });
      const ours = volumes.filter((v) => v.name.startsWith(`${image}-`));
      assert.equal(ours.length, made, `round ${round}: every successful clone is recorded, nothing else`);
      for (const v of ours) assert.ok(existsSync(v.hostPath) && v.state === VolumeState.READY, `round ${round}: ${v.name} is real`);
      const imageLeft = (await s.listImages({})).images.find((i) => i.name === image);
      if (del?.status === "fulfilled") {
        outcomes.deleted++;
        assert.equal(imageLeft, undefined);
        assert.equal(ours.length, 0, `round ${round}: the image was deleted, so no clone of it may exist`);
        for (const r of clones) assert.equal(r.status, "rejected");
      } else {
        outcomes.refused++;
        assert.ok(imageLeft, `round ${round}: a refused delete keeps the image`);
        assert.ok(ours.length > 0, `round ${round}: the delete was refused because a clone exists`);
        assert.deepEqual([...imageLeft.clones].sort(), ours.map((v) => v.id).sort());
      }
      for (const v of ours) await s.deleteVolume({ volume: v.id });
      if (imageLeft) await s.deleteImage({ image });
    }
    assert.ok(outcomes.deleted > 0 && outcomes.refused > 0, `both orders happened: ${JSON.stringify(outcomes)}`);
    // Every file in the pool belongs to a recorded volume or image: nothing half-made is left.
    const recorded = new Set([
      ...(await s.listVolumes({ pageSize: 1000 })).volumes.map((v) => v.hostPath),
      ...(await s.listImages({})).images.map((i) => i.hostPath),
    ]);
    for (const sub of ["volumes", "images"]) {
      for (const f of readdirSync(join(pool, sub)))
        assert.ok(recorded.has(join(pool, sub, f)), `${sub}/${f} is not a recorded volume or image`);
    }
  });

  it("request_id makes a retried create return the same volume and a retried delete succeed", async () => {
    const req = { name: "once", requestId: "r-1", source: { case: "empty" as const, value: { sizeBytes: BigInt(MiB) } } };
    const first = (await env.aether.storage.createVolume(req)).volume;
    const second = (await env.aether.storage.createVolume(req)).volume;
    assert.equal(second?.id, first?.id);
    await env.aether.storage.deleteVolume({ volume: "once", requestId: "d-1" });
    await env.aether.storage.deleteVolume({ volume: "once", requestId: "d-1" });
    await rejectsWith(env.aether.storage.deleteVolume({ volume: "once" }), Code.NotFound, /no volume/);
  });
});

describe("storage: records survive restarts and are reconciled with the disk", () => {
  it("volumes come back after a restart; a file deleted behind aetherd's back and a vanished pool folder are reported", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aetherd-test-"));
    const imports = join(dir, "imports");
    execFileSync("mkdir", ["-p", imports]);
    const config = join(dir, "aetherd.toml");
    writeFileSync(config, `import_roots = ["${imports}"]\n`);
    let daemon = await startDaemon({ dir, args: ["--config", config] });
    try {
      let aether = await daemon.client();
      const outside = join(dir, "outside.raw");
      const sha = makeRawDisk(outside, 4 * MiB, 0x42);
      await rejectsWith(
        aether.storage.importImage({ name: "outside", source: { source: { case: "localPath", value: outside } }, sha256: sha }),
        Code.FailedPrecondition,
        /outside the folders aetherd imports from/,
      );
      // A link inside the import root that points outside is resolved first, and refused too.
      execFileSync("ln", ["-s", outside, join(imports, "link.raw")]);
      await rejectsWith(
        aether.storage.importImage({
          name: "link",
          source: { source: { case: "localPath", value: join(imports, "link.raw") } },
          sha256: sha,
        }),
        Code.FailedPrecondition,
        /outside the folders/,
      );
      renameSync(outside, join(imports, "inside.raw"));
      const image = await importImage(aether, "inside", { localPath: join(imports, "inside.raw") }, sha);
      assert.equal(image.state, ImageState.READY, image.stateReason);
      const keep = (await aether.storage.createVolume({ name: "keep", source: { case: "image", value: { image: "inside" } } })).volume;
      const lose = (await aether.storage.createVolume({ name: "lose", source: { case: "empty", value: { sizeBytes: BigInt(MiB) } } }))
        .volume;
      await aether.storage.snapshotVolume({ volume: "keep", name: "s1" });

      assert.equal(await daemon.stop(), 0);
      rmSync(lose?.hostPath ?? "");
      // A file no record names (as a crash between a clone and its record would leave) is reported.
      const stray = join(dir, "state", "pools", "default", "volumes", "00000000-0000-4000-8000-000000000000.qcow2");
      writeFileSync(stray, "");
      daemon = await startDaemon({ dir, args: ["--config", config] });
      assert.match(
        daemon.log(),
        /00000000-0000-4000-8000-000000000000\.qcow2"\],"msg":"files in the pool that no volume or image record names/,
      );
      assert.ok(existsSync(stray), "left in place");
      rmSync(stray);
      aether = await daemon.client();
      const kept = (await aether.storage.getVolume({ volume: "keep" })).volume;
      assert.equal(kept?.state, VolumeState.READY);
      assert.equal(kept?.id, keep?.id);
      assert.equal(kept?.snapshotCount, 1);
      assert.ok(hasPattern(kept?.hostPath ?? "", "qcow2", MiB, MiB, 0x42));
      const lost = (await aether.storage.getVolume({ volume: "lose" })).volume;
      assert.equal(lost?.state, VolumeState.FAILED);
      assert.match(lost?.stateReason ?? "", /missing on disk/);
      await rejectsWith(
        aether.storage.resizeVolume({ volume: "lose", sizeBytes: BigInt(2 * MiB) }),
        Code.FailedPrecondition,
        /missing on disk/,
      );
      await aether.storage.deleteVolume({ volume: "lose" });

      // The pool's folder vanishes while aetherd runs: the pool says so and nothing is recreated.
      const poolDir = join(daemon.stateDir, "pools", "default");
      renameSync(poolDir, `${poolDir}.moved`);
      const { pool } = await aether.storage.getPool({ pool: "default" });
      assert.equal(pool?.available, false);
      assert.match(pool?.unavailableReason ?? "", /missing or not writable/);
      await rejectsWith(
        aether.storage.createVolume({ name: "new", source: { case: "empty", value: { sizeBytes: BigInt(MiB) } } }),
        Code.FailedPrecondition,
        /pool default is unavailable/,
      );
      assert.equal((await aether.storage.getVolume({ volume: "keep" })).volume?.state, VolumeState.FAILED);
      assert.equal(daemon.process.exitCode, null, "aetherd keeps running");
      assert.equal(await daemon.stop(), 0);
      daemon = await startDaemon({ dir, args: ["--config", config] });
      assert.equal(existsSync(poolDir), false, "a restart does not paper over the missing folder");
      aether = await daemon.client();
      renameSync(`${poolDir}.moved`, poolDir);
      assert.equal((await aether.storage.getVolume({ volume: "keep" })).volume?.state, VolumeState.READY, "back once the folder is");
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
