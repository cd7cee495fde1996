// The target side of a live migration (VmMigrationService): the VM is re-created here from the
// source's spec, its volumes are made in this node's pool, its QEMU waits for the incoming state with
// the disks exported over NBD, and the guest runs here only once the source says FinishIncoming.
// Even then it is not this node's until the guest shows it is healthy here (ConfirmIncoming): the
// source keeps its paused copy until this node commits, or removes its own copy so that the source
// resumes. Until the commit everything made here belongs to the incoming VM and goes with it: on
// AbortIncoming, an unconfirmed guest, the source silent past the deadline, or when aetherd restarts
// (recovery removes it).
//
// Past 400 lines because the target's side is one life (prepare, resume, confirm or remove, commit)
// whose steps share the entries and their serialization; the QMP commands are in qemu-steps.ts.
import { createServer } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { existsSync } from "node:fs";
import { ConnectError } from "@connectrpc/connect";
import { DomainError, tenant as parseTenant, type OutgoingTls } from "@aether/server";
import type { TenancyConfig } from "../config.js";
import { checkTenantBridge, tenantKernelPath } from "../vm/tenancy.js";
import { crashPoint } from "../store/crash-point.js";
import type { StorageRegistry } from "../storage/registry.js";
import { VM_LABEL } from "../vm/leftovers.js";
import type { MigrationHooks } from "../vm/migration-hooks.js";
import { isBridge, linkExists } from "../vm/network.js";
import { freshRuntime, VmSpecSchema, type VmRecord, type VmSpec } from "../vm/record.js";
import { WORKLOAD_LABEL } from "../auction/spec.js";
import { awaitIncomingComplete, exportDisks, listenIncoming, resumeIncoming } from "./qemu-steps.js";
import type { MigrationReports } from "./reports.js";
import { addTlsAuthz, addTlsCreds, dropTlsCreds } from "./tls.js";
import { faultAt } from "./fault-point.js";

export interface IncomingDiskRequest {
  sizeBytes: number;
  volumeName: string;
  baseImageSha256: string;
  labels: Record<string, string>;
}

export interface PrepareInput {
  migrationId: string;
  sourceNode: string;
  /** The source's node id ("" when it did not say), for the report to the aggregator. */
  sourceNodeId: string;
  specJson: string;
  disks: IncomingDiskRequest[];
  timeoutMs: number;
  /**
   * The source called over mutual TLS (an https:// target, another host): the NBD export and the
   * memory stream take TLS too, with this node's certificate. Over the unix socket (one machine,
   * the tests) they stay plain TCP on loopback.
   */
  tls: boolean;
  /** With tls: the calling node's name (its certificate's), the only client the streams take. */
  peerNode: string;
}

export interface Prepared {
  nbdHost: string;
  nbdPort: number;
  exports: Array<{ name: string; thinClone: boolean }>;
  migrationUri: string;
}

export type IncomingState = "absent" | "prepared" | "resumed" | "finished";

interface Figures {
  elapsedMs: number;
  downtimeMs: number;
}

interface Entry {
  vmId: string;
  sourceNodeId: string;
  prepared: Promise<Prepared>;
  deadline?: NodeJS.Timeout;
  /** One FinishIncoming, ConfirmIncoming or AbortIncoming at a time. */
  chain: Promise<unknown>;
  /** Once resumed unconfirmed: how long the guest has to show it is healthy, and the source's figures for the report. */
  confirmWithinMs?: number;
  figures?: Figures;
  resumedMs?: number;
  /** The decision of ConfirmIncoming under way (a second call waits for the same one). */
  confirming?: Promise<Confirmation>;
}

export interface Confirmation {
  confirmed: boolean;
  reason: string;
}

/** How long the target waits for its QEMU to have the whole incoming state once the source says it sent it. */
const COMPLETE_WAIT_MS = 30_000;
/** How soon a committed guest whose resume failed is settled again. */
const SETTLE_RETRY_MS = 2000;
/** A source silent this long past confirm_within: this node settles the resumed migration itself. */
const CONFIRM_GRACE_MS = 60_000;

export class IncomingMigrations {
  private readonly entries = new Map<string, Entry>();
  private readonly retries = new Set<NodeJS.Timeout>();

