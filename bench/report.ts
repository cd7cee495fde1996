// How `npm run bench` reports: tables and notes for people, every figure also kept by a stable key
// so `--json` can print them for comparing runs, and the goals table (issue 18) at the end saying
// for each goal whether this run met it. With --json the human output goes to stderr and stdout
// carries only the JSON document, so `npm run bench -- --json > run.json` works.

export interface Goal {
  /** The figure's key (as in the JSON output). */
  key: string;
  /** What the figure is, for the goals table. */
  label: string;
  /** Met when the figure is below this. */
  below: number;
  unit: string;
}

/** The figures of issue 18's table, each with its goal. */
export const GOALS: Goal[] = [
  { key: "auctions.p99_16_ms", label: "auction decision, 16 responsive bidders, p99", below: 10, unit: "ms" },
  { key: "auctions.p99_100_ms", label: "auction decision, 100 responsive bidders, p99", below: 40, unit: "ms" },
  { key: "vms.aetherd_launch_p50_ms", label: "aetherd's own part of a VM start (request -> QMP answering), p50", below: 50, unit: "ms" },
  { key: "vms.qemu_own_mib", label: "QEMU resident memory per idle 128 MiB microVM beyond what the guest touched", below: 48, unit: "MiB" },
  // The same, without the file pages every VM shares (QEMU's binary and libraries, the kernel ELF a
  // PVH boot maps): what each further VM adds. Shown beside the figure above, not instead of it.
  {
    key: "vms.qemu_own_private_mib",
    label: "  the same, private to the VM (anonymous; what one more VM adds)",
    below: 48,
    unit: "MiB",
  },
  { key: "memory.aetherd_idle_mib", label: "aetherd resident memory, idle (0.5 s after it answers)", below: 64, unit: "MiB" },
  {
    key: "memory.aetherd_settled_mib",
    label: "aetherd resident memory, idle and settled (BENCH_SETTLE_MS on, 30 s)",
    below: 64,
    unit: "MiB",
  },
  { key: "cells.allocate_free_ratio", label: "AllocateCell + FreeCell vs bare mkdir + limits + rmdir, p50", below: 3, unit: "x" },
  { key: "storage.zfs_ratio", label: "zfs clone through aetherd vs bare `zfs clone` (same host lock), p50", below: 1.5, unit: "x" },
  { key: "vms.libvirt_ratio_micro", label: "VM create -> guest ready (microVM) vs libvirt `virsh create`, p50", below: 0.85, unit: "x" },
];

export interface Figure {
  value: number;
  unit: string;
}

export class BenchReport {
  readonly figures: Record<string, Figure> = {};
  readonly sections: string[] = [];
  private readonly out: (text: string) => void;

  constructor(readonly json: boolean) {
    this.out = json ? (t) => process.stderr.write(`${t}\n`) : (t) => process.stdout.write(`${t}\n`);
  }

  table(title: string, header: string[], rows: string[][]): void {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
    this.out(`\n${title}\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}`);
    for (const r of rows) this.out(line(r));
  }

  note(text: string): void {
    this.out(text);
  }

  figure(key: string, value: number, unit: string): void {
    this.figures[key] = { value, unit };
  }

  /** The goals table; a goal whose section did not run says so. */
  printGoals(): void {
    const rows = GOALS.map((g) => {
      const f = this.figures[g.key];
      const shown = (v: number) => (g.unit === "x" ? `${v.toFixed(2)}x` : `${v.toFixed(1)} ${g.unit}`);
      if (!f || !Number.isFinite(f.value)) return [g.label, "not measured", `< ${shown(g.below)}`, "-"];
      return [g.label, shown(f.value), `< ${shown(g.below)}`, f.value < g.below ? "met" : "NOT met"];
    });
    this.table("goals (issue 18)", ["figure", "this run", "goal", "status"], rows);
  }

  printJson(): void {
    const goals = GOALS.map((g) => {
      const f = this.figures[g.key];
      const measured = f !== undefined && Number.isFinite(f.value);
      return {
        key: g.key,
        label: g.label,
        below: g.below,
        unit: g.unit,
        value: measured ? f.value : null,
        met: measured ? f.value < g.below : null,
      };
    });
    process.stdout.write(
      `${JSON.stringify({ at: new Date().toISOString(), sections: this.sections, figures: this.figures, goals }, null, 2)}\n`,
    );
  }
}
