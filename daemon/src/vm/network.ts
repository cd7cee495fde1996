// A VM's NICs: a TAP device per NIC, named after the VM, on a Linux bridge, and a MAC address that is
// the same every time the VM starts.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { runHost, which } from "../host/command.js";

/** "ae" + 8 hex of the VM id + "n" + index: unique per VM and within the kernel's 15 characters. */
export function tapName(vmId: string, index: number): string {
  return `ae${vmId.replace(/-/g, "").slice(0, 8)}n${index}`;
}

/** A locally administered unicast MAC (52:54:00 is QEMU's prefix) derived from the VM and NIC. */
export function stableMac(vmId: string, index: number): string {
  const h = createHash("sha256").update(`${vmId}/${index}`).digest();
  return ["52", "54", "00", ...[h[0], h[1], h[2]].map((b) => (b ?? 0).toString(16).padStart(2, "0"))].join(":");
}

async function ip(args: string[]): Promise<void> {
  const tool = (await which("ip")) ?? "/usr/sbin/ip";
  await runHost(tool, args, { timeoutMs: 10_000 });
}

export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

export function isBridge(name: string): boolean {
  return existsSync(`/sys/class/net/${name}/bridge`);
}

/** Creates the TAP and puts it on the bridge; on failure nothing is left behind. */
/** Whether the device is a TUN/TAP device (only those are ever deleted as a VM's leftovers). */
export function isTap(name: string): boolean {
  return existsSync(`/sys/class/net/${name}/tun_flags`);
}

export async function createTap(name: string, bridge: string): Promise<void> {
  await ip(["tuntap", "add", "dev", name, "mode", "tap"]);
  try {
    await ip(["link", "set", "dev", name, "master", bridge]);
    await ip(["link", "set", "dev", name, "up"]);
  } catch (err) {
    await deleteTap(name);
    throw err;
  }
}

export async function deleteTap(name: string): Promise<void> {
  if (linkExists(name)) await ip(["link", "delete", "dev", name]).catch(() => undefined);
}
