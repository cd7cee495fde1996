// Acceleration `auto`: KVM only when a guest really boots with it. /dev/kvm can exist and open fine
// while nested KVM hangs every guest (as on these build machines), so a probe guest is booted
// with -accel kvm and must reach the point where the kernel runs /init. The answer is cached.
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access } from "node:fs/promises";

/** Printed by Linux just before it runs /init: the kernel has fully booted. */
const BOOTED = /Freeing unused kernel (image )?memory|Run \/init as init process/;

export async function kvmDeviceUsable(): Promise<boolean> {
  try {
    await access("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export interface KvmProbeResult {
  usable: boolean;
  reason: string;
}

export async function probeKvm(qemu: string, kernel: string, initrd: string, timeoutMs: number): Promise<KvmProbeResult> {
  if (!(await kvmDeviceUsable())) return { usable: false, reason: "/dev/kvm is missing or cannot be opened" };
  const args = [
    "-M",
    "microvm,x-option-roms=off,isa-serial=on",
    "-accel",
    "kvm",
    "-cpu",
    "host",
    "-m",
    "128M",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    kernel,
    "-append",
    "console=ttyS0 panic=-1",
  ];
  if (initrd) args.push("-initrd", initrd);
  const child = spawn(qemu, args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve) => {
    let output = "";
    const finish = (result: KvmProbeResult) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        finish({ usable: false, reason: `a probe guest did not boot under KVM within ${timeoutMs} ms (nested KVM often hangs guests)` }),
      timeoutMs,
    );
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
      if (BOOTED.test(output)) finish({ usable: true, reason: "a probe guest booted under KVM" });
    });
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("exit", () =>
      finish({ usable: false, reason: `QEMU could not boot a probe guest under KVM: ${output.trim().split("\n").slice(-2).join(" ")}` }),
    );
  });
}
