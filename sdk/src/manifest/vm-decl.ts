// VMs in manifests: how a manifest declares one (`vms: [...]`), its validated shape, and the
// CreateVmRequest it stands for, which node apply sends to aetherd and cluster apply hands to the
// aggregator inside a workload spec. Kept apart from define.ts, which only lists it in the manifest.
import { z } from "zod";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Acceleration,
  CreateVmRequestSchema,
  Hypervisor,
  VmProfile,
  type DiskSchema as DiskMessageSchema,
} from "../gen/aether/vm/v1/vm_pb.js";
import { dnsLabel, SizeSchema } from "./schema-parts.js";

const absolutePath = z.string().startsWith("/", "must be an absolute path");

const DiskSchema = z.union(
  [
    dnsLabel.transform((volume) => ({ volume, readOnly: false, serial: "" })),
    z
      .object({
        /** A volume (id or name) in the manifest's tenant: one the manifest declares, or one that exists. */
        volume: z.string().min(1).optional(),
        /** A host file or block device, inside aetherd's allowed roots (node manifests). */
        hostPath: absolutePath.optional(),
        readOnly: z.boolean().default(false),
        serial: z
          .string()
          .regex(/^[A-Za-z0-9-]{0,20}$/, "must be at most 20 letters, digits and '-'")
          .default(""),
      })
      .strict()
      .refine((d) => (d.volume === undefined) !== (d.hostPath === undefined), "give exactly one of volume or hostPath"),
  ],
  { error: "must be a volume name, or { volume } or { hostPath } with optional readOnly and serial" },
);

const bridgeName = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, "must be a network device name (a host bridge)");

const NicSchema = z.union(
  [
    bridgeName.transform((bridge) => ({ bridge, mac: "" })),
    z
      .object({
        bridge: bridgeName,
        mac: z
          .string()
          .regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, "must be a MAC address like 52:54:00:12:34:56")
          .transform((m) => m.toLowerCase())
          .default(""),
      })
      .strict(),
  ],
  { error: "must be a bridge name, or { bridge, mac }" },
);

/** What a VM declares, its name aside (a deployment's template declares a VM without one). */
const VM_FIELDS = {
  image: z.string().min(1).optional(),
  bootSize: SizeSchema.optional(),
  bootVolume: z.string().min(1).optional(),
  kernel: absolutePath.optional(),
  initrd: absolutePath.optional(),
  cmdline: z.string().max(2048).optional(),
  cpus: z.number().int().min(1, "must be at least 1").max(1024).default(1),
  memory: SizeSchema.default(256 * 2 ** 20).refine((b) => b >= 64 * 2 ** 20, "must be at least 64M (the guest minimum)"),
  disks: z.array(DiskSchema).default([]),
  nics: z.array(NicSchema).default([]),
  userData: z.string().default(""),
  metaData: z.string().default(""),
  networkConfig: z.string().default(""),
  labels: z.record(z.string(), z.string()).default({}),
  profile: z.enum(["ephemeral", "persistent"], { error: 'must be "ephemeral" or "persistent"' }).default("ephemeral"),
  hypervisor: z.enum(["qemu", "firecracker"], { error: 'must be "qemu" or "firecracker"' }).optional(),
  acceleration: z.enum(["auto", "kvm", "tcg"], { error: 'must be "auto", "kvm" or "tcg"' }).default("auto"),
  guestAgent: z.boolean().default(true),
  cell: z.string().default(""),
  requirements: z
    .object({
      nodeSelector: z.record(z.string(), z.string()).default({}),
    })
    .strict()
    .optional(),
};

const VmFields = z.object(VM_FIELDS).strict();
type VmFieldsOutput = z.output<typeof VmFields>;

