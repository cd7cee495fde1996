#!/usr/bin/env node
// Builds the test guest from Debian's packages into .aether/images/guest: Debian's kernel, and an
// initramfs with busybox-static, the virtio modules, qemu-guest-agent with its libraries, and
// scripts/guest/init.sh. Cached: rebuilt only when a package version or a script changes.
// Installs what it needs with apt-get (as root) when missing. Prints the image folder.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = process.env.AETHER_IMAGE_DIR ?? join(root, ".aether", "images", "guest");
const cache = join(root, ".aether", "cache");
const quiet = process.argv.includes("--quiet");
const log = (m) => quiet || process.stderr.write(`build-guest-image: ${m}\n`);
const run = (file, args, opts = {}) => execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });

const HOST_PACKAGES = {
  "qemu-system-x86_64": "qemu-system-x86",
  "qemu-img": "qemu-utils",
  busybox: "busybox-static",
  "qemu-ga": "qemu-guest-agent",
  genisoimage: "genisoimage",
  cpio: "cpio",
};
const have = (cmd) => {
  try {
    run("sh", ["-c", `command -v ${cmd} || test -x /usr/sbin/${cmd}`]);
    return true;
  } catch {
    return false;
  }
};
const missing = Object.entries(HOST_PACKAGES)
  .filter(([cmd]) => !have(cmd))
  .map(([, pkg]) => pkg);
if (missing.length > 0) {
  if (process.getuid?.() !== 0) throw new Error(`missing ${missing.join(", ")}: install them with apt-get as root`);
  log(`installing ${missing.join(" ")}`);
  run("apt-get", ["update", "-qq"]);
  run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
}

const version = (pkg) => run("dpkg-query", ["-W", "-f=${Version}", pkg]).trim();
const kernelPackage = run("apt-cache", ["depends", "linux-image-amd64"]).match(/Depends: (linux-image-\S+)/)?.[1];
if (!kernelPackage) throw new Error("apt-cache knows no linux-image-amd64; run apt-get update");
const kernelVersion = run("apt-cache", ["policy", kernelPackage]).match(/Candidate: (\S+)/)?.[1] ?? "unknown";
const scripts = ["init.sh", "shutdown.sh"].map((f) => readFileSync(join(root, "scripts", "guest", f)));
const key = createHash("sha256")
  .update(JSON.stringify({ kernelPackage, kernelVersion, busybox: version("busybox-static"), qga: version("qemu-guest-agent") }))
  .update(Buffer.concat(scripts))
  .update(readFileSync(fileURLToPath(import.meta.url)))
  .digest("hex")
  .slice(0, 16);
const manifestFile = join(out, "image.json");
if (existsSync(manifestFile) && JSON.parse(readFileSync(manifestFile, "utf8")).key === key) {
  process.stdout.write(`${out}\n`);
  process.exit(0);
}

log(`building the guest from ${kernelPackage} ${kernelVersion}`);
mkdirSync(cache, { recursive: true });
const deb = readdirSync(cache).find((f) => f.startsWith(`${kernelPackage}_${kernelVersion.replace(/:/g, "%3a")}`));
if (!deb) run("apt-get", ["download", kernelPackage], { cwd: cache });
const debFile = join(cache, readdirSync(cache).find((f) => f.startsWith(`${kernelPackage}_`) && f.endsWith(".deb")) ?? "");
const work = join(cache, `guest-build-${process.pid}`);
rmSync(work, { recursive: true, force: true });
const kernelTree = join(work, "kernel");
mkdirSync(kernelTree, { recursive: true });
run("dpkg-deb", ["-x", debFile, kernelTree]);
const release = readdirSync(join(kernelTree, "lib", "modules"))[0];
const vmlinuz = join(kernelTree, "boot", `vmlinuz-${release}`);

