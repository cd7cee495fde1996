#!/usr/bin/env aetherscript
// Live-migrate a running VM to another aetherd and watch it move: the phase, the bytes, the rate at
// which the guest dirties its memory, the CPU throttle, then the pause the guest really had.
//   aetherscript examples/vm-migrate.ts TARGET [VM]
// TARGET is the other aetherd (unix:///path.sock, or https://host:port with node certificates).
// Without VM, the project's test guest (npm run guest) is booted here first, migrated, asked for its
// kernel on the target, and deleted there.
import { connect, vm } from "@aether/sdk";

const [target, given] = process.argv.slice(2);
if (!target) throw new Error("usage: aetherscript examples/vm-migrate.ts TARGET [VM]");
const aether = await connect();
let name = given ?? "";
if (name === "") {
  const image = new URL("../.aether/images/guest/", import.meta.url).pathname;
  name = `example-mig-${Date.now().toString(36)}`;
  await aether.vm.createVm({
    name,
    memoryBytes: 128n * 1024n * 1024n,
    vcpus: 1,
    guestAgent: true,
    boot: {
      source: { case: "kernel", value: { kernelPath: `${image}vmlinuz`, initrdPath: `${image}initramfs.cpio.gz`, cmdline: "quiet" } },
    },
    start: true,
  });
  for await (const step of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) console.log(`${name}: ${step.message}`);
}

console.log(`migrating ${name} to ${target}`);
const { migration } = await aether.vm.migrateVm({ vm: name, target, options: { maxDowntime: { seconds: 0n, nanos: 100_000_000 } } });
const mib = (n: bigint) => (Number(n) / 2 ** 20).toFixed(1);
const ms = (d?: { seconds: bigint; nanos: number }) => (d ? Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6) : 0);
let last = migration;
for await (const { migration: m } of aether.vm.watchMigration({ migration: migration?.id ?? "" })) {
  if (!m) continue;
  last = m;
  console.log(
    `  ${vm.MigrationPhase[m.phase]?.toLowerCase()}: disks ${mib(m.diskTransferredBytes)} MiB (${mib(m.diskRemainingBytes)} left), memory ${mib(m.memoryTransferredBytes)} MiB (${mib(m.memoryRemainingBytes)} left), dirtied ${mib(m.dirtyRateBytesPerSecond)} MiB/s, throttle ${m.cpuThrottlePercent}%`,
  );
}
aether.close();
if (last?.state !== vm.MigrationState.SUCCEEDED) throw new Error(`not migrated: ${last?.stateReason}`);
console.log(`done: ${name} runs on ${target}, moved in ${ms(last.totalTime)} ms, guest paused ${ms(last.downtime)} ms`);

if (given === undefined) {
  const there = await connect({ address: target });
  const r = await there.vm.execVm({ vm: name, argv: ["/bin/uname", "-sr"] });
  console.log(`on the target: ${new TextDecoder().decode(r.stdout).trim()}`);
  await there.vm.deleteVm({ vm: name, force: true });
  console.log(`deleted ${name} on the target`);
  there.close();
}
