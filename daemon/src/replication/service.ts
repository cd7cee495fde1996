// The RPC edge of replication: ReplicationService (policies, runs, the replicas held here), checked
// into typed values here before ReplicationPolicies or Replicas decide, and ReplicaReceiverService,
// the target side, which only nodes may call (a node certificate over mutual TLS, or the socket).
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { requireNodeCaller } from "../api/node-caller.js";
import {
  ReplicaSchema,
  ReplicationPolicySchema,
  ReplicationTargetState,
  type ReplicaReceiverService,
  type ReplicationPolicy,
  type ReplicationService,
} from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import {
  clip,
  duration,
  durationMs,
  invalidArgument,
  labels as parseLabels,
  msOf,
  paginate,
  reference,
  requireClusterWide,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import { DEFAULT_INTERVAL_MS, DEFAULT_RETENTION, type ReplicationPolicies } from "./policies.js";
import type { PolicyRecord } from "./records.js";
import { pointTimeMs } from "./records.js";
import type { Replicas } from "./replicas.js";

const MIN_INTERVAL_MS = 10_000;
const MAX_INTERVAL_MS = 24 * 3600_000;
const MAX_TARGETS = 4;
const ID = /^[0-9a-f-]{36}$/;

export function replicationService(
  policies: ReplicationPolicies,
  replicas: Replicas,
  self: string[],
): ServiceImpl<typeof ReplicationService> {
  const listTenant = (value: string) => (value === "" ? undefined : parseTenant(value));
  return {
    async setReplicationPolicy(req, ctx) {
      requireClusterWide(ctx.values.get(scopeKey), "choose the nodes a VM's data is copied to (replication is an operator's)");
      if ((req.vm === "") === (req.volume === ""))
        throw invalidArgument("give exactly one of vm and volume: the VM whose volumes, or the one volume, to replicate.");
      const targets = checkTargets(req.targets, self);
      const intervalMs = durationMs("interval", req.interval, DEFAULT_INTERVAL_MS);
      if (intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS)
        throw invalidArgument(`interval ${intervalMs} ms is outside 10 s .. 24 h; give how often a new point is sent.`);
      if (req.retention > 100)
        throw invalidArgument(`retention ${req.retention} is above 100; give how many points each side keeps (1..100).`);
      const rpoMs = durationMs("rpo", req.rpo, 2 * intervalMs);
      if (rpoMs < intervalMs)
        throw invalidArgument(`rpo ${rpoMs} ms is shorter than the interval (${intervalMs} ms); every copy would be behind between runs.`);
      const policy = await policies.set({
        kind: req.vm !== "" ? "vm" : "volume",
        ref: req.vm !== "" ? reference("vm", req.vm) : reference("volume", req.volume),
        tenant: parseTenant(req.tenant),
        targets,
        intervalMs,
        retention: req.retention === 0 ? DEFAULT_RETENTION : req.retention,
        rpoMs,
      });
      return { policy: policyMessage(policies, policy) };
    },
    async listReplications(req) {
      const owner = listTenant(req.tenant);
      const { page, nextPageToken } = paginate(policies.list(owner), req.pageSize, req.pageToken);
      return { policies: page.map((p) => policyMessage(policies, p)), nextPageToken };
    },
    async deleteReplicationPolicy(req, ctx) {
      requireClusterWide(ctx.values.get(scopeKey), "stop the replication of a VM's data (an operator's)");
      await policies.delete(reference("policy", req.policy), parseTenant(req.tenant));
      return {};
    },
    async runReplication(req) {
      const policy = await policies.run(reference("policy", req.policy), parseTenant(req.tenant));
      return { policy: policyMessage(policies, policy) };
    },
    async listReplicas(req) {
      const held = await replicas.list(listTenant(req.tenant));
      return {
        replicas: held.map((r) =>
          create(ReplicaSchema, {
            sourceVolumeId: r.sourceVolumeId,
            volumeName: r.volumeName,
            tenant: r.tenant,
            sourceNode: r.sourceNode,
            vmId: r.vmId,
            vmName: r.vmName,
            workloadId: r.workloadId,
            lastPointTime: r.pointMs > 0 ? timestamp(r.pointMs) : undefined,
            sizeBytes: BigInt(r.sizeBytes),
            receivedBytes: BigInt(r.receivedBytes),
            promotedVolume: r.promotedVolume,
          }),
        ),
      };
    },
    async deleteReplica(req, ctx) {
      requireClusterWide(ctx.values.get(scopeKey), "delete a replica of another node's volume (an operator's)");
      await replicas.delete(reference("replica", req.replica), parseTenant(req.tenant));
      return {};
    },
  };
}

function policyMessage(policies: ReplicationPolicies, p: PolicyRecord): ReplicationPolicy {
  const now = Date.now();
  const name = policies.subjectName(p);
  let volumes: Array<{ id: string; name: string }>;
  try {
    volumes = policies.volumesOf(p).map((v) => ({ id: v.id, name: v.name }));
  } catch {
    volumes = Object.keys(p.status)
      .filter((id) => id !== "")
      .map((id) => ({ id, name: "" }));
  }
  return create(ReplicationPolicySchema, {
    id: p.id,
    tenant: p.tenant,
    vm: p.kind === "vm" ? name : "",
    volume: p.kind === "volume" ? name : "",
    targets: p.targets,
    interval: duration(p.intervalMs),
    retention: p.retention,
    rpo: duration(p.rpoMs),
    createTime: timestamp(p.createTimeMs),
    volumes: volumes.map((v) => ({
      volumeId: v.id,
      volumeName: v.name,
      targets: p.targets.map((target) => {
        const s = policies.statusOf(p, v.id, target);
        const lagMs = s.lastPointMs > 0 ? now - s.lastPointMs : undefined;
        const state = policies.isSending(v.id, target)
          ? ReplicationTargetState.RUNNING
          : s.lastError !== ""
            ? ReplicationTargetState.FAILED
            : now - (s.lastPointMs || p.createTimeMs) > p.rpoMs
              ? ReplicationTargetState.BEHIND
              : ReplicationTargetState.IDLE;
        return {
          target,
          state,
          lastPointTime: s.lastPointMs > 0 ? timestamp(s.lastPointMs) : undefined,
          lag: lagMs === undefined ? undefined : duration(lagMs),
          nextRunTime: timestamp(p.nextRunMs),
          lastSentBytes: BigInt(s.lastSentBytes),
          totalSentBytes: BigInt(s.totalSentBytes),
          lastRunDuration: s.lastRunMs > 0 ? duration(s.lastRunMs) : undefined,
          lastError: s.lastError,
        };
      }),
    })),
  });
}

function checkTargets(targets: string[], self: string[]): string[] {
  if (targets.length === 0 || targets.length > MAX_TARGETS)
    throw invalidArgument(
      `targets names ${targets.length} nodes; give 1 to ${MAX_TARGETS} aetherd addresses (unix:///path.sock or https://host:port).`,
    );
  const out = targets.map((t, i) => {
    if (!/^(unix:\/\/\/[^\s\0]+|https:\/\/[^\s/]+:\d{1,5}\/?)$/.test(t) || t.length > 512)
      throw invalidArgument(
        `targets[${i}] ${JSON.stringify(clip(t))} is not an aetherd address: give unix:///path.sock or https://host:port.`,
      );
    const address = t.replace(/\/$/, "");
    if (self.includes(address)) throw invalidArgument(`targets[${i}] ${address} is this node itself; give another node's address.`);
    return address;
  });
  if (new Set(out).size !== out.length) throw invalidArgument("targets names a node twice.");
  return out;
}

/** Refuses a caller that is not a node (api/node-caller.ts). */
const requireNode = (ctx: HandlerContext) => requireNodeCaller(ctx, "ReplicaReceiverService", "a replication");

export function replicaReceiverService(replicas: Replicas): ServiceImpl<typeof ReplicaReceiverService> {
  const volumeId = (value: string) => {
    if (!ID.test(value)) throw invalidArgument(`source_volume_id ${JSON.stringify(clip(value))} is not a volume id (a UUID).`);
    return value;
  };
  return {
    async getReplicaPoint(req, ctx) {
      requireNode(ctx);
      const held = await replicas.point(volumeId(req.sourceVolumeId));
      return { point: held.point, pointTime: held.pointMs > 0 ? timestamp(held.pointMs) : undefined, points: held.points };
    },
    async receiveReplica(requests, ctx) {
      requireNode(ctx);
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done || first.value.part.case !== "header")
        throw invalidArgument("the first message of ReceiveReplica must be the header.");
      const h = first.value.part.value;
      const point = checkPoint("header.point", h.point);
      const base = h.basePoint === "" ? "" : checkPoint("header.base_point", h.basePoint);
      if (h.retention < 1 || h.retention > 100) throw invalidArgument("header.retention must be 1..100.");
      if (h.sizeBytes === 0n || h.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("header.size_bytes is out of range.");
      if (h.sourceNode === "" || h.sourceNode.length > 512)
        throw invalidArgument("header.source_node must name the source (1..512 characters).");
      if (h.vmId !== "" && !ID.test(h.vmId)) throw invalidArgument("header.vm_id is not a VM id (a UUID).");
      if (h.workloadId.length > 128) throw invalidArgument("header.workload_id is longer than 128 characters.");
      if (h.kind !== "" && h.kind !== "zfs" && h.kind !== "qcow2")
        throw invalidArgument(`header.kind ${JSON.stringify(clip(h.kind))} is not a stream kind: give zfs or qcow2.`);
      const pointMs = msOf(h.pointTime);
      if (pointMs !== pointTimeMs(point)) throw invalidArgument("header.point_time is not the time header.point was taken.");
      const chunks = (async function* () {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return;
          if (next.value.part.case !== "chunk")
            throw invalidArgument("only the first message of ReceiveReplica is a header; the others are chunks.");
          yield next.value.part.value;
        }
      })();
      const result = await replicas.receive(
        {
          sourceVolumeId: volumeId(h.sourceVolumeId),
          volumeName: h.volumeName === "" ? h.sourceVolumeId : reference("header.volume_name", h.volumeName),
          tenant: parseTenant(h.tenant),
          labels: parseLabels(h.labels),
          sizeBytes: Number(h.sizeBytes),
          sourceNode: h.sourceNode,
          vmId: h.vmId,
          vmName: h.vmName === "" ? "" : reference("header.vm_name", h.vmName),
          workloadId: h.workloadId,
          basePoint: base,
          point,
          pointMs,
          retention: h.retention,
          kind: h.kind === "qcow2" ? "qcow2" : "zfs",
        },
        chunks,
        ctx.signal,
      );
      return { point: result.point, receivedBytes: BigInt(result.receivedBytes) };
    },
  };
}

function checkPoint(field: string, value: string): string {
  if (pointTimeMs(value) === undefined)
    throw invalidArgument(`${field} ${JSON.stringify(clip(value))} is not a replication point (aether-repl-<ms>).`);
  return value;
}
