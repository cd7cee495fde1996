// aether vm create|start|stop|pause|resume|delete|list|get|wait|exec|console|logs: virtual machines
// (migrate is in vm-migrate.ts, the lifecycle commands in vm-lifecycle.ts, the views in vm-views.ts).
// Just past 400 lines: create alone is over a quarter of it (boot source, disks, NICs, cloud-init).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { vm as vmApi, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { durationOption, toDuration, uint32, uint64 } from "../numbers.js";
import { forPrograms, outputOptions, printList, printOne, type OutputFlags } from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, exists, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { startProgress } from "../progress.js";
import { nodeEvents, watch, watchOption, type WatchFlags } from "../watch.js";
import { VMS, getVm, listVms, refusal, state, vmFields, wouldDo } from "./vm-views.js";
import { vmMigrateCommand } from "./vm-migrate.js";
import { vmLifecycleCommands } from "./vm-lifecycle.js";
import { parseBytes } from "../units.js";

const DETACH = 0x1d; // Ctrl-]

async function waitReady(
  aether: AetherClient,
  name: string,
  tenant: string,
  timeoutMs: number,
  json: boolean,
): Promise<vmApi.Vm | undefined> {
  const spinner = startProgress(`waiting for ${name} to boot`, json);
  let last: vmApi.Vm | undefined;
  try {
    for await (const r of aether.vm.waitVmReady({ vm: name, tenant, timeout: toDuration(timeoutMs) })) {
      last = r.vm;
      spinner?.update(`${name}: ${r.message}`);
    }
  } finally {
    if (last?.state === vmApi.VmState.RUNNING) spinner?.succeed(`${name} is ready`);
    else spinner?.fail(`${name}: ${last ? `${state(last.state)} ${last.stateReason}` : "not ready"}`);
  }
  return last;
}

/**
 * After a wait: true when the guest is ready. Otherwise the command exits 1 (a script that waited
 * for a VM must not carry on with a failed one) and says why on stderr, where a spinner did not already.
 */
function readyOrFail(ref: string, v: vmApi.Vm | undefined, json: boolean): boolean {
  if (v?.state === vmApi.VmState.RUNNING) return true;
  process.exitCode = EXIT.failed;
  if (json || !process.stderr.isTTY) process.stderr.write(`aether: ${ref} is ${v ? `${state(v.state)}: ${v.stateReason}` : "not ready"}\n`);
  return false;
}

