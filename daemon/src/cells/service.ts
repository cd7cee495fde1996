// aether.cells.v1.CellService: validates requests and translates between the registry's records
// and the contract's messages.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CellBackend,
  CellSchema,
  CellService,
  CellState,
  CellStatsSchema,
  type Cell,
} from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { timestamp } from "../api/time.js";
import { labelFilter, labels, matchesFilter, paginate, reference, tenant as parseTenant } from "../api/validate.js";
import { limitsFromProto } from "./limits.js";
import type { CellRegistry, CellView } from "./registry.js";

export function cellService(registry: CellRegistry): ServiceImpl<typeof CellService> {
  const resolve = (ref: string, tenantField: string) => registry.resolve(reference("cell", ref, { path: true }), parseTenant(tenantField));
  const message = async (view: Promise<CellView>) => toMessage(await view);

  return {
    async allocateCell(req) {
      const record = await registry.allocate({
        name: req.name,
        tenant: parseTenant(req.tenant),
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
      return { cell: await message(registry.view(record)) };
    },

    async freeCell(req) {
      const stopped = await registry.free(resolve(req.cell, req.tenant), req.stopExecutables);
      return { stoppedExecutables: stopped };
    },

    async updateCell(req) {
      const updated = await registry.update(resolve(req.cell, req.tenant), limitsFromProto(req.limits));
      return { cell: await message(registry.view(updated)) };
    },

    async getCell(req) {
      return { cell: await message(registry.view(resolve(req.cell, req.tenant))) };
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
          .map((r) => registry.view(r)),
      );
      const wanted = views.filter((v) => req.state === CellState.UNSPECIFIED || stateOf(v) === req.state);
      const { page, nextPageToken } = paginate(wanted, req.pageSize, req.pageToken);
      return { cells: page.map(toMessage), nextPageToken };
    },

    async getCellStats(req) {
      const r = resolve(req.cell, req.tenant);
      const s = await registry.stats(r);
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
