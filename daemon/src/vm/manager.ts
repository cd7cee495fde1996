// The VMs of this host: their records, their lifecycle (CREATED → STARTING → RUNNING → STOPPING →
// STOPPED, PAUSED, FAILED), the boot watchdog, the guest agent, and what each start sets up and
// each stop tears down (seed, TAP devices, the VM's own cell). Handlers call it with checked values.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { alreadyExists, failedPrecondition, notFound } from "../api/errors.js";
import { clip } from "../api/validate.js";
import type { CellRegistry } from "../cells/registry.js";
import type { StorageRegistry, VolumeUser } from "../storage/registry.js";
import type { ImageRecord, VolumeRecord } from "../storage/records.js";
import type { EventBus } from "../observe/event-bus.js";
import type { Placement, Supervisor } from "../runtime/supervisor.js";
import { signalName } from "../runtime/supervisor.js";
import { writeJsonAtomic } from "../store/atomic-file.js";
import { probeKvm, type KvmProbeResult } from "./accel.js";
import { GuestAgent } from "./qga.js";
import type { Hypervisor, VmControl, VmFiles } from "./hypervisor.js";
import { createTap, deleteTap, isBridge, linkExists } from "./network.js";
import { freshRuntime, VmRecordSchema, type VmRecord, type VmRuntime, type VmSpec } from "./record.js";
import { buildSeed, removeSeed } from "./seed.js";

export type VmState = VmRuntime["state"];

const PANIC_CHECK_MS = 1000;

function panicReason(panicLine: string): string {
  return `the guest kernel panicked (${panicLine}); give the VM more memory or check its kernel`;
}

async function consoleSize(path: string): Promise<number> {
  return stat(path).then((s) => s.size, () => 0);
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
}

export interface VmManagerOptions {
  stateDir: string;
  /** A folder with short paths for the VMs' sockets (unix socket paths are limited to 108 bytes). */
  runtimeDir: string;
  kvmProbeTimeoutMs: number;
}

