// aether vm reboot|reset|set|autostart|attach-disk|detach-disk|attach-nic|detach-nic|snapshot|clone|cp:
// the VM lifecycle as virsh and qm users know it. Mutations print one line for people (the VM with
// -o json|yaml|name); `vm snapshot list` is a table.
//
// It is past 400 lines because each of its eleven commands carries its own dry run (what aetherd
// would do or refuse, read without changing anything) beside the call it makes; splitting the
// snapshot and device commands into files of their own is the obvious next step.
import { createReadStream, createWriteStream, statSync } from "node:fs";
import { once } from "node:events";
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { Code, ConnectError, vm as vmApi, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { durationOption, toDuration, uint32 } from "../numbers.js";
import { age, bytes, forPrograms, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";
import { startProgress } from "../progress.js";
import { dryRunOption, exists, sayWould, type DryRunFlags } from "../mutations.js";
import { parseBytes } from "../units.js";
import { VMS } from "./vm-views.js";

type Tenant = { tenant: string };
const CHUNK = 1024 * 1024;
const state = (s: vmApi.VmState) => vmApi.VmState[s].toLowerCase();

const SNAPSHOTS: ListView<vmApi.VmSnapshot> = {
  json: vmApi.VmSnapshotSchema,
  name: (s) => s.name,
  columns: [
    { header: "NAME", cell: (s) => s.name },
    { header: "AGE", cell: (s) => age(s.createTime) },
    { header: "CONSISTENCY", cell: (s) => s.consistency },
    { header: "DISKS", cell: (s) => s.disks.map((d) => d.volumeName).join(", "), clip: true },
    { header: "PROBLEM", cell: (s) => s.problem || "-", clip: true },
  ],
};

/**
 * --dry-run of a VM lifecycle command: looks the VM up and says what would happen (`what` returns
 * the sentence and, when the CLI can foresee it, why aetherd would refuse). Nothing is sent that
 * changes anything.
 */
async function wouldVm(
  aether: AetherClient,
  ref: string,
  tenant: string,
  what: (v: vmApi.Vm) => Promise<[string, string?]> | [string, string?],
): Promise<void> {
  const { vm: v } = await aether.vm.getVm({ vm: ref, tenant });
  if (!v) throw new Error("aetherd returned no VM");
  const [sentence, refusal] = await what(v);
  sayWould(`${sentence}${refusal ? `, but aetherd would refuse: ${refusal}` : ""}`);
}

const isRunning = (v: vmApi.Vm) => [vmApi.VmState.RUNNING, vmApi.VmState.STARTING, vmApi.VmState.PAUSED].includes(v.state);
const diskNames = (d: vmApi.Disk) => [d.source.value ?? "", d.resolvedPath, d.serial].filter((x) => x !== "");

/** The id of the volume a disk argument names, or undefined when no volume has that name or id. */
async function volumeIdOf(aether: AetherClient, ref: string, tenant: string): Promise<string | undefined> {
  try {
    return (await aether.storage.getVolume({ volume: ref, tenant })).volume?.id;
  } catch (err) {
    if (ConnectError.from(err).code === Code.NotFound) return undefined;
    throw err;
  }
}

/** The VM for programs, or one line for people. */
function done(o: OutputFlags, v: vmApi.Vm | undefined, line: string): void {
  if (!v) throw new Error("aetherd returned no VM");
  if (forPrograms(o)) printOne(o, VMS, v);
  else process.stdout.write(`${line}\n`);
}

/** Waits for the guest to be ready again (after a reboot, reset or start); exits 1 when it is not. */
async function waitAgain(
  aether: AetherClient,
  ref: string,
  tenant: string,
  timeoutMs: number,
  quiet: boolean,
): Promise<vmApi.Vm | undefined> {
  const spinner = startProgress(`waiting for ${ref} to boot`, quiet);
  let last: vmApi.Vm | undefined;
  try {
    for await (const r of aether.vm.waitVmReady({ vm: ref, tenant, timeout: toDuration(timeoutMs) })) {
      last = r.vm;
      spinner?.update(`${ref}: ${r.message}`);
    }
  } finally {
    if (last?.state === vmApi.VmState.RUNNING) spinner?.succeed(`${ref} is ready`);
    else spinner?.fail(`${ref}: ${last ? `${state(last.state)} ${last.stateReason}` : "not ready"}`);
  }
  if (last?.state !== vmApi.VmState.RUNNING) {
    process.exitCode = EXIT.failed;
    if (quiet || !process.stderr.isTTY)
      process.stderr.write(`aether: ${ref} is ${last ? `${state(last.state)}: ${last.stateReason}` : "not ready"}\n`);
  }
  return last;
}

/** "web:/etc/hostname" → the VM and the guest path; a local path (./x, /tmp/x, -) → undefined. */
export function guestSide(arg: string): { vm: string; path: string } | undefined {
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]*):(\/.*)$/.exec(arg);
  return m ? { vm: m[1] as string, path: m[2] as string } : undefined;
}

