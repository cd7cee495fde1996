// The VMs of this host: their records, their lifecycle (CREATED → STARTING → RUNNING → STOPPING →
// STOPPED, PAUSED, FAILED), the boot watchdog, the guest agent, and what each start sets up and
// each stop tears down (seed, TAP devices, the VM's own cell). Handlers call it with checked values.
// Why it is this long (~1,250 lines): every step writes its intent into the one VM record before it
// acts, and recovery at start reads those same intents, so lifecycle and recovery share the record,
// the per-VM save queue and the teardown; moving recovery into a room of its own is planned with
// the architecture work (issue 13). Live migration is a room of its own (daemon/src/migration): here
// are only the hooks it is given (migrationHooks) and the incoming start.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { DomainError, resolveInTenant, rpcCode, writeJsonAtomic } from "@aether/server";
import type { CellRegistry } from "../cells/registry.js";
import { vmsText, type StorageRegistry, type VolumeUser } from "../storage/registry.js";
import type { ImageRecord, VolumeRecord } from "../storage/records.js";
import type { EventBus } from "../observe/event-bus.js";
import type { Placement, Supervisor, TrackedExecutable } from "../runtime/supervisor.js";
import { signalName } from "../runtime/supervisor.js";
import { probeKvm, type KvmProbeResult } from "./accel.js";
import { GuestAgent } from "./qga.js";
import type { Hypervisor, VmControl, VmFiles } from "./hypervisor.js";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import type { MigrationHooks } from "./migration-hooks.js";
import { ownCellName, removeStartLeftovers, removeVmProcesses, VM_LABEL, vmProcesses } from "./leftovers.js";
import { createTap, deleteTap, isBridge, linkExists } from "./network.js";
import { freshRuntime, VmRecordSchema, type VmIntent, type VmRecord, type VmRuntime, type VmSpec } from "./record.js";
import { buildSeed, removeSeed, seedDir } from "./seed.js";

export type VmState = VmRuntime["state"];

const PANIC_CHECK_MS = 1000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function panicReason(panicLine: string): string {
  return `the guest kernel panicked (${panicLine}); give the VM more memory or check its kernel`;
}

async function consoleSize(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}

interface LiveVm {
  record: VmRecord;
  control?: VmControl;
  agent?: GuestAgent;
  watchdog?: NodeJS.Timeout;
  /** Resolves when the current run of the VM has ended (STOPPED or FAILED). */
  ended: Promise<void>;
  markEnded: () => void;
  /** Set while a start or stop is in progress, so two cannot overlap. */
  busy?: string;
  /** Where this run's output starts in the console log (it is appended across runs). */
  consoleFrom?: number;
  /** Why this run failed, set before its QEMU is killed: the VM is FAILED only once QEMU has ended. */
  failure?: string;
  /** The next attempt to reach the QMP socket of a QEMU that outlived aetherd. */
  reconnect?: NodeJS.Timeout;
  /** Set while the VM takes part in a live migration (stops are refused then). */
  migration?: string;
}

export interface VmManagerOptions {
  stateDir: string;
  /** A folder with short paths for the VMs' sockets (unix socket paths are limited to 108 bytes). */
  runtimeDir: string;
  kvmProbeTimeoutMs: number;
}

const AGENT_POLL_MS = 250;
/** How long a guest resumed by a live migration's end is given for its agent to answer before it is RUNNING anyway. */
const RESUMED_AGENT_WAIT_MS = 10_000;
/** How often aetherd tries again to reach the QMP socket of a QEMU it re-adopted but cannot talk to. */
const RECONNECT_MS = 5000;
const ACTIVE: readonly VmState[] = ["starting", "running", "paused", "stopping"];
/** What a VM is busy with while the teardown after its QEMU ended runs (starts and deletes wait for it). */
const ENDING = "cleaning up after its QEMU ended";
/** What QEMU itself needs beyond the guest's memory when a VM gets a cell of its own. */
const QEMU_OVERHEAD_BYTES = 384 * 1024 * 1024;

export class VmManager {
  private readonly vms = new Map<string, LiveVm>();
  /** Emits "change" with the VM id whenever a VM's state changes. */
  readonly changes = new EventEmitter();
  private kvmProbe: Promise<KvmProbeResult> | undefined;

  constructor(
    private readonly options: VmManagerOptions,
    private readonly processes: Supervisor,
    private readonly hypervisors: { qemu?: Hypervisor; firecracker?: Hypervisor },
    private readonly cells: CellRegistry,
    private readonly storage: StorageRegistry,
    private readonly events: EventBus,
    private readonly log: Logger,
  ) {
    this.changes.setMaxListeners(0);
    storage.usersOf = (volumeId) => this.volumeUsers(volumeId);
  }

  /**
   * The VMs a volume is attached to, and whether each runs (storage refuses some changes then): a VM
   * runs while its QEMU lives, whatever its state says, since QEMU has the volume open.
   */
  private volumeUsers(volumeId: string): VolumeUser[] {
    return this.list()
      .filter((vm) => vm.spec.disks.some((d) => d.volumeId === volumeId))
      .map((vm) => ({
        vmId: vm.spec.id,
        vmName: vm.spec.name,
        running: ACTIVE.includes(vm.runtime.state) || this.runningProcess(vm) !== undefined,
      }));
  }

  /** The VM's hypervisor process while it lives (the supervisor checks its pid and start time). */
  private runningProcess(vm: VmRecord): TrackedExecutable | undefined {
    const exe = this.processes.get(vm.runtime.processId);
    return exe?.status === "running" ? exe : undefined;
  }

  /** TAP devices of VMs other than this one (a leftover cleanup never takes another VM's). */
  private tapsOfOthers(vmId: string): Set<string> {
    return new Set(
      this.list()
        .filter((v) => v.spec.id !== vmId)
        .flatMap((v) => v.spec.nics.map((n) => n.tap)),
    );
  }

  /** A volume a new VM may attach: READY, its data present, and not attached to another VM. */
  attachableVolume(ref: string, tenant: string): VolumeRecord {
    const volume = this.storage.resolveVolume(ref, tenant);
    const health = this.storage.health(volume);
    if (health.state !== "ready")
      throw new DomainError(
        "failed_precondition",
        `volume ${volume.name} is ${health.state}${health.reason ? `: ${health.reason}` : ""}; attach a ready volume.`,
      );
    const users = this.volumeUsers(volume.id);
    if (users.length > 0)
      throw new DomainError(
        "failed_precondition",
        `volume ${volume.name} is already attached to ${vmsText(users)}; a disk is attached to one VM at a time (clone it for another).`,
      );
    return volume;
  }