const AGENT_POLL_MS = 250;
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

  /** The VMs a volume is attached to, and whether each runs (storage refuses some changes then). */
  private volumeUsers(volumeId: string): VolumeUser[] {
    return this.list()
      .filter((vm) => vm.spec.disks.some((d) => d.volumeId === volumeId))
      .map((vm) => ({ vmId: vm.spec.id, running: ["starting", "running", "paused", "stopping"].includes(vm.runtime.state) }));
  }

  /** A volume a new VM may attach: READY, its data present, and not attached to another VM. */
  attachableVolume(ref: string, tenant: string): VolumeRecord {
    const volume = this.storage.resolveVolume(ref, tenant);
    const health = this.storage.health(volume);
    if (health.state !== "ready") throw failedPrecondition(`volume ${volume.name} is ${health.state}${health.reason ? `: ${health.reason}` : ""}; attach a ready volume.`);
    const users = this.volumeUsers(volume.id);
    if (users.length > 0) throw failedPrecondition(`volume ${volume.name} is already attached to VM ${users.map((u) => u.vmId).join(", ")}; a disk is attached to one VM at a time (clone it for another).`);
    return volume;
  }

  /** An image a new VM may boot from (through a clone of its own). */
  bootableImage(ref: string, tenant: string): ImageRecord {
    const image = this.storage.resolveImage(ref, tenant);
    if (image.state !== "ready") throw failedPrecondition(`image ${image.name} is ${image.state}, not ready; wait for its import (WatchImage) or import it again.`);
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
      if (!volume) throw failedPrecondition(`VM ${spec.name} cannot start: its volume ${d.volumeId} no longer exists.`);
      const health = this.storage.health(volume);
      if (health.state !== "ready") throw failedPrecondition(`VM ${spec.name} cannot start: volume ${volume.name} is ${health.state}${health.reason ? `: ${health.reason}` : ""}.`);
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
      seed: join("/dev/shm/aether-seeds", `${id}.iso`),
    };
  }

  filesOf(vm: VmRecord): VmFiles {
    return this.files(vm.spec.id);
  }

  list(): VmRecord[] {
    return [...this.vms.values()].map((v) => v.record);
  }

  resolve(ref: string, tenant: string): VmRecord {
    // By id too only within the tenant: an id is no key to another tenant's VM.
    const byId = this.vms.get(ref);
    if (byId && byId.record.spec.tenant === tenant) return byId.record;
    const byName = [...this.vms.values()].find((v) => v.record.spec.name === ref && v.record.spec.tenant === tenant);
    if (byName) return byName.record;
    throw notFound(`no VM with id or name ${JSON.stringify(clip(ref))} in tenant ${tenant}; list them with ListVms.`);
  }

  private live(vm: VmRecord): LiveVm {
    const live = this.vms.get(vm.spec.id);
    if (!live) throw notFound(`VM ${vm.spec.name} no longer exists.`);
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
   * another call with the same name ALREADY_EXISTS.
   */
  async create(spec: Omit<VmSpec, "id" | "createTimeMs">, bootImage?: { imageId: string; sizeBytes: number }): Promise<VmRecord> {
    const requestKey = spec.requestId === "" ? "" : `${spec.tenant}/${spec.requestId}`;
    const pending = requestKey === "" ? undefined : this.creatingByRequest.get(requestKey);
    if (pending) return pending;
    const earlier = spec.requestId !== "" ? this.list().find((v) => v.spec.requestId === spec.requestId && v.spec.tenant === spec.tenant) : undefined;
    if (earlier) return earlier;
    const nameKey = `${spec.tenant}/${spec.name}`;
    if (this.creatingNames.has(nameKey) || this.list().some((v) => v.spec.name === spec.name && v.spec.tenant === spec.tenant)) {
      throw alreadyExists(`a VM named ${spec.name} already exists in tenant ${spec.tenant}; delete it first or pick another name.`);
    }
    this.creatingNames.add(nameKey);
    const creation = this.createReserved(spec, bootImage);
    if (requestKey !== "") this.creatingByRequest.set(requestKey, creation);
    try {
      return await creation;
    } finally {
      this.creatingNames.delete(nameKey);
      if (requestKey !== "") this.creatingByRequest.delete(requestKey);
    }
  }

  private async createReserved(spec: Omit<VmSpec, "id" | "createTimeMs">, bootImage?: { imageId: string; sizeBytes: number }): Promise<VmRecord> {
    if (!this.hypervisors[spec.hypervisor]) {
      throw failedPrecondition(
        spec.hypervisor === "qemu"
          ? "QEMU is not installed on this host (qemu-system-x86_64 not found): apt-get install qemu-system-x86."
          : "Firecracker is not installed on this host (no firecracker binary on PATH); use hypervisor QEMU.",
      );
    }
    const id = randomUUID();
    const full: VmSpec = { ...spec, id, createTimeMs: Date.now(), nics: spec.nics.map((n, i) => ({ ...n, tap: n.tap || `ae${id.replace(/-/g, "").slice(0, 8)}n${i}` })) };
    if (bootImage) {
      // The VM's own thin clone of the image, owned by it: deleted with the VM.
      const volume = await this.storage.createVolume({
        name: `${spec.name}-boot`.slice(0, 63).replace(/-+$/, ""),
        tenant: spec.tenant,
        labels: { "aether.io/vm": id },
        pool: "",
        format: undefined,
        source: { kind: "image", image: bootImage.imageId, sizeBytes: bootImage.sizeBytes },
        requestId: "",
        ownerVm: id,
      });
      full.disks = [{ path: volume.hostPath, readOnly: false, format: volume.format === "qcow2" ? "qcow2" : "raw", serial: "boot", volumeId: volume.id }, ...full.disks];
    }
    const record: VmRecord = { spec: full, runtime: freshRuntime() };
    try {
      await mkdir(this.files(id).dir, { recursive: true, mode: 0o700 });
      await this.save(record);
    } catch (err) {
      if (bootImage && full.disks[0]) await this.storage.deleteVolume(full.disks[0].volumeId, spec.tenant, true, "").catch(() => undefined);
      throw err;
    }
    this.track(record);
    this.events.publish({ kind: "vm.created", tenant: full.tenant, resourceId: id, resourceName: full.name, message: `VM ${full.name} created`, attributes: {} });
    return record;
  }

  private track(record: VmRecord): LiveVm {
    let markEnded: () => void = () => {};
    const ended = new Promise<void>((r) => (markEnded = r));
    const live: LiveVm = { record, ended, markEnded };
    this.vms.set(record.spec.id, live);
    return live;
  }

  private async save(record: VmRecord): Promise<void> {
    await writeJsonAtomic(join(this.files(record.spec.id).dir, "vm.json"), record);
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
    if (live.busy) throw failedPrecondition(`VM ${spec.name} is busy (${live.busy}); wait for it to finish.`);
    if (!["created", "stopped", "failed"].includes(vm.runtime.state)) {
      throw failedPrecondition(`VM ${spec.name} is ${vm.runtime.state}; only a created, stopped or failed VM can be started.`);
    }
    const hypervisor = this.hypervisors[vm.spec.hypervisor];
    if (!hypervisor) throw failedPrecondition(`the ${vm.spec.hypervisor} hypervisor this VM was created for is not installed on this host any more.`);
    // The hypervisor gets the disks' current paths; the record keeps the volume ids.
    const launchSpec = this.resolveDisks(spec);
    this.checkFiles(launchSpec);
    for (const nic of spec.nics) {
      if (!isBridge(nic.bridge)) throw failedPrecondition(`bridge ${nic.bridge} does not exist on this host (or is not a bridge); create it first (ip link add ${nic.bridge} type bridge).`);
      if (linkExists(nic.tap)) throw failedPrecondition(`a network device named ${nic.tap} already exists; it collides with this VM's TAP device. Remove it or give the NIC another tap_device.`);
    }
    live.busy = "starting";
    const startedAt = performance.now();
    const files = this.files(spec.id);
    const created: { taps: string[]; seed: string; cell: string } = { taps: [], seed: "", cell: "" };
    try {
      const accel = await this.acceleration(spec);
      await mkdir(files.runtimeDir, { recursive: true, mode: 0o700 });
      await Promise.all([files.qmp, files.agent, files.console, files.api].map((f) => rm(f, { force: true })));
      if (spec.cloudInit) {
        created.seed = await buildSeed(spec.id, { instanceId: spec.id, hostname: spec.name, ...spec.cloudInit });
      }
      for (const nic of spec.nics) {
        await createTap(nic.tap, nic.bridge);
        created.taps.push(nic.tap);
      }
      const prepared = performance.now();
      const placement = await this.placement(spec, created);
      const placed = performance.now();
      live.consoleFrom = await consoleSize(files.consoleLog);
      let markEnded: () => void = () => {};
      live.ended = new Promise<void>((r) => (markEnded = r));
      live.markEnded = markEnded;
      const { process, control } = await hypervisor.launch(launchSpec, { files, accel, placement, processes: this.processes });
      // What aetherd itself adds to a boot: from the start request to a hypervisor answering on its
      // control socket (reported by npm run bench).
      const round = (ms: number) => Math.round(ms * 100) / 100;
      const done = performance.now();
      this.log.info(
        { vm: spec.name, launchMs: round(done - startedAt), prepareMs: round(prepared - startedAt), cellMs: round(placed - prepared), hypervisorMs: round(done - placed), accel },
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
      });
      live.control = control;
      await this.setState(live, "starting", accel === "tcg" && spec.acceleration === "auto" ? "booting under TCG: KVM is not usable here" : "");
      void process.ended.then(() => this.onProcessEnded(live));
      this.awaitReady(live);
      this.events.publish({ kind: "vm.started", tenant: spec.tenant, resourceId: spec.id, resourceName: spec.name, message: `VM ${spec.name} started (pid ${process.started?.pid})`, attributes: { accel } });
      return vm;
    } catch (err) {
      await this.teardown(created.taps, created.seed, created.cell);
      throw err instanceof ConnectError ? err : failedPrecondition(`VM ${spec.name} could not start: ${(err as Error).message}`);
    } finally {
      live.busy = undefined;
    }
  }

  private checkFiles(spec: VmSpec): void {
    const missing = [spec.kernelPath, spec.initrdPath, ...spec.disks.map((d) => d.path)].filter((p) => p !== "" && !existsSync(p));
    if (missing.length > 0) throw failedPrecondition(`VM ${spec.name} cannot start: ${missing.join(", ")} ${missing.length === 1 ? "does" : "do"} not exist on this host.`);
  }

  /** The VM's process goes in the cell the user named, else in a cell of its own when cells work here. */
  private async placement(spec: VmSpec, created: { cell: string }): Promise<Placement | undefined> {
    if (spec.cell !== "") return this.cells.placement(spec.cell, spec.tenant);
    if (!this.cells.backendVersion) return undefined;
    const cell = await this.cells.allocate({
      name: `vm-${spec.name}`.slice(0, 63),
      tenant: spec.tenant,
      labels: { "aether.io/vm": spec.id },
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
      if (spec.acceleration === "tcg") throw failedPrecondition("Firecracker always uses KVM; use QEMU for TCG.");
      return "kvm";
    }
    if (spec.acceleration === "tcg") return "tcg";
    const qemu = this.hypervisors.qemu as { path?: string } | undefined;
    this.kvmProbe ??= probeKvm(qemu?.path ?? "qemu-system-x86_64", spec.kernelPath, spec.initrdPath, this.options.kvmProbeTimeoutMs);
    const probe = await this.kvmProbe;
    if (spec.acceleration === "kvm" && !probe.usable) throw failedPrecondition(`acceleration KVM was requested but ${probe.reason}; use AUTO or TCG.`);
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
      if (live.record.runtime.state !== "starting") return;
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
          if (panic && live.record.runtime.state === "starting") {
            clearTimeout(live.watchdog);
            await this.setState(live, "failed", panicReason(panic));
            await this.kill(live);
            return;
          }
        }
        setTimeout(() => void poll(), AGENT_POLL_MS);
      }
    };
    void poll();
  }

  private async watchdogFired(live: LiveVm): Promise<void> {
    if (live.record.runtime.state !== "starting") return;
    const panic = await this.consolePanic(live);
    const tail = await this.consoleTail(live.record, 5);
    const reason = panic ? panicReason(panic) : `the guest did not become ready within ${live.record.spec.bootWatchdogMs} ms (boot watchdog); last console lines: ${tail || "(none)"}`;
    await this.setState(live, "failed", reason);
    await this.kill(live);
  }

  /** The kernel's panic line from the guest's console, if it panicked. */
  private async consolePanic(live: LiveVm): Promise<string | undefined> {
    const text = await readFile(this.files(live.record.spec.id).consoleLog).then((b) => b.subarray(live.consoleFrom ?? 0).toString("utf8"), () => "");
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

  private async kill(live: LiveVm): Promise<void> {
    await live.control?.quit().catch(() => undefined);
    const exe = this.processes.get(live.record.runtime.processId);
    if (exe && exe.status === "running") {
      const ended = await Promise.race([exe.ended.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
      if (!ended) await this.processes.stop(exe, "SIGKILL", 0);
    }
  }

  /** QEMU ended: whatever the reason, the VM's run is over; tear down what the start set up. */
  private async onProcessEnded(live: LiveVm): Promise<void> {
    const r = live.record;
    clearTimeout(live.watchdog);
    live.control?.close();
    live.agent?.close();
    live.control = undefined;
    live.agent = undefined;
    r.runtime.agentReady = false;
    const exe = this.processes.get(r.runtime.processId);
    if (r.runtime.state === "stopping" || r.runtime.state === "failed") {
      if (r.runtime.state === "stopping") await this.setState(live, "stopped", r.runtime.reason || "stopped on request");
    } else {
      const how = exe?.exit ? (exe.exit.exitCode === null ? `was killed by ${signalName(exe.exit.signal)}` : `exited with code ${exe.exit.exitCode}`) : "ended";
      const stderr = exe ? await readFile(this.processes.logPath(exe, "stderr"), "utf8").catch(() => "") : "";
      const detail = stderr.trim().split("\n").slice(-2).join(" ");
      const panic = await this.consolePanic(live);
      if (panic) await this.setState(live, "failed", panicReason(panic));
      else if (exe?.exit?.exitCode === 0 && r.runtime.state === "starting") {
        await this.setState(live, "failed", `the guest stopped before it was ready; last console lines: ${(await this.consoleTail(r, 5)) || "(none)"}`);
      } else if (exe?.exit?.exitCode === 0) await this.setState(live, "stopped", "the guest powered off");
      else await this.setState(live, "failed", `QEMU ${how}${detail ? `: ${detail}` : ""}`);
    }
    await this.teardown(r.spec.nics.map((n) => n.tap), r.runtime.seedPath, r.runtime.ownCellId);
    r.runtime.seedPath = "";
    r.runtime.ownCellId = "";
    await this.save(r).catch(() => undefined);
    live.markEnded();
  }

  /** Graceful stop (guest agent, else ACPI power button), then forced after the timeout. */
  async stop(vm: VmRecord, timeoutMs: number, force: boolean): Promise<VmRecord> {
    const live = this.live(vm);
    if (!["starting", "running", "paused"].includes(vm.runtime.state)) {
      throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}; there is nothing to stop.`);
    }
    await this.setState(live, "stopping", force ? "stopped on request (forced)" : "stopped on request");
    if (force || vm.runtime.state === "paused") {
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
    if (vm.runtime.state !== "running") throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}; only a running VM can be paused.`);
    await live.control?.pause();
    await this.setState(live, "paused");
    return vm;
  }

  async resume(vm: VmRecord): Promise<VmRecord> {
    const live = this.live(vm);
    if (vm.runtime.state !== "paused") throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}; only a paused VM can be resumed.`);
    await live.control?.resume();
    await this.setState(live, "running");
    return vm;
  }

  async delete(vm: VmRecord, force: boolean): Promise<void> {
    const live = this.live(vm);
    if (["starting", "running", "paused", "stopping"].includes(vm.runtime.state)) {
      if (!force) throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}; stop it first, or delete with force.`);
      await this.stop(vm, 0, true);
    }
    const exe = this.processes.get(vm.runtime.processId);
    if (exe && exe.status !== "running") await this.processes.delete(exe);
    const files = this.files(vm.spec.id);
    await rm(files.dir, { recursive: true, force: true });
    await rm(files.runtimeDir, { recursive: true, force: true });
    this.vms.delete(vm.spec.id);
    const boot = vm.spec.ownsBootVolume ? vm.spec.disks[0] : undefined;
    if (boot) {
      await this.storage.deleteVolume(boot.volumeId, vm.spec.tenant, true, "", { asOwner: vm.spec.id }).catch((err: Error) => {
        this.log.warn({ vm: vm.spec.id, volume: boot.volumeId, err: err.message }, "the VM's boot volume could not be deleted with it; delete it with DeleteVolume");
      });
    }
    this.events.publish({ kind: "vm.deleted", tenant: vm.spec.tenant, resourceId: vm.spec.id, resourceName: vm.spec.name, message: `VM ${vm.spec.name} deleted`, attributes: {} });
  }

  /** Host pid of the VM's hypervisor process while it runs; 0 otherwise. */
  pidOf(vm: VmRecord): number {
    const exe = this.processes.get(vm.runtime.processId);
    return exe && exe.status === "running" ? (exe.started?.pid ?? 0) : 0;
  }

  agentOf(vm: VmRecord): GuestAgent {
    const live = this.live(vm);
    if (!vm.spec.guestAgent) throw failedPrecondition(`VM ${vm.spec.name} has no guest agent (it was created with guest_agent false); Exec needs one.`);
    if (vm.runtime.state !== "running" || !vm.runtime.agentReady || !live.agent) {
      throw failedPrecondition(`VM ${vm.spec.name} is ${vm.runtime.state}${vm.runtime.state === "running" ? " but its guest agent is not answering" : ""}; Exec needs a running VM with a ready agent.`);
    }
    return live.agent;
  }

  /** Reads the records back; re-adopts the VMs whose QEMU still runs, and says what happened to the others. */
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
      const live = this.track(record);
      const active = ["starting", "running", "paused", "stopping"].includes(record.runtime.state);
      if (!active) {
        live.markEnded();
        continue;
      }
      const exe = this.processes.get(record.runtime.processId);
      if (!exe || exe.status !== "running") {
        const how = exe?.exit ? (exe.exit.exitCode === null ? `was killed by ${signalName(exe.exit.signal)}` : `exited with code ${exe.exit.exitCode}`) : "was gone";
        await this.setState(live, "stopped", `its QEMU process ${how} while aetherd was not running`);
        await this.teardown(record.spec.nics.map((n) => n.tap), record.runtime.seedPath, record.runtime.ownCellId);
        live.markEnded();
        continue;
      }
      try {
        const hypervisor = this.hypervisors[record.spec.hypervisor];
        if (!hypervisor) throw new Error(`the ${record.spec.hypervisor} driver is unavailable`);
        live.control = await hypervisor.reattach(record.spec, this.files(id));
        live.consoleFrom = await consoleSize(this.files(id).consoleLog);
        const status = await live.control.status();
        void exe.ended.then(() => this.onProcessEnded(live));
        if (status === "paused") await this.setState(live, "paused");
        else if (record.runtime.state === "starting") this.awaitReady(live);
        else if (record.spec.guestAgent) {
          live.agent = new GuestAgent(this.files(id).agent);
          record.runtime.agentReady = await live.agent.ping(2000).then(() => true, () => false);
          await this.setState(live, record.runtime.state === "stopping" ? "running" : record.runtime.state);
        }
        this.log.info({ vm: record.spec.name, pid: exe.started?.pid, status }, "re-adopted a VM");
      } catch (err) {
        this.log.error({ vm: record.spec.name, err }, "could not reconnect to a running VM");
        await this.setState(live, "failed", `aetherd could not reconnect to its QEMU process: ${(err as Error).message}`);
        live.markEnded();
      }
    }
  }

  close(): void {
    for (const live of this.vms.values()) {
      clearTimeout(live.watchdog);
      live.control?.close();
      live.agent?.close();
    }
  }
}
