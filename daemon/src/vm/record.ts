// What aetherd keeps about a VM: the validated spec (written when the VM is created) and its runtime
// facts (which QEMU process, which TAP devices), in <state>/vms/<id>/vm.json, written atomically.
import { z } from "zod";

/** A disk: a host path, or a storage volume (volumeId) whose path is looked up at every start. */
export const DiskSpecSchema = z.object({
  path: z.string(),
  readOnly: z.boolean(),
  format: z.enum(["raw", "qcow2"]),
  serial: z.string(),
  volumeId: z.string().default(""),
  /** The PCIe root port ("hp0"...) a disk hot-plugged into a running VM sits on, from then on (see qemu-args.ts). */
  port: z.string().optional(),
});
export const NicSpecSchema = z.object({ bridge: z.string(), mac: z.string(), tap: z.string(), port: z.string().optional() });

export const VmSpecSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  profile: z.enum(["ephemeral", "persistent"]),
  hypervisor: z.enum(["qemu", "firecracker"]),
  acceleration: z.enum(["auto", "kvm", "tcg"]),
  vcpus: z.number().int().positive(),
  memoryBytes: z.number().int().positive(),
  /** "kernel": direct kernel boot; "disk": the firmware boots disks[0], a volume. */
  boot: z.enum(["kernel", "disk"]).default("kernel"),
  /** The image a disk-booted VM's boot volume was cloned from ("" when the user gave a volume). */
  bootImageId: z.string().default(""),
  /** Whether aetherd made the boot volume for this VM (and deletes it with the VM). */
  ownsBootVolume: z.boolean().default(false),
  kernelPath: z.string(),
  initrdPath: z.string(),
  cmdline: z.string(),
  disks: z.array(DiskSpecSchema),
  nics: z.array(NicSpecSchema),
  cloudInit: z.object({ userData: z.string(), metaData: z.string(), networkConfig: z.string() }).optional(),
  cell: z.string(),
  /**
   * Made by a call held to its tenant (a tenant's certificate, or the aggregator deploying for one):
   * every node it runs on holds it to its own [tenancy], a live migration's target too.
   */
  confined: z.boolean().optional(),
  guestAgent: z.boolean(),
  bootWatchdogMs: z.number().int().positive(),
  requestId: z.string(),
  createTimeMs: z.number(),
  /** Started when aetherd starts after a host reboot (see autostart.ts). */
  autostart: z.boolean().optional(),
});
export type VmSpec = z.infer<typeof VmSpecSchema>;

/**
 * Write-ahead intent: saved before a create, start, delete or live migration touches the host, cleared when it is
 * done. aetherd finds it at start after a crash and finishes or undoes the operation: what it names
 * (and whatever carries the VM's id: its supervisor records, seed, TAPs, cell) is what to clean.
 */
/**
 * A live migration's part of an intent. Out (the source): "copying" while the guest runs here (a
 * crash cancels it and the guest stays), "switching" once the source's QEMU has handed its state over
 * (the target is asked which copy lives), "confirming" once the target resumed the guest and the
 * source waits, its copy paused, for the target to say the guest is healthy there (the same question
 * settles a crash), "committed" once the target runs the guest for good (the source's copy is
 * removed). In (the target): "preparing", "prepared" and "resumed" (the guest runs here unconfirmed;
 * a crash removes the incoming copy and the source resumes its own), "committed" once the guest is
 * this node's.
 */
export const MigrationIntentSchema = z.object({
  id: z.string(),
  /** Out: the target's address; in: the source node. */
  peer: z.string(),
  step: z.enum(["copying", "switching", "confirming", "committed", "preparing", "prepared", "resumed"]),
  /** When the target gives up waiting for the source and removes its incoming copy (ms since the epoch). */
  deadlineMs: z.number(),
});
export type MigrationIntent = z.infer<typeof MigrationIntentSchema>;

export const VmIntentSchema = z.object({
  op: z.enum(["create", "start", "delete", "migrate-out", "migrate-in"]),
  /** TAP devices the operation may create. */
  taps: z.array(z.string()),
  /** The cloud-init seed it may build ("" for none). */
  seedPath: z.string(),
  /** The VM's own cell it may allocate ("" for none). */
  cellName: z.string(),
  /** Whether a create also starts the VM (a failed start then undoes the create). */
  start: z.boolean(),
  /** For migrate-out and migrate-in: which migration, and how far it got. */
  migration: MigrationIntentSchema.optional(),
});
export type VmIntent = z.infer<typeof VmIntentSchema>;

export const VmRuntimeSchema = z.object({
  state: z.enum(["created", "starting", "running", "paused", "stopping", "stopped", "failed"]),
  reason: z.string(),
  /** The QEMU process as the VM process supervisor knows it. */
  processId: z.string(),
  /** The acceleration the running QEMU really uses. */
  effectiveAcceleration: z.enum(["", "kvm", "tcg"]),
  /** A cell aetherd allocated for this VM's limits; "" when it runs in the user's cell or none. */
  ownCellId: z.string(),
  seedPath: z.string(),
  startTimeMs: z.number(),
  stopTimeMs: z.number(),
  agentReady: z.boolean(),
  /** The live migration that brought the VM to this node ("" when it was created here), so a source that lost track learns it finished. */
  migratedIn: z.string().default(""),
  /** Settings changed during the run that began at pendingForStartMs; they apply at the next start. */
  pendingChanges: z.array(z.string()).default([]),
  pendingForStartMs: z.number().default(0),
  intent: VmIntentSchema.optional(),
});
export type VmRuntime = z.infer<typeof VmRuntimeSchema>;

export const VmRecordSchema = z.object({ spec: VmSpecSchema, runtime: VmRuntimeSchema });
export type VmRecord = z.infer<typeof VmRecordSchema>;

export function freshRuntime(): VmRuntime {
  return {
    state: "created",
    reason: "",
    processId: "",
    effectiveAcceleration: "",
    ownCellId: "",
    seedPath: "",
    startTimeMs: 0,
    stopTimeMs: 0,
    agentReady: false,
    migratedIn: "",
    pendingChanges: [],
    pendingForStartMs: 0,
  };
}
