// aetherd's sentences speak the API: fields ("set delete_snapshots"), methods ("list them with
// ListVolumes") and sizes as the byte counts a field holds ("size_bytes 1073741824"), which is right
// for the SDK and grpcurl. The CLI prints them in its own words (issue 23, item 5): a field becomes
// the flag of the command that sets it, a method the command that calls it, and a byte count a size
// a person reads ("--size 1 GiB"). This table is the one place that knows both vocabularies.
import type { Command } from "commander";
import { describeSize } from "@aether/sdk/size";

/** The command that does what an RPC does, for the methods aetherd's sentences point to. */
const COMMANDS: Readonly<Record<string, string>> = {
  ListExecutables: "aether exec list",
  ListCells: "aether cell list",
  ListVms: "aether vm list",
  ListVolumes: "aether storage list",
  ListSnapshots: "aether storage snapshots",
  ListImages: "aether image list",
  ListPools: "aether storage pools",
  ListVmSnapshots: "aether vm snapshot list",
};

const CELL_LIMITS: Readonly<Record<string, string>> = {
  memory_max_bytes: "--memory",
  memory_high_bytes: "--memory-high",
  cpu_weight: "--cpu-weight",
  cpu_max: "--cpu-max",
  cpuset_cpus: "--cpus",
  cpuset_mems: "--mems",
  pids_max: "--pids",
};

/**
 * Per command (its path after "aether"), the flag (or the argument, in words) that sets each field.
 * A field named *_bytes whose flag takes a size (not one named *-bytes) has its value shown as a size.
 */
const FLAGS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  "exec start": { log_limit_bytes: "--log-limit-bytes" },
  "exec stop": { grace_period: "--grace" },
  "exec logs": { tail_lines: "--tail" },
  "cell allocate": CELL_LIMITS,
  "cell update": CELL_LIMITS,
  "cell free": { stop_executables: "--stop" },
  "vm create": {
    memory_bytes: "--memory",
    vcpus: "--vcpus",
    size_bytes: "--disk-size",
    "boot.kernel.kernel_path": "--kernel",
    "boot.kernel.initrd_path": "--initrd",
    "boot.kernel.cmdline": "--cmdline",
    boot_watchdog_timeout: "--watchdog",
    cloud_init: "the cloud-init data (--user-data, --meta-data, --network-config)",
  },
  "vm set": { vcpus: "--cpus" },
  "image import": { "source format RAW": "--format raw" },
  "storage create": { size_bytes: "--size" },
  "storage clone": { size_bytes: "--size" },
  "storage resize": { size_bytes: "the new size" },
  "storage delete": { delete_snapshots: "--with-snapshots" },
  "storage rollback": { destroy_newer_snapshots: "--destroy-newer" },
};

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A byte count as a size, when it is one a person would rather read as a size (1 KiB or more, exactly known). */
function size(digits: string): string {
  const n = Number(digits);
  return Number.isSafeInteger(n) && n >= 1024 ? describeSize(n) : `${digits} bytes`;
}

/** aetherd's sentence in the words of the command `path` ("storage delete"). */
export function inCliWords(sentence: string, path: string): string {
  // Byte counts said as such first: "(1073741824 bytes)" → "(1 GiB)", unless a size stands beside
  // them already ("1024 MiB (1073741823 bytes)").
  let out = sentence.replace(/(?<!iB \()\b(\d+) bytes\b/g, (_m, n: string) => size(n));
  for (const [field, flag] of Object.entries(FLAGS[path] ?? {})) {
    const sized = field.endsWith("_bytes") && !flag.endsWith("-bytes");
    const f = escape(field);
    // "size_bytes 1073741824" → "--size 1 GiB"; "set delete_snapshots" → "add --with-snapshots".
    if (sized) out = out.replace(new RegExp(`\\b${f} (\\d+)\\b`, "g"), (_m, n: string) => `${flag} ${size(n).replace(/ bytes$/, "")}`);
    if (flag.startsWith("-")) out = out.replace(new RegExp(`\\b(?:set|pass) ${f}\\b`, "g"), `add ${flag}`);
    out = out.replace(new RegExp(`\\b${f}\\b`, "g"), flag);
  }
  return out.replace(/\b(List[A-Z][A-Za-z]+)\b/g, (m, method: string) => COMMANDS[method] ?? m);
}

/** The command being run, for inCliWords; set before its action (see speakFor). */
let current = "";

/** Remembers which command runs, so that its errors are printed in its words. */
export function speakFor(program: Command): void {
  program.hook("preAction", (_program, action) => {
    const names: string[] = [];
    for (let c: Command | null = action; c && c !== program; c = c.parent) names.unshift(c.name());
    current = names.join(" ");
  });
}

/** inCliWords for the command being run. */
export const cliWords = (sentence: string): string => inCliWords(sentence, current);
