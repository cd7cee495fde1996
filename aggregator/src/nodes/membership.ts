// The nodes' side of AggregatorService: RegisterNode (a fenced node rejoins through the deadman
// first), Heartbeat, DeregisterNode (with re_place, its workloads move elsewhere) and ListNodes with
// each node's count of live placements. The connection to an address no node uses any more is closed.
import { clone } from "@bufbuild/protobuf";
import {
  NodeSchema,
  type DeregisterNodeRequest,
  type HeartbeatRequest,
  type Lease,
  type ListNodesRequest,
  type Node,
  type RegisterNodeRequest,
  type ReportMigrationRequest,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { describeError, labelFilter, matchesFilter, paginate, permissionDenied } from "@aether/server";
import type { Context } from "../context.js";
import type { Deadman } from "../fencing/deadman.js";
import { ON_NODE } from "../placements/book.js";
import type { Replacement } from "../placements/replacement.js";
import type { MigrationReports } from "../placements/migrated.js";

/** A caller whose certificate names a node: spiffe://<cluster>/node/<name>. */
export interface NodeCaller {
  identity: string;
  name: string;
}

export class Membership {
  constructor(
    private readonly ctx: Context,
    private readonly fencing: Pick<Deadman, "beforeRegister" | "afterRegister">,
    private readonly replacement: Pick<Replacement, "replace">,
    private readonly migrations?: Pick<MigrationReports, "report">,
  ) {}

  /**
   * Refuses a node certificate acting as another node: `as` is the caller's node (the name its
   * certificate names), undefined for an admin (the aggregator's unix socket or loopback).
   */
  private holdToNode(as: NodeCaller | undefined, nodeId: string, verb: string, name?: string): void {
    if (as === undefined) return;
    if (name !== undefined && name !== as.name) {
      throw permissionDenied(
        `${as.identity} may ${verb} only as node ${as.name}, not as ${name.slice(0, 63)}: a node's certificate names the one node it is (issue node ${name.slice(0, 63)} its own certificate with aether pki issue node).`,
      );
    }
    const existing = this.ctx.registry.get(nodeId);
    if (existing !== undefined && existing.name !== as.name) {
      throw permissionDenied(
        `${as.identity} may not ${verb} node id ${nodeId.slice(0, 64)}: that id is registered as node ${existing.name}, and a node's certificate acts only for the node it names (${as.name}).`,
      );
    }
  }

  async registerNode(req: RegisterNodeRequest, as?: NodeCaller): Promise<{ node: Node; lease: Lease }> {
    this.holdToNode(as, req.nodeId, "register", req.name);
    const previous = this.ctx.registry.get(req.nodeId)?.address;
    // A fenced node rejoins as a new member, once the workloads it had then are released on it.
    const rejoin = await this.fencing.beforeRegister(req);
    const node = await this.ctx.registry.register(req, rejoin);
    await this.fencing.afterRegister(node, rejoin);
    // A new (or rejoining) node is on duty once its registration is complete.
    const joined = (await this.ctx.registry.completeJoin(node.id)) ?? node;
    if (previous !== undefined && previous !== node.address) this.forgetAddress(previous);
    return { node: this.withCount(joined), lease: node.lease as Lease };
  }

  /** Closes the connection to an address no registered node uses any more. */
  private forgetAddress(address: string): void {
    if (!this.ctx.registry.list().some((n) => n.address === address)) this.ctx.clients.forget(address);
  }

  async heartbeat(req: HeartbeatRequest, as?: NodeCaller): Promise<{ lease: Lease }> {
    this.holdToNode(as, req.nodeId, "heartbeat for");
    return { lease: await this.ctx.registry.heartbeat(req) };
  }

  /** A live migration the calling node received (placements/migrated.ts); a node reports only its own. */
  async reportMigration(req: ReportMigrationRequest, as?: NodeCaller): Promise<{ placementMoved: boolean }> {
    this.holdToNode(as, req.nodeId, "report a migration to");
    if (!this.migrations) throw new Error("this aggregator takes no migration reports");
    return this.migrations.report(req);
  }

  async deregisterNode(req: DeregisterNodeRequest, as?: NodeCaller): Promise<Record<string, never>> {
    this.holdToNode(as, req.nodeId, "deregister");
    const node = await this.ctx.registry.deregister(req);
    if (!req.rePlace) this.forgetAddress(node.address);
    if (req.rePlace) {
      for (const p of this.ctx.book.placements.values()) {
        if (p.node === node.id && ON_NODE.has(p.state)) {
          this.replacement
            .replace(p, node)
            .catch((err: unknown) => this.ctx.log.warn({ workload: p.workloadId, err: describeError(err) }, "re-placement failed"));
        }
      }
    }
    return {};
  }

  async listNodes(req: ListNodesRequest): Promise<{ nodes: Node[]; nextPageToken: string }> {
    const terms = labelFilter(req.filter);
    const counts = this.ctx.book.counts();
    const all = this.ctx.registry
      .list()
      .filter(
        (n) =>
          (req.state === 0 || n.state === req.state) &&
          (req.lifecycle === 0 || n.lifecycle === req.lifecycle) &&
          matchesFilter(n.labels, terms),
      )
      .map((n) => this.withCount(n, counts));
    const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
    return { nodes: page, nextPageToken };
  }

  /** A copy of the node with its count of live placements. */
  counted(node: Node): Node {
    return this.withCount(node);
  }

  private withCount(node: Node, counts = this.ctx.book.counts()): Node {
    const copy = clone(NodeSchema, node);
    copy.placementCount = counts.get(node.id) ?? 0;
    return copy;
  }
}
