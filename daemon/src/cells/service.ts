// aether.cells.v1.CellService: validates requests and translates between the registry's records
// and the contract's messages.
import { create } from "@bufbuild/protobuf";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { CellBackend, CellSchema, CellService, CellState, CellStatsSchema, type Cell } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import {
  labelFilter,
  labels,
  matchesFilter,
  notFound,
  paginate,
  reference,
  rpcCode,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import { limitsFromProto } from "./limits.js";
import type { CellRecord, CellRegistry, CellView } from "./registry.js";

export function cellService(registry: CellRegistry): ServiceImpl<typeof CellService> {
  const resolve = (ref: string, tenantField: string) => registry.resolve(reference("cell", ref, { path: true }), parseTenant(tenantField));
  const message = async (view: Promise<CellView>) => toMessage(await view);
  // (The registry itself allocates one cell at a time, so names and request_ids stay unique.)
  // A free, an update and a child's allocation of one cell run one after the other (an update
  // racing a free wrote the record of a freed cell back, or read a removed cgroup); they may take
  // seconds (a free stops processes), so this is one queue per cell, not a global one.
  const queues = new Map<string, Promise<unknown>>();
  const exclusive = async <T>(cellId: string, work: () => Promise<T>): Promise<T> => {
    const run = (queues.get(cellId) ?? Promise.resolve()).then(work);
    const tail = run.catch(() => undefined);
    queues.set(cellId, tail);
    try {
      return await run;
    } finally {
      if (queues.get(cellId) === tail) queues.delete(cellId);
    }
  };
  /** The cell's current record once this call's turn has come; it may have been freed while the call waited. */
  const current = (first: CellRecord): CellRecord => {
    const now = registry.list().find((r) => r.id === first.id);
    if (!now) throw notFound(`cell ${first.name} was freed while this call waited for it.`);
    return now;
  };
  /** Reads of a cell that is freed meanwhile find its cgroup gone: that is NOT_FOUND, not a failure. */
  const reading = async <T>(first: CellRecord, read: () => Promise<T>): Promise<T> => {
    try {
      return await read();
    } catch (err) {
      if (rpcCode(err) === undefined && !registry.list().some((r) => r.id === first.id))
        throw notFound(`cell ${first.name} was freed while it was read.`);
      throw err;
    }
  };

  return {
    async allocateCell(req) {
      const tenant = parseTenant(req.tenant);
      const parentName = req.name.includes("/") ? req.name.slice(0, req.name.lastIndexOf("/")) : "";
      const parent = parentName === "" ? undefined : registry.list().find((r) => r.tenant === tenant && r.name === parentName);
      const allocate = () =>
        registry.allocate({
          name: req.name,
          tenant,
          labels: labels(req.labels),
          limits: limitsFromProto(req.limits),
          isolation: {
            pid: req.isolation?.pid ?? false,
            mount: req.isolation?.mount ?? false,
            network: req.isolation?.network ?? false,
            uts: req.isolation?.uts ?? false,
            ipc: req.isolation?.ipc ?? false,
          },
          requestId: req.requestId,
        });
      // A child waits for whatever is being done to its parent (a free must not miss it).
      const record = parent ? await exclusive(parent.id, allocate) : await allocate();
      return { cell: await reading(record, () => message(registry.view(record))) };
    },

    async freeCell(req) {
      const first = resolve(req.cell, req.tenant);
      const stopped = await exclusive(first.id, () => registry.free(current(first), req.stopExecutables));
      return { stoppedExecutables: stopped };
    },

    async updateCell(req) {
      const first = resolve(req.cell, req.tenant);
      const limits = limitsFromProto(req.limits);
      const updated = await exclusive(first.id, () => registry.update(current(first), limits));
      return { cell: await reading(updated, () => message(registry.view(updated))) };
    },

    async getCell(req) {
      const r = resolve(req.cell, req.tenant);
      return { cell: await reading(r, () => message(registry.view(r))) };
    },

    async listCells(req) {
      const owner = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const views = await Promise.all(
        registry
          .list()
          .filter((r) => owner === undefined || r.tenant === owner)
          .filter((r) => req.root === "" || r.name === req.root || r.name.startsWith(`${req.root}/`))
          .filter((r) => matchesFilter(r.labels, terms))
          // A cell freed while the list is read is left out.
          .map((r) =>
            reading(r, () => registry.view(r)).catch((err: unknown) => (rpcCode(err) === Code.NotFound ? undefined : Promise.reject(err))),
          ),
      );
      const wanted = views
        .filter((v): v is CellView => v !== undefined)
        .filter((v) => req.state === CellState.UNSPECIFIED || stateOf(v) === req.state);
      const { page, nextPageToken } = paginate(wanted, req.pageSize, req.pageToken);
      return { cells: page.map(toMessage), nextPageToken };
    },

    async getCellStats(req) {
      const r = resolve(req.cell, req.tenant);
      const s = await reading(r, () => registry.stats(r));
      return {
        cellId: r.id,
        stats: create(CellStatsSchema, {
          readTime: timestamp(Date.now()),
          cpuUsageUsec: BigInt(s.cpuUsageUsec),
          cpuUserUsec: BigInt(s.cpuUserUsec),
          cpuSystemUsec: BigInt(s.cpuSystemUsec),
          cpuThrottledUsec: BigInt(s.cpuThrottledUsec),
          cpuPeriods: BigInt(s.cpuPeriods),
          cpuThrottledPeriods: BigInt(s.cpuThrottledPeriods),
          memoryCurrentBytes: BigInt(s.memoryCurrentBytes),
          memoryPeakBytes: BigInt(s.memoryPeakBytes),
          oomKillCount: BigInt(s.oomKillCount),
          pidsCurrent: BigInt(s.pidsCurrent),
        }),
      };
    },
  };
}

function stateOf(v: CellView): CellState {
  return v.state === "freeing" ? CellState.FREEING : CellState.ACTIVE;
}

function toMessage(v: CellView): Cell {
  const r = v.record;
  return create(CellSchema, {
    id: r.id,
    name: r.name,
    tenant: r.tenant,
    labels: r.labels,
    parent: v.parent,
    children: v.children,
    limits: {
      cpuWeight: r.limits.cpuWeight,
      cpuMax: { quotaUsec: BigInt(r.limits.cpuQuotaUsec), periodUsec: BigInt(r.limits.cpuPeriodUsec) },
      cpusetCpus: r.limits.cpusetCpus,
      cpusetMems: r.limits.cpusetMems,
      memoryMaxBytes: BigInt(r.limits.memoryMaxBytes),
      memoryHighBytes: BigInt(r.limits.memoryHighBytes),
      pidsMax: BigInt(r.limits.pidsMax),
    },
    isolation: r.isolation,
    state: stateOf(v),
    stateReason: r.stateReason,
    backend: v.backend === "v1" ? CellBackend.CGROUP_V1 : CellBackend.CGROUP_V2,
    cgroupPaths: v.cgroupPaths,
    namespaceHolderPid: v.holder?.pid ?? 0,
    processCount: v.processCount,
    createTime: timestamp(r.createTimeMs),
  });
}