  constructor(
    private readonly o: {
      hooks: MigrationHooks;
      storage: StorageRegistry;
      /** Where this node's QEMU listens for NBD and the memory stream (an address the source reaches). */
      listenHost: string;
      /** This node's certificate, key and CA, for the TLS of the streams. */
      identity: OutgoingTls;
      /** Where the private folders of QEMU's TLS credentials are written for a moment (see tls.ts). */
      tlsDir: string;
      /** The reports of finished migrations to the aggregator (see reports.ts). */
      reports: MigrationReports;
      /** This node's [tenancy]: a tenant's VM is held to it here as on a create by its tenant. */
      tenancy: TenancyConfig;
      log: Logger;
    },
  ) {}

  /** Prepares this node for the VM; a retry with the same migration id gets the first call's answer. */
  prepare(input: PrepareInput): Promise<Prepared> {
    const known = this.entries.get(input.migrationId);
    if (known) return known.prepared;
    const spec = parseSpec(input.specJson);
    if (spec.hypervisor !== "qemu") throw new DomainError("failed_precondition", "only QEMU VMs can be live-migrated.");
    checkIncomingTenancy(spec, this.o.tenancy);
    if (input.disks.length !== spec.disks.length)
      throw new DomainError("invalid_argument", `disks names ${input.disks.length} disks but the spec has ${spec.disks.length}.`);
    const entry: Entry = {
      vmId: spec.id,
      sourceNodeId: input.sourceNodeId,
      prepared: Promise.resolve() as unknown as Promise<Prepared>,
      chain: Promise.resolve(),
    };
    entry.prepared = this.make(input, spec);
    this.entries.set(input.migrationId, entry);
    entry.prepared.then(
      () => {
        entry.deadline = setTimeout(
          () => void this.abort(input.migrationId, `the source did not finish the migration within ${input.timeoutMs} ms`),
          input.timeoutMs,
        );
        entry.deadline.unref();
      },
      () => this.entries.delete(input.migrationId),
    );
    return entry.prepared;
  }

  private async make(input: PrepareInput, source: VmSpec): Promise<Prepared> {
    const { hooks, storage, log } = this.o;
    const spec: VmSpec = {
      ...source,
      disks: [],
      // On one machine (tests) the source's TAPs exist here too: the target's take another name.
      nics: source.nics.map((n, i) => ({ ...n, tap: linkExists(n.tap) ? `am${source.id.replace(/-/g, "").slice(0, 8)}n${i}` : n.tap })),
    };
    const record: VmRecord = {
      spec,
      runtime: {
        ...freshRuntime(),
        intent: {
          op: "migrate-in",
          taps: spec.nics.map((n) => n.tap),
          seedPath: "",
          cellName: "",
          start: true,
          migration: { id: input.migrationId, peer: input.sourceNode, step: "preparing", deadlineMs: Date.now() + input.timeoutMs },
        },
      },
    };
    const thin: boolean[] = [];
    const makeDisks = async () => {
      for (const [i, d] of input.disks.entries()) {
        const from = source.disks[i];
        if (!from) break;
        const base =
          d.baseImageSha256 === ""
            ? undefined
            : storage.listImages().find((im) => im.sha256 === d.baseImageSha256 && im.tenant === spec.tenant && im.state === "ready");
        const volume = await storage.createVolume({
          name: d.volumeName,
          tenant: spec.tenant,
          labels: { ...d.labels, ...(source.ownsBootVolume && i === 0 && { [VM_LABEL]: spec.id }) },
          pool: "",
          format: undefined,
          source: base ? { kind: "image", image: base.id, sizeBytes: d.sizeBytes } : { kind: "empty", sizeBytes: d.sizeBytes },
          requestId: "",
          ownerVm: spec.id,
        });
        if (volume.sizeBytes !== d.sizeBytes)
          throw new DomainError(
            "failed_precondition",
            `volume ${d.volumeName} would be ${volume.sizeBytes} bytes here (the pool's granularity), not ${d.sizeBytes}; a mirror needs the same size.`,
          );
        thin.push(base !== undefined);
        spec.disks.push({
          ...from,
          path: volume.hostPath,
          format: volume.format === "qcow2" ? "qcow2" : "raw",
          volumeId: volume.id,
        });
      }
    };
    try {
      await hooks.receive(record, input.sourceNode, makeDisks);
      const qmp = hooks.qmp(record);
      if (!qmp) throw new Error("the target's QEMU does not answer on its QMP socket");
      const [nbdPort, migrationPort] = await Promise.all([freePort(this.o.listenHost), freePort(this.o.listenHost)]);
      const tls = input.tls
        ? {
            creds: await addTlsCreds(qmp, this.o.identity, join(this.o.tlsDir, input.migrationId), "server"),
            authz: await addTlsAuthz(qmp, input.peerNode),
          }
        : undefined;
      const names = await exportDisks(qmp, spec.disks.length, this.o.listenHost, nbdPort, tls);
      const migrationUri = `tcp:${uriHost(this.o.listenHost)}:${migrationPort}`;
      await listenIncoming(qmp, migrationUri, tls);
      if (record.runtime.intent?.migration) record.runtime.intent.migration.step = "prepared";
      await hooks.save(record);
      log.info(
        { vm: spec.name, migration: input.migrationId, from: input.sourceNode, nbdPort, migrationUri, tls: input.tls },
        "prepared for an incoming migration",
      );
      return {
        nbdHost: this.o.listenHost,
        nbdPort,
        exports: names.map((name, i) => ({ name, thinClone: thin[i] ?? false })),
        migrationUri,
      };
    } catch (err) {
      await this.removeVm(record, `its incoming migration could not be prepared: ${(err as Error).message}`);
      throw err instanceof DomainError
        ? err
        : new DomainError("failed_precondition", `the target could not prepare VM ${spec.name}: ${(err as Error).message}`);
    }
  }