async function copyOut(aether: AetherClient, from: { vm: string; path: string }, to: string, tenant: string): Promise<number> {
  const out = to === "-" ? process.stdout : createWriteStream(to);
  let offset = 0n;
  try {
    for (;;) {
      const r = await aether.vm.readVmFile({ vm: from.vm, tenant, path: from.path, offset, maxBytes: CHUNK });
      if (r.data.length > 0 && !out.write(r.data)) await once(out, "drain");
      offset += BigInt(r.data.length);
      if (r.eof) break;
    }
  } finally {
    if (out !== process.stdout) {
      out.end();
      await once(out, "close");
    }
  }
  return Number(offset);
}

async function copyIn(aether: AetherClient, from: string, to: { vm: string; path: string }, tenant: string): Promise<number> {
  const input = from === "-" ? process.stdin : createReadStream(from, { highWaterMark: CHUNK });
  let written = 0;
  let pending = Buffer.alloc(0);
  const send = async (data: Buffer) => {
    const r = await aether.vm.writeVmFile({ vm: to.vm, tenant, path: to.path, data, append: written > 0 });
    written += Number(r.written);
  };
  for await (const chunk of input as AsyncIterable<Buffer>) {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= CHUNK) {
      await send(pending.subarray(0, CHUNK));
      pending = pending.subarray(CHUNK);
    }
  }
  // The last piece; an empty file is still created (or cut to nothing).
  if (pending.length > 0 || written === 0) await send(pending);
  return written;
}

/** --dry-run of vm cp: the VM looked up and a local source measured; nothing is read from or written to the guest. */
function wouldCopy(aether: AetherClient, source: string, destination: string, tenant: string): Promise<void> {
  const from = guestSide(source);
  const guest = (from ?? guestSide(destination)) as { vm: string; path: string };
  return wouldVm(aether, guest.vm, tenant, (v) => [
    from
      ? `copy ${from.path} out of vm ${v.name} to ${destination === "-" ? "stdout" : destination}`
      : `copy ${source === "-" ? "stdin" : `${source} (${bytes(statSync(source).size)})`} into vm ${v.name} at ${guest.path}`,
    v.state !== vmApi.VmState.RUNNING
      ? `${v.name} is ${state(v.state)}, not running`
      : !v.guestAgent
        ? `${v.name} has no guest agent`
        : v.agentReady
          ? undefined
          : `the guest agent of ${v.name} does not answer yet`,
  ]);
}