  /** An image a new VM may boot from (through a clone of its own). */
  bootableImage(ref: string, tenant: string): ImageRecord {
    const image = this.storage.resolveImage(ref, tenant);
    if (image.state !== "ready")
      throw new DomainError(
        "failed_precondition",
        `image ${image.name} is ${image.state}, not ready; wait for its import (WatchImage) or import it again.`,
      );
    return image;
  }

  /** Where a disk is on the host now: a volume's path is looked up, since a pool may move it. */
  diskPath(disk: VmSpec["disks"][number]): string {
    if (disk.volumeId === "") return disk.path;
    return this.storage.volumeById(disk.volumeId)?.hostPath ?? "";
  }

  /** The disks with their current paths; a volume that is gone or broken stops the start. */
  private resolveDisks(spec: VmSpec): VmSpec {
    const disks = spec.disks.map((d) => {
      if (d.volumeId === "") return d;
      const volume = this.storage.volumeById(d.volumeId);
      if (!volume) throw new DomainError("failed_precondition", `VM ${spec.name} cannot start: its volume ${d.volumeId} no longer exists.`);
      const health = this.storage.health(volume);
      if (health.state !== "ready")
        throw new DomainError(
          "failed_precondition",
          `VM ${spec.name} cannot start: volume ${volume.name} is ${health.state}${health.reason ? `: ${health.reason}` : ""}.`,
        );
      return { ...d, path: volume.hostPath };
    });
    return { ...spec, disks };
  }

  private files(id: string): VmFiles {
    const dir = join(this.options.stateDir, "vms", id);
    const runtimeDir = join(this.options.runtimeDir, `vm-${id.slice(0, 8)}`);
    return {
      dir,
      runtimeDir,
      qmp: join(runtimeDir, "qmp.sock"),
      agent: join(runtimeDir, "agent.sock"),
      api: join(runtimeDir, "api.sock"),
      console: join(runtimeDir, "console.sock"),
      consoleLog: join(dir, "console.log"),
      pidFile: join(dir, "qemu.pid"),
      seed: join(seedDir(this.options.stateDir), `${id}.iso`),
    };
  }

  filesOf(vm: VmRecord): VmFiles {
    return this.files(vm.spec.id);
  }

  list(): VmRecord[] {
    return [...this.vms.values()].map((v) => v.record);
  }

  resolve(ref: string, tenant: string): VmRecord {
    return resolveInTenant(this.vms, ref, tenant, (v) => v.record.spec, { noun: "VM", hint: "list them with ListVms." }).record;
  }

  private live(vm: VmRecord): LiveVm {
    const live = this.vms.get(vm.spec.id);
    if (!live) throw new DomainError("not_found", `VM ${vm.spec.name} no longer exists.`);
    return live;
  }

  /** Resolves when the VM's current run has ended. */
  ended(vm: VmRecord): Promise<void> {
    return this.live(vm).ended;
  }

  /** "<tenant>/<name>" of VMs being created, and creations under way by "<tenant>/<request_id>". */
  private readonly creatingNames = new Set<string>();
  private readonly creatingByRequest = new Map<string, Promise<VmRecord>>();

  hypervisorFor(profile: VmSpec["profile"], requested: "" | "qemu" | "firecracker"): "qemu" | "firecracker" {
    if (requested !== "") return requested;
    return profile === "ephemeral" && this.hypervisors.firecracker ? "firecracker" : "qemu";
  }

  /**
   * Creates a VM. Its name (and request_id) are taken synchronously, before the first await, so that
   * identical calls at once make one VM: a retry with the same request_id gets the first call's VM,
   * another call with the same name ALREADY_EXISTS. With `start`, the create is all or nothing: a
   * start that fails removes the VM again (record, boot clone, seed, cell) and says why.
   */
  async create(
    spec: Omit<VmSpec, "id" | "createTimeMs">,
    bootImage?: { imageId: string; sizeBytes: number },
    start = false,
    makeDisks?: (vmId: string) => Promise<VmSpec["disks"]>,
  ): Promise<VmRecord> {
    const requestKey = spec.requestId === "" ? "" : `${spec.tenant}/${spec.requestId}`;
    const pending = requestKey === "" ? undefined : this.creatingByRequest.get(requestKey);
    if (pending) return pending;
    const earlier =
      spec.requestId !== "" ? this.list().find((v) => v.spec.requestId === spec.requestId && v.spec.tenant === spec.tenant) : undefined;
    if (earlier) return earlier;
    const nameKey = `${spec.tenant}/${spec.name}`;
    if (this.creatingNames.has(nameKey) || this.list().some((v) => v.spec.name === spec.name && v.spec.tenant === spec.tenant)) {
      throw new DomainError(
        "already_exists",
        `a VM named ${spec.name} already exists in tenant ${spec.tenant}; delete it first or pick another name.`,
      );
    }
    this.creatingNames.add(nameKey);
    const creation = this.createReserved(spec, bootImage, start, makeDisks);
    if (requestKey !== "") this.creatingByRequest.set(requestKey, creation);
    try {
      return await creation;
    } finally {
      this.creatingNames.delete(nameKey);
      if (requestKey !== "") this.creatingByRequest.delete(requestKey);
    }
  }