  private async removeVm(record: VmRecord, why: string): Promise<void> {
    const { hooks, log } = this.o;
    if (!hooks.byId(record.spec.id)) return;
    try {
      await hooks.end(record, why);
      await hooks.remove(record, `VM ${record.spec.name} was removed from this node: ${why}`);
    } catch (err) {
      log.error({ vm: record.spec.id, err: (err as Error).message }, "could not remove an incoming VM");
    }
  }

  private serialized<T>(entry: Entry, work: () => Promise<T>): Promise<T> {
    const next = entry.chain.catch(() => undefined).then(work);
    entry.chain = next;
    return next;
  }

  /**
   * Resumes the guest here once its incoming state is complete. With confirmWithinMs the VM is not
   * this node's yet (step "resumed"): confirm() decides. Without it (the source has no copy left)
   * the migration commits at once, also one resumed earlier. `figures` are the source's (how long the
   * migration took until this call, the guest's downtime), for the report to the aggregator.
   */
  async finish(migrationId: string, figures: Figures, confirmWithinMs = 0): Promise<void> {
    const calledMs = Date.now();
    const now = this.state(migrationId);
    if (now === "finished" || (now === "resumed" && confirmWithinMs > 0)) return;
    const entry = this.entries.get(migrationId);
    if (!entry) throw new DomainError("not_found", `no incoming migration ${migrationId} on this node (it was aborted or never prepared).`);
    await entry.prepared;
    await this.serialized(entry, async () => {
      const { hooks, log } = this.o;
      const vm = hooks.byId(entry.vmId);
      const migration = vm?.runtime.intent?.migration;
      if (!vm || migration?.id !== migrationId) {
        if (vm?.runtime.migratedIn === migrationId) return;
        throw new DomainError("not_found", `the incoming migration ${migrationId} was aborted on this node.`);
      }
      const qmp = hooks.qmp(vm);
      if (!qmp) throw new DomainError("failed_precondition", `the target's QEMU for VM ${vm.spec.name} is not running any more.`);
      if (migration.step === "committed") return;
      if (migration.step === "resumed") {
        if (confirmWithinMs > 0) return;
        clearTimeout(entry.deadline);
        await this.commit(entry, vm, entry.figures ?? figures, entry.resumedMs ?? calledMs);
        return;
      }
      await awaitIncomingComplete(qmp, COMPLETE_WAIT_MS).catch((err: Error) => {
        throw new DomainError("failed_precondition", err.message);
      });
      clearTimeout(entry.deadline);
      if (confirmWithinMs === 0) {
        await this.commit(entry, vm, figures, calledMs);
        return;
      }
      // Write-ahead: the guest runs here unconfirmed; a crash from here removes this copy (the VM
      // manager's recovery) and the source, told ABSENT, resumes its own.
      migration.step = "resumed";
      Object.assign(entry, { confirmWithinMs, figures, resumedMs: calledMs });
      await hooks.save(vm);
      await resumeIncoming(qmp);
      crashPoint("migration.incoming-resumed");
      if (faultAt("migration.target-guest-silent")) {
        const pid = hooks.pid(vm);
        log.warn({ vm: vm.spec.name, pid }, "test fault migration.target-guest-silent: freezing the resumed guest's QEMU (SIGSTOP)");
        if (pid > 0) process.kill(pid, "SIGSTOP");
      }
      // A source that never asks (it died for good): this node settles the migration itself.
      entry.deadline = setTimeout(
        () =>
          void this.confirm(migrationId).catch((err: Error) =>
            log.error({ vm: vm.spec.name, migration: migrationId, err: err.message }, "could not settle a resumed incoming migration"),
          ),
        confirmWithinMs + CONFIRM_GRACE_MS,
      );
      entry.deadline.unref();
      log.info({ vm: vm.spec.name, migration: migrationId, confirmWithinMs }, "resumed an incoming guest; waiting for it to answer");
    });
  }

