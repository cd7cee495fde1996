#!/usr/bin/env aetherscript
// Import a disk image with its checksum, boot a VM from its own thin clone of it, and clean up.
//   aetherscript examples/storage.ts <image file> <sha256 of the file>
// The project's test guest as a bootable disk works (npm run guest builds it):
//   aetherscript examples/storage.ts .aether/images/guest/disk.raw \
//     $(sha256sum .aether/images/guest/disk.raw | cut -d' ' -f1)
import { resolve } from "node:path";
import { connect, storage, vm } from "@aether/sdk";

const [file, sha256] = process.argv.slice(2);
if (!file || !sha256) {
  console.error("usage: aetherscript examples/storage.ts <image file> <sha256 of the file>");
  process.exit(2);
}
const aether = await connect();
const suffix = Date.now().toString(36);
const imageName = `example-image-${suffix}`;
const vmName = `example-disk-vm-${suffix}`;

// Long work returns at once; WatchImage reports progress until the import ends.
await aether.storage.importImage({ name: imageName, source: { source: { case: "localPath", value: resolve(file) } }, sha256 });
for await (const { image } of aether.storage.watchImage({ image: imageName })) {
  if (image?.state === storage.ImageState.FAILED) throw new Error(`import failed: ${image.stateReason}`);
  const total = Number(image?.sourceBytes ?? 0n);
  if (total > 0) console.log(`importing ${imageName}: ${Math.round((Number(image?.importedBytes) / total) * 100)}%`);
}
const { image } = await aether.storage.getImage({ image: imageName });
console.log(`image ${imageName}: ready, ${Number(image?.sizeBytes) / 2 ** 20} MiB`);

// The VM boots through its firmware from "<vm>-boot", a clone of the image made for it.
await aether.vm.createVm({
  name: vmName,
  memoryBytes: 192n * 1024n * 1024n,
  vcpus: 1,
  guestAgent: true,
  boot: { source: { case: "disk", value: { image: imageName } } },
  start: true,
});
for await (const step of aether.vm.waitVmReady({ vm: vmName, timeout: { seconds: 120n } })) {
  if (step.vm?.state === vm.VmState.RUNNING) console.log(`${vmName}: ${step.message}`);
}
const { volume } = await aether.storage.getVolume({ volume: `${vmName}-boot` });
console.log(`boot volume ${volume?.name}: a clone of ${imageName} taking ${(Number(volume?.allocatedBytes) / 1024).toFixed(0)} KiB`);
const result = await aether.vm.execVm({ vm: vmName, argv: ["/bin/sh", "-c", "echo guest disk vda: $(cat /sys/block/vda/size) sectors"] });
process.stdout.write(new TextDecoder().decode(result.stdout));

await aether.vm.deleteVm({ vm: vmName, force: true });
await aether.storage.deleteImage({ image: imageName });
console.log(`deleted ${vmName}, its boot volume and ${imageName}`);
aether.close();
