// The cloud-init NoCloud seed: user-data, meta-data and network-config on an ISO 9660 volume
// labelled "cidata", built in tmpfs (it may hold secrets; it never touches a disk) with genisoimage.
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, rmdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { runHost, which } from "../host/command.js";

/** tmpfs on every Linux host; the seeds live here only while their VM runs. */
export const SEED_DIR = "/dev/shm/aether-seeds";

/**
 * The seeds of the aetherd whose state is in stateDir: a folder of its own, named after that state
 * folder, so two aetherd on one host (a live migration between them, where the VM keeps its id)
 * never build, use or remove the same VM's seed.
 */
export function seedDir(stateDir: string): string {
  return join(SEED_DIR, createHash("sha256").update(resolve(stateDir)).digest("hex").slice(0, 16));
}

export interface SeedInput {
  instanceId: string;
  hostname: string;
  userData: string;
  metaData: string;
  networkConfig: string;
}

/** Builds the VM's seed in dir (seedDir()); returns its path. */
export async function buildSeed(vmId: string, input: SeedInput, dir: string): Promise<string> {
  const tool = await which("genisoimage");
  if (!tool) throw new Error("genisoimage is not installed (needed for cloud-init seeds): apt-get install genisoimage");
  // The folder goes once its last seed does (removeSeed): made again if that happened just now.
  const stage = async () => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return mkdtemp(join(dir, `${vmId}-`));
  };
  const staging = await stage().catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? stage() : Promise.reject(err)));
  const iso = join(dir, `${vmId}.iso`);
  try {
    const meta = input.metaData !== "" ? input.metaData : `instance-id: ${input.instanceId}\nlocal-hostname: ${input.hostname}\n`;
    const files = ["user-data", "meta-data"];
    await writeFile(join(staging, "user-data"), input.userData, { mode: 0o600 });
    await writeFile(join(staging, "meta-data"), meta, { mode: 0o600 });
    if (input.networkConfig !== "") {
      await writeFile(join(staging, "network-config"), input.networkConfig, { mode: 0o600 });
      files.push("network-config");
    }
    await runHost(tool, ["-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", ...files.map((f) => join(staging, f))], {
      timeoutMs: 15_000,
    });
    return iso;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

export async function removeSeed(path: string): Promise<void> {
  if (path === "") return;
  await rm(path, { force: true });
  await removeSeedDirIfEmpty(dirname(path));
}

/** Removes a seeds folder that holds nothing any more (tmpfs is memory); one still in use stays. */
export async function removeSeedDirIfEmpty(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined); // ENOTEMPTY: other VMs' seeds; ENOENT: gone already
}