export function vmLifecycleCommands(vm: Command, globals: () => GlobalOptions): void {
  dryRunOption(outputOptions(vm.command("reboot")))
    .description("reboot gracefully: the guest shuts down (agent or ACPI), then starts again with pending settings")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addOption(durationOption("-t, --timeout <duration>", "wait this long for the guest to shut down, then force it", 30_000))
    .option("--wait", "wait until the guest is ready again; exits 1 if it is not")
    .addHelpText("after", "\nExamples:\n  aether vm reboot web\n  aether vm reboot web --wait\n  aether vm reboot web --timeout 2m -o json")
    .action(async (ref: string, o: Tenant & { timeout: number; wait?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [
            `reboot vm ${v.name} (${state(v.state)})`,
            isRunning(v) ? undefined : `${v.name} is ${state(v.state)}, not running`,
          ]);
        const { vm: v } = await aether.vm.rebootVm({ vm: ref, tenant: o.tenant, timeout: toDuration(o.timeout) });
        const last = o.wait ? await waitAgain(aether, ref, o.tenant, 300_000, forPrograms(o)) : v;
        done(o, last ?? v, `${ref} rebooted${o.wait ? "" : " (booting)"}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("reset")))
    .description("hard reset, like the reset button (QMP system_reset): no shutdown, unwritten data lost")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--wait", "wait until the guest is ready again; exits 1 if it is not")
    .addHelpText("after", "\nExamples:\n  aether vm reset web\n  aether vm reset web --wait")
    .action(async (ref: string, o: Tenant & { wait?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [
            `reset vm ${v.name} (${state(v.state)}): no shutdown, unwritten data lost`,
            isRunning(v) ? undefined : `${v.name} is ${state(v.state)}, not running`,
          ]);
        const { vm: v } = await aether.vm.resetVm({ vm: ref, tenant: o.tenant });
        const last = o.wait ? await waitAgain(aether, ref, o.tenant, 300_000, forPrograms(o)) : v;
        done(o, last ?? v, `${ref} reset${o.wait ? "" : " (booting)"}`);
      }),
    );

  const set = dryRunOption(outputOptions(vm.command("set")))
    .description("change memory or vCPUs; they apply at the VM's next start (vm reboot applies them to a running VM)")
    .argument("<vm>", "id or name")
    .option("--memory <size>", "guest memory, e.g. 1G or 512M", parseBytes)
    .option("--cpus <n>", "virtual CPUs", uint32)
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm set web --memory 1G\n  aether vm set web --cpus 2 --memory 2G && aether vm reboot web --wait",
    )
    .action(async (ref: string, o: Tenant & { memory?: bigint; cpus?: number } & OutputFlags & DryRunFlags) => {
      if (o.memory === undefined && o.cpus === undefined) set.error("error: give --memory and/or --cpus");
      return withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [
            `set vm ${v.name} to ${o.cpus ?? v.vcpus} vCPUs and ${bytes(o.memory ?? v.memoryBytes)} (now ${v.vcpus}, ${bytes(v.memoryBytes)}), from its next start`,
          ]);
        const { vm: v } = await aether.vm.updateVm({ vm: ref, tenant: o.tenant, memoryBytes: o.memory, vcpus: o.cpus });
        const now = `${ref}: ${v?.vcpus} vCPUs, ${bytes(v?.memoryBytes ?? 0n)}`;
        const pending = v?.pendingChanges ?? [];
        done(
          o,
          v,
          pending.length > 0
            ? `${now}; ${ref} is ${state(v?.state ?? 0)}, so ${pending.join(", ")} ${pending.length === 1 ? "applies" : "apply"} at its next start: aether vm reboot ${ref}`
            : `${now} (from its next start)`,
        );
      });
    });

  dryRunOption(outputOptions(vm.command("autostart")))
    .description("start the VM with aetherd after a host reboot (on), or not (off)")
    .argument("<vm>", "id or name")
    .argument("<on|off>", "on or off", (v: string) => {
      if (v !== "on" && v !== "off") throw new InvalidArgumentError("give on or off");
      return v;
    })
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm autostart web on\n  aether vm autostart web off")
    .action(async (ref: string, onOff: string, o: Tenant & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [`turn autostart ${onOff} for vm ${v.name} (now ${v.autostart ? "on" : "off"})`]);
        const { vm: v } = await aether.vm.updateVm({ vm: ref, tenant: o.tenant, autostart: onOff === "on" });
        done(o, v, `${ref}: autostart ${onOff}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("attach-disk")))
    .description("attach a volume (or, for operators, a host path): hot-plugged into a running persistent VM, else from the next start")
    .argument("<vm>", "id or name")
    .argument("<disk>", "a volume's name or id, or an absolute host path")
    .option("--ro", "read-only")
    .option("--serial <serial>", "serial number the guest sees (/dev/disk/by-id)", "")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm attach-disk web data\n  aether vm attach-disk web data --serial data1 --ro\n  aether vm attach-disk web /srv/scratch.qcow2",
    )
    .action(async (ref: string, disk: string, o: Tenant & { ro?: boolean; serial: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            const id = disk.startsWith("/") ? disk : (await aether.storage.getVolume({ volume: disk, tenant: o.tenant })).volume?.id;
            const attached = v.disks.some((d) => diskNames(d).some((n) => n === disk || n === id));
            return [
              `attach ${disk} to vm ${v.name} ${isRunning(v) ? "(hot-plugged)" : "(from its next start)"}`,
              attached ? `${disk} is attached to ${v.name} already` : undefined,
            ];
          });
        const source = disk.startsWith("/") ? { case: "hostPath" as const, value: disk } : { case: "volume" as const, value: disk };
        const { vm: v, live } = await aether.vm.attachVmDisk({
          vm: ref,
          tenant: o.tenant,
          disk: { source, readOnly: o.ro ?? false, serial: o.serial },
        });
        done(o, v, `${disk} attached to ${ref} ${live ? "(hot-plugged: the guest has it now)" : "(from its next start)"}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("detach-disk")))
    .description("detach a disk (the volume is kept); from a running VM only its last, hot-plugged disk")
    .argument("<vm>", "id or name")
    .argument("<disk>", "its volume (name or id), host path or serial")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .addHelpText("after", "\nExamples:\n  aether vm detach-disk web data\n  aether vm detach-disk web /srv/scratch.qcow2")
    .action(async (ref: string, disk: string, o: Tenant & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            // A disk names its volume by id: a volume's name is looked up (it may also be a serial).
            const id = disk.startsWith("/") ? undefined : await volumeIdOf(aether, disk, o.tenant);
            return [
              `detach ${disk} from vm ${v.name}${isRunning(v) ? " (hot-unplugged)" : ""}`,
              v.disks.some((d) => diskNames(d).some((n) => n === disk || n === id)) ? undefined : `${v.name} has no disk ${disk}`,
            ];
          });
        const { vm: v, live } = await aether.vm.detachVmDisk({ vm: ref, tenant: o.tenant, disk });
        done(o, v, `${disk} detached from ${ref}${live ? " (hot-unplugged)" : ""}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("attach-nic")))
    .description("add a NIC on a host bridge: hot-plugged into a running persistent VM, else from the next start")
    .argument("<vm>", "id or name")
    .argument("<bridge>", "the host bridge")
    .option("--mac <mac>", "MAC address (default: derived from the VM and the NIC's index)", "")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm attach-nic web br0\n  aether vm attach-nic web br1 --mac 52:54:00:12:34:56")
    .action(async (ref: string, bridge: string, o: Tenant & { mac: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [
            `add a NIC on ${bridge} to vm ${v.name} ${isRunning(v) ? "(hot-plugged)" : "(from its next start)"}`,
          ]);
        const { vm: v, live } = await aether.vm.attachVmNic({ vm: ref, tenant: o.tenant, nic: { bridge, mac: o.mac } });
        const nic = v?.nics.at(-1);
        done(o, v, `NIC ${nic?.mac} on ${bridge} added to ${ref} ${live ? "(hot-plugged)" : "(from its next start)"}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("detach-nic")))
    .description("remove a NIC; from a running VM only its last, hot-plugged NIC")
    .argument("<vm>", "id or name")
    .argument("<nic>", "its MAC address or TAP device")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm detach-nic web 52:54:00:12:34:56")
    .action(async (ref: string, nic: string, o: Tenant & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, (v) => [
            `remove NIC ${nic} from vm ${v.name}${isRunning(v) ? " (hot-unplugged)" : ""}`,
            v.nics.some((n) => n.mac === nic || n.tapDevice === nic) ? undefined : `${v.name} has no NIC ${nic}`,
          ]);
        const { vm: v, live } = await aether.vm.detachVmNic({ vm: ref, tenant: o.tenant, nic });
        done(o, v, `NIC ${nic} removed from ${ref}${live ? " (hot-unplugged)" : ""}`);
      }),
    );

  const snapshot = vm
    .command("snapshot")
    .description("snapshots of all of a VM's disks at once: create, list, delete, rollback")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm snapshot create web before-upgrade\n  aether vm snapshot list web\n  aether vm stop web && aether vm snapshot rollback web before-upgrade && aether vm start web",
    );

  dryRunOption(outputOptions(snapshot.command("create")))
    .description("snapshot every volume of the VM (a running VM is frozen through its agent, or paused, meanwhile)")
    .argument("<vm>", "id or name")
    .argument("<name>", "the snapshot's name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm snapshot create web before-upgrade\n  aether vm snapshot create web s1 -o json")
    .action(async (ref: string, name: string, o: Tenant & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            const { snapshots } = await aether.vm.listVmSnapshots({ vm: v.id, tenant: o.tenant });
            return [
              `snapshot the ${v.disks.length} disk(s) of vm ${v.name} as ${name}${isRunning(v) ? " (the guest frozen or paused meanwhile)" : ""}`,
              snapshots.some((x) => x.name === name) ? `${v.name} has a snapshot ${name} already` : undefined,
            ];
          });
        const { snapshot: s } = await aether.vm.createVmSnapshot({ vm: ref, tenant: o.tenant, name });
        if (!s) throw new Error("aetherd returned no snapshot");
        if (forPrograms(o)) printOne(o, SNAPSHOTS, s);
        else process.stdout.write(`snapshot ${name} of ${ref} taken (${s.consistency}; ${s.disks.map((d) => d.volumeName).join(", ")})\n`);
      }),
    );

  outputOptions(snapshot.command("list").alias("ls"), "list")
    .description("the VM's snapshots, oldest first")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm snapshot list web\n  aether vm snapshot ls web -o json")
    .action(async (ref: string, o: Tenant & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const { snapshots } = await aether.vm.listVmSnapshots({ vm: ref, tenant: o.tenant });
        printList(o, SNAPSHOTS, snapshots);
      }),
    );

  dryRunOption(snapshot.command("delete"))
    .alias("rm")
    .description("delete a VM snapshot (the volume snapshots it is made of)")
    .argument("<vm>", "id or name")
    .argument("<name>", "the snapshot's name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm snapshot delete web before-upgrade")
    .action(async (ref: string, name: string, o: Tenant & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            const { snapshots } = await aether.vm.listVmSnapshots({ vm: v.id, tenant: o.tenant });
            return [
              `delete snapshot ${name} of vm ${v.name}`,
              snapshots.some((x) => x.name === name) ? undefined : `${v.name} has no snapshot ${name}`,
            ];
          });
        await aether.vm.deleteVmSnapshot({ vm: ref, tenant: o.tenant, name });
        process.stdout.write(`snapshot ${name} of ${ref} deleted\n`);
      }),
    );

  dryRunOption(outputOptions(snapshot.command("rollback")))
    .description("return a stopped VM's disks to a snapshot")
    .argument("<vm>", "id or name")
    .argument("<name>", "the snapshot's name")
    .option("--destroy-newer", "also delete the snapshots taken after it")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm snapshot rollback web before-upgrade\n  aether vm snapshot rollback web s1 --destroy-newer",
    )
    .action(async (ref: string, name: string, o: Tenant & { destroyNewer?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            const { snapshots } = await aether.vm.listVmSnapshots({ vm: v.id, tenant: o.tenant });
            const at = snapshots.findIndex((x) => x.name === name);
            const newer = at < 0 ? [] : snapshots.slice(at + 1).map((x) => x.name);
            const refusal =
              at < 0
                ? `${v.name} has no snapshot ${name}`
                : isRunning(v)
                  ? `${v.name} is ${state(v.state)}; stop it first`
                  : newer.length > 0 && !o.destroyNewer
                    ? `newer snapshots exist (${newer.join(", ")}); add --destroy-newer`
                    : undefined;
            return [
              `roll the disks of vm ${v.name} back to ${name}${o.destroyNewer && newer.length > 0 ? `, deleting ${newer.join(", ")}` : ""}`,
              refusal,
            ];
          });
        const { vm: v } = await aether.vm.rollbackVmSnapshot({ vm: ref, tenant: o.tenant, name, destroyNewer: o.destroyNewer ?? false });
        done(o, v, `${ref}'s disks rolled back to ${name}`);
      }),
    );

  dryRunOption(outputOptions(vm.command("clone")))
    .description("a new VM from a stopped one: thin clones of its volumes, new id, MACs and TAPs")
    .argument("<vm>", "the VM to clone (id or name)")
    .argument("<name>", "the new VM's name")
    .option("--start", "start the new VM")
    .option("--wait", "with --start: wait until its guest is ready; exits 1 if it is not")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm clone web web2\n  aether vm clone web web2 --start --wait")
    .action(async (ref: string, name: string, o: Tenant & { start?: boolean; wait?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun)
          return wouldVm(aether, ref, o.tenant, async (v) => {
            const taken = await exists(() => aether.vm.getVm({ vm: name, tenant: o.tenant }));
            return [
              `clone vm ${v.name} into ${name} (thin clones of its ${v.disks.length} disk(s))${o.start ? " and start it" : ""}`,
              taken ? `a VM named ${name} exists` : isRunning(v) ? `${v.name} is ${state(v.state)}; stop it first` : undefined,
            ];
          });
        const { vm: v } = await aether.vm.cloneVm({ vm: ref, tenant: o.tenant, name, start: o.start ?? false });
        const last = o.start && o.wait ? await waitAgain(aether, name, o.tenant, 300_000, forPrograms(o)) : v;
        done(o, last ?? v, `${name} cloned from ${ref}${o.start ? (o.wait ? " and running" : " (booting)") : ""}`);
      }),
    );

  dryRunOption(vm.command("cp"))
    .description("copy a file into or out of a running guest through its agent (VM:PATH on one side)")
    .argument("<source>", "VM:/path in the guest, or a local file (- for stdin)")
    .argument("<destination>", "VM:/path in the guest, or a local file (- for stdout)")
    .option("--tenant <tenant>", "tenant to resolve the VM's name in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm cp web:/etc/hostname ./hostname\n  aether vm cp ./app.conf web:/etc/app.conf\n  aether vm cp web:/var/log/messages - | tail\n  aether vm cp ./app.conf web:/etc/app.conf --dry-run",
    )
    .action(async (source: string, destination: string, o: Tenant & DryRunFlags) => {
      const from = guestSide(source);
      const to = guestSide(destination);
      if ((from === undefined) === (to === undefined))
        vm.commands
          .find((c) => c.name() === "cp")
          ?.error("error: exactly one side is in a guest, written VM:/absolute/path (e.g. web:/etc/hostname)");
      return withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldCopy(aether, source, destination, o.tenant);
        const n = from
          ? await copyOut(aether, from, destination, o.tenant)
          : await copyIn(aether, source, to as { vm: string; path: string }, o.tenant);
        if (destination !== "-") process.stderr.write(`${bytes(n)} copied\n`);
      });
    });
}