/** The checks across a VM's fields: one boot source, and what goes with which. */
function checkVm(v: VmFieldsOutput, ctx: z.RefinementCtx): void {
  const boots = (["image", "bootVolume", "kernel"] as const).filter((k) => v[k] !== undefined);
  if (boots.length !== 1)
    ctx.addIssue({
      code: "custom",
      path: boots.length === 0 ? ["image"] : [boots[1] as string],
      message:
        boots.length === 0
          ? "a VM boots something: give image (a clone of an image), bootVolume (a volume) or kernel (with initrd and cmdline)"
          : `give one of image, bootVolume or kernel, not ${boots.join(" and ")}`,
    });
  if (v.bootSize !== undefined && v.image === undefined)
    ctx.addIssue({ code: "custom", path: ["bootSize"], message: "sizes the clone of image: give image, or drop bootSize" });
  for (const k of ["initrd", "cmdline"] as const)
    if (v[k] !== undefined && v.kernel === undefined)
      ctx.addIssue({ code: "custom", path: [k], message: "goes with kernel (direct kernel boot): give kernel, or drop it" });
}

/** A VM's checked fields in their validated shape. */
function toManifestVm(name: string, { image, bootSize, bootVolume, kernel, initrd, cmdline, memory, ...rest }: VmFieldsOutput): ManifestVm {
  return {
    name,
    ...rest,
    memoryBytes: memory,
    boot:
      image !== undefined
        ? { kind: "image", image, sizeBytes: bootSize ?? 0 }
        : bootVolume !== undefined
          ? { kind: "volume", volume: bootVolume }
          : { kind: "kernel", kernel: kernel ?? "", initrd: initrd ?? "", cmdline: cmdline ?? "" },
  };
}

export const VmDeclSchema = VmFields.extend({ name: dnsLabel })
  .superRefine(checkVm)
  .transform(({ name, ...fields }) => toManifestVm(name, fields));

/** A VM as a deployment's template declares it: no name (each instance gets its own). */
export const VmTemplateSchema = VmFields.superRefine(checkVm).transform((fields) => toManifestVm("", fields));

/**
 * One VM a manifest declares. It boots exactly one of: `image` (aetherd makes a thin clone of the
 * image, `<name>-boot`, that goes with the VM), `bootVolume` (an existing volume, e.g. one the
 * manifest declares) or `kernel` (direct kernel boot, with `initrd` and `cmdline`).
 *
 * What a running VM can change in place is its labels (and, stopped, being started again); any other
 * field changed makes plan say `replace`: apply deletes the VM (and its boot clone) and creates it anew.
 *
 * @example
 * ```ts
 * vms: [
 *   { name: "web", image: "debian-12", bootSize: "10G", cpus: 2, memory: "1G", nics: ["br0"],
 *     disks: ["web-data"], userData: "#cloud-config\npackages: [nginx]\n", labels: { tier: "front" } },
 * ]
 * ```
 */
export interface VmDecl {
  /** Unique name within the manifest's tenant (a DNS label). */
  name: string;
  /** Id or name of an image to boot a thin clone of (through the firmware; QEMU). */
  image?: string;
  /** With `image`: grow the clone to this size ("20G"). Default: the image's size. */
  bootSize?: number | string;
  /** Id or name of an existing volume to boot (through the firmware; QEMU). */
  bootVolume?: string;
  /** Absolute host path of a kernel to boot directly. */
  kernel?: string;
  /** With `kernel`: absolute host path of the initramfs. */
  initrd?: string;
  /** With `kernel`: the kernel command line. Default: aetherd's. */
  cmdline?: string;
  /** Virtual CPUs. Default 1. */
  cpus?: number;
  /** Guest memory in bytes, or "512M", "2G". Default "256M". */
  memory?: number | string;
  /** More disks: a volume's name, or `{ volume }` / `{ hostPath }` with `readOnly` and `serial`. */
  disks?: Array<string | { volume?: string; hostPath?: string; readOnly?: boolean; serial?: string }>;
  /** Network interfaces: a host bridge's name, or `{ bridge, mac }`. */
  nics?: Array<string | { bridge: string; mac?: string }>;
  /** cloud-init user-data ("#cloud-config ..." or a "#!" script run at first boot). */
  userData?: string;
  /** cloud-init meta-data. Default: instance-id and local-hostname from the VM. */
  metaData?: string;
  /** cloud-init network-config. */
  networkConfig?: string;
  /** Labels to attach (the manifest adds its own `aether.io/manifest`); change in place. */
  labels?: Record<string, string>;
  /** "ephemeral" (a microVM, the default) or "persistent" (a full machine). */
  profile?: "ephemeral" | "persistent";
  /** "qemu" or "firecracker". Default: QEMU with `guestAgent` (which needs it), else aetherd's choice for the profile and boot. */
  hypervisor?: "qemu" | "firecracker";
  /** "auto" (the default), "kvm" or "tcg". */
  acceleration?: "auto" | "kvm" | "tcg";
  /** Whether the guest runs qemu-guest-agent (needed for `aether vm exec`). Default true. */
  guestAgent?: boolean;
  /** Cell to run the VM's process in. Node manifests only. */
  cell?: string;
  /** Cluster manifests: node labels the VM's node must have. */
  requirements?: { nodeSelector?: Record<string, string> };
}

