// The Firecracker driver: ephemeral microVMs where a `firecracker` binary is installed. It runs
// firecracker under the process supervisor and configures it over its API socket. Its serial console
// is the process's stdout (captured like any executable's output).
import { existsSync } from "node:fs";
import { rm, symlink } from "node:fs/promises";
import { which } from "../host/command.js";
import { configurationRequests, CTRL_ALT_DEL, DESCRIBE, PAUSE, RESUME, send, START } from "./firecracker-api.js";
import { startHypervisorProcess, type Hypervisor, type LaunchContext, type VmControl, type VmFiles } from "./hypervisor.js";
import type { VmSpec } from "./record.js";

const API_TIMEOUT_MS = 10_000;

export class FirecrackerHypervisor implements Hypervisor {
  readonly kind = "firecracker" as const;

  constructor(private readonly binary: string) {}

  static async find(): Promise<FirecrackerHypervisor | undefined> {
    const binary = await which("firecracker");
    return binary ? new FirecrackerHypervisor(binary) : undefined;
  }

  async launch(spec: VmSpec, ctx: LaunchContext) {
    const process = await startHypervisorProcess(spec, ctx, "firecracker", [
      this.binary,
      "--api-sock",
      ctx.files.api,
      "--id",
      `aether-vm-${spec.name}`,
    ]);
    await rm(ctx.files.consoleLog, { force: true });
    await symlink(ctx.processes.logPath(process, "stdout"), ctx.files.consoleLog);
    const deadline = Date.now() + API_TIMEOUT_MS;
    while (!existsSync(ctx.files.api)) {
      if (process.status !== "running") throw new Error("firecracker exited before opening its API socket");
      if (Date.now() > deadline) throw new Error(`firecracker did not open its API socket within ${API_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
    for (const req of configurationRequests(spec, ctx.files)) await send(ctx.files.api, req);
    await send(ctx.files.api, START);
    return { process, control: apiControl(ctx.files.api) };
  }

  async reattach(_spec: VmSpec, files: VmFiles): Promise<VmControl> {
    await send(files.api, DESCRIBE, 3000);
    return apiControl(files.api);
  }
}

function apiControl(socket: string): VmControl {
  return {
    pause: async () => {
      await send(socket, PAUSE);
    },
    resume: async () => {
      await send(socket, RESUME);
    },
    powerdown: async () => {
      await send(socket, CTRL_ALT_DEL);
    },
    quit: async () => {
      // Firecracker has no quit action: the manager's kill path ends the process.
    },
    status: async () => String((await send(socket, DESCRIBE)).state ?? "").toLowerCase(),
    close: () => {},
  };
}
