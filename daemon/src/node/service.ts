// aether.node.v1.NodeService: identity, version, capabilities and health.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { arch, cpus, hostname, release, totalmem } from "node:os";
import { access, constants } from "node:fs/promises";
import {
  CapabilitiesSchema,
  CgroupVersion,
  HealthStatus,
  NodeInfoSchema,
  NodeService,
  ToolProbeSchema,
} from "@aether/sdk/gen/aether/node/v1/node_pb";
import { duration, timestamp } from "@aether/server";
import { setLogLevelRpc, type RuntimeLogLevel } from "@aether/server";
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
}

const CGROUP_VERSIONS = { none: CgroupVersion.UNSPECIFIED, v1: CgroupVersion.V1, v2: CgroupVersion.V2, hybrid: CgroupVersion.HYBRID };

export function nodeService(deps: NodeDeps): ServiceImpl<typeof NodeService> {
  let probe = deps.probe;
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

    async checkHealth() {
      const reasons: string[] = [];
      try {
        await access(deps.stateDir, constants.W_OK);
      } catch {
        reasons.push(`the state directory ${deps.stateDir} is not writable: new executables cannot be recorded.`);
      }
      return {
        status: reasons.length === 0 ? HealthStatus.SERVING : HealthStatus.DEGRADED,
        reasons,
        uptime: duration(Date.now() - deps.startTimeMs),
        executablesTracked: deps.supervisor.list().length,
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
