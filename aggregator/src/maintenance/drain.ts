// Maintenance mode: cordon, drain, uncordon and shut down a node, beside the deadman's lease states.
//
//   ON_DUTY ──cordon──► CORDONED ──drain──► DRAINING ──every workload moved──► DRAINED ──uncordon──► ON_DUTY
//      └──────────────drain─────────────────────┘  │ a workload cannot move:        │
//                                                  └─► CORDONED (the sentence)      └─shutdown─► SHUTTING_DOWN ──"Off"──► DECOMMISSIONED
//
// A drain moves every workload on the node (moves.ts: an auction among the other ON_DUTY nodes, then
// the kind's mover), at most max_moves at a time (the disruption budget, default 1). The first
// workload that cannot move stops it: the moves under way finish, nothing new starts, the node is
// CORDONED with the sentence, and the stream ends with FAILED_PRECONDITION. Every step is a cluster
// event, and the stream carries each one with the counts.
//
// What survives a change of leader: the node's lifecycle (in its record) and the drain's record
// (drains/<node id>: budget, counts, a shutdown to follow). A replica that takes over settles MOVING
// placements, then continues every DRAINING node's drain and every SHUTTING_DOWN node's power off.
// Streams end with UNAVAILABLE when leadership is lost; DrainNode again follows the resumed drain.
//
// Over 400 lines because the requests (cordon, drain, uncordon, shutdown) and the drain loop they
// start share one state, the runs under way; the moves, the movers, the power off and the streams'
// channel are files of their own.
import { create } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import {
  ClusterEventKind,
  DrainProgressSchema,
  NodeLifecycle,
  NodeState,
  PlacementState,
  type ClusterEvent,
  type CordonNodeRequest,
  type DrainNodeRequest,
  type DrainProgress,
  type Node,
  type ShutdownNodeRequest,
  type UncordonNodeRequest,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import {
  describeError,
  durationMs,
  failedPrecondition,
  invalidArgument,
  notFound,
  resolveIdPrefix,
  rpcError,
  unavailable,
} from "@aether/server";
import type { Context } from "../context.js";
import type { NewEvent } from "../events/events.js";
import { ON_NODE } from "../placements/book.js";
import { lifecycleName } from "../nodes/registry.js";
import { MoveFailed, type Moves } from "./move.js";
import { DEFAULT_GRACEFUL_TIMEOUT_MS, type PowerOff } from "./power.js";
import { Channel } from "./channel.js";

export const DRAINS_PREFIX = "drains/";
const drainKey = (id: string) => `${DRAINS_PREFIX}${id}`;
/** The largest disruption budget a drain may ask for. */
export const MAX_MOVES_LIMIT = 64;

/** What is kept of a drain in the store. */
interface DrainRecord {
  node: string;
  maxMoves: number;
  startMs: number;
  total: number;
  moved: number;
  /** Set when the node is powered off once drained (ShutdownNode). */
  shutdown?: { gracefulTimeoutMs: number };
}

interface DrainRun {
  record: DrainRecord;
  name: string;
  moving: Set<string>;
  uncordoned: boolean;
  channels: Set<Channel<DrainProgress>>;
}

export class Maintenance {
  private runs = new Map<string, DrainRun>();
  private records = new Map<string, DrainRecord>();
  /** Bumped when leadership is lost: drains begun under an older generation stop acting. */
  private generation = 0;

  constructor(
    private readonly ctx: Context,
    private readonly moves: Moves,
    private readonly power: PowerOff,
  ) {}

  // ---------------------------------------------------------------- leadership

  /** Reads the drain records (on becoming the leader). */
  async load(): Promise<void> {
    const records = new Map<string, DrainRecord>();
    for (const entry of await this.ctx.store.list(DRAINS_PREFIX)) {
      try {
        const r = JSON.parse(entry.value) as DrainRecord;
        if (typeof r.node === "string") records.set(r.node, r);
      } catch (err) {
        this.ctx.log.warn({ key: entry.key, err: describeError(err) }, "skipping an unreadable drain record");
      }
    }
    this.records = records;
  }

  /** After a takeover: settles MOVING placements, then continues drains and power offs. */
  async resume(): Promise<void> {
    const generation = this.generation;
    const moving = [...this.ctx.book.placements.values()].filter((p) => p.state === PlacementState.MOVING);
    for (const p of moving) {
      await this.moves
        .settleMoving(p)
        .catch((err: unknown) => this.ctx.log.warn({ workload: p.workloadId, err: describeError(err) }, "could not settle a move"));
    }
    if (generation !== this.generation) return;
    for (const node of this.ctx.registry.list()) {
      const record = this.records.get(node.id);
      if (node.lifecycle === NodeLifecycle.DRAINING && !this.runs.has(node.id)) {
        this.start(node, record ?? { node: node.id, maxMoves: 1, startMs: Date.now(), total: 0, moved: 0 }, true);
      } else if (node.lifecycle === NodeLifecycle.SHUTTING_DOWN && !this.runs.has(node.id)) {
        const run = this.newRun(node, record ?? { node: node.id, maxMoves: 1, startMs: Date.now(), total: 0, moved: 0 });
        void this.finishShutdown(run, record?.shutdown?.gracefulTimeoutMs ?? DEFAULT_GRACEFUL_TIMEOUT_MS);
      }
    }
  }

  /** Leadership lost or shutting down: every stream ends with why; drains stop acting. */
  stop(why: ConnectError | undefined): void {
    this.generation++;
    const error = why ?? unavailable("this replica no longer leads; DrainNode on the new leader follows the drain it continues.");
    for (const run of this.runs.values()) for (const channel of run.channels) channel.end(error);
    this.runs = new Map();
    this.records = new Map();
  }

  // ---------------------------------------------------------------- requests

  /** A node by id, name or unique id prefix, or NOT_FOUND / INVALID_ARGUMENT with the sentence. */
  private resolve(field: string, ref: string): Node {
    if (ref === "") throw invalidArgument(`${field} is empty: give the node's id or name (aether cluster nodes lists them).`);
    if (ref.length > 253) throw invalidArgument(`${field} is ${ref.length} characters long; a node id or name has at most 253.`);
    const byId = this.ctx.registry.get(ref);
    if (byId) return byId;
    const named = this.ctx.registry.list().filter((n) => n.name === ref);
    if (named.length > 1)
      throw invalidArgument(
        `${named.length} registered nodes are named ${ref} (${named.map((n) => n.id).join(", ")}); give the node's id.`,
      );
    const found = named[0] ?? this.byIdPrefix(ref);
    if (!found) throw notFound(`no node ${ref} is registered with this aggregator; aether cluster nodes lists them.`);
    return found;
  }

  /** The node whose id alone starts with ref (the shared rule of @aether/server's lookup; nodes have no tenant). */
  private byIdPrefix(ref: string): Node | undefined {
    const nodes = { get: (id: string) => this.ctx.registry.get(id), values: () => this.ctx.registry.list() };
    try {
      return resolveIdPrefix(nodes, ref, "", (n) => ({ id: n.id, name: n.name, tenant: "" }), {
        noun: "node",
        hint: "",
        where: "registered with this aggregator",
      });
    } catch (err) {
      throw rpcError(err);
    }
  }

  private checkMaxMoves(value: number): number {
    if (value > MAX_MOVES_LIMIT)
      throw invalidArgument(`max_moves ${value} is too many: give 1 to ${MAX_MOVES_LIMIT} workloads moved at once (0: 1).`);
    return value === 0 ? 1 : value;
  }

  /** A node the aggregator cannot reach cannot hand its workloads over: the deadman owns it. */
  private checkReachable(node: Node, verb: string): void {
    if (node.state !== NodeState.READY || !this.ctx.registry.isLive(node, Date.now())) {
      throw failedPrecondition(
        `node ${node.id} (${node.name}) cannot be ${verb}: ${this.ctx.registry.whyNotLive(node).replace(/\.$/, "")}. The deadman handles a silent node's workloads; ${verb.replace(/ed$/, "")} it once it heartbeats again.`,
      );
    }
  }

  async cordon(req: CordonNodeRequest): Promise<Node> {
    const node = this.resolve("node", req.node);
    if (node.lifecycle === NodeLifecycle.SHUTTING_DOWN || node.lifecycle === NodeLifecycle.DECOMMISSIONED)
      throw failedPrecondition(`node ${node.id} (${node.name}) is ${lifecycleName(node.lifecycle)}; there is nothing to cordon.`);
    if (node.lifecycle !== NodeLifecycle.ON_DUTY && node.lifecycle !== NodeLifecycle.JOINING) return node;
    const updated = await this.ctx.registry.setLifecycle(
      node.id,
      (n) => n.lifecycle === NodeLifecycle.ON_DUTY || n.lifecycle === NodeLifecycle.JOINING,
      NodeLifecycle.CORDONED,
      "cordoned by an operator: it takes no new workloads; those on it stay.",
    );
    if (!updated) return this.resolve("node", node.id);
    void this.ctx.emit({
      kind: ClusterEventKind.NODE_CORDONED,
      node: node.id,
      message: `node ${node.id} (${node.name}) is cordoned: it takes no new workloads; the ${this.onNode(node.id).length} on it stay.`,
    });
    return updated;
  }

  async uncordon(req: UncordonNodeRequest): Promise<Node> {
    const node = this.resolve("node", req.node);
    if (node.lifecycle === NodeLifecycle.ON_DUTY) return node;
    if (node.lifecycle === NodeLifecycle.JOINING)
      throw failedPrecondition(
        `node ${node.id} (${node.name}) is still joining; it goes on duty by itself once its registration completes.`,
      );
    if (node.lifecycle === NodeLifecycle.SHUTTING_DOWN)
      throw failedPrecondition(
        `node ${node.id} (${node.name}) is being powered off through its BMC; uncordon it once it is back (it registers again DRAINED).`,
      );
    if (node.lifecycle === NodeLifecycle.DECOMMISSIONED)
      throw failedPrecondition(
        `node ${node.id} (${node.name}) is decommissioned (powered off); power it on (aether fence on, or its BMC): its aetherd registers again and the node comes back DRAINED, then uncordon it.`,
      );
    const previous = node.lifecycle;
    const updated = await this.ctx.registry.setLifecycle(
      node.id,
      (n) => n.lifecycle === previous,
      NodeLifecycle.ON_DUTY,
      `uncordoned by an operator (it was ${lifecycleName(previous)}): it takes part in auctions again.`,
    );
    if (!updated)
      throw failedPrecondition(
        `node ${node.id} (${node.name}) changed while it was being uncordoned; look at it again (aether cluster nodes).`,
      );
    const run = this.runs.get(node.id);
    if (run) run.uncordoned = true;
    await this.ctx.store.delete(drainKey(node.id)).catch(() => undefined);
    const event: NewEvent = {
      kind: ClusterEventKind.NODE_UNCORDONED,
      node: node.id,
      message: `node ${node.id} (${node.name}) is back on duty (it was ${lifecycleName(previous)})${run ? "; its drain stops once the moves under way end" : ""}.`,
      attributes: { previous_lifecycle: lifecycleName(previous) },
    };
    if (run) await this.step(run, event);
    else void this.ctx.emit(event);
    return updated;
  }

  /** DrainNode: starts the drain (or follows the one under way) and streams its progress. */
  async *drain(req: DrainNodeRequest, signal?: AbortSignal): AsyncGenerator<DrainProgress> {
    const node = this.resolve("node", req.node);
    const maxMoves = this.checkMaxMoves(req.maxMoves);
    yield* this.follow(node, maxMoves, undefined, signal);
  }

  /** ShutdownNode: drains the node (or follows its drain), then powers it off through its BMC. */
  async *shutdown(req: ShutdownNodeRequest, signal?: AbortSignal): AsyncGenerator<DrainProgress> {
    const node = this.resolve("node", req.node);
    const maxMoves = this.checkMaxMoves(req.maxMoves);
    const gracefulTimeoutMs = durationMs("graceful_timeout", req.gracefulTimeout, DEFAULT_GRACEFUL_TIMEOUT_MS);
    if (gracefulTimeoutMs < 1000 || gracefulTimeoutMs > 3_600_000)
      throw invalidArgument(`graceful_timeout ${gracefulTimeoutMs} ms is out of range: give 1 s to 1 h (unset: 120 s).`);
    if (node.lifecycle === NodeLifecycle.DECOMMISSIONED) {
      yield this.progress(node.id, undefined, undefined, true);
      return;
    }
    const bmc = this.power.locate(node);
    if ("none" in bmc)
      throw failedPrecondition(
        `node ${node.id} (${node.name}) cannot be shut down: ${bmc.none}; register its BMC ([[bmcs]] in the aggregator's configuration) first. Nothing was changed.`,
      );
    yield* this.follow(node, maxMoves, { gracefulTimeoutMs }, signal);
  }

  private async *follow(
    node: Node,
    maxMoves: number,
    shutdown: { gracefulTimeoutMs: number } | undefined,
    signal?: AbortSignal,
  ): AsyncGenerator<DrainProgress> {
    let run = this.runs.get(node.id);
    if (!run) {
      if (node.lifecycle === NodeLifecycle.SHUTTING_DOWN || node.lifecycle === NodeLifecycle.DECOMMISSIONED) {
        throw failedPrecondition(`node ${node.id} (${node.name}) is ${lifecycleName(node.lifecycle)}; there is nothing to drain.`);
      }
      if (node.lifecycle === NodeLifecycle.DRAINED && !shutdown) {
        yield this.progress(node.id, undefined, undefined, true);
        return;
      }
      this.checkReachable(node, shutdown ? "shut down" : "drained");
      const record: DrainRecord = { node: node.id, maxMoves, startMs: Date.now(), total: this.onNode(node.id).length, moved: 0, shutdown };
      if (node.lifecycle === NodeLifecycle.DRAINED && shutdown) {
        run = this.newRun(node, record);
        const channel = this.subscribe(run);
        void this.finishShutdown(run, shutdown.gracefulTimeoutMs);
        yield this.progress(node.id, run);
        yield* channel.read(signal);
        return;
      }
      await this.ctx.store.put(drainKey(node.id), JSON.stringify(record));
      const draining = await this.ctx.registry.setLifecycle(
        node.id,
        (n) => n.lifecycle === node.lifecycle,
        NodeLifecycle.DRAINING,
        `being drained by an operator (at most ${maxMoves} move${maxMoves === 1 ? "" : "s"} at once)${shutdown ? ", then powered off" : ""}.`,
      );
      if (!draining) throw failedPrecondition(`node ${node.id} (${node.name}) changed while the drain was starting; try again.`);
      run = this.start(draining, record, false);
    } else if (shutdown && !run.record.shutdown) {
      run.record.shutdown = shutdown;
      await this.ctx.store.put(drainKey(node.id), JSON.stringify(run.record));
    }
    const channel = this.subscribe(run);
    yield this.progress(node.id, run);
    yield* channel.read(signal);
  }

  // ---------------------------------------------------------------- the drain

  private newRun(node: Node, record: DrainRecord): DrainRun {
    const run: DrainRun = { record, name: node.name, moving: new Set(), uncordoned: false, channels: new Set() };
    this.runs.set(node.id, run);
    this.records.set(node.id, record);
    return run;
  }

  private subscribe(run: DrainRun): Channel<DrainProgress> {
    const channel = new Channel<DrainProgress>();
    run.channels.add(channel);
    return channel;
  }

  private start(node: Node, record: DrainRecord, resumed: boolean): DrainRun {
    // A DrainNode and the resumption after a takeover may both get here: one drain per node.
    const existing = this.runs.get(node.id);
    if (existing) return existing;
    const run = this.newRun(node, record);
    const generation = this.generation;
    void this.step(run, {
      kind: ClusterEventKind.NODE_DRAINING,
      node: node.id,
      message: `node ${node.id} (${node.name}) is draining${resumed ? ` (resumed by ${this.ctx.replica} after a change of leader)` : ""}: ${this.onNode(node.id).length} workload(s) to move, at most ${record.maxMoves} at once${record.shutdown ? "; it is powered off once drained" : ""}.`,
      attributes: {
        max_moves: String(record.maxMoves),
        workloads: String(this.onNode(node.id).length),
        ...(resumed ? { resumed: "true" } : {}),
      },
    });
    void this.loop(run, generation).catch((err: unknown) => {
      this.ctx.log.error({ node: node.id, err: describeError(err) }, "the drain failed");
      if (generation === this.generation)
        this.end(run, unavailable(`the drain of node ${node.id} failed inside the aggregator: ${describeError(err)}; run it again.`));
    });
    return run;
  }

  /** The node's workloads (on it, or being moved off it). */
  private onNode(id: string) {
    return [...this.ctx.book.placements.values()].filter((p) => p.node === id && ON_NODE.has(p.state));
  }

  private async loop(run: DrainRun, generation: number): Promise<void> {
    const id = run.record.node;
    const inflight = new Map<string, Promise<void>>();
    let failure: string | undefined;
    for (;;) {
      if (generation !== this.generation) return;
      const node = this.ctx.registry.get(id);
      if (!node) failure ??= `node ${id} was deregistered during the drain.`;
      else if (!run.uncordoned && node.state !== NodeState.READY)
        failure ??= `node ${id} (${node.name}) stopped heartbeating during the drain (${NodeState[node.state]}); the deadman handles its workloads now.`;
      if (failure !== undefined || run.uncordoned) {
        if (inflight.size > 0) {
          await Promise.race(inflight.values());
          continue;
        }
        break;
      }
      const onNode = this.onNode(id);
      if (onNode.length === 0 && inflight.size === 0) break;
      const ready = onNode.filter(
        (p) => p.state === PlacementState.PLACED && !inflight.has(p.workloadId) && !this.ctx.book.inflightWorkloads.has(p.workloadId),
      );
      while (inflight.size < run.record.maxMoves && ready.length > 0 && node) {
        const p = ready.shift();
        if (!p) break;
        run.moving.add(p.workloadId);
        const work = this.moves
          .move(p, node, (event) => this.step(run, event))
          .then(
            async () => {
              run.record.moved++;
              await this.ctx.store.put(drainKey(id), JSON.stringify(run.record)).catch(() => undefined);
            },
            (err: unknown) => {
              failure ??= err instanceof MoveFailed ? err.message : `moving workload ${p.name} failed: ${describeError(err)}`;
            },
          )
          .finally(() => {
            run.moving.delete(p.workloadId);
            inflight.delete(p.workloadId);
          });
        inflight.set(p.workloadId, work);
      }
      // Wait for a move to end, or look again shortly (a workload being deployed or released by someone else).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        ...inflight.values(),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, inflight.size > 0 ? 1000 : 200))),
      ]);
      clearTimeout(timer);
    }
    if (generation !== this.generation) return;
    await this.ctx.store.delete(drainKey(id)).catch(() => undefined);
    if (run.uncordoned) return this.end(run);
    const node = this.ctx.registry.get(id);
    if (failure !== undefined) {
      const sentence = `the drain of node ${id}${node ? ` (${node.name})` : ""} stopped after moving ${run.record.moved} workload(s): ${failure.replace(/\.$/, "")}. The node is CORDONED: it takes no new workloads and keeps the ones left on it; aether cluster drain ${node?.name ?? id} tries again, aether cluster uncordon ${node?.name ?? id} puts it back on duty.`;
      if (node) await this.ctx.registry.setLifecycle(id, (n) => n.lifecycle === NodeLifecycle.DRAINING, NodeLifecycle.CORDONED, sentence);
      await this.step(run, {
        kind: ClusterEventKind.NODE_DRAIN_STOPPED,
        node: id,
        message: sentence,
        attributes: { moved: String(run.record.moved) },
      });
      return this.end(run, failedPrecondition(sentence));
    }
    const drained = await this.ctx.registry.setLifecycle(
      id,
      (n) => n.lifecycle === NodeLifecycle.DRAINING,
      NodeLifecycle.DRAINED,
      `drained: ${run.record.moved} workload(s) moved off it; in maintenance until aether cluster uncordon ${run.name}.`,
    );
    await this.step(run, {
      kind: ClusterEventKind.NODE_DRAINED,
      node: id,
      message: `node ${id} (${run.name}) is drained: ${run.record.moved} workload(s) moved off it in ${Date.now() - run.record.startMs} ms; it takes no workloads until uncordoned.`,
      attributes: { moved: String(run.record.moved), drain_ms: String(Date.now() - run.record.startMs) },
    });
    if (drained && run.record.shutdown) return this.finishShutdown(run, run.record.shutdown.gracefulTimeoutMs);
    return this.end(run);
  }

  private async finishShutdown(run: DrainRun, gracefulTimeoutMs: number): Promise<void> {
    const generation = this.generation;
    const node = this.ctx.registry.get(run.record.node);
    if (!node) return this.end(run, failedPrecondition(`node ${run.record.node} was deregistered before it was powered off.`));
    run.record.shutdown = { gracefulTimeoutMs };
    await this.ctx.store.put(drainKey(node.id), JSON.stringify(run.record)).catch(() => undefined);
    let failure: string | undefined;
    try {
      failure = await this.power.powerOff(node, gracefulTimeoutMs, (event) => this.step(run, event));
    } catch (err) {
      failure = `powering node ${node.id} off failed: ${describeError(err)}`;
    }
    if (generation !== this.generation) return;
    await this.ctx.store.delete(drainKey(node.id)).catch(() => undefined);
    this.end(run, failure === undefined ? undefined : failedPrecondition(failure));
  }

  /** Records a step as a cluster event and sends it, with the counts, to every stream following the run. */
  private async step(run: DrainRun, event: NewEvent): Promise<void> {
    const recorded = await this.ctx.emit(event);
    const progress = this.progress(run.record.node, run, recorded);
    for (const channel of run.channels) channel.push(progress);
  }

  /** Ends the run: a last progress message (done), then every stream ends (with the error, if any). */
  private end(run: DrainRun, error?: ConnectError): void {
    const last = this.progress(run.record.node, run, undefined, true);
    for (const channel of run.channels) {
      if (!error) channel.push(last);
      channel.end(error);
    }
    if (this.runs.get(run.record.node) === run) this.runs.delete(run.record.node);
    this.records.delete(run.record.node);
  }

  private progress(id: string, run?: DrainRun, event?: ClusterEvent, done = false): DrainProgress {
    const node = this.ctx.registry.get(id);
    const remaining = this.onNode(id).length;
    return create(DrainProgressSchema, {
      node: id,
      nodeName: node?.name ?? run?.name ?? "",
      lifecycle: node?.lifecycle ?? NodeLifecycle.UNSPECIFIED,
      workloadsTotal: run?.record.total ?? remaining,
      workloadsMoved: run?.record.moved ?? 0,
      workloadsRemaining: remaining,
      movesInProgress: run?.moving.size ?? 0,
      maxMoves: run?.record.maxMoves ?? 0,
      event,
      done,
    });
  }
}
