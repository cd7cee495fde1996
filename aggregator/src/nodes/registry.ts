// The node registry: nodes register (and register again after a restart), renew their lease with
// heartbeats, and become SUSPECT when the lease runs out: a suspect node takes part in no auctions
// until it registers again. Records live in the store under nodes/<id>; the registry keeps them in
// memory while this replica leads.
//
// Rules:
// - A node id belongs to one live node: registering an id that a READY node holds at a different
//   address is refused (ALREADY_EXISTS). The same address registering again replaces the record
//   (a restarted aetherd); so does any address once the holder's lease has run out.
// - Heartbeat needs the current lease, unexpired; otherwise FAILED_PRECONDITION: register again.
// - When this replica becomes the leader it extends every READY node's lease by one TTL from then:
//   nodes could not heartbeat while no replica led, and that is not their fault.
// - Beside its lease state a node has a lifecycle (JOINING, ON_DUTY, CORDONED, DRAINING, DRAINED,
//   SHUTTING_DOWN, DECOMMISSIONED), kept in the same record: a registration keeps it (a drained node
//   that restarts stays drained; a decommissioned one comes back DRAINED), a new node is JOINING
//   until its registration completes or it first heartbeats. Only a live ON_DUTY node bids
//   (canBid). The lease sweep leaves SHUTTING_DOWN and DECOMMISSIONED nodes alone: the aggregator
//   is switching them off itself, so their silence is no reason to fence them.
import { randomUUID } from "node:crypto";
import { clone, create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import {
  ClusterEventKind,
  LeaseSchema,
  NodeCapabilitiesSchema,
  NodePositionSchema,
  NodeSchema,
  NodeLifecycle,
  NodeState,
  NodeThermalSchema,
  type DeregisterNodeRequest,
  type HeartbeatRequest,
  type Lease,
  type Node,
  type NodeThermal,
  type RegisterNodeRequest,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { ClusterStore } from "../store/store.js";
import type { EventLog } from "../events/events.js";
import {
  alreadyExists,
  clip,
  dnsLabel,
  duration,
  failedPrecondition,
  invalidArgument,
  labels as checkLabels,
  msOf,
  notFound,
  timestamp,
} from "@aether/server";
import { nodeAddress, nodeId as checkNodeId } from "../validate.js";
import { formatMs } from "../auction/auction.js";
import { compareStrings, KeyedMutex } from "../util.js";
import { lifecycleName, lifecycleOnRegister, POWERING_OFF } from "./lifecycle.js";

export { lifecycleName };

export const NODES_PREFIX = "nodes/";
/** Label the aggregator sets on a node that rejoined after being fenced: its member generation (2, 3, ...). */
export const INCARNATION_LABEL = "aether.io/incarnation";

/** A fenced node registering again, as a new member. */
export interface Rejoin {
  /** The new member generation (the first registration is 1). */
  incarnation: number;
  /** What was done about its old workloads, as a sentence. */
  summary: string;
  attributes: Record<string, string>;
}
const nodeKey = (id: string) => `${NODES_PREFIX}${id}`;

const iso = (ms: number) => new Date(ms).toISOString();

export class NodeRegistry {
  private nodes = new Map<string, Node>();
  private readonly locks = new KeyedMutex();

  constructor(
    private readonly store: ClusterStore,
    private readonly events: EventLog,
    private readonly leaseTtlMs: number,
    private readonly log: Logger,
  ) {}

  /** Reads the registry from the store and extends READY leases by one TTL (on becoming the leader). */
  async load(now: number): Promise<void> {
    const nodes = new Map<string, Node>();
    for (const entry of await this.store.list(NODES_PREFIX)) {
      try {
        const node = fromJsonString(NodeSchema, entry.value, { ignoreUnknownFields: true });
        if (node.lifecycle === NodeLifecycle.UNSPECIFIED) node.lifecycle = NodeLifecycle.ON_DUTY;
        if (node.state === NodeState.READY && node.lease) {
          const expire = Math.max(msOf(node.lease.expireTime), now + this.leaseTtlMs);
          node.lease.expireTime = timestamp(expire);
        }
        nodes.set(node.id, node);
      } catch (err) {
        this.log.warn({ key: entry.key, err: (err as Error).message }, "skipping an unreadable node record");
      }
    }
    this.nodes = nodes;
  }

  reset(): void {
    this.nodes = new Map();
  }

  get(id: string): Node | undefined {
    return this.nodes.get(id);
  }

  /** Every node, by id. */
  list(): Node[] {
    return [...this.nodes.values()].sort((a, b) => compareStrings(a.id, b.id));
  }

  /** READY with a lease that has not run out (the sweep may not have caught up yet). */
  isLive(node: Node, now: number): boolean {
    return node.state === NodeState.READY && msOf(node.lease?.expireTime) > now;
  }

  /** Live and ON_DUTY: the node takes part in auctions. */
  canBid(node: Node, now: number): boolean {
    return this.isLive(node, now) && node.lifecycle === NodeLifecycle.ON_DUTY;
  }

  /** Why a node takes no part in auctions, for a node that cannot bid. */
  whyNoAuction(node: Node, now: number): string {
    if (node.lifecycle !== NodeLifecycle.ON_DUTY && node.lifecycle !== NodeLifecycle.UNSPECIFIED) {
      return `${lifecycleName(node.lifecycle)}, not on duty`;
    }
    return this.isLive(node, now) ? "it can bid" : this.whyNotLive(node);
  }

  /** Why a node takes no part in auctions, for a node that is not live. */
  whyNotLive(node: Node): string {
    if (node.state === NodeState.READY)
      return `its lease expired at ${iso(msOf(node.lease?.expireTime))} (no heartbeat); it is about to be marked SUSPECT`;
    const state = NodeState[node.state] ?? String(node.state);
    return node.state === NodeState.SUSPECT
      ? `${state}: no heartbeat since ${iso(msOf(node.heartbeatTime))}`
      : `${state}${node.stateReason ? ` (${node.stateReason.replace(/\.$/, "")})` : ""}`;
  }

  private newLease(now: number): Lease {
    return create(LeaseSchema, {
      id: randomUUID(),
      expireTime: timestamp(now + this.leaseTtlMs),
      ttl: duration(this.leaseTtlMs),
      heartbeatInterval: duration(Math.max(1, Math.floor(this.leaseTtlMs / 3))),
    });
  }

  /**
   * Registers a node. `rejoin` is set when the node comes back after being fenced: it joins as a new
   * member (its incarnation, also the label aether.io/incarnation), with the event saying so.
   */
  async register(req: RegisterNodeRequest, rejoin?: Rejoin): Promise<Node> {
    const id = checkNodeId("node_id", req.nodeId);
    const name = dnsLabel("name", req.name);
    const address = nodeAddress("address", req.address).address;
    const nodeLabels = checkLabels(req.labels);
    const position = create(NodePositionSchema, req.position ?? {});
    if (position.rack.length > 63 || position.chassis.length > 63)
      throw invalidArgument("position.rack and position.chassis take at most 63 characters.");
    const thermal = checkThermal(req.thermal);
    const capabilities = create(NodeCapabilitiesSchema, req.capabilities ?? {});
    if (capabilities.pools.length > 256 || capabilities.version.length > 128)
      throw invalidArgument("capabilities carry too many pools (at most 256) or too long a version.");

    return this.locks.run(id, async () => {
      const now = Date.now();
      const existing = this.nodes.get(id);
      if (existing?.state === NodeState.FENCING) {
        throw failedPrecondition(
          `node ${id} (${existing.name}) is being fenced through its BMC right now (${existing.stateReason.replace(/\.$/, "")}); it cannot register until the fence has ended: retry in a few seconds.`,
        );
      }
      if (existing?.state === NodeState.FENCED && rejoin === undefined) {
        throw failedPrecondition(
          `node ${id} (${existing.name}) was fenced; it rejoins as a new member once its stale workloads are released: register again.`,
        );
      }
      if (existing && existing.address !== address && this.isLive(existing, now)) {
        throw alreadyExists(
          `node id ${id} is already registered by a live node at ${existing.address} (lease valid until ${iso(msOf(existing.lease?.expireTime))}); ` +
            `this registration from ${clip(address)} was refused. Give each aetherd its own state directory (its node-id file), or stop the other node: its lease runs out ${formatMs(this.leaseTtlMs)} after its last heartbeat.`,
        );
      }
      const lifecycle = lifecycleOnRegister(existing, rejoin !== undefined);
      const node = create(NodeSchema, {
        id,
        name,
        labels: rejoin ? { ...nodeLabels, [INCARNATION_LABEL]: String(rejoin.incarnation) } : nodeLabels,
        createTime: existing?.createTime ?? timestamp(now),
        state: NodeState.READY,
        stateReason: "",
        address,
        position,
        thermal,
        capabilities,
        lease: this.newLease(now),
        registerTime: timestamp(now),
        heartbeatTime: timestamp(now),
        lifecycle: lifecycle?.lifecycle ?? existing?.lifecycle ?? NodeLifecycle.ON_DUTY,
        lifecycleReason: lifecycle?.reason ?? existing?.lifecycleReason ?? "",
        lifecycleTime: lifecycle || !existing ? timestamp(now) : existing.lifecycleTime,
      });
      await this.store.put(nodeKey(id), toJsonString(NodeSchema, node));
      this.nodes.set(id, node);
      const recovered = existing !== undefined && existing.state !== NodeState.READY;
      if (rejoin) {
        void this.emit({
          kind: ClusterEventKind.NODE_REGISTERED,
          node: id,
          message: `node ${id} (${name}) rejoined at ${address} as a new member (incarnation ${rejoin.incarnation}) after being fenced; ${rejoin.summary}`,
          attributes: {
            address,
            incarnation: String(rejoin.incarnation),
            previous_state: existing ? (NodeState[existing.state] ?? "") : "",
            ...rejoin.attributes,
          },
        });
        return node;
      }
      void this.emit({
        kind: recovered ? ClusterEventKind.NODE_RECOVERED : ClusterEventKind.NODE_REGISTERED,
        node: id,
        message: recovered
          ? `node ${id} (${name}) registered again at ${address} after being ${NodeState[existing.state]}; it takes part in auctions again.`
          : existing
            ? `node ${id} (${name}) registered again at ${address}.`
            : `node ${id} (${name}) joined at ${address}.`,
        attributes: { address, ...(existing && existing.address !== address ? { previous_address: existing.address } : {}) },
      });
      return node;
    });
  }

  async heartbeat(req: HeartbeatRequest): Promise<Lease> {
    const id = checkNodeId("node_id", req.nodeId);
    if (req.leaseId === "") throw invalidArgument("lease_id is empty: give the lease RegisterNode returned.");
    const thermal = req.thermal ? checkThermal(req.thermal) : undefined;
    return this.locks.run(id, async () => {
      const now = Date.now();
      const node = this.nodes.get(id);
      if (!node)
        throw failedPrecondition(`node ${id} is not registered with this aggregator (never, or it was deregistered): register again.`);
      if (node.lease?.id !== req.leaseId) {
        throw failedPrecondition(
          `lease ${clip(req.leaseId)} is not node ${id}'s current lease (the node registered again since): register again.`,
        );
      }
      if (!this.isLive(node, now)) {
        if (node.state === NodeState.READY && !POWERING_OFF.has(node.lifecycle)) await this.markSuspect(node, now);
        throw failedPrecondition(
          `the lease of node ${id} expired at ${iso(msOf(node.lease.expireTime))} (no heartbeat within ${formatMs(this.leaseTtlMs)}); the node is ${NodeState[node.state]} and takes part in no auctions: register again.`,
        );
      }
      const updated = clone(NodeSchema, node);
      const lease = updated.lease as Lease;
      lease.expireTime = timestamp(now + this.leaseTtlMs);
      lease.ttl = duration(this.leaseTtlMs);
      lease.heartbeatInterval = duration(Math.max(1, Math.floor(this.leaseTtlMs / 3)));
      updated.heartbeatTime = timestamp(now);
      if (thermal) updated.thermal = thermal;
      const joined = updated.lifecycle === NodeLifecycle.JOINING;
      if (joined) this.setOnDuty(updated, now, "its first heartbeat arrived");
      await this.store.put(nodeKey(id), toJsonString(NodeSchema, updated));
      this.nodes.set(id, updated);
      if (joined) this.emitOnDuty(updated, "its first heartbeat arrived");
      return lease;
    });
  }

  async deregister(req: DeregisterNodeRequest): Promise<Node> {
    const id = checkNodeId("node_id", req.nodeId);
    return this.locks.run(id, async () => {
      const node = this.nodes.get(id);
      if (!node) throw notFound(`node ${id} is not registered; aether cluster nodes lists the registered ones.`);
      await this.store.delete(nodeKey(id));
      this.nodes.delete(id);
      void this.emit({
        kind: ClusterEventKind.NODE_DEREGISTERED,
        node: id,
        message: `node ${id} (${node.name}) was deregistered; it takes part in no further auctions.`,
      });
      return node;
    });
  }

  /**
   * Moves a node to another state when `expect` holds for its current record (checked under the
   * node's lock, so a registration cannot slip in between); returns the new record, or undefined
   * when the node is gone or no longer as expected.
   */
  async transition(id: string, expect: (node: Node) => boolean, state: NodeState, reason: string): Promise<Node | undefined> {
    return this.locks.run(id, async () => {
      const current = this.nodes.get(id);
      if (!current || !expect(current)) return undefined;
      const updated = clone(NodeSchema, current);
      updated.state = state;
      updated.stateReason = reason;
      await this.store.put(nodeKey(id), toJsonString(NodeSchema, updated));
      this.nodes.set(id, updated);
      return updated;
    });
  }

  /** A JOINING node whose registration is complete goes ON_DUTY (a node in any other lifecycle stays as it is). */
  async completeJoin(id: string): Promise<Node | undefined> {
    return this.locks.run(id, async () => {
      const current = this.nodes.get(id);
      if (!current || current.lifecycle !== NodeLifecycle.JOINING) return current;
      const updated = clone(NodeSchema, current);
      this.setOnDuty(updated, Date.now(), "its registration is complete");
      await this.store.put(nodeKey(id), toJsonString(NodeSchema, updated));
      this.nodes.set(id, updated);
      this.emitOnDuty(updated, "its registration is complete");
      return updated;
    });
  }

  private setOnDuty(node: Node, now: number, why: string): void {
    node.lifecycle = NodeLifecycle.ON_DUTY;
    node.lifecycleReason = `joined: ${why}.`;
    node.lifecycleTime = timestamp(now);
  }

  private emitOnDuty(node: Node, why: string): void {
    void this.emit({
      kind: ClusterEventKind.NODE_ON_DUTY,
      node: node.id,
      message: `node ${node.id} (${node.name}) is on duty: ${why}; it takes part in auctions.`,
    });
  }

  /**
   * Moves a node to another lifecycle when `expect` holds for its current record (under the node's
   * lock); returns the new record, or undefined when the node is gone or no longer as expected.
   */
  async setLifecycle(id: string, expect: (node: Node) => boolean, lifecycle: NodeLifecycle, reason: string): Promise<Node | undefined> {
    return this.locks.run(id, async () => {
      const current = this.nodes.get(id);
      if (!current || !expect(current)) return undefined;
      const updated = clone(NodeSchema, current);
      updated.lifecycle = lifecycle;
      updated.lifecycleReason = reason;
      updated.lifecycleTime = timestamp(Date.now());
      await this.store.put(nodeKey(id), toJsonString(NodeSchema, updated));
      this.nodes.set(id, updated);
      return updated;
    });
  }

  /** A node by id, or by name when no id matches. */
  find(ref: string): Node | undefined {
    return this.nodes.get(ref) ?? [...this.nodes.values()].find((n) => n.name === ref);
  }

  /** The earliest lease expiry among READY nodes (ms), or undefined when none is READY. */
  nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const node of this.nodes.values()) {
      if (node.state !== NodeState.READY || POWERING_OFF.has(node.lifecycle)) continue;
      const at = msOf(node.lease?.expireTime);
      if (next === undefined || at < next) next = at;
    }
    return next;
  }

  /** Marks READY nodes whose lease ran out SUSPECT. */
  async sweep(now: number): Promise<void> {
    for (const node of this.list()) {
      if (node.state !== NodeState.READY || this.isLive(node, now) || POWERING_OFF.has(node.lifecycle)) continue;
      await this.locks.run(node.id, async () => {
        const current = this.nodes.get(node.id);
        if (current && current.state === NodeState.READY && !this.isLive(current, Date.now()) && !POWERING_OFF.has(current.lifecycle))
          await this.markSuspect(current, Date.now());
      });
    }
  }

  /** Call with the node's lock held. */
  private async markSuspect(node: Node, now: number): Promise<void> {
    const updated = clone(NodeSchema, node);
    updated.state = NodeState.SUSPECT;
    const last = msOf(node.heartbeatTime);
    updated.stateReason = `no heartbeat since ${iso(last)}: the lease expired at ${iso(msOf(node.lease?.expireTime))} (TTL ${formatMs(this.leaseTtlMs)}); the node takes part in no auctions until it registers again.`;
    await this.store.put(nodeKey(node.id), toJsonString(NodeSchema, updated));
    this.nodes.set(node.id, updated);
    this.log.warn({ node: node.id, address: node.address, lastHeartbeat: iso(last) }, "node lease expired; node is SUSPECT");
    void this.emit({
      kind: ClusterEventKind.NODE_SUSPECT,
      node: node.id,
      message: `node ${node.id} (${node.name}) missed its heartbeats: ${updated.stateReason}`,
      attributes: { last_heartbeat: iso(last), silent_ms: String(now - last) },
    });
  }

  private async emit(event: Parameters<EventLog["append"]>[0]): Promise<void> {
    try {
      await this.events.append(event);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, kind: event.kind }, "could not record a cluster event");
    }
  }
}

function checkThermal(value: NodeThermal | undefined): NodeThermal | undefined {
  if (value === undefined) return undefined;
  for (const [field, v] of [
    ["cpu_celsius", value.cpuCelsius],
    ["inlet_celsius", value.inletCelsius],
    ["power_watts", value.powerWatts],
  ] as const) {
    if (v !== undefined && (!Number.isFinite(v) || v < -100 || v > 1000)) {
      throw invalidArgument(`thermal.${field} ${v} is not a plausible reading; leave it unset when the node cannot read it.`);
    }
  }
  return create(NodeThermalSchema, value);
}
