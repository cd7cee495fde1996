// The QEMU driver: runs qemu-system-x86_64 under the process supervisor and drives it over QMP.
import { readFile } from "node:fs/promises";
import { which } from "../host/command.js";
import type { Supervisor } from "../runtime/supervisor.js";
import { startHypervisorProcess, type Hypervisor, type LaunchContext, type VmControl, type VmFiles } from "./hypervisor.js";
import { PvhKernels } from "./kernel-elf.js";
import { isMicroVm, qemuArgs } from "./qemu-args.js";
import { QmpClient } from "./qmp.js";
import type { VmSpec } from "./record.js";

const QMP_TIMEOUT_MS = 10_000;
/** A target of a live migration: waits for the state (migrate-incoming) and stays paused until told (cont). */
const INCOMING_ARGS = ["-incoming", "defer", "-S"];

export class QemuHypervisor implements Hypervisor {
  readonly kind = "qemu" as const;

  private readonly pvhKernels = new Map<string, PvhKernels>();

  constructor(private readonly binary: string) {}

  static async find(): Promise<QemuHypervisor | undefined> {
    const binary = await which("qemu-system-x86_64");
    return binary ? new QemuHypervisor(binary) : undefined;
  }

  get path(): string {
    return this.binary;
  }

  async launch(spec: VmSpec, ctx: LaunchContext) {
    const kernelPath = (await this.pvhKernel(spec, ctx)) ?? spec.kernelPath;
    const args = [...qemuArgs({ ...spec, kernelPath }, ctx.accel, ctx.files), ...(ctx.incoming ? INCOMING_ARGS : [])];
    const process = await startHypervisorProcess(spec, ctx, "qemu", [this.binary, ...args]);
    try {
      const qmp = await connectWhileAlive(ctx.files.qmp, ctx.processes, process.spec.id);
      return { process, control: qmpControl(qmp) };
    } catch (err) {
      const stderr = await readFile(ctx.processes.logPath(process, "stderr"), "utf8").catch(() => "");
      throw new Error(`QEMU did not start: ${stderr.trim().split("\n").slice(-3).join(" ") || (err as Error).message}`);
    }
  }

  /** A TCG microVM boots its kernel's PVH ELF, skipping the decompressor (see kernel-elf.ts). */
  private async pvhKernel(spec: VmSpec, ctx: LaunchContext): Promise<string | undefined> {
    if (!isMicroVm(spec) || ctx.accel !== "tcg" || !spec.kernelPath || !ctx.kernelCacheDir) return undefined;
    let kernels = this.pvhKernels.get(ctx.kernelCacheDir);
    if (!kernels) this.pvhKernels.set(ctx.kernelCacheDir, (kernels = new PvhKernels(ctx.kernelCacheDir)));
    return kernels.elfFor(spec.kernelPath);
  }

  async reattach(_spec: VmSpec, files: VmFiles): Promise<VmControl> {
    return qmpControl(await QmpClient.connect(files.qmp, 3000));
  }
}

/** Connects to QMP, giving up at once if QEMU exits (bad arguments, a missing file). */
async function connectWhileAlive(path: string, processes: Supervisor, processId: string): Promise<QmpClient> {
  const exe = processes.get(processId);
  const died = exe?.ended.then(() => {
    throw new Error("QEMU exited");
  });
  const qmp = QmpClient.connect(path, QMP_TIMEOUT_MS);
  return died ? Promise.race([qmp, died]) : qmp;
}

function qmpControl(qmp: QmpClient): VmControl {
  return {
    pause: async () => {
      await qmp.execute("stop");
    },
    resume: async () => {
      await qmp.execute("cont");
    },
    powerdown: async () => {
      await qmp.execute("system_powerdown");
    },
    quit: async () => {
      await qmp.execute("quit").catch(() => undefined); // QEMU may close the socket before answering
    },
    status: async () => (await qmp.execute<{ status: string }>("query-status")).status,
    qmp,
    close: () => qmp.close(),
  };
}
