// The QEMU driver: runs qemu-system-x86_64 under the process supervisor and drives it over QMP.
import { readFile } from "node:fs/promises";
import { which } from "../host/command.js";
import type { Supervisor } from "../runtime/supervisor.js";
import { startHypervisorProcess, type Hypervisor, type LaunchContext, type VmControl, type VmFiles } from "./hypervisor.js";
import { qemuArgs } from "./qemu-args.js";
import { QmpClient } from "./qmp.js";
import type { VmSpec } from "./record.js";

const QMP_TIMEOUT_MS = 10_000;
/** A target of a live migration: waits for the state (migrate-incoming) and stays paused until told (cont). */
const INCOMING_ARGS = ["-incoming", "defer", "-S"];

export class QemuHypervisor implements Hypervisor {
  readonly kind = "qemu" as const;

  constructor(private readonly binary: string) {}

  static async find(): Promise<QemuHypervisor | undefined> {
    const binary = await which("qemu-system-x86_64");
    return binary ? new QemuHypervisor(binary) : undefined;
  }

  get path(): string {
    return this.binary;
  }

  async launch(spec: VmSpec, ctx: LaunchContext) {
    const args = [...qemuArgs(spec, ctx.accel, ctx.files), ...(ctx.incoming ? INCOMING_ARGS : [])];
    const process = await startHypervisorProcess(spec, ctx, "qemu", [this.binary, ...args]);
    try {
      const qmp = await connectWhileAlive(ctx.files.qmp, ctx.processes, process.spec.id);
      return { process, control: qmpControl(qmp) };
    } catch (err) {
      const stderr = await readFile(ctx.processes.logPath(process, "stderr"), "utf8").catch(() => "");
      throw new Error(`QEMU did not start: ${stderr.trim().split("\n").slice(-3).join(" ") || (err as Error).message}`);
    }
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
