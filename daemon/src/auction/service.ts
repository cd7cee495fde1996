// aether.auction.v1.BidService: scores workloads for the aggregator, holds a positive bid's resources
// for a few seconds so concurrent auctions cannot over-commit this node, provisions the workloads it
// wins through the same handlers the normal RPCs use, and releases them.
//
// It is past 400 lines because provisioning dispatches every kind of workload it may win (an
// executable, a VM with its image fetched first) against the same holds that scoring took; the
// score itself is score.ts, the capacity rules capacity.ts, the image import image-fetch.ts.
import { rm, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  clip,
  duration,
  durationMs,
  internal,
  invalidArgument,
  rpcCode,
  scopeKey,
  tenant as parseTenant,
  timestamp,
  writeJsonAtomic,
} from "@aether/server";
import { Code, ConnectError, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { z } from "zod";
import {
  BidBreakdownSchema,
  BidFactorSchema,
  type BidService,
  type ExecuteProvisioningResponse,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import {
  CellSchema,
  type CellService,
  FreeCellRequestSchema,
  GetCellRequestSchema,
  AllocateCellRequestSchema,
} from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import {
  DeleteExecutableRequestSchema,
  ExecutableSchema,
  type ExecutableService,
  GetExecutableRequestSchema,
  StartExecutableRequestSchema,
  StopExecutableRequestSchema,
} from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import {
  CreateVmRequestSchema,
  DeleteVmRequestSchema,
  GetVmRequestSchema,
  StartVmRequestSchema,
  StopVmRequestSchema,
  VmSchema,
  type CreateVmRequest,
  type VmService,
} from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import type { CellRegistry } from "../cells/registry.js";
import { readTelemetry, type TelemetrySnapshot } from "../observe/telemetry.js";
import type { Supervisor } from "../runtime/supervisor.js";
import type { StorageRegistry } from "../storage/registry.js";
import type { VmManager } from "../vm/manager.js";
import { commitments, poolSpace, type Commitments, type Declared, type Hold, type KvmCheck, type PoolSpace } from "./capacity.js";
import { declineKind, score, type ScoreInput, type ScoreResult } from "./score.js";
import { checkSpec, WORKLOAD_LABEL, type CheckedSpec } from "./spec.js";
import { fetchImage, imageNeed, scoreForImage } from "./image-fetch.js";
import type { StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";

/** How long ReleaseWorkload lets a workload stop gracefully when the request says nothing (the contract's 30 s). */
const DEFAULT_RELEASE_GRACE_MS = 30_000;

export interface BiddingRules {
  memoryOvercommit: number;
  cpuOvercommit: number;
  /** How long a positive bid holds its resources. */
  holdMs: number;
}

export interface BiddingDeps {
  nodeId: string;
  /** Labels matched by node_selector (configured [node] labels plus aether.io/hostname and /arch). */
  nodeLabels: Record<string, string>;
  rules: BiddingRules;
  stateDir: string;
  supervisor: Supervisor;
  cells: CellRegistry;
  /** Why cells do not work here, when they do not. */
  cellsReason: string;
  vms: VmManager;
  storage: StorageRegistry;
  defaultPool: string;
  kvm: KvmCheck;
  hypervisors: { qemu: boolean; firecracker: boolean };
  /** The handlers of the normal RPCs: provisioning and release go through them. */
  handlers: {
    runtime: ServiceImpl<typeof ExecutableService>;
    cells: ServiceImpl<typeof CellService>;
    vm: ServiceImpl<typeof VmService>;
    /** Imports a VM workload's image on the winner that lacks it (image-fetch.ts). */
    storage: ServiceImpl<typeof StorageService>;
  };
  log: Logger;
  /**
   * Before a VM workload is created here: makes the replicas this node holds of its volumes (it was
   * started on a node that has been fenced) its volumes here, and points the request at them.
   * Returns what to do once the VM exists (its boot volume becomes its own, deleted with it).
   */
  restoreVm?: (workloadId: string, tenant: string, req: CreateVmRequest) => Promise<(vmId: string) => Promise<void>>;
}

const DeclaredRecordSchema = z.object({
  workloadId: z.string(),
  tenant: z.string(),
  kind: z.enum(["executable", "cell", "vm"]),
  cpuMillis: z.number(),
  memoryBytes: z.number(),
});
type DeclaredRecord = z.infer<typeof DeclaredRecordSchema>;

/** The node's side of the auction: holds, the workloads it provisioned, and the figures of a bid. */
export class Bidding {
  private readonly holds = new Map<string, Hold>();
  private readonly declared = new Map<string, DeclaredRecord>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly dir: string;
  /** Bids answered since aetherd started, by outcome ("bid", "declined") and decline kind (declineKind). */
  readonly bidCounts = new Map<string, { outcome: string; reason: string; count: number }>();

  constructor(readonly deps: BiddingDeps) {
    this.dir = join(deps.stateDir, "auction", "workloads");
  }

  /** Reads back what the workloads this node provisioned declared they need. */
  async load(): Promise<void> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    for (const file of files.filter((f) => f.endsWith(".json"))) {
      try {
        const record = DeclaredRecordSchema.parse(JSON.parse(await readFile(join(this.dir, file), "utf8")));
        this.declared.set(record.workloadId, record);
      } catch (err) {
        this.deps.log.error({ file, err: (err as Error).message }, "ignoring an unreadable workload record");
      }
    }
  }

  /** Counts a bid answered (for aether_bids_total). */
  countBid(result: ScoreResult): void {
    const outcome = result.score > 0 ? "bid" : "declined";
    const reason = result.score > 0 ? "" : declineKind(result.breakdown.declineReason);
    const key = `${outcome}/${reason}`;
    const entry = this.bidCounts.get(key) ?? { outcome, reason, count: 0 };
    entry.count++;
    this.bidCounts.set(key, entry);
  }

  /** What the node has promised now (every hold counted unless `except` names one). */
  committed(except?: string): Commitments {
    const now = Date.now();
    for (const [id, h] of this.holds) if (h.untilMs <= now) this.holds.delete(id);
    const declared = new Map<string, Declared>([...this.declared].filter(([, r]) => r.kind === "executable"));
    return commitments({
      vms: this.deps.vms.list(),
      cells: this.deps.cells.list(),
      executables: this.deps.supervisor.list(),
      holds: [...this.holds.values()],
      declared,
      nowMs: now,
      exceptWorkload: except,
    });
  }

  /** Everything the score needs that takes I/O: kernel telemetry and, when disk is needed, the pool. */
  async gather(spec: CheckedSpec): Promise<{ telemetry: TelemetrySnapshot; pool: PoolSpace }> {
    const [telemetry, pool] = await Promise.all([
      readTelemetry({ diskWaitMs: 0 }),
      spec.requirements.diskBytes > 0
        ? poolSpace(this.deps.storage, this.deps.defaultPool)
        : Promise.resolve<PoolSpace>({ name: this.deps.defaultPool, freeBytes: 0 }),
    ]);
    return { telemetry, pool };
  }

  /** Scores a checked spec against the gathered figures and the commitments of this moment (synchronous). */
  scoreNow(spec: CheckedSpec, gathered: { telemetry: TelemetrySnapshot; pool: PoolSpace }): ScoreResult {
    const { telemetry: t, pool } = gathered;
    const committed = this.committed(spec.workloadId);
    const pressure: ScoreInput["telemetry"]["pressureSomeAvg10"] = {};
    for (const p of t.pressure)
      if (p.available && (p.resource === "cpu" || p.resource === "memory" || p.resource === "io")) pressure[p.resource] = p.someAvg10;
    return score({
      requirements: spec.requirements,
      node: {
        id: this.deps.nodeId,
        labels: this.deps.nodeLabels,
        kvm: this.deps.kvm.status(this.deps.vms.list()),
        hypervisors: this.deps.hypervisors,
        cells: { available: this.deps.cells.backendVersion !== undefined, reason: this.deps.cellsReason },
      },
      capacity: { cpuCount: t.cpuCount, memoryTotalBytes: t.memoryTotalBytes },
      committed,
      telemetry: {
        memoryAvailableBytes: t.memoryAvailableBytes,
        load1m: t.load[0],
        runnableTasks: t.runnableTasks,
        pressureSomeAvg10: pressure,
        diskWearPercent: t.disks.flatMap((d) =>
          d.known && d.percentageUsed !== undefined ? [{ device: d.device, percentageUsed: d.percentageUsed }] : [],
        ),
        disksUnknown: t.disks.filter((d) => !d.known).map((d) => d.device),
      },
      pool,
      rules: { memoryOvercommit: this.deps.rules.memoryOvercommit, cpuOvercommit: this.deps.rules.cpuOvercommit },
    });
  }

  hold(spec: CheckedSpec): number {
    const untilMs = Date.now() + this.deps.rules.holdMs;
    const r = spec.requirements;
    this.holds.set(spec.workloadId, {
      workloadId: spec.workloadId,
      cpuMillis: r.cpuMillis,
      memoryBytes: r.memoryBytes,
      diskBytes: r.diskBytes,
      untilMs,
    });
    return untilMs;
  }

  dropHold(workloadId: string): void {
    this.holds.delete(workloadId);
  }

  /** Runs `work` with no other provisioning or release of the same workload in between. */
  async exclusive<T>(workloadId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(workloadId) ?? Promise.resolve();
    const run = previous.then(work, work);
    const tail = run.catch(() => undefined);
    this.locks.set(workloadId, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(workloadId) === tail) this.locks.delete(workloadId);
    }
  }

  async remember(spec: CheckedSpec): Promise<void> {
    const record: DeclaredRecord = {
      workloadId: spec.workloadId,
      tenant: spec.tenant,
      kind: spec.kind.case,
      cpuMillis: spec.requirements.cpuMillis,
      memoryBytes: spec.requirements.memoryBytes,
    };
    await writeJsonAtomic(join(this.dir, `${spec.workloadId}.json`), record);
    this.declared.set(spec.workloadId, record);
  }

  async forget(workloadId: string): Promise<void> {
    this.declared.delete(workloadId);
    await rm(join(this.dir, `${workloadId}.json`), { force: true });
  }

  /** The resources labelled with a workload id (optionally in one tenant). */
  resourcesOf(workloadId: string, tenant?: string) {
    const mine = (labels: Record<string, string>, owner: string) =>
      labels[WORKLOAD_LABEL] === workloadId && (tenant === undefined || owner === tenant);
    return {
      executables: this.deps.supervisor.list().filter((e) => mine(e.spec.labels, e.spec.tenant)),
      cells: this.deps.cells.list().filter((c) => mine(c.labels, c.tenant)),
      vms: this.deps.vms.list().filter((v) => mine(v.spec.labels, v.spec.tenant)),
    };
  }
}

export function bidService(bidding: Bidding): ServiceImpl<typeof BidService> {
  const { deps } = bidding;
  const h = deps.handlers;

  const breakdown = (r: ScoreResult) =>
    create(BidBreakdownSchema, {
      factors: r.breakdown.factors.map((f) => create(BidFactorSchema, f)),
      declineReason: r.breakdown.declineReason,
    });

  /** The response for a workload's resource that already exists (a retried provisioning). */
  const existing = async (spec: CheckedSpec, ctx: HandlerContext): Promise<ExecuteProvisioningResponse["resource"] | undefined> => {
    const found = bidding.resourcesOf(spec.workloadId, spec.tenant);
    const exe = found.executables[0];
    if (spec.kind.case === "executable" && exe) {
      const r = await h.runtime.getExecutable(
        create(GetExecutableRequestSchema, { executable: exe.spec.id, tenant: exe.spec.tenant }),
        ctx,
      );
      return r.executable ? { case: "executable", value: create(ExecutableSchema, r.executable) } : undefined;
    }
    const cell = found.cells[0];
    if (spec.kind.case === "cell" && cell) {
      const r = await h.cells.getCell(create(GetCellRequestSchema, { cell: cell.id, tenant: cell.tenant }), ctx);
      return r.cell ? { case: "cell", value: create(CellSchema, r.cell) } : undefined;
    }
    const vm = found.vms[0];
    if (spec.kind.case === "vm" && vm) {
      // Created by an earlier attempt whose start did not happen: start it now, once.
      const r =
        vm.runtime.state === "created"
          ? await h.vm.startVm(create(StartVmRequestSchema, { vm: vm.spec.id, tenant: vm.spec.tenant, requestId: spec.workloadId }), ctx)
          : await h.vm.getVm(create(GetVmRequestSchema, { vm: vm.spec.id, tenant: vm.spec.tenant }), ctx);
      return r.vm ? { case: "vm", value: create(VmSchema, r.vm) } : undefined;
    }
    return undefined;
  };

  const provision = async (spec: CheckedSpec, ctx: HandlerContext): Promise<ExecuteProvisioningResponse["resource"]> => {
    const common = { tenant: spec.tenant, requestId: spec.workloadId };
    const kind = spec.kind;
    const labelsOf = (own: Record<string, string>) => ({ ...spec.labels, ...own, [WORKLOAD_LABEL]: spec.workloadId });
    switch (kind.case) {
      case "executable": {
        const req = create(StartExecutableRequestSchema, {
          ...kind.value,
          ...common,
          name: spec.name,
          labels: labelsOf(kind.value.labels),
        });
        const r = await h.runtime.startExecutable(req, ctx);
        if (!r.executable) throw internal("the executable handler returned no executable.");
        return { case: "executable", value: create(ExecutableSchema, r.executable) };
      }
      case "cell": {
        const req = create(AllocateCellRequestSchema, { ...kind.value, ...common, name: spec.name, labels: labelsOf(kind.value.labels) });
        const r = await h.cells.allocateCell(req, ctx);
        if (!r.cell) throw internal("the cell handler returned no cell.");
        return { case: "cell", value: create(CellSchema, r.cell) };
      }
      case "vm": {
        const req = create(CreateVmRequestSchema, {
          ...kind.value,
          ...common,
          name: spec.name,
          labels: labelsOf(kind.value.labels),
          start: false,
        });
        const restored = await bidding.deps.restoreVm?.(spec.workloadId, spec.tenant, req);
        const created = await h.vm.createVm(req, ctx);
        const id = created.vm?.id ?? "";
        if (id === "") throw internal("the VM handler returned no VM.");
        try {
          const started = await h.vm.startVm(
            create(StartVmRequestSchema, { vm: id, tenant: spec.tenant, requestId: spec.workloadId }),
            ctx,
          );
          if (!started.vm) throw internal("the VM handler returned no VM.");
          // Only a VM that started takes its restored boot volume: one deleted below must not take
          // the data of the replica with it.
          await restored?.(id);
          return { case: "vm", value: create(VmSchema, started.vm) };
        } catch (err) {
          // A VM that cannot start here is not left behind: the aggregator tries the next bidder.
          await attempt(
            () => h.vm.deleteVm(create(DeleteVmRequestSchema, { vm: id, tenant: spec.tenant, force: true }), ctx),
            () => undefined,
          );
          throw err;
        }
      }
    }
  };

  return {
    async requestBid(req) {
      const spec = checkSpec(req.spec);
      const gathered = await bidding.gather(spec);
      // From here to the hold nothing awaits: two bids cannot both count the same free memory.
      const result = scoreForImage(bidding.scoreNow(spec, gathered), deps.storage, imageNeed(req.spec, spec.tenant));
      bidding.countBid(result);
      let holdUntil: number | undefined;
      if (result.score > 0 && deps.rules.holdMs > 0) holdUntil = bidding.hold(spec);
      else bidding.dropHold(spec.workloadId);
      deps.log.debug(
        { auction: req.auctionId, workload: spec.workloadId, score: result.score, decline: result.breakdown.declineReason },
        "bid",
      );
      return {
        node: deps.nodeId,
        score: result.score,
        breakdown: breakdown(result),
        holdUntil: holdUntil === undefined ? undefined : timestamp(holdUntil),
      };
    },

    async executeProvisioning(req, callerCtx) {
      const spec = checkSpec(req.spec);
      // A tenant's workload is held to its tenant here exactly as the tenant's own call would be,
      // though the aggregator (a cluster-wide identity) asks for it.
      const confined = spec.confined || callerCtx.values.get(scopeKey).tenant !== undefined;
      const ctx = confined ? actingForTenant(callerCtx, spec.tenant) : callerCtx;
      if (req.requestId.length > 128) throw invalidArgument("request_id is longer than 128 characters.");
      return bidding.exclusive(spec.workloadId, async () => {
        const earlier = await existing(spec, ctx);
        if (earlier) {
          bidding.dropHold(spec.workloadId);
          return { node: deps.nodeId, resource: earlier };
        }
        // The hold may have expired, or the node changed since the bid: check again, without this
        // workload's own hold, so a win never over-commits the node.
        const check = bidding.scoreNow(spec, await bidding.gather(spec));
        if (check.score < 0) {
          bidding.dropHold(spec.workloadId);
          throw new ConnectError(
            `this node can no longer host workload ${spec.workloadId}: ${check.breakdown.declineReason}`,
            Code.ResourceExhausted,
          );
        }
        await bidding.remember(spec);
        try {
          const importMs = await fetchImage(
            { storage: deps.storage, handler: h.storage, log: deps.log },
            imageNeed(req.spec, spec.tenant),
            spec.workloadId,
            ctx,
          );
          const resource = await provision(spec, ctx);
          deps.log.info(
            { auction: req.auctionId, workload: spec.workloadId, kind: spec.kind.case, resource: resource.value?.id, importMs },
            "workload provisioned",
          );
          return { node: deps.nodeId, resource, ...(importMs !== undefined && { imageImportDuration: duration(importMs) }) };
        } catch (err) {
          await bidding.forget(spec.workloadId);
          throw err;
        } finally {
          bidding.dropHold(spec.workloadId);
        }
      });
    },

    async releaseWorkload(req, ctx) {
      const id = req.workloadId;
      if (id === "" || id.length > 63 || /[^A-Za-z0-9._-]/.test(id)) {
        throw invalidArgument(
          id === ""
            ? "workload_id is empty: give the id of the workload to release."
            : `workload_id ${JSON.stringify(clip(id))} is not a workload id.`,
        );
      }
      const tenant = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const graceMs = durationMs("grace_period", req.gracePeriod, DEFAULT_RELEASE_GRACE_MS);
      return bidding.exclusive(id, async () => {
        bidding.dropHold(id);
        const found = bidding.resourcesOf(id, tenant);
        for (const vm of found.vms) {
          if (["starting", "running", "paused"].includes(vm.runtime.state)) {
            const stop = create(StopVmRequestSchema, {
              vm: vm.spec.id,
              tenant: vm.spec.tenant,
              timeout: duration(graceMs),
              force: graceMs === 0,
            });
            await attempt(() => h.vm.stopVm(stop, ctx), ignoreNotRunning);
          }
          await attempt(
            () => h.vm.deleteVm(create(DeleteVmRequestSchema, { vm: vm.spec.id, tenant: vm.spec.tenant, force: true }), ctx),
            ignoreGone,
          );
        }
        for (const cell of found.cells) {
          // Cells allocated inside the workload's cell go first, the deepest first.
          const inside = deps.cells
            .list()
            .filter((c) => c.tenant === cell.tenant && c.name.startsWith(`${cell.name}/`))
            .sort((a, b) => b.name.split("/").length - a.name.split("/").length);
          for (const c of [...inside, cell]) {
            await attempt(
              () => h.cells.freeCell(create(FreeCellRequestSchema, { cell: c.id, tenant: c.tenant, stopExecutables: true }), ctx),
              ignoreGone,
            );
          }
        }
        for (const exe of found.executables) {
          if (exe.status === "running") {
            const stop = create(StopExecutableRequestSchema, {
              executable: exe.spec.id,
              tenant: exe.spec.tenant,
              gracePeriod: duration(graceMs),
            });
            await attempt(() => h.runtime.stopExecutable(stop, ctx), ignoreNotRunning);
          }
          await attempt(
            () =>
              h.runtime.deleteExecutable(create(DeleteExecutableRequestSchema, { executable: exe.spec.id, tenant: exe.spec.tenant }), ctx),
            ignoreGone,
          );
        }
        await bidding.forget(id);
        const released = found.vms.length + found.cells.length + found.executables.length > 0;
        if (released) deps.log.info({ workload: id }, "workload released");
        return { released };
      });
    },
  };
}

/** Calls a handler; an error `ignore` does not rethrow is dropped. */
async function attempt<T>(call: () => T | Promise<T>, ignore: (err: unknown) => void): Promise<void> {
  try {
    await call();
  } catch (err) {
    ignore(err);
  }
}

/** Something already gone is what a release wants. */
function ignoreGone(err: unknown): void {
  if (rpcCode(err) === Code.NotFound) return;
  throw err;
}

/** A process that ended between the look and the stop needs no stopping. */
function ignoreNotRunning(err: unknown): void {
  const code = rpcCode(err);
  if (code === Code.NotFound || code === Code.FailedPrecondition) return;
  throw err;
}

/** The handler context of a call made on behalf of a tenant: the handlers confine it to that tenant. */
function actingForTenant(ctx: HandlerContext, tenant: string): HandlerContext {
  const scope = ctx.values.get(scopeKey);
  const values = createContextValues().set(scopeKey, { identity: `${scope.identity} (for tenant ${tenant})`, tenant });
  return { ...ctx, values };
}
