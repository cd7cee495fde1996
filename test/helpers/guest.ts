// The test guest (scripts/build-guest-image.mjs): built once from Debian's packages, then cached.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "./daemon.js";

let built: string | undefined;

export function guestImage(): { kernel: string; initrd: string } {
  built ??= execFileSync(process.execPath, [join(repoRoot, "scripts", "build-guest-image.mjs"), "--quiet"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
  return { kernel: join(built, "vmlinuz"), initrd: join(built, "initramfs.cpio.gz") };
}