  private async createReserved(
    spec: Omit<VmSpec, "id" | "createTimeMs">,
    bootImage: { imageId: string; sizeBytes: number } | undefined,
    start: boolean,
    makeDisks?: (vmId: string) => Promise<VmSpec["disks"]>,
  ): Promise<VmRecord> {
    if (!this.hypervisors[spec.hypervisor]) {
      throw new DomainError(
        "failed_precondition",
        spec.hypervisor === "qemu"
          ? "QEMU is not installed on this host (qemu-system-x86_64 not found): apt-get install qemu-system-x86."
          : "Firecracker is not installed on this host (no firecracker binary on PATH); use hypervisor QEMU.",
      );
    }
    const id = randomUUID();
    const full: VmSpec = {
      ...spec,
      id,
      createTimeMs: Date.now(),
      nics: spec.nics.map((n, i) => ({ ...n, tap: n.tap || `ae${id.replace(/-/g, "").slice(0, 8)}n${i}` })),
    };
    // Write-ahead: the record (with the intent "create") exists before anything is made for the VM,
    // so a crash at any point leaves a record the next aetherd finds and undoes.
    const record: VmRecord = {
      spec: full,
      runtime: { ...freshRuntime(), intent: { op: "create", taps: [], seedPath: "", cellName: "", start } },
    };
    await mkdir(this.files(id).dir, { recursive: true, mode: 0o700 });
    try {
      await this.save(record);
      if (bootImage) {
        // The VM's own thin clone of the image, owned by it: deleted with the VM.
        const volume = await this.storage.createVolume({
          name: `${spec.name}-boot`.slice(0, 63).replace(/-+$/, ""),
          tenant: spec.tenant,
          labels: { [VM_LABEL]: id },
          pool: "",
          format: undefined,
          source: { kind: "image", image: bootImage.imageId, sizeBytes: bootImage.sizeBytes },
          requestId: "",
          ownerVm: id,
        });
        full.disks = [
          {
            path: volume.hostPath,
            readOnly: false,
            format: volume.format === "qcow2" ? "qcow2" : "raw",
            serial: "boot",
            volumeId: volume.id,
          },
          ...full.disks,
        ];
        await this.save(record);
      }
      if (makeDisks) {
        // A clone's volumes, owned by the new VM: a crash before the create is done removes them with it.
        full.disks = await makeDisks(id);
        await this.save(record);
      }
    } catch (err) {
      await this.purge(record);
      throw err;
    }
    const live = this.track(record);
    this.events.publish({
      kind: "vm.created",
      tenant: full.tenant,
      resourceId: id,
      resourceName: full.name,
      message: `VM ${full.name} created`,
      attributes: {},
    });
    // Busy until the intent is cleared: a delete meanwhile would race the last write of the record.
    live.busy = "being created";
    try {
      if (start) {
        try {
          await this.launch(live);
        } catch (err) {
          await this.purge(record);
          this.vms.delete(id);
          const why = (err as Error).message;
          this.events.publish({
            kind: "vm.deleted",
            tenant: full.tenant,
            resourceId: id,
            resourceName: full.name,
            message: `VM ${full.name} was removed again: its start failed: ${why}`,
            attributes: {},
          });
          throw new DomainError(
            err instanceof DomainError ? err.kind : "failed_precondition",
            `VM ${full.name} was not created, because it could not start: ${why}`,
          );
        }
      }
      record.runtime.intent = undefined;
      await this.save(record);
    } finally {
      if (live.busy === "being created") live.busy = undefined;
    }
    return record;
  }

  /**
   * Removes a VM from the host: whatever its starts set up (found by its id, recorded or not), the
   * volumes aetherd made for it, then its record, last, so a crash half-way is finished by the next
   * aetherd (the record still holds the intent).
   */
  private async purge(record: VmRecord): Promise<void> {
    const { id, tenant } = record.spec;
    await removeStartLeftovers(this.processes, this.cells, record, this.log, {
      tapsOfOthers: this.tapsOfOthers(id),
      seedDir: seedDir(this.options.stateDir),
    });
    for (const volume of this.storage.listVolumes().filter((v) => v.ownerVm === id)) {
      await this.storage.deleteVolume(volume.id, tenant, true, "", { asOwner: id }).catch((err: Error) => {
        this.log.warn(
          { vm: id, volume: volume.id, err: err.message },
          "the VM's boot volume could not be deleted with it; delete it with DeleteVolume",
        );
      });
    }
    const files = this.files(id);
    await rm(files.runtimeDir, { recursive: true, force: true });
    await rm(files.dir, { recursive: true, force: true });
  }

  private track(record: VmRecord): LiveVm {
    let markEnded: () => void = () => {};
    const ended = new Promise<void>((r) => (markEnded = r));
    const live: LiveVm = { record, ended, markEnded };
    this.vms.set(record.spec.id, live);
    return live;
  }

  /** The last write of each VM's record: writes of one record go one after another, never at once. */
  private readonly saving = new Map<string, Promise<void>>();

  private async save(record: VmRecord): Promise<void> {
    const id = record.spec.id;
    const write = (this.saving.get(id) ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => writeJsonAtomic(join(this.files(id).dir, "vm.json"), record));
    this.saving.set(id, write);
    try {
      await write;
    } finally {
      if (this.saving.get(id) === write) this.saving.delete(id);
    }
  }

  private async setState(live: LiveVm, state: VmState, reason = ""): Promise<void> {
    const r = live.record;
    const previous = r.runtime.state;
    r.runtime.state = state;
    r.runtime.reason = reason;
    if (state === "stopped" || state === "failed") r.runtime.stopTimeMs = Date.now();
    await this.save(r).catch((err) => this.log.error({ vm: r.spec.id, err }, "could not record the VM's state"));
    this.changes.emit("change", r.spec.id);
    if (previous !== state) {
      this.events.publish({
        kind: "vm.state_changed",
        tenant: r.spec.tenant,
        resourceId: r.spec.id,
        resourceName: r.spec.name,
        message: `VM ${r.spec.name} is ${state}${reason ? `: ${reason}` : ""}`,
        attributes: { from: previous, to: state },
      });
    }
  }

