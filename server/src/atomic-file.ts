// Records survive crashes only if a reader never sees half a file: write a temporary file, rename it
// over the old one. `durable` adds fsync of the file and its folder, so the record also survives a
// power loss; records of things that die with the host anyway (running processes) skip it, because
// two fsyncs cost more than the whole rest of starting a process.
import { randomBytes } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { dirname, join, basename } from "node:path";

export interface WriteOptions {
  /** fsync the file and its folder (default true). */
  durable?: boolean;
}

export async function writeFileAtomic(path: string, content: string | Uint8Array, options: WriteOptions = {}): Promise<void> {
  const durable = options.durable ?? true;
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  // Unique per write: two writes of one file in the same millisecond must not share a temporary file.
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(content);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  if (!durable) return;
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export async function writeJsonAtomic(path: string, value: unknown, options: WriteOptions = {}): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, options);
}

/**
 * The same without fsync and without leaving the event loop: for small records on the hot path
 * (starting a process), where four thread-pool round trips would cost more than the write itself.
 */
export function writeJsonAtomicSync(path: string, value: unknown): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}
