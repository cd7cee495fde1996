// A microVM under TCG boots its kernel's uncompressed ELF through the PVH entry point instead of
// the bzImage it was given: the bzImage's own decompressor (xz for Debian's kernel) runs as guest
// code, which under TCG took about 4 of a microVM's 7.5 s to its agent here. The ELF is taken out
// of the bzImage once (the payload decompressed with the host's tool for its format), trimmed of the
// zero pages at its segments' ends (QEMU zero-fills them, and keeps the file mapped while the VM
// runs), and cached by the bzImage's identity. A kernel that is not a bzImage, whose payload cannot
// be decompressed here, or that has no PVH entry is booted as given. The guest runs the same kernel
// code; what it loses is the decompressor's KASLR (the PVH entry runs the kernel where it was linked).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

/** The host tool that decompresses a payload with these leading bytes (a gzip payload uses zlib). */
const DECOMPRESSORS: { magic: number[]; argv: string[] }[] = [
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], argv: ["xz", "-dc", "--single-stream"] },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], argv: ["zstd", "-dcq"] },
  { magic: [0x02, 0x21, 0x4c, 0x18], argv: ["lz4", "-dcq"] },
  { magic: [0x42, 0x5a, 0x68], argv: ["bzip2", "-dc"] },
  { magic: [0x5d, 0x00, 0x00], argv: ["xz", "-dc", "--format=lzma"] },
];
const GZIP_MAGIC = [0x1f, 0x8b];
/**
 * ELFs kept in the cache, the most recently booted: about 40 MiB each. One taken out of it is
 * taken out again at its kernel's next start (a second); a running QEMU keeps its open copy.
 */
const KEEP_ELFS = 8;
const ELF_SUFFIX = ".pvh.elf";
/** The largest bzImage read (Debian's is 8 MiB), and the largest kernel taken out of one (63 MiB). */
const MAX_BZIMAGE_BYTES = 128 * 1024 * 1024;
const MAX_KERNEL_BYTES = 512 * 1024 * 1024;
const PAGE = 4096;
const PT_LOAD = 1;
const PT_NOTE = 4;
/** Xen's ELF note naming the 32-bit PVH entry point (QEMU boots an ELF kernel through it). */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

const startsWith = (buf: Buffer, magic: number[]) => magic.every((b, i) => buf[i] === b);

/** The bzImage's compressed payload (boot protocol 2.08+), or undefined for anything else. */
export function bzImagePayload(image: Buffer): Buffer | undefined {
  if (image.length < 0x250 || image.toString("latin1", 0x202, 0x206) !== "HdrS" || image.readUInt16LE(0x206) < 0x208) return undefined;
  const setupSectors = image[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  return start + length <= image.length ? image.subarray(start, start + length) : undefined;
}

/** Decompresses a bzImage payload; undefined when its format is unknown or its tool is missing. */
export async function decompressPayload(payload: Buffer): Promise<Buffer | undefined> {
  // The kernel's build appends the uncompressed size (le32) to every payload; gzip's own trailer is it.
  // A VM's kernel is the tenant's file: what it claims to unpack to is believed up to a bound only.
  const size = payload.readUInt32LE(payload.length - 4);
  if (size > MAX_KERNEL_BYTES) return undefined;
  if (startsWith(payload, GZIP_MAGIC)) {
    try {
      return gunzipSync(payload, { maxOutputLength: MAX_KERNEL_BYTES });
    } catch {
      return undefined;
    }
  }
  const tool = DECOMPRESSORS.find((d) => startsWith(payload, d.magic));
  if (!tool) return undefined;
  const out = await run(tool.argv, payload.subarray(0, payload.length - 4), size);
  return out && out.length === size ? out : undefined;
}

/** The tool's output, or undefined when it fails or writes more than `limit` bytes (it is killed). */
function run(argv: string[], input: Buffer, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const child = spawn(argv[0] ?? "", argv.slice(1), { stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    let length = 0;
    child.stdout.on("data", (c: Buffer) => {
      length += c.length;
      if (length > limit) child.kill("SIGKILL");
      else chunks.push(c);
    });
    child.on("error", () => resolve(undefined));
    child.on("close", (code) => resolve(code === 0 && length <= limit ? Buffer.concat(chunks) : undefined));
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);
  });
}

/**
 * The ELF trimmed for booting: each loadable segment's file part ends at its last page holding a
 * non-zero byte (the rest is zero-filled by the loader up to its memory size), the file ends after
 * the last part a loader reads, and the section headers (not read by a loader) are dropped.
 * Undefined when it is not a 64-bit little-endian ELF with a PVH entry note. Changes `elf` itself.
 */