  /**
   * Settles a resumed migration: commits it once the guest shows it is healthy here within the
   * bound FinishIncoming gave, else removes this node's copy (QEMU, volumes, TAPs, seed, cell, record)
   * and says why. confirmed false always means this node holds no copy any more.
   */
  async confirm(migrationId: string): Promise<Confirmation> {
    const now = this.state(migrationId);
    if (now === "finished") return { confirmed: true, reason: "" };
    const entry = this.entries.get(migrationId);
    if (now === "absent") return { confirmed: false, reason: "the target holds no copy of the VM (it was removed there)" };
    if (!entry)
      throw new DomainError("unavailable", `this node is still settling the incoming migration ${migrationId} after a restart; ask again.`);
    if (now === "prepared")
      throw new DomainError(
        "failed_precondition",
        `the incoming migration ${migrationId} was not resumed here yet: call FinishIncoming with confirm_within first.`,
      );
    if (!entry.confirming) {
      const decision = this.serialized(entry, () => this.decide(entry, migrationId));
      entry.confirming = decision;
      decision.catch(() => {
        if (entry.confirming === decision) entry.confirming = undefined;
      });
    }
    return entry.confirming;
  }

  private async decide(entry: Entry, migrationId: string): Promise<Confirmation> {
    const { hooks, log } = this.o;
    const vm = hooks.byId(entry.vmId);
    const gone = { confirmed: false, reason: "the target holds no copy of the VM (it was removed there)" };
    if (!vm || vm.runtime.intent?.migration?.id !== migrationId)
      return vm?.runtime.migratedIn === migrationId ? { confirmed: true, reason: "" } : gone;
    if (vm.runtime.intent.migration.step === "committed") return { confirmed: true, reason: "" };
    const within = entry.confirmWithinMs ?? 0;
    // Not knowing is not healthy: the source still holds its copy and resumes it.
    const healthy = await hooks.healthy(vm, within).catch((err: Error) => {
      log.warn({ vm: vm.spec.name, migration: migrationId, err: err.message }, "could not ask the incoming guest whether it is healthy");
      return false;
    });
    clearTimeout(entry.deadline);
    if (healthy) {
      await this.commit(entry, vm, entry.figures ?? { elapsedMs: 0, downtimeMs: 0 }, entry.resumedMs ?? Date.now(), true);
      return { confirmed: true, reason: "" };
    }
    const reason = vm.spec.guestAgent
      ? `the guest's agent did not answer on the target within ${within / 1000} s of its resume there`
      : `the target's QEMU did not say the guest runs within ${within / 1000} s of its resume there`;
    log.warn({ vm: vm.spec.name, migration: migrationId, reason }, "the incoming guest did not confirm; removing this copy");
    await this.removeVm(vm, `its incoming migration was not confirmed: ${reason}`);
    // "Not confirmed" tells the source to resume its copy: only once this one is surely gone.
    if (hooks.byId(vm.spec.id))
      throw new DomainError("unavailable", `the target could not remove its unconfirmed copy of VM ${vm.spec.name}; ask again.`);
    this.entries.delete(migrationId);
    return { confirmed: false, reason };
  }