  /** Starts a VM: returns once QEMU runs (STARTING); readiness and the watchdog continue in the background. */
  async start(vm: VmRecord): Promise<VmRecord> {
    const live = this.live(vm);
    const { spec } = vm;
    if (live.busy === ENDING) await live.ended;
    if (live.busy) throw new DomainError("failed_precondition", `VM ${spec.name} is busy (${live.busy}); wait for it to finish.`);
    if (!["created", "stopped", "failed"].includes(vm.runtime.state)) {
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} is ${vm.runtime.state}; only a created, stopped or failed VM can be started.`,
      );
    }
    const still = this.runningProcess(vm);
    if (still)
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} is ${vm.runtime.state} but its QEMU process (pid ${still.started?.pid ?? "?"}) still runs; stop the VM (StopVm) to end it, then start it.`,
      );
    live.busy = "starting";
    try {
      return await this.launch(live);
    } finally {
      live.busy = undefined;
    }
  }

  /** What a start is about to set up, recorded before it does (see VmIntentSchema). */
  private startIntent(vm: VmRecord): VmIntent {
    const { spec } = vm;
    const creating = vm.runtime.intent?.op === "create";
    return {
      op: creating ? "create" : "start",
      taps: spec.nics.map((n) => n.tap),
      seedPath: spec.cloudInit ? this.files(spec.id).seed : "",
      cellName: spec.cell === "" && this.cells.backendVersion ? ownCellName(spec.id) : "",
      start: true,
    };
  }

  private async launch(live: LiveVm, incomingFrom?: string): Promise<VmRecord> {
    const vm = live.record;
    const { spec } = vm;
    const hypervisor = this.hypervisors[vm.spec.hypervisor];
    if (!hypervisor)
      throw new DomainError(
        "failed_precondition",
        `the ${vm.spec.hypervisor} hypervisor this VM was created for is not installed on this host any more.`,
      );
    // The hypervisor gets the disks' current paths; the record keeps the volume ids.
    const launchSpec = this.resolveDisks(spec);
    this.checkFiles(launchSpec);
    for (const nic of spec.nics) {
      if (!isBridge(nic.bridge))
        throw new DomainError(
          "failed_precondition",
          `bridge ${nic.bridge} does not exist on this host (or is not a bridge); create it first (ip link add ${nic.bridge} type bridge).`,
        );
      if (linkExists(nic.tap))
        throw new DomainError(
          "failed_precondition",
          `a network device named ${nic.tap} already exists; it collides with this VM's TAP device. Remove it or give the NIC another tap_device.`,
        );
    }
    const startedAt = performance.now();
    const files = this.files(spec.id);
    // The previous run's process record (its end was read when it ended): one record per VM, not one per start.
    await removeVmProcesses(this.processes, spec.id);
    // An incoming VM keeps its migrate-in intent: recovery removes all of it, whatever the start made.
    const intent = incomingFrom !== undefined && vm.runtime.intent ? vm.runtime.intent : this.startIntent(vm);
    Object.assign(vm.runtime, { processId: "", intent });
    await this.save(vm);
    const created: { taps: string[]; seed: string; cell: string } = { taps: [], seed: "", cell: "" };
    try {
      const accel = await this.acceleration(spec);
      await mkdir(files.runtimeDir, { recursive: true, mode: 0o700 });
      await Promise.all([files.qmp, files.agent, files.console, files.api].map((f) => rm(f, { force: true })));
      if (spec.cloudInit) {
        created.seed = await buildSeed(
          spec.id,
          { instanceId: spec.id, hostname: spec.name, ...spec.cloudInit },
          seedDir(this.options.stateDir),
        );
      }
      for (const nic of spec.nics) {
        await createTap(nic.tap, nic.bridge);
        created.taps.push(nic.tap);
      }
      const prepared = performance.now();
      const placement = await this.placement(spec, created);
      const placed = performance.now();
      live.consoleFrom = await consoleSize(files.consoleLog);
      const incoming = incomingFrom !== undefined;
      const { process, control } = await hypervisor.launch(launchSpec, {
        files,
        accel,
        placement,
        processes: this.processes,
        incoming,
        kernelCacheDir: join(this.options.stateDir, "kernels"),
      });
      let markEnded: () => void = () => {};
      live.ended = new Promise<void>((r) => (markEnded = r));
      live.markEnded = markEnded;
      // What aetherd itself adds to a boot: from the start request to a hypervisor answering on its
      // control socket (reported by npm run bench).
      const round = (ms: number) => Math.round(ms * 100) / 100;
      const done = performance.now();
      this.log.info(
        {
          vm: spec.name,
          launchMs: round(done - startedAt),
          prepareMs: round(prepared - startedAt),
          cellMs: round(placed - prepared),
          hypervisorMs: round(done - placed),
          accel,
        },
        "hypervisor up, control socket answering",
      );
      Object.assign(vm.runtime, {
        processId: process.spec.id,
        effectiveAcceleration: accel,
        ownCellId: created.cell,
        seedPath: created.seed,
        startTimeMs: Date.now(),
        stopTimeMs: 0,
        agentReady: false,
        // A create's intent stays until the create is done (it undoes the VM if aetherd dies first).
        intent: intent.op === "create" || intent.op === "migrate-in" ? intent : undefined,
      });
      live.control = control;
      live.failure = undefined;
      await this.setState(
        live,
        "starting",
        incoming
          ? `receiving a live migration from ${incomingFrom}`
          : accel === "tcg" && spec.acceleration === "auto"
            ? "booting under TCG: KVM is not usable here"
            : "",
      );
      void process.ended.then(() => this.onProcessEnded(live));
      if (incoming) return vm;
      this.awaitReady(live);
      this.events.publish({
        kind: "vm.started",
        tenant: spec.tenant,
        resourceId: spec.id,
        resourceName: spec.name,
        message: `VM ${spec.name} started (pid ${process.started?.pid})`,
        attributes: { accel },
      });
      return vm;
    } catch (err) {
      await this.teardown(created.taps, created.seed, created.cell);
      // The failed launch's process (ended, or alive but not answering on its control socket) and its record.
      await removeVmProcesses(this.processes, spec.id).catch((e: Error) =>
        this.log.warn({ vm: spec.id, err: e.message }, "could not remove a failed launch's process"),
      );
      if (intent.op === "start") {
        vm.runtime.intent = undefined;
        await this.save(vm).catch(() => undefined);
      }
      throw rpcCode(err) !== undefined
        ? err
        : new DomainError("failed_precondition", `VM ${spec.name} could not start: ${(err as Error).message}`);
    }
  }

  private checkFiles(spec: VmSpec): void {
    const missing = [spec.kernelPath, spec.initrdPath, ...spec.disks.map((d) => d.path)].filter((p) => p !== "" && !existsSync(p));
    if (missing.length > 0)
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} cannot start: ${missing.join(", ")} ${missing.length === 1 ? "does" : "do"} not exist on this host.`,
      );
  }

  /** The VM's process goes in the cell the user named, else in a cell of its own when cells work here. */
  private async placement(spec: VmSpec, created: { cell: string }): Promise<Placement | undefined> {
    if (spec.cell !== "") return this.cells.placement(spec.cell, spec.tenant);
    if (!this.cells.backendVersion) return undefined;
    const cell = await this.cells.allocate({
      // From the id: names are unique per tenant only, and cut to a cell name's 63 characters two
      // long names sharing a prefix would collide.
      name: ownCellName(spec.id),
      tenant: spec.tenant,
      labels: { [VM_LABEL]: spec.id },
      limits: {
        cpuWeight: 100,
        cpuQuotaUsec: spec.vcpus * 100_000,
        cpuPeriodUsec: 100_000,
        cpusetCpus: "",
        cpusetMems: "",
        memoryMaxBytes: spec.memoryBytes + QEMU_OVERHEAD_BYTES,
        memoryHighBytes: 0,
        pidsMax: 0,
      },
      isolation: { pid: false, mount: false, network: false, uts: false, ipc: false },
      requestId: "",
    });
    created.cell = cell.id;
    return this.cells.placement(cell.id, spec.tenant);
  }

  private async teardown(taps: string[], seed: string, cellId: string): Promise<void> {
    for (const tap of taps) await deleteTap(tap);
    await removeSeed(seed);
    if (cellId !== "") {
      try {
        // The VM's own cell, by id in whichever tenant the VM is (not a caller's lookup).
        const cell = this.cells.list().find((c) => c.id === cellId);
        if (cell) await this.cells.free(cell, true);
      } catch (err) {
        this.log.warn({ cellId, err }, "could not free a VM's cell");
      }
    }
  }

  private async acceleration(spec: VmSpec): Promise<"kvm" | "tcg"> {
    if (spec.hypervisor === "firecracker") {
      if (spec.acceleration === "tcg") throw new DomainError("failed_precondition", "Firecracker always uses KVM; use QEMU for TCG.");
      return "kvm";
    }
    if (spec.acceleration === "tcg") return "tcg";
    const qemu = this.hypervisors.qemu as { path?: string } | undefined;
    this.kvmProbe ??= probeKvm(qemu?.path ?? "qemu-system-x86_64", spec.kernelPath, spec.initrdPath, this.options.kvmProbeTimeoutMs);
    const probe = await this.kvmProbe;
    if (spec.acceleration === "kvm" && !probe.usable)
      throw new DomainError("failed_precondition", `acceleration KVM was requested but ${probe.reason}; use AUTO or TCG.`);
    this.log.info({ kvm: probe.usable, reason: probe.reason }, "acceleration probe");
    return probe.usable ? "kvm" : "tcg";
  }

  /** Polls the guest agent (or just QMP for VMs without one) until ready, under the boot watchdog. */
  private awaitReady(live: LiveVm): void {
    const { spec } = live.record;
    const files = this.files(spec.id);
    live.watchdog = setTimeout(() => void this.watchdogFired(live), spec.bootWatchdogMs);
    if (!spec.guestAgent) {
      clearTimeout(live.watchdog);
      void this.setState(live, "running");
      return;
    }
    live.agent = new GuestAgent(files.agent);
    let panicCheckedAt = Date.now();
    const poll = async () => {
      if (live.record.runtime.state !== "starting" || live.failure !== undefined) return;
      try {
        await live.agent?.ping(AGENT_POLL_MS * 4);
        clearTimeout(live.watchdog);
        live.record.runtime.agentReady = true;
        await this.setState(live, "running");
      } catch {
        // A panicking guest normally ends QEMU (-no-reboot), but a guest that resets itself without
        // QEMU seeing a reset boots again and would only meet the watchdog: look at its console too.
        if (Date.now() - panicCheckedAt >= PANIC_CHECK_MS) {
          panicCheckedAt = Date.now();
          const panic = await this.consolePanic(live);
          if (panic && live.record.runtime.state === "starting" && live.failure === undefined) {
            await this.failRun(live, panicReason(panic));
            return;
          }
        }
        setTimeout(() => void poll(), AGENT_POLL_MS);
      }
    };
    void poll();
  }

  private async watchdogFired(live: LiveVm): Promise<void> {
    if (live.record.runtime.state !== "starting" || live.failure !== undefined) return;
    const panic = await this.consolePanic(live);
    const tail = await this.consoleTail(live.record, 5);
    const reason = panic
      ? panicReason(panic)
      : `the guest did not become ready within ${live.record.spec.bootWatchdogMs} ms (boot watchdog); last console lines: ${tail || "(none)"}`;
    await this.failRun(live, reason);
  }

  /** Ends a run that failed: QEMU is killed first, and the VM is FAILED once it has ended (onProcessEnded). */
  private async failRun(live: LiveVm, reason: string): Promise<void> {
    clearTimeout(live.watchdog);
    live.failure = reason;
    await this.kill(live);
  }

  /** The kernel's panic line from the guest's console, if it panicked. */
  private async consolePanic(live: LiveVm): Promise<string | undefined> {
    const text = await readFile(this.files(live.record.spec.id).consoleLog).then(
      (b) => b.subarray(live.consoleFrom ?? 0).toString("utf8"),
      () => "",
    );
    return /Kernel panic - not syncing: [^\r\n]*/.exec(text)?.[0].trim();
  }

  async consoleTail(vm: VmRecord, lines: number): Promise<string> {
    const text = await readFile(this.files(vm.spec.id).consoleLog, "utf8").catch(() => "");
    return text
      .replace(/\x1b\[[0-9;]*[a-zA-Z]/g, "")
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter(Boolean)
      .slice(-lines)
      .join(" | ");
  }

  /** Ends QEMU: "quit" over QMP, else (no QMP, or no end within 2 s) SIGKILL to its recorded pid. */
  private async kill(live: LiveVm): Promise<void> {
    const exe = this.runningProcess(live.record);
    if (!exe) return;
    if (live.control) {
      await live.control.quit().catch(() => undefined);
      const ended = await Promise.race([exe.ended.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
      if (ended) return;
    }
    await this.processes.stop(exe, "SIGKILL", 0);
  }

  /** QEMU ended: whatever the reason, the VM's run is over; tear down what the start set up. */
  private async onProcessEnded(live: LiveVm): Promise<void> {
    const r = live.record;
    // A start must wait for this run's teardown: it would otherwise tear down the new run's TAPs and cell.
    live.busy ??= ENDING;
    clearTimeout(live.watchdog);
    clearTimeout(live.reconnect);
    live.control?.close();
    live.agent?.close();
    live.control = undefined;
    live.agent = undefined;
    r.runtime.agentReady = false;
    const exe = this.processes.get(r.runtime.processId);
    if (live.failure !== undefined) {
      await this.setState(live, "failed", live.failure);
      live.failure = undefined;
    } else if (r.runtime.state === "stopping" || r.runtime.state === "failed") {
      if (r.runtime.state === "stopping") await this.setState(live, "stopped", r.runtime.reason || "stopped on request");
    } else {
      const how = exe?.exit
        ? exe.exit.exitCode === null
          ? `was killed by ${signalName(exe.exit.signal)}`
          : `exited with code ${exe.exit.exitCode}`
        : "ended";
      const stderr = exe ? await readFile(this.processes.logPath(exe, "stderr"), "utf8").catch(() => "") : "";
      const detail = stderr.trim().split("\n").slice(-2).join(" ");
      const panic = await this.consolePanic(live);
      if (panic) await this.setState(live, "failed", panicReason(panic));
      else if (exe?.exit?.exitCode === 0 && r.runtime.state === "starting") {
        await this.setState(
          live,
          "failed",
          `the guest stopped before it was ready; last console lines: ${(await this.consoleTail(r, 5)) || "(none)"}`,
        );
      } else if (exe?.exit?.exitCode === 0) await this.setState(live, "stopped", "the guest powered off");
      else await this.setState(live, "failed", `QEMU ${how}${detail ? `: ${detail}` : ""}`);
    }
    await this.teardown(
      r.spec.nics.map((n) => n.tap),
      r.runtime.seedPath,
      r.runtime.ownCellId,
    );
    r.runtime.seedPath = "";
    r.runtime.ownCellId = "";
    await this.save(r).catch(() => undefined);
    if (live.busy === ENDING) live.busy = undefined;
    live.markEnded();
  }

  /**
   * Graceful stop (guest agent, else ACPI power button), then forced after the timeout. A QEMU that
   * still lives is stopped whatever the VM's state says; one aetherd cannot talk to is killed at once.
   */
  async stop(vm: VmRecord, timeoutMs: number, force: boolean): Promise<VmRecord> {
    const live = this.live(vm);
    if (live.migration !== undefined)
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${live.migration}; wait for the migration to end, then stop it.`);
    if (!["starting", "running", "paused"].includes(vm.runtime.state) && !this.runningProcess(vm)) {
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${vm.runtime.state}; there is nothing to stop.`);
    }
    const wasPaused = vm.runtime.state === "paused";
    const graceful = !force && !wasPaused && (live.control !== undefined || (live.record.runtime.agentReady && live.agent !== undefined));
    await this.setState(
      live,
      "stopping",
      force
        ? "stopped on request (forced)"
        : graceful
          ? "stopped on request"
          : "stopped on request (forced: aetherd cannot reach the VM's QMP socket)",
    );
    if (!graceful) {
      await this.kill(live);
    } else {
      try {
        if (live.record.runtime.agentReady && live.agent) await live.agent.shutdown();
        else await live.control?.powerdown();
      } catch (err) {
        this.log.warn({ vm: vm.spec.id, err }, "graceful shutdown request failed; forcing");
      }
      const done = await Promise.race([live.ended.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs))]);
      if (!done) {
        live.record.runtime.reason = `the guest did not power off within ${timeoutMs} ms, so it was stopped by force`;
        await this.kill(live);
      }
    }
    await live.ended;
    return live.record;
  }

  async pause(vm: VmRecord): Promise<VmRecord> {
    const live = this.live(vm);
    if (live.migration !== undefined)
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${live.migration}; wait for the migration to end.`);
    if (vm.runtime.state !== "running")
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${vm.runtime.state}; only a running VM can be paused.`);
    await live.control?.pause();
    await this.setState(live, "paused");
    return vm;
  }

  async resume(vm: VmRecord): Promise<VmRecord> {
    const live = this.live(vm);
    if (live.migration !== undefined)
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${live.migration}; wait for the migration to end.`);
    if (vm.runtime.state !== "paused")
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is ${vm.runtime.state}; only a paused VM can be resumed.`);
    await live.control?.resume();
    await this.setState(live, "running");
    return vm;
  }

  async delete(vm: VmRecord, force: boolean): Promise<void> {
    const live = this.live(vm);
    // Its own volumes go with it: not while clones (another VM's disks) depend on their snapshots.
    const cloned = this.storage
      .listVolumes()
      .filter((v) => v.ownerVm === vm.spec.id)
      .flatMap((v) => this.storage.dependentsOf(v.id));
    if (cloned.length > 0)
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name}'s volumes have clones (${cloned.map((c) => c.name).join(", ")}) that depend on them; delete those first (and the VMs they belong to).`,
      );
    if (live.busy === ENDING) await live.ended;
    if (live.busy)
      throw new DomainError("failed_precondition", `VM ${vm.spec.name} is busy (${live.busy}); wait for it to finish, then delete it.`);
    const alive = this.runningProcess(vm);
    if (ACTIVE.includes(vm.runtime.state) || alive) {
      if (!force)
        throw new DomainError(
          "failed_precondition",
          `VM ${vm.spec.name} is ${vm.runtime.state}${alive ? ` and its QEMU process (pid ${alive.started?.pid ?? "?"}) runs` : ""}; stop it first, or delete with force.`,
        );
      await this.stop(vm, 0, true);
      // Another call may have begun (or finished) a delete while this one waited for the stop.
      if (!this.vms.has(vm.spec.id)) throw new DomainError("not_found", `VM ${vm.spec.name} was deleted by another call meanwhile.`);
      if (live.busy === ENDING) await live.ended;
      if (live.busy)
        throw new DomainError("failed_precondition", `VM ${vm.spec.name} is busy (${live.busy}); wait for it to finish, then delete it.`);
    }
    // One delete at a time: a second one sees the VM busy instead of racing this one's purge.
    live.busy = "being deleted";
    try {
      // Write-ahead: from here a crash is finished by the next aetherd (load) instead of half-done.
      vm.runtime.intent = {
        op: "delete",
        taps: vm.spec.nics.map((n) => n.tap),
        seedPath: this.files(vm.spec.id).seed,
        cellName: ownCellName(vm.spec.id),
        start: false,
      };
      await this.save(vm);
      await this.purge(vm);
    } finally {
      if (live.busy === "being deleted") live.busy = undefined;
    }
    this.vms.delete(vm.spec.id);
    this.events.publish({
      kind: "vm.deleted",
      tenant: vm.spec.tenant,
      resourceId: vm.spec.id,
      resourceName: vm.spec.name,
      message: `VM ${vm.spec.name} deleted`,
      attributes: {},
    });
  }

  /** Host pid of the VM's hypervisor process while it runs; 0 otherwise. */
  pidOf(vm: VmRecord): number {
    return this.runningProcess(vm)?.started?.pid ?? 0;
  }

  agentOf(vm: VmRecord): GuestAgent {
    const live = this.live(vm);
    if (!vm.spec.guestAgent)
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} has no guest agent (it was created with guest_agent false); Exec needs one.`,
      );
    if (vm.runtime.state !== "running" || !vm.runtime.agentReady || !live.agent) {
      throw new DomainError(
        "failed_precondition",
        `VM ${vm.spec.name} is ${vm.runtime.state}${vm.runtime.state === "running" ? " but its guest agent is not answering" : ""}; Exec needs a running VM with a ready agent.`,
      );
    }
    return live.agent;
  }

  /**
   * Reads the records back; re-adopts the VMs whose QEMU still runs, and says what happened to the
   * others. A create, start or delete that a crash cut short (its intent is still recorded) is
   * finished or undone here, and no QEMU runs for a VM that is not running.
   */
  async load(): Promise<void> {
    const root = join(this.options.stateDir, "vms");
    let ids: string[] = [];
    try {
      ids = (await readdir(root)).filter((d) => d !== "executables");
    } catch {
      return;
    }
    for (const id of ids) {
      let record: VmRecord;
      try {
        record = VmRecordSchema.parse(JSON.parse(await readFile(join(root, id, "vm.json"), "utf8")));
      } catch (err) {
        this.log.error({ id, err }, "could not read a VM record; leaving it untouched");
        continue;
      }
      await this.recover(record).catch((err: Error) => this.log.error({ vm: id, err: err.message }, "could not recover a VM"));
    }
    // Hypervisor processes of VMs without a folder at all: nothing can manage them any more.
    const known = new Set(ids);
    for (const exe of this.processes.list()) {
      const vmId = exe.spec.labels[VM_LABEL] ?? "";
      if (known.has(vmId)) continue;
      this.log.warn({ vm: vmId, process: exe.spec.id }, "removing a hypervisor process of a VM that no longer exists");
      await removeVmProcesses(this.processes, vmId);
    }
  }

  private async recover(record: VmRecord): Promise<void> {
    const { id, name, tenant } = record.spec;
    const intent = record.runtime.intent;
    if (intent?.op === "create" || intent?.op === "delete") {
      // A create is all or nothing and a delete was asked for: either way the VM goes.
      this.log.warn(
        { vm: name, op: intent.op },
        intent.op === "create" ? "undoing a VM create that aetherd did not finish" : "finishing a VM delete that aetherd did not finish",
      );
      await this.purge(record);
      const message = intent.op === "create" ? `VM ${name} was removed: aetherd stopped before its create was done` : `VM ${name} deleted`;
      this.events.publish({ kind: "vm.deleted", tenant, resourceId: id, resourceName: name, message, attributes: {} });
      return;
    }
    if (intent?.op === "migrate-in" && intent.migration?.step !== "committed") {
      // The guest never ran here, or ran unconfirmed ("resumed"): the source still has it, paused at
      // worst, and resumes it once QueryIncoming says this node holds no copy.
      this.log.warn({ vm: name, migration: intent.migration?.id }, "removing an incoming live migration that aetherd did not finish");
      await this.purge(record);
      const message = `VM ${name}'s incoming live migration was undone: aetherd stopped before it was finished`;
      this.events.publish({ kind: "vm.deleted", tenant, resourceId: id, resourceName: name, message, attributes: {} });
      return;
    }
    // A migrate-out (or a committed migrate-in) is re-adopted like any VM; the migration room then
    // settles it with the other node (migration/recovery.ts).
    const live = this.track(record);
    if (intent?.op === "start") {
      this.log.warn({ vm: name }, "undoing a VM start that aetherd did not finish");
      await removeStartLeftovers(this.processes, this.cells, record, this.log, {
        tapsOfOthers: this.tapsOfOthers(id),
        seedDir: seedDir(this.options.stateDir),
      });
      Object.assign(record.runtime, { processId: "", ownCellId: "", seedPath: "", agentReady: false, intent: undefined });
      await this.setState(
        live,
        "stopped",
        "aetherd stopped while it was starting this VM; the half-done start was undone (start it again)",
      );
      live.markEnded();
      return;
    }
    const active = ACTIVE.includes(record.runtime.state);
    const exe = this.processes.get(record.runtime.processId);
    if (!active) {
      // No QEMU may run for a VM that is not running: a stray one (from a crash) is ended.
      if (vmProcesses(this.processes, id).some((e) => e.status === "running")) {
        this.log.warn({ vm: name, state: record.runtime.state }, "ending a QEMU process of a VM that is not running");
        await removeStartLeftovers(this.processes, this.cells, record, this.log, {
          tapsOfOthers: this.tapsOfOthers(id),
          seedDir: seedDir(this.options.stateDir),
        });
        Object.assign(record.runtime, { processId: "", ownCellId: "", seedPath: "" });
        await this.save(record);
      }
      live.markEnded();
      return;
    }
    if (!exe || exe.status !== "running") {
      const how = exe?.exit
        ? exe.exit.exitCode === null
          ? `was killed by ${signalName(exe.exit.signal)}`
          : `exited with code ${exe.exit.exitCode}`
        : "was gone";
      this.lost.add(id);
      await this.setState(live, "stopped", `its QEMU process ${how} while aetherd was not running`);
      await this.teardown(
        record.spec.nics.map((n) => n.tap),
        record.runtime.seedPath,
        record.runtime.ownCellId,
      );
      live.markEnded();
      return;
    }
    void exe.ended.then(() => this.onProcessEnded(live));
    // A stop that aetherd's end interrupted: the VM runs on until it is asked again.
    if (record.runtime.state === "stopping") record.runtime.state = "running";
    await this.reattach(live, exe);
  }

  /**
   * Reconnects to the QEMU of a re-adopted VM. While its QMP socket does not answer, the VM keeps its
   * state (its QEMU lives: it is not FAILED), the reason says so, and aetherd tries again.
   */
  private async reattach(live: LiveVm, exe: TrackedExecutable): Promise<void> {
    const record = live.record;
    const files = this.files(record.spec.id);
    if (exe.status !== "running" || live.control) return;
    try {
      const hypervisor = this.hypervisors[record.spec.hypervisor];
      if (!hypervisor) throw new Error(`the ${record.spec.hypervisor} driver is unavailable`);
      const control = await hypervisor.reattach(record.spec, files);
      if (exe.status !== "running") {
        control.close();
        return;
      }
      live.control = control;
      // A stop asked for meanwhile goes on with the control it now has.
      if (record.runtime.state === "stopping") return;
      live.consoleFrom = await consoleSize(files.consoleLog);
      const status = await control.status();
      const state = record.runtime.state;
      if (status === "paused") await this.setState(live, "paused");
      else if (state === "starting") {
        await this.setState(live, "starting");
        this.awaitReady(live);
      } else {
        if (record.spec.guestAgent) {
          live.agent = new GuestAgent(files.agent);
          record.runtime.agentReady = await live.agent.ping(2000).then(
            () => true,
            () => false,
          );
        }
        await this.setState(live, state === "paused" ? "running" : state);
      }
      this.log.info({ vm: record.spec.name, pid: exe.started?.pid, status }, "re-adopted a VM");
    } catch (err) {
      live.control?.close();
      live.control = undefined;
      const reason = `aetherd cannot reach this VM's QMP socket (${(err as Error).message}); it tries again every ${RECONNECT_MS / 1000} s. Its QEMU process (pid ${exe.started?.pid ?? "?"}) still runs: StopVm or DeleteVm with force ends it.`;
      this.log.error({ vm: record.spec.name, err }, "could not reconnect to a running VM; retrying");
      if (record.runtime.state === "stopping" || exe.status !== "running") return;
      if (record.runtime.reason !== reason) await this.setState(live, record.runtime.state, reason);
      clearTimeout(live.reconnect);
      live.reconnect = setTimeout(() => void this.reattach(live, exe), RECONNECT_MS);
      live.reconnect.unref();
    }
  }

  /** VMs that were running when aetherd last stopped and whose QEMU was gone at its start. */
  private readonly lost = new Set<string>();

  /** What the lifecycle rooms beside the manager may do with the VMs (see lifecycle-hooks.ts). */
  lifecycleHooks(): LifecycleHooks {
    return {
      qmp: (vm) => this.vms.get(vm.spec.id)?.control?.qmp,
      agent: (vm) => {
        const live = this.vms.get(vm.spec.id);
        return vm.runtime.state === "running" && vm.runtime.agentReady ? live?.agent : undefined;
      },
      exclusive: async (vm, what, work) => {
        const live = this.live(vm);
        if (live.busy === ENDING) await live.ended;
        if (live.busy !== undefined)
          throw new DomainError("failed_precondition", `VM ${vm.spec.name} is busy (${live.busy}); wait for it to finish.`);
        live.busy = what;
        try {
          return await work();
        } finally {
          if (live.busy === what) live.busy = undefined;
        }
      },
      save: (vm) => this.save(vm),
      setState: (vm, state, reason) => this.setState(this.live(vm), state, reason),
      rebooting: async (vm, reason) => {
        const live = this.live(vm);
        clearTimeout(live.watchdog);
        vm.runtime.agentReady = false;
        // The guest's old agent is gone with the reset: the readiness poll talks to the new one.
        live.agent?.close();
        live.consoleFrom = await consoleSize(this.files(vm.spec.id).consoleLog);
        await this.setState(live, "starting", reason);
        this.awaitReady(live);
      },
      processRuns: (vm) => this.runningProcess(vm) !== undefined,
      lostWhileAway: () => this.lost,
      createWithDisks: (spec, makeDisks, start) => this.create(spec, undefined, start, makeDisks),
    };
  }

  /**
   * Whether the guest's agent answers within withinMs, while alive() holds (the VM's run may end
   * meanwhile); marks the agent ready when it does. Used after a live migration's resume, where no
   * boot watchdog polls the agent.
   */
  private async agentAnswers(live: LiveVm, withinMs: number, alive: () => boolean = () => true): Promise<boolean> {
    const vm = live.record;
    const deadline = Date.now() + withinMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || !alive()) return false;
      // Taken again each time: the run's end drops the VM's agent connection.
      const agent = (live.agent ??= new GuestAgent(this.files(vm.spec.id).agent));
      const answered = await agent.ping(Math.min(2000, left)).then(
        () => true,
        () => false,
      );
      if (answered && alive()) {
        vm.runtime.agentReady = true;
        return true;
      }
      await sleep(Math.min(200, Math.max(0, deadline - Date.now())));
    }
  }

  /** What live migration may do with the VMs (see migration-hooks.ts). */
  migrationHooks(): MigrationHooks {
    return {
      qmp: (vm) => this.vms.get(vm.spec.id)?.control?.qmp,
      claim: (vm, what) => {
        const live = this.live(vm);
        if (live.busy !== undefined)
          throw new DomainError("failed_precondition", `VM ${vm.spec.name} is busy (${live.busy}); wait for it to finish.`);
        live.busy = what;
        live.migration = what;
      },
      release: (vm) => {
        const live = this.vms.get(vm.spec.id);
        if (live) live.busy = live.migration = undefined;
      },
      save: (vm) => this.save(vm),
      setState: (vm, state, reason) => this.setState(this.live(vm), state, reason),
      receive: async (record, from, makeDisks) => {
        const { id, name, tenant } = record.spec;
        if (this.vms.has(id) || this.list().some((v) => v.spec.name === name && v.spec.tenant === tenant))
          throw new DomainError(
            "already_exists",
            `a VM named ${name} (or with id ${id}) already exists in tenant ${tenant} on the target node.`,
          );
        await mkdir(this.files(id).dir, { recursive: true, mode: 0o700 });
        await this.save(record);
        const live = this.track(record);
        live.busy = live.migration = `receiving a live migration from ${from}`;
        await makeDisks();
        await this.save(record);
        await this.launch(live, from);
      },
      resumed: async (vm, reason) => {
        // The guest runs on (no boot, so no boot watchdog): RUNNING, with the agent's answer awaited a while.
        const live = this.live(vm);
        if (vm.spec.guestAgent && !vm.runtime.agentReady) await this.agentAnswers(live, RESUMED_AGENT_WAIT_MS);
        await this.setState(live, "running", reason);
      },
      healthy: async (vm, withinMs) => {
        const live = this.live(vm);
        // A QEMU that ended (a guest that panics ends it: -no-reboot) is no healthy guest.
        const runs = () => this.runningProcess(vm) !== undefined;
        if (!vm.spec.guestAgent) {
          const status = await live.control?.qmp?.execute<{ status: string }>("query-status", undefined, withinMs).catch(() => undefined);
          return status?.status === "running" && runs();
        }
        return this.agentAnswers(live, withinMs, runs);
      },
      pid: (vm) => this.pidOf(vm),
      end: async (vm, reason) => {
        const live = this.live(vm);
        if (this.runningProcess(vm)) {
          await this.setState(live, "stopping", reason);
          await this.kill(live);
        }
        // The teardown after QEMU's end (TAPs, seed, cell) is done when the run is marked ended.
        await Promise.race([live.ended, sleep(10_000)]);
      },
      remove: async (vm, message) => {
        const { id, tenant, name } = vm.spec;
        await this.purge(vm);
        this.vms.delete(id);
        this.events.publish({ kind: "vm.deleted", tenant, resourceId: id, resourceName: name, message, attributes: {} });
      },
      byId: (id) => this.vms.get(id)?.record,
      list: () => this.list(),
    };
  }

  close(): void {
    for (const live of this.vms.values()) {
      clearTimeout(live.watchdog);
      clearTimeout(live.reconnect);
      live.control?.close();
      live.agent?.close();
    }
  }
}
