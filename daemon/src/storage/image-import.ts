// Reading an image's source into a pool: a local file (confined to the configured import roots) or
// an http(s) URL (under the caller's URL rules), hashed with SHA-256 while it streams and written
// sparse, then checked to really be a disk image.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, realpath, stat } from "node:fs/promises";
import { isAbsolute, relative, sep } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { openUrl } from "./download.js";
import { ImportError } from "./import-error.js";
import { qemuImgInfo } from "./qemu-img.js";
import { SparseFileWriter } from "./sparse-writer.js";
import type { UrlRules } from "./url-guard.js";

export { ImportError };

export type ImportSource = { kind: "local"; path: string } | { kind: "url"; url: string; rules: UrlRules };

export interface Progress {
  importedBytes: number;
  sourceBytes: number;
}

/** Resolves a local source (following links) and refuses anything outside the import roots. */
export async function confineLocalSource(path: string, roots: string[]): Promise<string> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new ImportError(`the file ${path} does not exist on this host.`);
  }
  const inside = roots.some((root) => {
    const rel = relative(root, real);
    return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
  });
  if (!inside)
    throw new ImportError(
      `${path} is outside the folders aetherd imports from (${roots.join(", ")}); move the file there or add its folder to import_roots in aetherd's configuration.`,
    );
  const info = await stat(real);
  if (!info.isFile()) throw new ImportError(`${path} is not a regular file; give the path of an image file.`);
  return real;
}

/**
 * Copies the source into `target`, reporting progress, and returns the SHA-256 of the bytes read
 * (the source as published, before any conversion).
 */
export async function fetchSource(
  source: ImportSource,
  target: string,
  signal: AbortSignal,
  onProgress: (p: Progress) => void,
): Promise<string> {
  let input: Readable;
  let sourceBytes = 0;
  if (source.kind === "local") {
    sourceBytes = (await stat(source.path)).size;
    input = createReadStream(source.path, { highWaterMark: 1024 * 1024 });
  } else {
    const opened = await openUrl(source.url, source.rules, signal);
    sourceBytes = opened.sourceBytes;
    input = opened.body;
  }
  const hash = createHash("sha256");
  let importedBytes = 0;
  let lastReport = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      importedBytes += chunk.length;
      const now = Date.now();
      if (now - lastReport >= 200) {
        lastReport = now;
        onProgress({ importedBytes, sourceBytes });
      }
      done(null, chunk);
    },
  });
  try {
    await pipeline(input, meter, new SparseFileWriter(target), { signal });
  } catch (err) {
    if (signal.aborted) throw new ImportError("the import was cancelled.");
    if (err instanceof ImportError) throw err;
    throw new ImportError(`reading the source failed: ${(err as Error).message}.`);
  }
  onProgress({ importedBytes, sourceBytes: sourceBytes || importedBytes });
  return hash.digest("hex");
}

/**
 * Decides what the staged file is and refuses what must never reach a hypervisor: a qcow2 with a
 * backing or external data file would make QEMU open a host file the importer chose. Without a
 * declared format, a file is taken as raw only when it looks like a disk (a partition table or a
 * known file system), so that a text file or an archive is not imported as a "raw disk".
 */
export async function inspectStaged(path: string, declared: "qcow2" | "raw" | undefined): Promise<"qcow2" | "raw"> {
  const probed = await qemuImgInfo(path, declared).catch((err: Error) => {
    throw new ImportError(`the file is not a readable ${declared ?? "disk"} image: ${err.message}`);
  });
  if (probed.format !== "qcow2" && probed.format !== "raw") {
    throw new ImportError(`the file is a ${probed.format} image; import qcow2 or raw (convert it with qemu-img convert -O qcow2).`);
  }
  if (probed.backingFile !== "" || probed.dataFile !== "") {
    throw new ImportError(
      "the qcow2 file refers to another file (a backing or data file); import a self-contained image (qemu-img convert -O qcow2 flattens it).",
    );
  }
  if (probed.format === "raw") {
    const size = (await stat(path)).size;
    if (size === 0 || size % 512 !== 0)
      throw new ImportError(`the file is ${size} bytes, not a whole number of 512-byte sectors, so it is not a raw disk image.`);
    if (declared === undefined && !(await looksLikeDisk(path))) {
      throw new ImportError(
        "the file is neither qcow2 nor a raw disk with a partition table or a known file system; if it really is a raw disk image, import it with source format RAW.",
      );
    }
  }
  return probed.format;
}

/** Signatures of partition tables and file systems at their well-known offsets. */
async function looksLikeDisk(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(70 * 1024);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const at = (offset: number, text: string) =>
      bytesRead >= offset + text.length && head.toString("latin1", offset, offset + text.length) === text;
    const mbr = bytesRead >= 512 && head[510] === 0x55 && head[511] === 0xaa;
    const ext = bytesRead >= 1082 && head.readUInt16LE(1080) === 0xef53;
    return (
      mbr ||
      at(512, "EFI PART") ||
      ext ||
      at(0, "XFSB") ||
      at(32769, "CD001") ||
      at(65600, "_BHRfS_M") ||
      at(0x1000 + 4086, "SWAPSPACE2") ||
      at(4086, "SWAPSPACE2")
    );
  } finally {
    await fh.close();
  }
}