const initrd = join(work, "initrd");
for (const d of [
  "bin",
  "sbin",
  "usr/bin",
  "usr/sbin",
  "lib/modules",
  "lib64",
  "lib/x86_64-linux-gnu",
  "etc",
  "proc",
  "sys",
  "dev",
  "run",
  "tmp",
  "var/lib",
]) {
  mkdirSync(join(initrd, d), { recursive: true });
}
copyFileSync("/bin/busybox", join(initrd, "bin", "busybox"));
copyFileSync(join(root, "scripts", "guest", "init.sh"), join(initrd, "init"));
copyFileSync(join(root, "scripts", "guest", "shutdown.sh"), join(initrd, "sbin", "shutdown"));
chmodSync(join(initrd, "init"), 0o755);
chmodSync(join(initrd, "sbin", "shutdown"), 0o755);
writeFileSync(join(initrd, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
writeFileSync(join(initrd, "etc", "group"), "root:x:0:\n");
const moduleTree = join(kernelTree, "lib", "modules", release, "kernel");
const wanted = new Set([
  "virtio_ring",
  "virtio",
  "virtio_mmio",
  "virtio_pci_legacy_dev",
  "virtio_pci_modern_dev",
  "virtio_pci",
  "virtio_console",
  "failover",
  "net_failover",
  "virtio_net",
  "virtio_blk",
  "cdrom",
  "isofs",
]);
const walk = (dir) => {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (wanted.has(e.name.replace(/\.ko$/, ""))) copyFileSync(p, join(initrd, "lib", "modules", e.name));
  }
};
walk(moduleTree);
const qga = existsSync("/usr/sbin/qemu-ga") ? "/usr/sbin/qemu-ga" : run("sh", ["-c", "command -v qemu-ga"]).trim();
copyFileSync(qga, join(initrd, "usr", "sbin", "qemu-ga"));
for (const line of run("ldd", [qga]).split("\n")) {
  const lib = line.match(/=> (\/\S+)/)?.[1] ?? line.match(/^\s*(\/\S+)/)?.[1];
  if (!lib) continue;
  const target = join(initrd, lib.startsWith("/lib64") ? "lib64" : "lib/x86_64-linux-gnu", basename(lib));
  copyFileSync(lib, target);
}
const initramfs = join(work, "initramfs.cpio.gz");
run("sh", ["-c", `cd "${initrd}" && find . | cpio -o -H newc --quiet | gzip -6 > "${initramfs}"`]);

// The same guest as a bootable disk, for VMs that boot through their firmware: a FAT file system
// over the whole disk (no partition table) with SYSLINUX in its boot sector, which SeaBIOS boots
// like any hard disk. mtools writes into the image file, so nothing is mounted.
const disk = join(work, "disk.raw");
const diskMiB = Math.ceil((statSync(vmlinuz).size + statSync(initramfs).size) / (1024 * 1024)) + 16;
writeFileSync(disk, "");
truncateSync(disk, diskMiB * 1024 * 1024);
run("mkfs.fat", ["-F", "16", "-n", "AETHER", disk]);
run("syslinux", ["--install", disk]);
const syslinuxCfg = join(work, "syslinux.cfg");
writeFileSync(
  syslinuxCfg,
  "SERIAL 0 115200\nDEFAULT aether\nPROMPT 0\nTIMEOUT 0\nLABEL aether\n  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0 panic=-1\n",
);
run("mcopy", ["-i", disk, vmlinuz, "::vmlinuz"]);
run("mcopy", ["-i", disk, initramfs, "::initrd.gz"]);
run("mcopy", ["-i", disk, syslinuxCfg, "::syslinux.cfg"]);

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
copyFileSync(vmlinuz, join(out, "vmlinuz"));
copyFileSync(initramfs, join(out, "initramfs.cpio.gz"));
copyFileSync(disk, join(out, "disk.raw"));
writeFileSync(
  manifestFile,
  `${JSON.stringify({ key, kernelPackage, kernelVersion, release, builtAt: new Date().toISOString() }, null, 2)}\n`,
);
rmSync(work, { recursive: true, force: true });
log(`built ${out} (kernel ${release})`);
process.stdout.write(`${out}\n`);