export function pvhElf(elf: Buffer): Buffer | undefined {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return undefined;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phoff + phentsize * phnum > elf.length) return undefined;
  const out = elf; // trimmed in place: the decompressed ELF is 60-odd MiB, and the caller's alone
  let end = phoff + phentsize * phnum;
  let pvh = false;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = elf.readUInt32LE(ph);
    const offset = Number(elf.readBigUInt64LE(ph + 0x08));
    const fileSize = Number(elf.readBigUInt64LE(ph + 0x20));
    if (offset + fileSize > elf.length) return undefined;
    if (type === PT_NOTE) {
      pvh ||= hasPvhNote(elf.subarray(offset, offset + fileSize));
      end = Math.max(end, offset + fileSize);
    } else if (type === PT_LOAD) {
      let last = offset + fileSize;
      while (last > offset && elf[last - 1] === 0) last--;
      const trimmed = Math.min(fileSize, Math.ceil((last - offset) / PAGE) * PAGE);
      out.writeBigUInt64LE(BigInt(trimmed), ph + 0x20);
      end = Math.max(end, offset + trimmed);
    }
  }
  if (!pvh) return undefined;
  out.writeBigUInt64LE(0n, 0x28); // e_shoff
  out.writeUInt16LE(0, 0x3c); // e_shnum
  out.writeUInt16LE(0, 0x3e); // e_shstrndx
  return out.subarray(0, end);
}

function hasPvhNote(notes: Buffer): boolean {
  for (let at = 0; at + 12 <= notes.length;) {
    const nameSize = notes.readUInt32LE(at);
    const descSize = notes.readUInt32LE(at + 4);
    const type = notes.readUInt32LE(at + 8);
    if (type === XEN_ELFNOTE_PHYS32_ENTRY && notes.toString("latin1", at + 12, at + 12 + nameSize).replace(/\0+$/, "") === "Xen")
      return true;
    at += 12 + Math.ceil(nameSize / 4) * 4 + Math.ceil(descSize / 4) * 4;
  }
  return false;
}

/** Sets the file's time to now: when its kernel was last booted, for the pruning of the cache. */
async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => undefined);
}

/** Takes out, trims and caches the PVH ELFs of the bzImages microVMs boot, one conversion per image. */
export class PvhKernels {
  /** Conversions by the kernel's identity: under way or done (undefined: boot the file as given). */
  private readonly conversions = new Map<string, Promise<string | undefined>>();
  /** Partial files being written now (the others are a crashed aetherd's). */
  private readonly writing = new Set<string>();

  constructor(private readonly cacheDir: string) {}

  /** The cached PVH ELF for this kernel file, or undefined to boot the file as given. */
  async elfFor(kernelPath: string): Promise<string | undefined> {
    const st = await stat(kernelPath).catch(() => undefined);
    if (!st?.isFile() || st.size > MAX_BZIMAGE_BYTES) return undefined;
    // Identity without reading the image: a replaced or rewritten kernel gets a new ELF.
    const key = createHash("sha256").update(`${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${kernelPath}`).digest("hex").slice(0, 24);
    const target = join(this.cacheDir, `${key}${ELF_SUFFIX}`);
    let conversion = this.conversions.get(key);
    if (conversion) {
      void touch(target);
    } else {
      conversion = stat(target)
        .then(
          () => touch(target).then(() => target),
          () => this.convert(kernelPath, target),
        )
        .catch(() => {
          // A failed write (a full disk) boots the kernel as given, and is tried again at the next start.
          this.conversions.delete(key);
          return undefined;
        });
      this.conversions.set(key, conversion);
    }
    return conversion;
  }

  private async convert(kernelPath: string, target: string): Promise<string | undefined> {
    const payload = bzImagePayload(await readFile(kernelPath));
    const elf = payload && (await decompressPayload(payload));
    const trimmed = elf && pvhElf(elf);
    if (!trimmed) return undefined;
    await mkdir(this.cacheDir, { recursive: true, mode: 0o700 });
    // One conversion per kernel at a time (conversions): a partial file is this one's, or a crashed aetherd's.
    const partial = `${target}.partial`;
    this.writing.add(partial);
    try {
      await writeFile(partial, trimmed);
      await rename(partial, target);
    } finally {
      this.writing.delete(partial);
    }
    await this.prune(target).catch(() => undefined);
    return target;
  }

  /** Keeps the KEEP_ELFS most recently booted ELFs (the one just made among them) and no stale partial files. */
  private async prune(keep: string): Promise<void> {
    const names = await readdir(this.cacheDir);
    for (const name of names.filter((n) => n.endsWith(".partial") && !this.writing.has(join(this.cacheDir, n)))) {
      await rm(join(this.cacheDir, name), { force: true });
    }
    const elfs = await Promise.all(
      names
        .filter((n) => n.endsWith(ELF_SUFFIX) && join(this.cacheDir, n) !== keep)
        .map(async (n) => ({ n, mtimeMs: (await stat(join(this.cacheDir, n))).mtimeMs })),
    );
    elfs.sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const { n } of elfs.slice(KEEP_ELFS - 1)) {
      this.conversions.delete(n.slice(0, -ELF_SUFFIX.length));
      await rm(join(this.cacheDir, n), { force: true });
    }
  }
}
