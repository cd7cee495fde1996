// The cloud-init NoCloud seed: user-data, meta-data and network-config on an ISO 9660 volume
// labelled "cidata", built in tmpfs (it may hold secrets; it never touches a disk) with genisoimage.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { runHost, which } from "../host/command.js";

/** tmpfs on every Linux host; the seeds live here only while their VM runs. */
export const SEED_DIR = "/dev/shm/aether-seeds";

export interface SeedInput {
  instanceId: string;
  hostname: string;
  userData: string;
  metaData: string;
  networkConfig: string;
}

export async function buildSeed(vmId: string, input: SeedInput): Promise<string> {
  const tool = await which("genisoimage");
  if (!tool) throw new Error("genisoimage is not installed (needed for cloud-init seeds): apt-get install genisoimage");
  await mkdir(SEED_DIR, { recursive: true, mode: 0o700 });
  const staging = await mkdtemp(join(SEED_DIR, `${vmId}-`));
  const iso = join(SEED_DIR, `${vmId}.iso`);
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
  if (path !== "") await rm(path, { force: true });
}
