// The Connect handlers: AggregatorService delegates to the Aggregator (which validates, checks that
// this replica leads and phrases every error), and NodeService.CheckHealth answers so that
// @aether/sdk's connect() (which checks health before returning) works against the aggregator too.
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  callerOf,
  duration,
  holdToTenant,
  notFound,
  peerKey,
  permissionDenied,
  scopeKey,
  setLogLevelRpc,
  timestamp,
  unimplemented,
  type RuntimeLogLevel,
} from "@aether/server";
import {
  AggregatorService,
  CordonNodeResponseSchema,
  DeregisterNodeResponseSchema,
  DrainNodeResponseSchema,
  GetAuctionResponseSchema,
  GetPlacementResponseSchema,
  HeartbeatResponseSchema,
  ListAuctionsResponseSchema,
  ListNodesResponseSchema,
  ListPlacementsResponseSchema,
  RegisterNodeResponseSchema,
  ReleasePlacementResponseSchema,
  ReportMigrationResponseSchema,
  ShutdownNodeResponseSchema,
  ListBackupsResponseSchema,
  TriggerBackupResponseSchema,
  RestoreBackupResponseSchema,
  BackupChangeKind,
  BackupSchema,
  type Backup,
  ListAlertsResponseSchema,
  ListAlertThresholdsResponseSchema,
  SetAlertThresholdResponseSchema,
  StreamClusterEventsResponseSchema,
  UncordonNodeResponseSchema,
  CreateDeploymentResponseSchema,
  GetDeploymentResponseSchema,
  ListDeploymentsResponseSchema,
  UpdateDeploymentResponseSchema,
  ScaleDeploymentResponseSchema,
  DeleteDeploymentResponseSchema,
  WatchDeploymentResponseSchema,
  GetRolloutResponseSchema,
  ListRolloutsResponseSchema,
  WatchRolloutResponseSchema,
  PauseRolloutResponseSchema,
  ResumeRolloutResponseSchema,
  PromoteRolloutResponseSchema,
  RollbackRolloutResponseSchema,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { CheckHealthResponseSchema, HealthStatus, NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import type { Aggregator } from "../aggregator.js";
import type { NodeCaller } from "../nodes/membership.js";
import type { BackupInfo } from "../backup/backup.js";

/**
 * Who may speak for a node: an admin on the aggregator's unix socket or loopback (undefined: any
 * node), or over TLS a node certificate, spiffe://<cluster>/node/<name>, for node <name> only. A user
 * or service certificate speaks for no node (it may deregister one, when the policy lets it).
 */
export function nodeCallerOf(ctx: HandlerContext, verb: string, othersMay = false): NodeCaller | undefined {
  const peer = ctx.values.get(peerKey);
  if (peer.transport !== "tls") return undefined;
  const { identity } = callerOf(peer);
  const name = /^spiffe:\/\/[^/]+\/node\/([^/]+)$/.exec(identity)?.[1];
  // Deregistering is also an operator's act (the policy decides who); a node still only for itself.
  if (name === undefined && othersMay) return undefined;
  if (name === undefined) {
    throw permissionDenied(
      `${identity.slice(0, 200)} is not a node: only a node's own certificate (spiffe://<cluster>/node/<name>, from aether pki issue node) may ${verb} a node; nothing was ${verb === "register" ? "registered" : "changed"}.`,
    );
  }
  return { identity, name };
}

/**
 * Cordon, drain, uncordon, shutdown, backup and restore are an operator's acts: a node's certificate (which the
 * default policy binds to the operator role so that it can register) may not take them.
 */
function operatorOnly(ctx: HandlerContext, verb: string, what = "a node"): void {
  const peer = ctx.values.get(peerKey);
  if (peer.transport !== "tls") return;
  const { identity } = callerOf(peer);
  if (/^spiffe:\/\/[^/]+\/node\/[^/]+$/.test(identity))
    throw permissionDenied(
      `${identity.slice(0, 200)} is a node's certificate; only an operator may ${verb} ${what} (a user certificate from aether pki issue user). Nothing was changed.`,
    );
}

const CHANGE_KINDS = {
  added: BackupChangeKind.ADDED,
  changed: BackupChangeKind.CHANGED,
  removed: BackupChangeKind.REMOVED,
} as const;

function backupOf(b: BackupInfo): Backup {
  return create(BackupSchema, {
    commit: b.commit,
    commitTime: timestamp(b.timeMs),
    summary: b.summary,
    recordCount: b.records,
    pushed: b.pushed,
  });
}

export function aggregatorService(aggregator: Aggregator): ServiceImpl<typeof AggregatorService> {
  return {
    async registerNode(req, ctx) {
      return create(RegisterNodeResponseSchema, await aggregator.registerNode(req, nodeCallerOf(ctx, "register")));
    },
    async heartbeat(req, ctx) {
      return create(HeartbeatResponseSchema, await aggregator.heartbeat(req, nodeCallerOf(ctx, "heartbeat for")));
    },
    async reportMigration(req, ctx) {
      return create(ReportMigrationResponseSchema, await aggregator.reportMigration(req, nodeCallerOf(ctx, "report a migration to")));
    },
    async deregisterNode(req, ctx) {
      await aggregator.deregisterNode(req, nodeCallerOf(ctx, "deregister", true));
      return create(DeregisterNodeResponseSchema);
    },
    async listNodes(req) {
      return create(ListNodesResponseSchema, await aggregator.listNodes(req));
    },
    async deploy(req, ctx) {
      // The workload's tenant is inside the spec: a tenant's caller is held to its own there.
      const scope = ctx.values.get(scopeKey);
      // Only the aggregator says whether a workload is confined: a tenant's always is.
      if (req.spec) req.spec.confined = scope.tenant !== undefined;
      if (scope.tenant !== undefined && req.spec)
        holdToTenant(req.spec, scope.tenant, scope.identity, { field: "spec.tenant", verb: "deploy" });
      return aggregator.deploy(req);
    },
    async releasePlacement(req) {
      return create(ReleasePlacementResponseSchema, await aggregator.releasePlacement(req));
    },
    async getPlacement(req) {
      return create(GetPlacementResponseSchema, await aggregator.getPlacement(req));
    },
    async listPlacements(req) {
      return create(ListPlacementsResponseSchema, await aggregator.listPlacements(req));
    },
    async getAuction(req, ctx) {
      const found = await aggregator.getAuction(req);
      // An auction id is no key to another tenant's auction: it does not exist for this caller.
      const tenant = ctx.values.get(scopeKey).tenant;
      if (tenant !== undefined && found.auction.tenant !== tenant)
        throw notFound(`auction ${req.auction.slice(0, 64)} does not exist in tenant ${tenant}: aether cluster auctions lists them.`);
      return create(GetAuctionResponseSchema, found);
    },
    async listAuctions(req) {
      return create(ListAuctionsResponseSchema, await aggregator.listAuctions(req));
    },
    async cordonNode(req, ctx) {
      operatorOnly(ctx, "cordon");
      return create(CordonNodeResponseSchema, await aggregator.cordonNode(req));
    },
    async *drainNode(req, ctx) {
      operatorOnly(ctx, "drain");
      for await (const progress of aggregator.drainNode(req, ctx.signal)) yield create(DrainNodeResponseSchema, { progress });
    },
    async uncordonNode(req, ctx) {
      operatorOnly(ctx, "uncordon");
      return create(UncordonNodeResponseSchema, await aggregator.uncordonNode(req));
    },
    async *shutdownNode(req, ctx) {
      operatorOnly(ctx, "shut down");
      for await (const progress of aggregator.shutdownNode(req, ctx.signal)) yield create(ShutdownNodeResponseSchema, { progress });
    },
    async listAlerts(req) {
      return create(ListAlertsResponseSchema, { alerts: await aggregator.listAlerts(req.node) });
    },
    async listAlertThresholds() {
      return create(ListAlertThresholdsResponseSchema, { thresholds: await aggregator.listAlertThresholds() });
    },
    async setAlertThreshold(req, ctx) {
      operatorOnly(ctx, "set", "an alert threshold");
      return create(SetAlertThresholdResponseSchema, { threshold: await aggregator.setAlertThreshold(req.name, req.value) });
    },
    async listBackups(req) {
      const [found, repository, remote] = await aggregator.withBackups(
        async (b) => [await b.list(req.pageSize, req.pageToken), b.repository, b.remote] as const,
      );
      return create(ListBackupsResponseSchema, {
        backups: found.backups.map(backupOf),
        nextPageToken: found.next,
        repository,
        remote,
        pushError: found.pushError,
        heldReason: found.held,
      });
    },
    async triggerBackup(_req, ctx) {
      operatorOnly(ctx, "back up", "the cluster's state");
      const made = await aggregator.withBackups((b) => b.trigger());
      return create(TriggerBackupResponseSchema, {
        ...(made.backup && { backup: backupOf(made.backup) }),
        committed: made.committed,
        pushError: made.pushError,
      });
    },
    async restoreBackup(req, ctx) {
      operatorOnly(ctx, "restore", "the cluster's state");
      const done = await aggregator.withBackups((b) => b.restore(req.commit, req.force, req.dryRun));
      return create(RestoreBackupResponseSchema, {
        commit: done.commit,
        changes: done.changes.map((c) => ({ key: c.key, kind: CHANGE_KINDS[c.kind] })),
        applied: done.applied,
        ...(done.backup && { backup: backupOf(done.backup) }),
        liveNodes: done.liveNodes,
      });
    },
    async createDeployment(req, ctx) {
      const scope = ctx.values.get(scopeKey);
      // Only the aggregator says whether instances are confined: a tenant's always are.
      if (req.deployment) req.deployment.confined = scope.tenant !== undefined;
      if (scope.tenant !== undefined && req.deployment)
        holdToTenant(req.deployment, scope.tenant, scope.identity, { field: "deployment.tenant", verb: "create a deployment" });
      return create(CreateDeploymentResponseSchema, { deployment: await aggregator.createDeployment(req) });
    },
    async getDeployment(req) {
      return create(GetDeploymentResponseSchema, await aggregator.getDeployment(req));
    },
    async listDeployments(req) {
      return create(ListDeploymentsResponseSchema, await aggregator.listDeployments(req));
    },
    async updateDeployment(req, ctx) {
      const confine = ctx.values.get(scopeKey).tenant !== undefined;
      return create(UpdateDeploymentResponseSchema, await aggregator.updateDeployment(req, confine));
    },
    async scaleDeployment(req) {
      return create(ScaleDeploymentResponseSchema, { deployment: await aggregator.scaleDeployment(req) });
    },
    async deleteDeployment(req) {
      return create(DeleteDeploymentResponseSchema, { deployment: await aggregator.deleteDeployment(req) });
    },
    async *watchDeployment(req, ctx) {
      for await (const view of aggregator.watchDeployment(req, ctx.signal)) yield create(WatchDeploymentResponseSchema, view);
    },
    async getRollout(req) {
      return create(GetRolloutResponseSchema, { rollout: await aggregator.getRollout(req) });
    },
    async listRollouts(req) {
      return create(ListRolloutsResponseSchema, await aggregator.listRollouts(req));
    },
    async *watchRollout(req, ctx) {
      for await (const rollout of aggregator.watchRollout(req, ctx.signal)) yield create(WatchRolloutResponseSchema, { rollout });
    },
    async pauseRollout(req) {
      return create(PauseRolloutResponseSchema, { rollout: await aggregator.actOnRollout("pause", req.rollout, req.tenant) });
    },
    async resumeRollout(req) {
      return create(ResumeRolloutResponseSchema, { rollout: await aggregator.actOnRollout("resume", req.rollout, req.tenant) });
    },
    async promoteRollout(req) {
      return create(PromoteRolloutResponseSchema, { rollout: await aggregator.actOnRollout("promote", req.rollout, req.tenant) });
    },
    async rollbackRollout(req) {
      return create(RollbackRolloutResponseSchema, { rollout: await aggregator.actOnRollout("rollback", req.rollout, req.tenant) });
    },
    async *streamClusterEvents(req, context) {
      // A tenant sees its own workloads' events, not the nodes' (which speak of every tenant).
      const tenant = context.values.get(scopeKey).tenant;
      for await (const event of aggregator.streamClusterEvents(req, context.signal)) {
        if (tenant !== undefined && event.tenant !== tenant) continue;
        yield create(StreamClusterEventsResponseSchema, { event });
      }
    },
  };
}

/**
 * CheckHealth: SERVING while this replica leads, DEGRADED with the standby sentence otherwise.
 * SetLogLevel: this replica's log level at runtime (a standby's too: its log is its own).
 */
export function healthService(aggregator: Aggregator, logLevel: RuntimeLogLevel): ServiceImpl<typeof NodeService> {
  return {
    async getNodeInfo() {
      throw unimplemented(
        "aether-aggregator is not a node: ask a node's aetherd for NodeService/GetNodeInfo (aether cluster nodes lists them).",
      );
    },
    async checkHealth(_req, ctx) {
      const health = await aggregator.health();
      const all = await aggregator.clusterHealth();
      // Only the aggregator's own checks decide its status; a tenant sees only those.
      const own = all.filter((c) => c.name === "leader" || c.name === "store");
      const reasons = own.filter((c) => c.status === HealthStatus.DEGRADED).map((c) => c.message);
      return create(CheckHealthResponseSchema, {
        status: reasons.length === 0 ? HealthStatus.SERVING : HealthStatus.DEGRADED,
        reasons,
        uptime: duration(health.uptimeMs),
        executablesTracked: 0,
        checks: ctx.values.get(scopeKey).tenant === undefined ? all : own,
      });
    },
    async setLogLevel(req, ctx) {
      return setLogLevelRpc(logLevel, req, ctx);
    },
  };
}

/** Every route the aggregator serves. BidService is the nodes' side: it answers UNIMPLEMENTED here. */
export function aggregatorRoutes(aggregator: Aggregator, logLevel: RuntimeLogLevel): (router: ConnectRouter) => void {
  return (router) => {
    router.service(AggregatorService, aggregatorService(aggregator));
    router.service(NodeService, healthService(aggregator, logLevel));
    router.service(BidService, {
      async requestBid() {
        throw unimplemented("BidService is served by aetherd on each node, not by aether-aggregator.");
      },
      async executeProvisioning() {
        throw unimplemented("BidService is served by aetherd on each node, not by aether-aggregator.");
      },
      async releaseWorkload() {
        throw unimplemented("BidService is served by aetherd on each node, not by aether-aggregator.");
      },
    });
  };
}
