// An executable killed by SIGKILL in a cell whose OOM-kill counter rose since it started was killed
// by the kernel's OOM killer: say so, instead of a bare "killed by SIGKILL".
import type { Exit, ExecutableSpec } from "../runtime/executable-record.js";
import type { CellRegistry } from "./registry.js";

const SIGKILL = 9;

export function explainOomKill(cells: CellRegistry, spec: ExecutableSpec, exit: Exit): string | undefined {
  if (spec.cellId === "" || exit.signal !== SIGKILL) return undefined;
  if (cells.oomKills(spec.cellId) <= spec.cellOomKillsAtStart) return undefined;
  return `was killed by the kernel's OOM killer (SIGKILL): cell ${spec.cell} reached its memory limit`;
}
