// Storage as a malicious tenant and a crash would treat it (issue 22), against a real aetherd over
// mutual TLS with tenant certificates: image import is no server-side request forgery (a tenant
// cannot make aetherd fetch loopback-only services, directly, by name or by redirect, nor learn a
// refused body's digest), a sparse raw image stays sparse, and a kill -9 in the middle of a
// create or delete leaves nothing half done after the restart.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, connect, type AetherClient } from "@aether/sdk";
import { ImageFileFormat, ImageState, type Image } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { isRunning, startDaemon, useDaemon, type TestDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { hasPattern, makeRawDisk, MiB, sha256, writePattern } from "./helpers/disks.js";
import { freePort } from "./helpers/net.js";
import { createCa, type TestCa } from "./helpers/pki.js";

const SECRET = "root-only service: the database password is hunter2\n";
const secretSha = createHash("sha256").update(SECRET).digest("hex");

/** Waits (through WatchImage) for an import to end. */
async function settled(aether: AetherClient, image: string, tenant = ""): Promise<Image> {
  let last: Image | undefined;
  for await (const update of aether.storage.watchImage({ image, tenant })) last = update.image;
  assert.ok(last);
  return last;
}

/** A loopback HTTP server answering from a table of paths; counts the requests for each. */
async function serve(
  routes: Record<string, (res: import("node:http").ServerResponse) => void>,
): Promise<{ server: Server; port: number; hits: Map<string, number> }> {
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = req.url ?? "";
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const route = routes[path];
    if (route) route(res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port, hits };
}

/** aetherd on mTLS with a [tenancy] section; returns clients for tenant a and an operator. */
async function tlsDaemon(
  ca: TestCa,
  dir: string,
  tenancy: string,
): Promise<{ daemon: TestDaemon; tenant: AetherClient; operator: AetherClient }> {
  const server = ca.issue("aetherd", { server: true });
  const port = await freePort();
  const config = join(dir, "aetherd.toml");
  writeFileSync(config, `import_roots = ["${dir}"]\n[tenancy]\n${tenancy}\n`);
  const daemon = await startDaemon({
    dir: mkdtempSync(join(dir, "d-")),
    args: [
      "--config",
      config,
      "--listen",
      `127.0.0.1:${port}`,
      "--tls-cert",
      server.cert,
      "--tls-key",
      server.key,
      "--tls-client-ca",
      ca.cert,
    ],
  });
  const as = async (name: string, uri: string) => {
    const pair = ca.issue(name, { uri });
    return connect({ address: `https://127.0.0.1:${port}`, tls: { ca: ca.cert, cert: pair.cert, key: pair.key } });
  };
  return { daemon, tenant: await as("alice", "spiffe://test/tenant/a/user/alice"), operator: await as("olga", "spiffe://test/user/olga") };
}

describe("image import is not a server-side request forgery", () => {
  const work = mkdtempSync(join(tmpdir(), "aether-hostile-storage-"));
  const ca = createCa("cluster-ca", mkdtempSync(join(work, "pki-")));
  const disk = join(work, "disk.raw");
  let diskSha = "";
  let secret: Awaited<ReturnType<typeof serve>>;
  let allowed: Awaited<ReturnType<typeof serve>>;
  let strict: Awaited<ReturnType<typeof tlsDaemon>>;
  let lenient: Awaited<ReturnType<typeof tlsDaemon>>;
  const image = (url: string, sha = secretSha) => ({
    name: `i${Math.random().toString(36).slice(2, 10)}`,
    sha256: sha,
    source: { source: { case: "url" as const, value: url } },
  });

  before(async () => {
    diskSha = makeRawDisk(disk, 4 * MiB, 0x5a);
    secret = await serve({ "/secret": (res) => res.writeHead(200).end(SECRET) });
    allowed = await serve({
      "/public/disk.raw": (res) => res.writeHead(200).end(readFileSync(disk)),
      "/public/moved": (res) => res.writeHead(302, { location: "/public/disk.raw" }).end(),
      "/public/to-secret": (res) => res.writeHead(302, { location: `http://127.0.0.1:${secret.port}/secret` }).end(),
      "/public/to-localhost": (res) => res.writeHead(307, { location: `http://localhost:${allowed.port}/public/disk.raw` }).end(),
    });
    const prefixes = [
      `http://127.0.0.1:${allowed.port}/public/`,
      `http://localhost:${allowed.port}/public/`,
      `http://[::ffff:7f00:1]:${allowed.port}/public/`,
    ];
    // strict: the defaults (public addresses only); lenient: private addresses allowed, prefixes still held.
    strict = await tlsDaemon(ca, work, `image_url_prefixes = ${JSON.stringify(prefixes)}`);
    lenient = await tlsDaemon(ca, work, `image_url_prefixes = ${JSON.stringify(prefixes.slice(0, 1))}\nallow_private_urls = true`);
  });

  after(async () => {
    for (const d of [strict, lenient]) {
      d?.tenant.close();
      d?.operator.close();
      await d?.daemon.stop();
      d?.daemon.cleanup();
    }
    secret?.server.close();
    allowed?.server.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("refuses a tenant a URL outside the allowed prefixes, and a loopback address under them, before fetching anything", async () => {
    const s = strict.tenant.storage;
    await rejectsWith(
      s.importImage(image(`http://127.0.0.1:${secret.port}/secret`)),
      Code.PermissionDenied,
      /is not under an allowed URL prefix: tenants may download only from http:\/\/127\.0\.0\.1/,
    );
    // Under an allowed prefix, yet loopback: literally, by name and as an IPv4-mapped IPv6 address.
    await rejectsWith(
      s.importImage(image(`http://127.0.0.1:${allowed.port}/public/disk.raw`, diskSha)),
      Code.PermissionDenied,
      /127\.0\.0\.1 is a loopback address; tenants may download images only from public addresses/,
    );
    await rejectsWith(
      s.importImage(image(`http://localhost:${allowed.port}/public/disk.raw`, diskSha)),
      Code.PermissionDenied,
      /localhost \((127\.0\.0\.1|::1)\) is a loopback address/,
    );
    await rejectsWith(
      s.importImage(image(`http://[::ffff:127.0.0.1]:${allowed.port}/public/disk.raw`, diskSha)),
      Code.PermissionDenied,
      /is a loopback address/,
    );
    // A prefix is a path boundary, and other schemes stay refused.
    await rejectsWith(
      s.importImage(image(`http://127.0.0.1:${allowed.port}/public-not/x`)),
      Code.PermissionDenied,
      /not under an allowed URL prefix/,
    );
    assert.equal(secret.hits.size + allowed.hits.size, 0, "aetherd connected to nothing for the tenant");
    const { images } = await s.listImages({});
    assert.equal(images.length, 0, "no image records were made");
  });

  it("lets an operator import from the same loopback service, and shows a cluster-wide caller the digest of a mismatch", async () => {
    const o = strict.operator.storage;
    const wrong = image(`http://127.0.0.1:${secret.port}/secret`, "0".repeat(64));
    await o.importImage({ ...wrong, tenant: "ops", sourceFormat: ImageFileFormat.RAW });
    const failed = await settled(strict.operator, wrong.name, "ops");
    assert.equal(failed.state, ImageState.FAILED);
    assert.match(failed.stateReason, new RegExp(`SHA-256 is ${secretSha}`));
    const ok = image(`http://127.0.0.1:${allowed.port}/public/disk.raw`, diskSha);
    await o.importImage({ ...ok, tenant: "ops" });
    assert.equal((await settled(strict.operator, ok.name, "ops")).state, ImageState.READY);
  });

  it("re-checks every redirect: a hop outside the prefixes (to a loopback secret) fails the import; one inside them is followed", async () => {
    const s = lenient.tenant.storage;
    const hitsBefore = secret.hits.get("/secret") ?? 0;
    const bounced = image(`http://127.0.0.1:${allowed.port}/public/to-secret`);
    await s.importImage(bounced);
    const failed = await settled(lenient.tenant, bounced.name);
    assert.equal(failed.state, ImageState.FAILED);
    assert.match(failed.stateReason, /http:\/\/127\.0\.0\.1:\d+\/secret is not under an allowed URL prefix/);
    assert.equal(secret.hits.get("/secret") ?? 0, hitsBefore, "the secret was never requested");
    const moved = image(`http://127.0.0.1:${allowed.port}/public/moved`, diskSha);
    await s.importImage(moved);
    const ready = await settled(lenient.tenant, moved.name);
    assert.equal(ready.state, ImageState.READY, ready.stateReason);
    assert.equal(ready.sha256, diskSha);
  });

  it("does not tell a tenant the digest of a body whose checksum did not match", async () => {
    const s = lenient.tenant.storage;
    const guess = image(`http://127.0.0.1:${allowed.port}/public/disk.raw`, "1".repeat(64));
    await s.importImage(guess);
    const failed = await settled(lenient.tenant, guess.name);
    assert.equal(failed.state, ImageState.FAILED);
    assert.match(failed.stateReason, /checksum does not match/);
    assert.doesNotMatch(failed.stateReason, new RegExp(diskSha));
    assert.doesNotMatch(failed.stateReason, /[0-9a-f]{64}(?<!1{64})/, "no digest but the one the tenant gave");
  });
});

describe("a sparse raw image stays sparse", () => {
  const work = mkdtempSync(join(tmpdir(), "aether-sparse-"));
  const env = useDaemon();
  after(() => rmSync(work, { recursive: true, force: true }));

  it("stores a 256 MiB raw disk holding 2 MiB of data in a few MiB, with the same bytes", async () => {
    const file = join(work, "sparse.raw");
    const sha = makeRawDisk(file, 256 * MiB, 0x42);
    assert.ok(statSync(file).blocks * 512 < 8 * MiB, "the source itself is sparse");
    await env.aether.storage.importImage({ name: "sparse", sha256: sha, source: { source: { case: "localPath", value: file } } });
    const image = await settled(env.aether, "sparse");
    assert.equal(image.state, ImageState.READY, image.stateReason);
    const stored = statSync(image.hostPath);
    assert.equal(stored.size, 256 * MiB);
    assert.ok(stored.blocks * 512 < 8 * MiB, `the stored image takes ${stored.blocks * 512} bytes on disk`);
    assert.ok(image.allocatedBytes < 8n * BigInt(MiB));
    assert.equal(sha256(image.hostPath), sha);
  });
});

describe("kill -9 in the middle of a create or delete leaves nothing half done", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-crash-"));
  let daemon: TestDaemon;
  let aether: AetherClient;
  const pool = () => join(daemon.stateDir, "pools", "default");
  const files = (sub: string) => (existsSync(join(pool(), sub)) ? readdirSync(join(pool(), sub), { recursive: true }).map(String) : []);

  /** Starts aetherd set to die (SIGKILL, as a crash) at `point`, runs `action` into it, then starts it again normally. */
  async function crashAt(point: string, action: (a: AetherClient) => Promise<unknown>): Promise<void> {
    aether.close();
    await daemon.stop();
    const dying = await startDaemon({ dir, cgroupRoot: daemon.cgroupRoot, env: { AETHERD_CRASH_AT: point } });
    const client = await dying.client();
    await assert.rejects(action(client), `aetherd died at ${point} before answering`);
    await dying.kill9();
    assert.equal(dying.process.signalCode, "SIGKILL", `aetherd reached ${point}`);
    daemon = await startDaemon({ dir, cgroupRoot: daemon.cgroupRoot });
    aether = await daemon.client();
  }

  before(async () => {
    daemon = await startDaemon({ dir });
    aether = await daemon.client();
  });
  after(async () => {
    aether?.close();
    await daemon?.stop();
    daemon?.cleanup();
  });

  it("a volume made but not recorded is undone; the name is free again", async () => {
    await crashAt("storage.volume.made", (a) =>
      a.storage.createVolume({ name: "v1", source: { case: "empty", value: { sizeBytes: 8n * BigInt(MiB) } } }),
    );
    assert.deepEqual((await aether.storage.listVolumes({})).volumes, []);
    assert.deepEqual(files("volumes"), [], "no volume file is left in the pool");
    const v = await aether.storage.createVolume({ name: "v1", source: { case: "empty", value: { sizeBytes: 8n * BigInt(MiB) } } });
    assert.ok(existsSync(v.volume?.hostPath ?? ""));
  });

  it("a delete interrupted after the data went is finished", async () => {
    await crashAt("storage.volume.unmade", (a) => a.storage.deleteVolume({ volume: "v1" }));
    assert.deepEqual((await aether.storage.listVolumes({})).volumes, []);
    assert.deepEqual(files("volumes"), []);
    await aether.storage.createVolume({ name: "v1", source: { case: "empty", value: { sizeBytes: 8n * BigInt(MiB) } } });
    await aether.storage.deleteVolume({ volume: "v1" });
  });

  it("a snapshot taken but not recorded, and a clone's implicit snapshot without its clone, are undone; the volume keeps its data", async () => {
    const src = (
      await aether.storage.createVolume({ name: "src", format: 1, source: { case: "empty", value: { sizeBytes: 8n * BigInt(MiB) } } })
    ).volume;
    const path = src?.hostPath ?? "";
    writePattern(path, "qcow2", 0, MiB, 0x61);
    for (const [point, action] of [
      ["storage.snapshot.taken", (a: AetherClient) => a.storage.snapshotVolume({ volume: "src", name: "s1" })],
      ["storage.clone.snapshot-taken", (a: AetherClient) => a.storage.cloneVolume({ volume: "src", name: "copy" })],
      ["storage.volume.made", (a: AetherClient) => a.storage.cloneVolume({ volume: "src", name: "copy" })],
    ] as const) {
      await crashAt(point, action);
      assert.deepEqual((await aether.storage.listSnapshots({})).snapshots, [], `after a crash at ${point}: no snapshot`);
      assert.deepEqual(
        (await aether.storage.listVolumes({})).volumes.map((v) => v.name),
        ["src"],
        `after a crash at ${point}: no clone`,
      );
      assert.deepEqual(
        files("snapshots").filter((f) => f.endsWith(".qcow2")),
        [],
        `after a crash at ${point}: no snapshot file`,
      );
      const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-U", path], { encoding: "utf8" })) as {
        "backing-filename"?: string;
      };
      assert.equal(info["backing-filename"], undefined, "the volume stands alone again");
      assert.ok(hasPattern(path, "qcow2", 0, MiB, 0x61), "the volume's data is intact");
    }
    const clone = await aether.storage.cloneVolume({ volume: "src", name: "copy" });
    assert.ok(hasPattern(clone.volume?.hostPath ?? "", "qcow2", 0, MiB, 0x61), "a clone made after recovery reads the data");
    await aether.storage.deleteVolume({ volume: "copy" });
    await aether.storage.deleteVolume({ volume: "src", deleteSnapshots: true });
  });

  it("a cell whose cgroup was made but not recorded as ready is undone; a free interrupted is finished", async () => {
    const probe = (await aether.cells.allocateCell({ name: "probe" })).cell;
    const probePaths = Object.values(probe?.cgroupPaths ?? {});
    assert.ok(probePaths.length > 0);
    const pathOf = (name: string) => probePaths.map((p) => join(p, "..", name));
    await crashAt("cells.cgroup-made", (a) => a.cells.allocateCell({ name: "web" }));
    assert.deepEqual(
      (await aether.cells.listCells({})).cells.map((c) => c.name),
      ["probe"],
    );
    for (const p of pathOf("web")) assert.equal(existsSync(p), false, `${p} was removed`);
    await aether.cells.allocateCell({ name: "web" });

    const job = (await aether.runtime.startExecutable({ cell: "web", argv: ["/bin/sleep", "600"] })).executable;
    await crashAt("cells.free-stopped", (a) => a.cells.freeCell({ cell: "web", stopExecutables: true }));
    assert.deepEqual(
      (await aether.cells.listCells({})).cells.map((c) => c.name),
      ["probe"],
    );
    for (const p of pathOf("web")) assert.equal(existsSync(p), false, `${p} was removed`);
    assert.equal(isRunning(job?.pid ?? 0), false, "the cell's process is gone");
    await aether.cells.allocateCell({ name: "web" });
    await aether.cells.freeCell({ cell: "web" });
    await aether.cells.freeCell({ cell: "probe" });
    // The write-ahead markers of the creates and frees (cells/registry.ts) go with them.
    const cellFiles = readdirSync(join(daemon.stateDir, "cells"));
    assert.deepEqual(cellFiles, [], `nothing is left in the cells' folder: ${cellFiles.join(", ")}`);
  });
});