export function vmCommands(program: Command): void {
  const vm = program
    .command("vm")
    .description("virtual machines: QEMU microVMs and persistent VMs, Firecracker where installed")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm create web --kernel vmlinuz --initrd initrd.img --start --wait\n  aether vm list -o wide\n  aether vm exec web -- /bin/uname -a\n  aether vm stop web",
    );
  const globals = () => program.opts<GlobalOptions>();

  const create = dryRunOption(outputOptions(vm.command("create")))
    .description("create a VM (and start it with --start)")
    .argument("<name>", "a name unique in the tenant")
    .option("--kernel <path>", "boot this kernel directly (one of --kernel, --image, --boot-volume)")
    .option("--image <image>", "boot a thin clone of this image through the firmware; the clone <name>-boot goes with the VM")
    .option("--disk-size <size>", "with --image: grow the clone to this size, e.g. 20G", parseBytes)
    .option("--boot-volume <volume>", "boot this existing volume through the firmware")
    .option("--volume <volume[:ro]>", "attach a storage volume (repeatable)", (v: string, p: string[] = []) => [...p, v])
    .option("--initrd <path>", "initramfs", "")
    .option("--cmdline <args>", "extra kernel command line", "")
    // No commander default here: commander shows defaults with JSON.stringify, which cannot print a BigInt.
    .option("--memory <size>", "guest memory, e.g. 512M (default 256M)", parseBytes)
    .option("--vcpus <n>", "virtual CPUs", uint32, 1)
    .option("--profile <profile>", "ephemeral (microVM) or persistent (full machine)", "ephemeral")
    .option("--hypervisor <name>", "qemu or firecracker (default: firecracker for ephemeral VMs where installed)")
    .option("--accel <accel>", "auto, kvm or tcg", "auto")
    .option("--disk <path[:ro]>", "attach a disk image (repeatable)", (v: string, p: string[] = []) => [...p, v])
    .option("--nic <bridge>", "a NIC on this bridge (repeatable)", (v: string, p: string[] = []) => [...p, v])
    .option("--user-data <file>", "cloud-init user-data (a #! script runs once at first boot)")
    .option("--meta-data <file>", "cloud-init meta-data")
    .option("--network-config <file>", "cloud-init network-config")
    .option("--cell <cell>", "run the VM's process in this cell", "")
    .option("--no-agent", "the guest has no qemu-guest-agent (Exec will not work)")
    .addOption(
      durationOption("--watchdog <duration>", "fail the VM if it is not ready within this long (seconds, or 500ms, 2m...)", 120_000),
    )
    .option("--tenant <tenant>", "owning tenant", "")
    .option("--start", "start it right away")
    .option("--wait", "with --start: wait until the guest is ready (shows progress); exits 1 if it fails")
    .option("--label <key=value>", "label to attach (repeatable), for -l selectors", (v: string, p: Record<string, string> = {}) => {
      const eq = v.indexOf("=");
      if (eq <= 0) throw new InvalidArgumentError(`label ${JSON.stringify(v)} is not KEY=VALUE`);
      return { ...p, [v.slice(0, eq)]: v.slice(eq + 1) };
    })
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm create web --kernel vmlinuz --initrd initrd.img --memory 512M --start --wait\n  aether vm create app --image debian --disk-size 20G --volume data --label team=a --start --wait\n  aether vm create db --profile persistent --disk /srv/db.qcow2 --nic br0 --user-data init.sh --start\n  aether vm create app --image debian --dry-run",
    )
    .action(async (name: string, o: Record<string, string | number | bigint | boolean | string[] | Record<string, string> | undefined>) => {
      // Usage errors are found before connecting, so they exit 2 without reaching aetherd.
      const boots = [o.kernel, o.image, o.bootVolume].filter((b) => typeof b === "string");
      if (boots.length !== 1)
        create.error(
          "error: give exactly one of --kernel (direct kernel boot), --image (boot a clone of an image) or --boot-volume (boot a volume)",
        );
      if (o.diskSize !== undefined && typeof o.image !== "string")
        create.error("error: --disk-size sizes the clone made by --image; use aether storage resize for a volume");
      const json = forPrograms(o as OutputFlags);
      return withClient(globals(), async (aether) => {
        const read = (f: unknown) => (typeof f === "string" ? readFileSync(f, "utf8") : "");
        if (o.dryRun === true) return dryRunCreate(aether, name, o);
        const boot =
          typeof o.kernel === "string"
            ? {
                case: "kernel" as const,
                value: {
                  kernelPath: resolve(o.kernel),
                  initrdPath: o.initrd ? resolve(String(o.initrd)) : "",
                  cmdline: String(o.cmdline ?? ""),
                },
              }
            : {
                case: "disk" as const,
                value: {
                  image: typeof o.image === "string" ? o.image : "",
                  volume: typeof o.bootVolume === "string" ? o.bootVolume : "",
                  sizeBytes: (o.diskSize as bigint | undefined) ?? 0n,
                },
              };
        const { vm: created } = await aether.vm.createVm({
          name,
          tenant: String(o.tenant ?? ""),
          labels: (o.label as Record<string, string> | undefined) ?? {},
          profile: o.profile === "persistent" ? vmApi.VmProfile.PERSISTENT : vmApi.VmProfile.EPHEMERAL,
          hypervisor:
            o.hypervisor === "qemu"
              ? vmApi.Hypervisor.QEMU
              : o.hypervisor === "firecracker"
                ? vmApi.Hypervisor.FIRECRACKER
                : vmApi.Hypervisor.UNSPECIFIED,
          acceleration: o.accel === "kvm" ? vmApi.Acceleration.KVM : o.accel === "tcg" ? vmApi.Acceleration.TCG : vmApi.Acceleration.AUTO,
          vcpus: Number(o.vcpus),
          memoryBytes: (o.memory as bigint | undefined) ?? 256n << 20n,
          boot: { source: boot },
          disks: [
            ...((o.volume as string[] | undefined) ?? []).map((d) => ({
              source: { case: "volume" as const, value: d.replace(/:ro$/, "") },
              readOnly: d.endsWith(":ro"),
            })),
            ...((o.disk as string[] | undefined) ?? []).map((d) => ({
              source: { case: "hostPath" as const, value: resolve(d.replace(/:ro$/, "")) },
              readOnly: d.endsWith(":ro"),
            })),
          ],
          nics: ((o.nic as string[] | undefined) ?? []).map((bridge) => ({ bridge })),
          cloudInit: { userData: read(o.userData), metaData: read(o.metaData), networkConfig: read(o.networkConfig) },
          cell: String(o.cell ?? ""),
          guestAgent: o.agent !== false,
          bootWatchdogTimeout: toDuration(Number(o.watchdog)),
          start: o.start === true,
        });
        let shown = created;
        const waited =
          o.start && o.wait ? await waitReady(aether, name, String(o.tenant ?? ""), Number(o.watchdog) + 10_000, json) : undefined;
        if (waited) shown = waited;
        // The id is printed even when the guest failed: the VM exists, and a script may delete it.
        if (json && shown) printOne(o as OutputFlags, VMS, shown);
        else process.stdout.write(`${created?.id}\n`);
        if (o.start && o.wait) readyOrFail(name, waited, json);
      });
    });

  /** A command that targets one VM by id or name. */
  vmMigrateCommand(vm, globals);
  vmLifecycleCommands(vm, globals);
  const simple = (cmd: "start" | "stop" | "pause" | "resume", description: string) =>
    dryRunOption(outputOptions(vm.command(cmd)))
      .description(description)
      .argument("<vm>", "id or name")
      .option("--tenant <tenant>", "tenant to resolve a name in", "")
      .addHelpText("after", `\nExamples:\n  aether vm ${cmd} web\n  aether vm ${cmd} web --dry-run\n  aether vm ${cmd} web -o json`);
  simple("start", "start a created or stopped VM")
    .option("--wait", "wait until the guest is ready; exits 1 if it fails")
    .addOption(durationOption("-t, --timeout <duration>", "with --wait: give up after this long", 300_000))
    .action(async (ref: string, o: { tenant: string; wait?: boolean; timeout: number } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldDo(aether, ref, o.tenant, "start");
        const { vm: started } = await aether.vm.startVm({ vm: ref, tenant: o.tenant });
        const waited = o.wait ? await waitReady(aether, ref, o.tenant, o.timeout, forPrograms(o)) : undefined;
        const v = waited ?? started;
        if (forPrograms(o) && v) printOne(o, VMS, v);
        if (o.wait) readyOrFail(ref, waited, forPrograms(o));
      }),
    );
  simple("stop", "power off gracefully, forced after the timeout")
    .addOption(durationOption("-t, --timeout <duration>", "how long the guest may take to power off", 30_000))
    .option("--force", "power off at once")
    .action(async (ref: string, o: { tenant: string; timeout: number; force?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldDo(aether, ref, o.tenant, "stop");
        const spinner = startProgress(`stopping ${ref}`, forPrograms(o));
        try {
          const { vm: v } = await aether.vm.stopVm({ vm: ref, tenant: o.tenant, timeout: toDuration(o.timeout), force: o.force ?? false });
          spinner?.succeed(`${ref}: ${v?.stateReason}`);
          if (forPrograms(o) && v) printOne(o, VMS, v);
        } catch (err) {
          spinner?.stop();
          throw err;
        }
      }),
    );
  for (const [cmd, description] of [
    ["pause", "freeze the guest's CPUs"],
    ["resume", "unfreeze a paused guest"],
  ] as const) {
    simple(cmd, description).action(async (ref: string, o: { tenant: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) return wouldDo(aether, ref, o.tenant, cmd);
        const { vm: v } =
          cmd === "pause"
            ? await aether.vm.pauseVm({ vm: ref, tenant: o.tenant })
            : await aether.vm.resumeVm({ vm: ref, tenant: o.tenant });
        if (forPrograms(o) && v) printOne(o, VMS, v);
      }),
    );
  }
  const remove = vm
    .command("delete")
    .alias("rm")
    .description("delete VMs (refused while one runs, unless --force): by name, by label selector, or all")
    .argument("[vm...]", "ids or names")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .option("--force", "stop them first if they run")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm delete web\n  aether vm delete web --force\n  aether vm delete -l team=a --dry-run\n  aether vm delete -l team=a --force --yes",
    )
    .action(async (refs: string[], o: { tenant: string; force?: boolean } & DeleteFlags) =>
      withClient(globals(), async (aether) =>
        deleteMany(refs, o, {
          kind: "VM",
          list: (selector) => listVms(aether, o.tenant, serverFilter(selector)),
          labels: (v) => v.labels,
          target: (v) => {
            const no = refusal(v, "delete", o.force === true);
            return { name: v.name, id: v.id, ...(no !== undefined && { refusal: no }) };
          },
          get: (ref) => getVm(aether, ref, o.tenant),
          remove: async (ref) => {
            await aether.vm.deleteVm({ vm: ref, tenant: o.tenant, force: o.force ?? false });
          },
        }),
      ),
    );
  deleteManyOptions(remove, "VM");

  const list = vm
    .command("list")
    .alias("ls")
    .description("VMs on the node, newest first")
    .option("--tenant <tenant>", "only this tenant", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm list\n  aether vm list -l team=a -o wide\n  aether vm list -o name | xargs -n1 aether vm stop\n  aether vm ls --json\n  aether vm list -w",
    )
    .action(async (o: { tenant: string } & SelectorFlags & OutputFlags & WatchFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const read = async () => (await listVms(aether, o.tenant, serverFilter(selector))).filter((v) => selects(selector, v.labels));
        if (o.watch) {
          const changes = nodeEvents(aether, o.tenant, "vm.");
          return watch({ what: `VMs on ${aether.address}`, list: read, view: VMS, output: o, key: (v) => v.id, changes });
        }
        printList(o, VMS, await read());
      }),
    );
  watchOption(selectorOptions(outputOptions(list, "list")));

  outputOptions(vm.command("get"))
    .description("one VM in detail")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm get web\n  aether vm get web -o yaml\n  aether vm get web --json | jq -r .state")
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => printOne(o, VMS, await getVm(aether, ref, o.tenant), vmFields)),
    );

  outputOptions(vm.command("wait"))
    .description("wait until the guest is ready (agent answers); exits 1 if it fails")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addOption(durationOption("-t, --timeout <duration>", "give up after this long", 300_000))
    .addHelpText("after", "\nExamples:\n  aether vm wait web\n  aether vm wait web --timeout 5m --json")
    .action(async (ref: string, o: { tenant: string; timeout: number } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const v = await waitReady(aether, ref, o.tenant, o.timeout, forPrograms(o));
        if (forPrograms(o) && v) printOne(o, VMS, v);
        readyOrFail(ref, v, forPrograms(o));
      }),
    );

  outputOptions(vm.command("exec"))
    .description("run a command in the guest (through its agent); exits with the command's exit code")
    .argument("<vm>", "id or name")
    .argument("<argv...>", "absolute program path in the guest, then its arguments (everything from it on is the program's; -- optional)")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable)", (v: string, p: Record<string, string> = {}) => ({
      ...p,
      [v.split("=")[0] ?? ""]: v.split("=").slice(1).join("="),
    }))
    .addOption(durationOption("-t, --timeout <duration>", "give up after this long", 60_000))
    .addHelpText(
      "after",
      "\nExamples:\n  aether vm exec web /bin/uname -a\n  aether vm exec web --timeout 5m -- /bin/sh -c 'cat /etc/hostname'",
    )
    .action(async (ref: string, argv: string[], o: { tenant: string; env?: Record<string, string>; timeout: number } & OutputFlags) => {
      let code = 0;
      await withClient(globals(), async (aether) => {
        const r = await aether.vm.execVm({ vm: ref, tenant: o.tenant, argv, env: o.env ?? {}, timeout: toDuration(o.timeout) });
        if (forPrograms(o)) printOne(o, { json: vmApi.ExecVmResponseSchema, name: () => ref }, r);
        else {
          process.stdout.write(r.stdout);
          process.stderr.write(r.stderr);
        }
        code = r.exitCode ?? 128 + 9;
      });
      process.exit(code);
    });

  vm.command("logs")
    .description("the serial console's output")
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-f, --follow", "keep streaming until the VM stops")
    .option("--tail <bytes>", "start with the last N bytes", uint64)
    .addHelpText("after", "\nExamples:\n  aether vm logs web\n  aether vm logs web -f --tail 4096")
    .action(async (ref: string, o: { tenant: string; follow?: boolean; tail?: bigint }) =>
      withClient(globals(), async (aether) => {
        for await (const c of aether.vm.streamConsole({ vm: ref, tenant: o.tenant, follow: o.follow ?? false, tailBytes: o.tail }))
          process.stdout.write(c.data);
      }),
    );

  vm.command("console")
    .description(`interactive serial console; Ctrl-] detaches`)
    .argument("<vm>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether vm console web")
    .action(async (ref: string, o: { tenant: string }) =>
      withClient(globals(), async (aether) => {
        const tty = process.stdin.isTTY;
        if (tty) process.stderr.write(`attached to ${ref}; Ctrl-] detaches\r\n`);
        const input = (async function* () {
          yield { vm: ref, tenant: o.tenant, tailBytes: 2048n };
          if (tty) process.stdin.setRawMode(true);
          for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
            const detach = chunk.indexOf(DETACH);
            if (detach >= 0) {
              if (detach > 0) yield { input: chunk.subarray(0, detach) };
              return;
            }
            yield { input: chunk };
          }
        })();
        const abort = new AbortController();
        try {
          const output = aether.vm.attachConsole(
            (async function* () {
              for await (const m of input) yield m;
              abort.abort();
            })(),
            { signal: abort.signal },
          );
          for await (const r of output) process.stdout.write(r.output);
        } catch (err) {
          if (!abort.signal.aborted) throw err;
        } finally {
          if (tty) process.stdin.setRawMode(false);
          process.stdin.pause();
          if (tty) process.stderr.write("\r\ndetached\r\n");
        }
      }),
    );
}

