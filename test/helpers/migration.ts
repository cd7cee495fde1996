// Helpers of the live-migration tests (test/migration*.test.ts): a guest with a data volume, shell
// commands in it, following a migration, and what a node holds of one test's VM.
import assert from "node:assert/strict";
import { vm as vmApi, type AetherClient } from "@aether/sdk";
import { VolumeFormat } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { guestImage } from "./guest.js";

export const MiB = 1024n * 1024n;
/** What a guest kernel logs when its memory was not copied whole (grep -E). */
export const KERNEL_CORRUPTION = "Bad page state|list_(add|del) corruption|Kernel panic|kernel BUG|general protection fault";
export const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

export async function waitReady(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  let last: vmApi.Vm | undefined;
  for await (const r of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 90n } })) last = r.vm;
  assert.equal(last?.state, vmApi.VmState.RUNNING, `${name}: ${last?.stateReason}`);
  return last as vmApi.Vm;
}

export async function sh(aether: AetherClient, vm: string, script: string): Promise<string> {
  // Generous: TCG guests crawl when the host's two CPUs are shared with other test runs.
  const r = await aether.vm.execVm({ vm, argv: ["/bin/sh", "-c", script], timeout: { seconds: 120n } });
  assert.equal(r.exitCode, 0, `${script}: ${text(r.stderr)}`);
  return text(r.stdout);
}

/** The sha256sum of countMiB MiB at offsetMiB of the guest's first disk. */
const diskMarkRead = (offsetMiB: number, countMiB: number) =>
  `dd if=/dev/vda bs=1M skip=${offsetMiB} count=${countMiB} 2>/dev/null | sha256sum`;

/** Writes countMiB MiB of random bytes at offsetMiB into the guest's first disk (fsync'd); returns their sha256sum. */
export function writeDiskMark(aether: AetherClient, vm: string, offsetMiB: number, countMiB: number): Promise<string> {
  return sh(
    aether,
    vm,
    `dd if=/dev/urandom of=/dev/vda bs=1M seek=${offsetMiB} count=${countMiB} conv=fsync 2>/dev/null && ${diskMarkRead(offsetMiB, countMiB)}`,
  );
}

/** Reads back what writeDiskMark wrote; with dropCaches from the disk itself, not the guest's page cache. */
export function readDiskMark(
  aether: AetherClient,
  vm: string,
  offsetMiB: number,
  countMiB: number,
  options: { dropCaches?: boolean } = {},
): Promise<string> {
  return sh(aether, vm, `${options.dropCaches ? "echo 3 > /proc/sys/vm/drop_caches; " : ""}${diskMarkRead(offsetMiB, countMiB)}`);
}

/** A running guest with a 256 MiB qcow2 data volume of its own. */
export async function bootGuest(aether: AetherClient, name: string): Promise<vmApi.Vm> {
  const g = guestImage();
  await aether.storage.createVolume({
    name: `${name}-data`,
    format: VolumeFormat.QCOW2,
    source: { case: "empty", value: { sizeBytes: 256n * MiB } },
  });
  await aether.vm.createVm({
    name,
    acceleration: vmApi.Acceleration.TCG,
    memoryBytes: 128n * MiB,
    vcpus: 1,
    guestAgent: true,
    boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
    disks: [{ source: { case: "volume", value: `${name}-data` }, serial: "data" }],
    start: true,
  });
  return waitReady(aether, name);
}

/** Follows a migration to its end; returns every report. */
export async function follow(aether: AetherClient, id: string, onReport?: (m: vmApi.Migration) => void): Promise<vmApi.Migration[]> {
  const reports: vmApi.Migration[] = [];
  for await (const r of aether.vm.watchMigration({ migration: id })) {
    if (r.migration) {
      reports.push(r.migration);
      onReport?.(r.migration);
    }
  }
  return reports;
}

/** This test's VMs and volumes on a node (a test that failed before its cleanup must not fail the next). */
export const vmsNamed = async (node: AetherClient, name: string) => (await node.vm.listVms({})).vms.filter((v) => v.name === name);
export const volumesNamed = async (node: AetherClient, name: string) =>
  (await node.storage.listVolumes({})).volumes.filter((v) => v.name.startsWith(`${name}-`));

export const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : NaN);
