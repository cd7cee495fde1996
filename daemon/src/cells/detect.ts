// Which cgroup hierarchy cells use on this host, and where aetherd's cells live in it: below
// aetherd's own cgroup in each hierarchy, in a folder named by the config (default "aether").
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { realCgroupFs } from "./cgroup-fs.js";
import type { CgroupBackend } from "./backend.js";
import { CgroupV1Backend, V1_CONTROLLERS, type V1Controller } from "./cgroup-v1.js";
import { CgroupV2Backend, V2_CONTROLLERS } from "./cgroup-v2.js";

export type CellsBackendChoice = { backend: CgroupBackend; reason: "" } | { backend: undefined; reason: string };

interface Mount {
  dir: string;
  type: string;
  options: string[];
}

function mounts(): Mount[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === "cgroup" || f[2] === "cgroup2")
    .map((f) => ({ dir: f[1] ?? "", type: f[2] ?? "", options: (f[3] ?? "").split(",") }));
}

/** aetherd's own cgroup path in each hierarchy, from /proc/self/cgroup ("" key: the unified one). */
function ownPaths(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
    const [, controllers = "", path = ""] = line.split(":");
    if (line === "") continue;
    if (controllers === "") out.set("", path);
    for (const c of controllers.split(",")) out.set(c, path);
  }
  return out;
}

export function detectCellsBackend(rootName: string): CellsBackendChoice {
  const all = mounts();
  const own = ownPaths();
  const unified = all.find((m) => m.type === "cgroup2");
  if (unified) {
    const available = readFileSync(join(unified.dir, own.get("") ?? "/", "cgroup.controllers"), "utf8")
      .trim()
      .split(/\s+/);
    if (["cpu", "memory", "pids"].every((c) => available.includes(c))) {
      return { backend: new CgroupV2Backend(join(unified.dir, own.get("") ?? "/", rootName), realCgroupFs), reason: "" };
    }
  }
  const roots: Partial<Record<V1Controller, string>> = {};
  for (const c of V1_CONTROLLERS) {
    const m = all.find((x) => x.type === "cgroup" && x.options.includes(c));
    if (m) roots[c] = join(m.dir, own.get(c) ?? "/", rootName);
  }
  const missing = V1_CONTROLLERS.filter((c) => roots[c] === undefined);
  if (missing.length === 0) return { backend: new CgroupV1Backend(roots as Record<V1Controller, string>, realCgroupFs), reason: "" };
  const v2Missing = V2_CONTROLLERS.filter((c) => !unified || !readFileSync(join(unified.dir, "cgroup.controllers"), "utf8").includes(c));
  return {
    backend: undefined,
    reason: `cells need the cpu, memory and pids controllers: cgroup v2 lacks ${v2Missing.join(", ") || "nothing"} and cgroup v1 lacks ${missing.join(", ")} on this host.`,
  };
}