/**
 * vm create --dry-run: the name must be free, and the image, volumes and cell it names must exist;
 * host paths (kernel, disks) are aetherd's to check where it runs.
 */
async function dryRunCreate(aether: AetherClient, name: string, o: Record<string, unknown>): Promise<void> {
  const tenant = String(o.tenant ?? "");
  if (await exists(() => getVm(aether, name, tenant)))
    return sayWould(`create vm ${name}, but aetherd would refuse: a VM named ${name} exists in the tenant`);
  if (typeof o.image === "string") await aether.storage.getImage({ image: o.image, tenant });
  const volumes = [...(typeof o.bootVolume === "string" ? [o.bootVolume] : []), ...((o.volume as string[] | undefined) ?? [])];
  for (const v of volumes) await aether.storage.getVolume({ volume: v.replace(/:ro$/, ""), tenant });
  if (typeof o.cell === "string" && o.cell !== "") await aether.cells.getCell({ cell: o.cell, tenant });
  const boot =
    typeof o.kernel === "string"
      ? `kernel ${o.kernel}`
      : typeof o.image === "string"
        ? `a clone of image ${o.image}`
        : `volume ${String(o.bootVolume)}`;
  sayWould(`create vm ${name} booting ${boot}${o.start === true ? " and start it" : ""}`);
}