  /**
   * Commits the migration here: the guest is this node's whatever happens to either aetherd, and it
   * runs here. Resolves once the guest runs; with `settled`, once the VM is settled too (RUNNING,
   * its volumes given back, the report sent), else that follows in the background.
   */
  private async commit(entry: Entry, vm: VmRecord, figures: Figures, calledMs: number, settled = false): Promise<void> {
    const { hooks, storage, log } = this.o;
    const migrationId = vm.runtime.intent?.migration?.id ?? "";
    const qmp = hooks.qmp(vm);
    if (!qmp) throw new DomainError("failed_precondition", `the target's QEMU for VM ${vm.spec.name} is not running any more.`);
    // Write-ahead: from here the guest is this node's, whatever happens to either aetherd. Beside it
    // (the guest waits for both), the report with the figures only this call has: it is sent only
    // once the commit is durable (reports.ts), and recovery writes one without them if none is kept.
    const intent = vm.runtime.intent;
    const runsAlready = intent?.migration?.step === "resumed";
    if (intent?.migration) intent.migration.step = "committed";
    vm.runtime.migratedIn = migrationId;
    await Promise.all([
      hooks.save(vm),
      this.o.reports.record({
        ...reportOf(vm, migrationId, entry.sourceNodeId),
        totalMs: figures.elapsedMs > 0 ? figures.elapsedMs + (Date.now() - calledMs) : 0,
        downtimeMs: figures.downtimeMs,
      }),
    ]);
    crashPoint("migration.incoming-committed");
    // Committed: the guest is this node's whatever fails from here, so it is settled again until done.
    const retry = (err: Error) => {
      log.error({ vm: vm.spec.name, migration: migrationId, err: err.message }, "settling a migrated guest failed; retrying");
      this.settleLater(vm);
    };
    try {
      if (!runsAlready) await resumeIncoming(qmp);
      await hooks.setState(vm, "running", `live-migrated from ${intent?.migration?.peer ?? "another node"}`);
    } catch (err) {
      return retry(err as Error);
    }
    // The guest runs here: the rest (the TLS objects out, the volumes given back, the report, the
    // agent's answer) follows; the caller waits for it only when the guest was confirmed first.
    this.o.reports.flush();
    log.info({ vm: vm.spec.name, migration: migrationId }, "incoming migration committed; the guest runs here");
    const settle = dropTlsCreds(qmp)
      .then(() => settleCommitted(hooks, storage, vm, this.o.reports))
      .catch(retry);
    if (settled) await settle;
  }

  /** Removes the incoming VM; FAILED_PRECONDITION once finished. */
  async abort(migrationId: string, reason: string): Promise<void> {
    const entry = this.entries.get(migrationId);
    if (this.state(migrationId) === "finished")
      throw new DomainError("failed_precondition", `the migration ${migrationId} was finished: the guest runs on this node now.`);
    if (!entry) return;
    await entry.prepared.catch(() => undefined);
    await this.serialized(entry, async () => {
      clearTimeout(entry.deadline);
      const vm = this.o.hooks.byId(entry.vmId);
      if (vm && vm.runtime.intent?.migration?.id === migrationId) {
        this.o.log.warn({ vm: vm.spec.name, migration: migrationId, reason }, "aborting an incoming migration");
        await this.removeVm(vm, `its incoming migration was cancelled: ${reason}`);
      }
      this.entries.delete(migrationId);
    });
  }

  private settleLater(vm: VmRecord): void {
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      if (vm.runtime.intent?.op !== "migrate-in" || !this.o.hooks.byId(vm.spec.id)) return;
      settleCommitted(this.o.hooks, this.o.storage, vm, this.o.reports).catch(() => this.settleLater(vm));
    }, SETTLE_RETRY_MS);
    timer.unref();
    this.retries.add(timer);
  }

  state(migrationId: string): IncomingState {
    for (const vm of this.o.hooks.list()) {
      if (vm.runtime.migratedIn === migrationId && vm.runtime.intent?.op !== "migrate-in") return "finished";
      if (vm.runtime.intent?.op === "migrate-in" && vm.runtime.intent.migration?.id === migrationId)
        switch (vm.runtime.intent.migration.step) {
          case "committed":
            return "finished";
          case "resumed":
            return "resumed";
          default:
            return "prepared";
        }
    }
    return this.entries.has(migrationId) ? "prepared" : "absent";
  }

  close(): void {
    for (const e of this.entries.values()) clearTimeout(e.deadline);
    for (const t of this.retries) clearTimeout(t);
  }
}

