// The test guest (scripts/build-guest-image.mjs): built once from Debian's packages, then cached.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "./daemon.js";

let built: string | undefined;

/** The guest's kernel and initramfs, and the same guest as a disk that boots through firmware. */
export function guestImage(): { kernel: string; initrd: string; disk: string } {
  built ??= execFileSync(process.execPath, [join(repoRoot, "scripts", "build-guest-image.mjs"), "--quiet"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  return { kernel: join(built, "vmlinuz"), initrd: join(built, "initramfs.cpio.gz"), disk: join(built, "disk.raw") };
}
