// What a hypervisor driver does for the VM manager: launch the VM's process (through the process
// supervisor, so it outlives aetherd) and control it once it runs.
import type { Placement, Supervisor, TrackedExecutable } from "../runtime/supervisor.js";
import type { QmpClient } from "./qmp.js";
import type { VmSpec } from "./record.js";

/** Files of one VM: control sockets in a short runtime folder, logs next to its record. */
export interface VmFiles {
  dir: string;
  runtimeDir: string;
  qmp: string;
  agent: string;
  api: string;
  console: string;
  consoleLog: string;
  pidFile: string;
  seed: string;
}

export interface LaunchContext {
  files: VmFiles;
  accel: "kvm" | "tcg";
  placement: Placement | undefined;
  processes: Supervisor;
  /** Where a driver may cache what it derives from a VM's files (QEMU: microVM kernels' PVH ELFs). */
  kernelCacheDir?: string;
  /** Start paused, waiting for a live migration's incoming state (QEMU: -incoming defer -S). */
  incoming?: boolean;
}

/** Controls a running VM. */
export interface VmControl {
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Asks the guest to power off (ACPI or its equivalent); the caller waits for the process. */
  powerdown(): Promise<void>;
  /** Ends the VM at once. */
  quit(): Promise<void>;
  /** "running", "paused" or another hypervisor-specific word. */
  status(): Promise<string>;
  /** The QMP connection itself (QEMU only), for live migration's commands. */
  readonly qmp?: QmpClient;
  close(): void;
}

export interface Hypervisor {
  readonly kind: "qemu" | "firecracker";
  /** Starts the VM's process and returns once its control channel answers. */
  launch(spec: VmSpec, ctx: LaunchContext): Promise<{ process: TrackedExecutable; control: VmControl }>;
  /** Reconnects to a VM process that outlived a previous aetherd. */
  reattach(spec: VmSpec, files: VmFiles): Promise<VmControl>;
}

/** Starts a VM's hypervisor process under the VM process supervisor, in the VM's cell if it has one. */
export function startHypervisorProcess(spec: VmSpec, ctx: LaunchContext, name: string, argv: string[]): Promise<TrackedExecutable> {
  return ctx.processes.start(
    {
      name: `${name}-${spec.id.slice(0, 8)}`,
      tenant: spec.tenant,
      labels: { "aether.io/vm": spec.id },
      argv,
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
      cwd: ctx.files.dir,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      cell: "",
      logLimitBytes: 8 * 1024 * 1024,
      requestId: "",
    },
    ctx.placement,
  );
}
