// Tests give each aetherd a cgroup root of its own and remove it afterwards, whatever the test did.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, rmdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { detectCellsBackend } from "../../daemon/src/cells/detect.js";
import { processTreeRoots } from "../../daemon/src/runtime/process-tree.js";

export function uniqueCgroupRoot(): string {
  return `aether-test-${randomBytes(4).toString("hex")}`;
}

/**
 * Removes every cgroup directory below the root, deepest first (cgroupfs allows rmdir of empty
 * cgroups): the cells' and the executables' process trees'.
 */
export function removeCgroupRoot(rootName: string): void {
  const { backend } = detectCellsBackend(rootName);
  const treeRoots = processTreeRoots(rootName);
  const remove = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const child = join(dir, name);
      if (statSync(child).isDirectory()) remove(child);
    }
    try {
      rmdirSync(dir);
    } catch {
      // a process is still inside; the test that left it there has failed already
    }
  };
  // A process that just ended may still be leaving its cgroup: try again for a moment.
  const roots = [...new Set([...Object.values(backend?.paths([]) ?? {}), ...treeRoots])];
  for (let attempt = 0; attempt < 20 && roots.some((r) => existsSync(r)); attempt++) {
    if (attempt > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    for (const root of roots) remove(root);
  }
}