/** What a validated VM boots. */
export type ManifestVmBoot =
  | { kind: "image"; image: string; sizeBytes: number }
  | { kind: "volume"; volume: string }
  | { kind: "kernel"; kernel: string; initrd: string; cmdline: string };

/** A VM of a validated manifest, sizes in bytes and defaults filled in. */
export interface ManifestVm {
  name: string;
  boot: ManifestVmBoot;
  cpus: number;
  memoryBytes: number;
  disks: Array<{ volume?: string; hostPath?: string; readOnly: boolean; serial: string }>;
  nics: Array<{ bridge: string; mac: string }>;
  userData: string;
  metaData: string;
  networkConfig: string;
  labels: Record<string, string>;
  profile: "ephemeral" | "persistent";
  hypervisor?: "qemu" | "firecracker";
  acceleration: "auto" | "kvm" | "tcg";
  guestAgent: boolean;
  cell: string;
  requirements?: { nodeSelector: Record<string, string> };
}

const ACCELERATION = { auto: Acceleration.AUTO, kvm: Acceleration.KVM, tcg: Acceleration.TCG } as const;
const HYPERVISOR = { qemu: Hypervisor.QEMU, firecracker: Hypervisor.FIRECRACKER } as const;

/** The disks of a CreateVmRequest for a declared VM. */
export function vmDisks(vm: ManifestVm): Array<MessageInitShape<typeof DiskMessageSchema>> {
  return vm.disks.map((d) => ({
    source: d.volume !== undefined ? { case: "volume" as const, value: d.volume } : { case: "hostPath" as const, value: d.hostPath ?? "" },
    readOnly: d.readOnly,
    serial: d.serial,
  }));
}

/**
 * The CreateVmRequest that creates and starts a declared VM in `tenant` with `labels` (the
 * manifest's label included).
 */
export function createVmRequest(
  vm: ManifestVm,
  tenant: string,
  labels: Record<string, string>,
): MessageInitShape<typeof CreateVmRequestSchema> {
  const b = vm.boot;
  return {
    name: vm.name,
    tenant,
    labels,
    profile: vm.profile === "persistent" ? VmProfile.PERSISTENT : VmProfile.EPHEMERAL,
    // The guest agent needs QEMU's virtio-serial port: a VM that wants it (the default) gets QEMU
    // rather than aetherd's pick for the profile (Firecracker for an ephemeral VM where installed).
    hypervisor: vm.hypervisor !== undefined ? HYPERVISOR[vm.hypervisor] : vm.guestAgent ? Hypervisor.QEMU : Hypervisor.UNSPECIFIED,
    acceleration: ACCELERATION[vm.acceleration],
    vcpus: vm.cpus,
    memoryBytes: BigInt(vm.memoryBytes),
    boot: {
      source:
        b.kind === "kernel"
          ? { case: "kernel", value: { kernelPath: b.kernel, initrdPath: b.initrd, cmdline: b.cmdline } }
          : b.kind === "image"
            ? { case: "disk", value: { image: b.image, sizeBytes: BigInt(b.sizeBytes) } }
            : { case: "disk", value: { volume: b.volume } },
    },
    disks: vmDisks(vm),
    nics: vm.nics.map((n) => ({ bridge: n.bridge, mac: n.mac })),
    cloudInit:
      vm.userData === "" && vm.metaData === "" && vm.networkConfig === ""
        ? undefined
        : { userData: vm.userData, metaData: vm.metaData, networkConfig: vm.networkConfig },
    cell: vm.cell,
    guestAgent: vm.guestAgent,
    start: true,
  };
}
