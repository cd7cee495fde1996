import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { gzipSync } from "node:zlib";
import { bzImagePayload, decompressPayload, PvhKernels, pvhElf } from "./kernel-elf.js";

/** A 64-bit ELF with one PT_NOTE (the PVH entry note when `pvh`) and one PT_LOAD ending in zero pages. */
function elf(pvh: boolean): Buffer {
  const buf = Buffer.alloc(0x5000 + 0x3000); // headers page, note, then a segment: 1 page of data + 3 zero pages
  buf.writeUInt32BE(0x7f454c46, 0);
  buf[4] = 2; // 64-bit
  buf[5] = 1; // little-endian
  buf.writeBigUInt64LE(0x40n, 0x20); // e_phoff
  buf.writeBigUInt64LE(0x4000n, 0x28); // e_shoff (dropped by the trim)
  buf.writeUInt16LE(56, 0x36);
  buf.writeUInt16LE(2, 0x38);
  buf.writeUInt16LE(3, 0x3c);
  const note = 0x1000;
  buf.writeUInt32LE(4, note); // namesz
  buf.writeUInt32LE(4, note + 4); // descsz
  buf.writeUInt32LE(pvh ? 18 : 17, note + 8);
  buf.write("Xen\0", note + 12, "latin1");
  const ph = (i: number, type: number, offset: number, size: number) => {
    const at = 0x40 + i * 56;
    buf.writeUInt32LE(type, at);
    buf.writeBigUInt64LE(BigInt(offset), at + 0x08);
    buf.writeBigUInt64LE(BigInt(size), at + 0x20);
    buf.writeBigUInt64LE(BigInt(size), at + 0x28);
  };
  ph(0, 4, note, 20);
  ph(1, 1, 0x5000, 0x3000);
  buf.fill(0xcc, 0x5000, 0x5800);
  return buf;
}

/** A bzImage (boot protocol 2.15) around a gzip payload. */
function bzImage(payload: Buffer): Buffer {
  const setup = Buffer.alloc(5 * 512);
  setup[0x1f1] = 4;
  setup.write("HdrS", 0x202, "latin1");
  setup.writeUInt16LE(0x20f, 0x206);
  setup.writeUInt32LE(0x100, 0x248);
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([setup, Buffer.alloc(0x100), payload, Buffer.alloc(64)]);
}

const dir = mkdtempSync(join(tmpdir(), "aether-kernel-elf-"));
after(() => rmSync(dir, { recursive: true, force: true }));

it("a PVH ELF loses its segments' trailing zero pages and its section headers; one without the note is refused", () => {
  const trimmed = pvhElf(elf(true));
  assert.ok(trimmed);
  assert.equal(trimmed.length, 0x6000, "the file ends after the segment's last non-zero page");
  assert.equal(trimmed.readBigUInt64LE(0x40 + 56 + 0x20), 0x1000n, "file size: the page with data");
  assert.equal(trimmed.readBigUInt64LE(0x40 + 56 + 0x28), 0x3000n, "memory size unchanged: the loader zero-fills");
  assert.equal(trimmed.readBigUInt64LE(0x28), 0n);
  assert.equal(trimmed.readUInt16LE(0x3c), 0);
  assert.equal(pvhElf(elf(false)), undefined);
  assert.equal(pvhElf(Buffer.from("not an elf at all, just some bytes long enough to be read as a header........")), undefined);
});

it("a bzImage's payload is found by its header; anything else has none", () => {
  const payload = gzipSync(elf(true));
  assert.deepEqual(bzImagePayload(bzImage(payload)), payload);
  assert.equal(bzImagePayload(elf(true)), undefined);
});

it("a bzImage becomes a cached PVH ELF once; a kernel that cannot be converted is booted as given", async () => {
  const cache = join(dir, "kernels");
  const kernel = join(dir, "vmlinuz");
  writeFileSync(kernel, bzImage(gzipSync(elf(true))));
  const kernels = new PvhKernels(cache);
  const [a, b] = await Promise.all([kernels.elfFor(kernel), kernels.elfFor(kernel)]);
  if (!a?.endsWith(".pvh.elf")) assert.fail(`converted to ${a}`);
  assert.equal(a, b);
  assert.deepEqual(readFileSync(a), pvhElf(elf(true)));
  assert.deepEqual(readdirSync(cache), [a.split("/").pop()], "one conversion, no partial file left");
  assert.equal(await new PvhKernels(cache).elfFor(kernel), a, "a later aetherd finds the cached ELF");

  const noPvh = join(dir, "old-vmlinuz");
  writeFileSync(noPvh, bzImage(gzipSync(elf(false))));
  assert.equal(await kernels.elfFor(noPvh), undefined);
  const notBz = join(dir, "vmlinux");
  writeFileSync(notBz, elf(true));
  assert.equal(await kernels.elfFor(notBz), undefined);
  assert.equal(await kernels.elfFor(join(dir, "missing")), undefined);
});

it("the cache keeps the 8 most recently booted ELFs and drops a crashed conversion's partial file", async () => {
  const cache = join(dir, "lru");
  const kernels = new PvhKernels(cache);
  const paths: string[] = [];
  for (let i = 0; i < 9; i++) {
    const kernel = join(dir, `vmlinuz-${i}`);
    writeFileSync(kernel, bzImage(gzipSync(elf(true))));
    const made = await kernels.elfFor(kernel);
    if (!made) assert.fail(`vmlinuz-${i} was not converted`);
    paths.push(made);
    if (i === 0) writeFileSync(`${made}.partial`, "left by a crash");
    if (i === 7) await kernels.elfFor(join(dir, "vmlinuz-0")); // booted again: the most recent but for the next
    await new Promise((r) => setTimeout(r, 20)); // distinct modification times
  }
  const left = readdirSync(cache).sort();
  assert.equal(left.length, 8, left.join(" "));
  assert.ok(!left.some((n) => n.endsWith(".partial")));
  assert.ok(!left.includes(paths[1]?.split("/").pop() ?? ""), "the least recently booted went");
  assert.ok(left.includes(paths[0]?.split("/").pop() ?? ""), "booted again, so kept");
  assert.equal(await kernels.elfFor(join(dir, "vmlinuz-1")), paths[1], "taken out again when booted again");
});

it("a payload that claims, or unpacks to, more than it should is not unpacked", async () => {
  const claiming = (payload: Buffer, size: number) => {
    const out = Buffer.concat([payload, Buffer.alloc(4)]);
    out.writeUInt32LE(size, out.length - 4);
    return out;
  };
  const xz = execFileSync("xz", ["-c"], { input: Buffer.alloc(2 * 1024 * 1024) });
  assert.equal((await decompressPayload(claiming(xz, 2 * 1024 * 1024)))?.length, 2 * 1024 * 1024);
  assert.equal(await decompressPayload(claiming(xz, 1024 * 1024)), undefined, "unpacks to more than it claims");
  assert.equal(await decompressPayload(claiming(xz, 0xffffffff)), undefined, "claims more than a kernel's bound");
  const gz = gzipSync(Buffer.alloc(1024));
  gz.writeUInt32LE(0xffffffff, gz.length - 4);
  assert.equal(await decompressPayload(gz), undefined);
});
