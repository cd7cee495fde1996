#!/usr/bin/env aetherscript
// Boot a VM, run a command in it through the guest agent, and delete it. The kernel and initramfs
// are the project's test guest (npm run guest builds it into .aether/images/guest); pass other
// paths as arguments: aetherscript examples/vm.ts /path/vmlinuz /path/initrd.img
import { connect, vm } from "@aether/sdk";

const image = new URL("../.aether/images/guest/", import.meta.url).pathname;
const [kernelPath = `${image}vmlinuz`, initrdPath = `${image}initramfs.cpio.gz`] = process.argv.slice(2);
const aether = await connect();
const name = `example-vm-${Date.now().toString(36)}`;

await aether.vm.createVm({
  name,
  memoryBytes: 128n * 1024n * 1024n,
  vcpus: 1,
  guestAgent: true,
  boot: { source: { case: "kernel", value: { kernelPath, initrdPath, cmdline: "quiet" } } },
  cloudInit: { userData: "#!/bin/sh\necho 'configured by cloud-init' > /run/motd\n" },
  start: true,
});
for await (const step of aether.vm.waitVmReady({ vm: name, timeout: { seconds: 120n } })) {
  console.log(`${name}: ${step.message}`);
}
const result = await aether.vm.execVm({ vm: name, argv: ["/bin/sh", "-c", "cat /run/motd; uname -sr"] });
process.stdout.write(`in the guest (exit ${result.exitCode}):\n${new TextDecoder().decode(result.stdout)}`);
await aether.vm.deleteVm({ vm: name, force: true });
console.log(`deleted ${name}`);
aether.close();
