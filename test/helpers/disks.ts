// Disk images for storage tests, and reading a disk's bytes back through qemu-io (which follows
// qcow2 backing chains exactly as a hypervisor would).
import { createHash } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync, writeSync, ftruncateSync } from "node:fs";

export const MiB = 1024 * 1024;

/** A raw disk of `size` bytes with an MBR signature and `pattern` written over [1 MiB, 2 MiB). */
export function makeRawDisk(path: string, size: number, pattern: number): string {
  const fd = openSync(path, "w");
  try {
    ftruncateSync(fd, size);
    const mbr = Buffer.alloc(512);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    writeSync(fd, mbr, 0, 512, 0);
    writeSync(fd, Buffer.alloc(MiB, pattern), 0, MiB, MiB);
  } finally {
    closeSync(fd);
  }
  return sha256(path);
}

export function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function qemuIo(path: string, format: string, command: string, readOnly: boolean): string {
  return execFileSync("qemu-io", [...(readOnly ? ["-r"] : []), "-f", format, "-c", command, path], { encoding: "utf8" });
}

/** Whether every byte of [offset, offset+length) of the disk (as a guest sees it) equals `pattern`. */
export function hasPattern(path: string, format: "qcow2" | "raw", offset: number, length: number, pattern: number): boolean {
  // qemu-io exits 1 when the pattern does not match, so its output is read either way.
  const run = spawnSync("qemu-io", ["-r", "-f", format, "-c", `read -P ${pattern} ${offset} ${length}`, path], { encoding: "utf8" });
  if (run.error) throw run.error;
  return run.status === 0 && !/Pattern verification failed/.test(run.stdout) && /read \d+\/\d+ bytes/.test(run.stdout);
}

/** Writes `pattern` over [offset, offset+length) of the disk, as a guest would. */
export function writePattern(path: string, format: "qcow2" | "raw", offset: number, length: number, pattern: number): void {
  const out = qemuIo(path, format, `write -P ${pattern} ${offset} ${length}`, false);
  if (!/wrote \d+\/\d+ bytes/.test(out)) throw new Error(`qemu-io could not write to ${path}: ${out}`);
}
