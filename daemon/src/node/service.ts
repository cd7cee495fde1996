// aether.node.v1.NodeService: identity, version, capabilities and health.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { arch, cpus, hostname, release, totalmem } from "node:os";
import {
  CapabilitiesSchema,
  CgroupVersion,
  HealthStatus,
  NodeInfoSchema,
  NodeService,
  ToolProbeSchema,
} from "@aether/sdk/gen/aether/node/v1/node_pb";
import { duration, timestamp } from "@aether/server";
import { scopeKey, setLogLevelRpc, type RuntimeLogLevel } from "@aether/server";
import { checkHealth, type HealthDeps } from "./health.js";
import type { Supervisor } from "../runtime/supervisor.js";
import { probeHost, type ProbeResult, type ToolFound } from "./probe.js";

export interface NodeDeps {
  nodeId: string;
  version: string;
  stateDir: string;
  startTimeMs: number;
  supervisor: Supervisor;
  probe: ProbeResult;
  /** The hierarchy cells use, or why they are unavailable. */
  cells: { version: "v1" | "v2" | undefined; reason: string };
  /** aetherd's log level, changed at runtime by SetLogLevel. */
  logLevel: RuntimeLogLevel;
  /** What CheckHealth looks at beyond the state directory (health.ts). */
  health: Omit<HealthDeps, "stateDir" | "startTimeMs">;
}

const CGROUP_VERSIONS = { none: CgroupVersion.UNSPECIFIED, v1: CgroupVersion.V1, v2: CgroupVersion.V2, hybrid: CgroupVersion.HYBRID };

export function nodeService(deps: NodeDeps): ServiceImpl<typeof NodeService> {
  let probe = deps.probe;
  const lastCheck = { wallMs: deps.startTimeMs, monoMs: performance.now() - (Date.now() - deps.startTimeMs) };
  return {
    async getNodeInfo(req) {
      if (req.refresh) probe = await probeHost();
      return {
        node: create(NodeInfoSchema, {
          id: deps.nodeId,
          hostname: hostname(),
          version: deps.version,
          kernelRelease: release(),
          architecture: arch(),
          cpuCount: cpus().length,
          memoryTotalBytes: BigInt(totalmem()),
          startTime: timestamp(deps.startTimeMs),
          stateDir: deps.stateDir,
          capabilities: create(CapabilitiesSchema, {
            cgroup: {
              version: CGROUP_VERSIONS[probe.cgroup.version],
              controllers: probe.cgroup.controllers,
              mountPath: probe.cgroup.mountPath,
              cellsVersion: CGROUP_VERSIONS[deps.cells.version ?? "none"],
              cellsReason: deps.cells.reason,
            },
            qemuSystem: tool(probe.qemuSystem),
            qemuImg: tool(probe.qemuImg),
            kvm: { deviceUsable: probe.kvm.deviceUsable, reason: probe.kvm.reason },
            firecracker: tool(probe.firecracker),
            zfs: tool(probe.zfs),
            probeTime: timestamp(probe.timeMs),
          }),
        }),
      };
    },

    async checkHealth(_req, ctx) {
      const all = await checkHealth({ ...deps.health, stateDir: deps.stateDir, startTimeMs: deps.startTimeMs }, lastCheck);
      // A tenant sees the host's checks and its own VMs', not other tenants' VM names.
      const { tenant } = ctx.values.get(scopeKey);
      const checks = all.filter((c) => tenant === undefined || c.tenant === "" || c.tenant === tenant);
      const reasons = checks.filter((c) => c.status === HealthStatus.DEGRADED).map((c) => c.message);
      return {
        status: reasons.length === 0 ? HealthStatus.SERVING : HealthStatus.DEGRADED,
        reasons,
        uptime: duration(Date.now() - deps.startTimeMs),
        executablesTracked: deps.supervisor.list().length,
        checks,
      };
    },

    async setLogLevel(req, ctx) {
      return setLogLevelRpc(deps.logLevel, req, ctx);
    },
  };
}

function tool(t: ToolFound) {
  return create(ToolProbeSchema, t);
}
