// The capability probe: what this host really has, found by looking, never assumed.
import { constants } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { runHost, which } from "../host/command.js";

export interface ToolFound {
  available: boolean;
  path: string;
  version: string;
  reason: string;
}

export interface CgroupFound {
  version: "v1" | "v2" | "hybrid" | "none";
  controllers: string[];
  mountPath: string;
}

export interface ProbeResult {
  timeMs: number;
  cgroup: CgroupFound;
  qemuSystem: ToolFound;
  qemuImg: ToolFound;
  kvm: { deviceUsable: boolean; reason: string };
  firecracker: ToolFound;
  zfs: ToolFound;
}

export async function probeHost(): Promise<ProbeResult> {
  const [cgroup, qemuSystem, qemuImg, kvm, firecracker, zfs] = await Promise.all([
    probeCgroups(),
    probeTool("qemu-system-x86_64", ["--version"], "apt-get install qemu-system-x86"),
    probeTool("qemu-img", ["--version"], "apt-get install qemu-utils"),
    probeKvm(),
    probeTool("firecracker", ["--version"], "Firecracker is not packaged by Debian; put a firecracker binary on PATH"),
    probeTool("zfs", ["version"], "apt-get install zfsutils-linux (or zfs-fuse)"),
  ]);
  return { timeMs: Date.now(), cgroup, qemuSystem, qemuImg, kvm, firecracker, zfs };
}

async function probeTool(name: string, versionArgs: string[], install: string): Promise<ToolFound> {
  const path = await which(name);
  if (path === undefined) return { available: false, path: "", version: "", reason: `${name} was not found on PATH; ${install}.` };
  try {
    const { stdout, stderr } = await runHost(path, versionArgs, { timeoutMs: 5000 });
    const version = (stdout || stderr).split("\n")[0]?.trim() ?? "";
    return { available: true, path, version, reason: "" };
  } catch (err) {
    // zfs-fuse's zfs has no `version` subcommand and exits non-zero; being found and runnable is what matters.
    if (name === "zfs") return { available: true, path, version: "unknown", reason: "" };
    return { available: false, path, version: "", reason: `${path} is present but did not run: ${(err as Error).message}` };
  }
}

async function probeKvm(): Promise<{ deviceUsable: boolean; reason: string }> {
  try {
    await access("/dev/kvm", constants.R_OK | constants.W_OK);
    return {
      deviceUsable: true,
      reason: "/dev/kvm can be opened; acceleration `auto` still boots a probe guest before trusting it (nested KVM can hang guests).",
    };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      deviceUsable: false,
      reason:
        code === "ENOENT"
          ? "/dev/kvm does not exist: the CPU's virtualization is off or the kvm module is not loaded; VMs run under TCG (software)."
          : `/dev/kvm cannot be opened for reading and writing (${code}); run aetherd as root or in the kvm group.`,
    };
  }
}

/** Reads the mount table: cgroup2 mounts and v1 per-controller mounts. */
export async function probeCgroups(): Promise<CgroupFound> {
  const mounts = (await readFile("/proc/self/mounts", "utf8")).split("\n").map((l) => l.split(" "));
  const v1 = mounts.filter((m) => m[2] === "cgroup");
  const v2 = mounts.find((m) => m[2] === "cgroup2");
  const v1Controllers = v1
    .flatMap((m) => (m[3] ?? "").split(","))
    .filter((o) =>
      [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "io",
        "devices",
        "freezer",
        "net_cls",
        "hugetlb",
        "perf_event",
        "rdma",
        "misc",
      ].includes(o),
    );
  let v2Controllers: string[] = [];
  if (v2?.[1]) {
    v2Controllers = (await readFile(`${v2[1]}/cgroup.controllers`, "utf8").catch(() => "")).trim().split(/\s+/).filter(Boolean);
  }
  const controllers = [...new Set([...v1Controllers, ...v2Controllers])].sort();
  if (v1Controllers.length > 0 && v2)
    return { version: v2Controllers.length > 0 ? "hybrid" : "v1", controllers, mountPath: "/sys/fs/cgroup" };
  if (v1Controllers.length > 0) return { version: "v1", controllers, mountPath: "/sys/fs/cgroup" };
  if (v2) return { version: "v2", controllers, mountPath: v2[1] ?? "/sys/fs/cgroup" };
  return { version: "none", controllers: [], mountPath: "" };
}