/**
 * After the commit (also when recovery finds it): the guest runs, the volumes the VM does not own
 * are given back to its tenant, the intent is cleared, and the VM is RUNNING once its agent answers.
 */
export async function settleCommitted(
  hooks: MigrationHooks,
  storage: StorageRegistry,
  vm: VmRecord,
  reports: MigrationReports,
): Promise<void> {
  const migrationId = vm.runtime.intent?.migration?.id ?? vm.runtime.migratedIn;
  // A crash between the commit and here may have left no report (figures unknown then).
  if (!(await reports.has(migrationId))) await reports.record({ ...reportOf(vm, migrationId, ""), totalMs: 0, downtimeMs: 0 });
  const qmp = hooks.qmp(vm);
  if (qmp) {
    const { status } = await qmp.execute<{ status: string }>("query-status");
    if (status !== "running") await resumeIncoming(qmp);
  }
  for (const [i, d] of vm.spec.disks.entries()) {
    if (d.volumeId !== "" && !(vm.spec.ownsBootVolume && i === 0)) await storage.setOwnerVm(d.volumeId, "");
  }
  const from = vm.runtime.intent?.migration?.peer ?? "";
  vm.runtime.intent = undefined;
  hooks.release(vm);
  await hooks.resumed(vm, `live-migrated from ${from}`);
  reports.flush();
}

/** The report of a migration that brought vm here, but for its figures. */
function reportOf(vm: VmRecord, migrationId: string, sourceNodeId: string) {
  return {
    migrationId,
    vmId: vm.spec.id,
    vmName: vm.spec.name,
    tenant: vm.spec.tenant,
    workloadId: vm.spec.labels[WORKLOAD_LABEL] ?? "",
    sourceNodeId,
    sourceNode: vm.runtime.intent?.migration?.peer ?? "",
    finishMs: Date.now(),
  };
}

/**
 * Refuses, before anything is made, a VM this node would not run: a confined VM (its tenant's own
 * call made it) is held to this node's [tenancy] exactly as a create by its tenant would be (the
 * kernel and initrd published to tenants here, the tenant's own bridges), whatever the source's
 * rules were; any VM needs its kernel files and bridges to be on this node.
 */
function checkIncomingTenancy(spec: VmSpec, tenancy: TenancyConfig): void {
  const who = `VM ${spec.name} of tenant ${spec.tenant}`;
  const files = spec.boot === "kernel" ? [spec.kernelPath, spec.initrdPath].filter((p) => p !== "") : [];
  try {
    parseTenant(spec.tenant);
    if (spec.confined) {
      for (const [i, p] of files.entries()) tenantKernelPath(i === 0 ? "kernel_path" : "initrd_path", p, tenancy, spec.tenant);
      spec.nics.forEach((n, i) => checkTenantBridge(`nics[${i}].bridge`, n.bridge, tenancy, spec.tenant));
    }
  } catch (err) {
    if (err instanceof ConnectError)
      throw new ConnectError(`this node does not take ${who} by live migration: ${err.rawMessage}`, err.code);
    throw err;
  }
  const missing = files.find((p) => !existsSync(p));
  if (missing !== undefined)
    throw new DomainError("failed_precondition", `this node cannot run ${who}: its boot file ${missing} is not on this node.`);
  const bridge = spec.nics.find((n) => !isBridge(n.bridge))?.bridge;
  if (bridge !== undefined)
    throw new DomainError("failed_precondition", `this node cannot run ${who}: it has no bridge ${bridge} for the VM's NIC.`);
}

function parseSpec(json: string): VmSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new DomainError("invalid_argument", "vm_spec_json is not JSON.");
  }
  const parsed = VmSpecSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new DomainError("invalid_argument", `vm_spec_json: ${issue?.path.join(".") || "spec"}: ${issue?.message ?? "invalid"}.`);
  }
  return parsed.data;
}

function uriHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** A TCP port free on host now (QEMU binds it a moment later). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
