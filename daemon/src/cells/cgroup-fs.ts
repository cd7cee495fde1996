// The file operations a cgroup backend needs, behind an interface: the real cgroup filesystem, or
// (in tests of the v2 backend on hosts without v2 controllers) a plain directory tree that behaves
// like one.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { readdir, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";

export interface CgroupFs {
  mkdir(path: string): Promise<void>;
  /** Removes an (empty of child cgroups) cgroup directory. */
  rmdir(path: string): Promise<void>;
  read(path: string): Promise<string>;
  write(path: string, value: string): Promise<void>;
  exists(path: string): boolean;
  /** Names of child cgroup directories. */
  children(path: string): Promise<string[]>;
}

/**
 * The kernel's cgroup filesystem. Calls are synchronous inside: cgroupfs is in memory and answers
 * at once, so a thread-pool round trip per control file would cost more than the write itself.
 */
export const realCgroupFs: CgroupFs = {
  mkdir: async (path) => mkdirSync(path),
  rmdir: async (path) => rmdirSync(path),
  read: async (path) => readFileSync(path, "utf8"),
  // One write() per value, as the kernel expects for control files.
  write: async (path, value) => writeFileSync(path, value, { flag: "w" }),
  exists: (path) => existsSync(path),
  children: async (path) =>
    readdirSync(path, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name),
};

/**
 * A plain directory tree with cgroupfs's behaviour where it matters: removing a cgroup removes its
 * control files with it, and reading a missing control file fails. Used to test the v2 backend.
 */
export const directoryTreeCgroupFs: CgroupFs = {
  ...realCgroupFs,
  rmdir: async (path) => {
    const entries = await readdir(path, { withFileTypes: true });
    if (entries.some((e) => e.isDirectory())) throw Object.assign(new Error(`${path} has child cgroups`), { code: "EBUSY" });
    await Promise.all(entries.map((e) => rm(join(path, e.name))));
    await rmdir(path);
  },
};
