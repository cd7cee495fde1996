// The deadman switch: on the leading replica only, a node whose lease ran out (no heartbeat for the
// lease TTL, 15 s by default) is SUSPECT; the aggregator then fences it through the BMC registered
// for it, and only once the BMC has read back power state "Off" does it re-run the auction for the
// node's restartable workloads on the other nodes. Never two copies of one workload:
//
//   READY ──lease runs out──► SUSPECT ──BMC found──► FENCING ──"Off" read back──► FENCED ──► workloads re-placed
//                               │                      │
//                               │ no BMC: alert,       └─ not confirmed (wrong password, expired session,
//                               │ workloads stay          a BMC that hangs, PoweringOff forever) ──► FENCE_FAILED:
//                               ▼                         alert, workloads stay, retried with backoff
//                         (stays SUSPECT)
//
// A suspect or fence-failed node that registers again before it is fenced recovers (its workloads
// never moved). A fenced node that registers again rejoins as a new member: the aggregator first
// has it release every workload it had when it was fenced (they run elsewhere now, or were given
// up), then counts it as incarnation n+1; registration is refused while the release fails.
//
// What the deadman did is kept under fencing/<node id> in the store, so a replica that takes over
// finishes it: a FENCING node is fenced again (fencing an "Off" node confirms at once), a FENCED
// node's workloads still on it are re-placed, a FENCE_FAILED node is retried.
//
// It is past 400 lines because each step of the switch above (suspect, fence, confirm, re-place,
// rejoin) reads and writes the same per-node record and timers, and a take-over resumes any of them;
// the decisions themselves are pure functions in deadman-model.ts, the BMC calls in fencing.ts.
import { ClusterEventKind, NodeState, type Node, type RegisterNodeRequest } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { Rejoin } from "../nodes/registry.js";
import { fenceTargetOf, positionOf, type FenceOutcome, type LocatedBmc } from "./fencing.js";
import { describeError, msOf } from "@aether/server";
import { formatMs } from "../auction/auction.js";
import { pool } from "../util.js";
import {
  DEFAULT_FENCE_POLL_INTERVAL_MS,
  DEFAULT_FENCE_RETRY_MS,
  DEFAULT_FENCE_TIMEOUT_MS,
  FENCING_PREFIX,
  MAX_FENCE_RETRY_MS,
  RESTART_LABEL,
  fencingKey,
  restartPolicy,
  vmDataAtRisk,
  type DeadmanHost,
  type DeadmanOptions,
  type FencingRecord,
} from "./deadman-model.js";
import { memberRecord, rejoinOf } from "./rejoin.js";

/** Beyond the fence timeout, how long a fence call may take before it counts as hung (at most the timeout again). */
const HANG_GUARD_MS = 10_000;
/** How many workloads of a fenced node are re-placed at once. */
const REPLACE_CONCURRENCY = 8;

const iso = (ms: number) => new Date(ms).toISOString();

/** Races work against a deadline, aborting its signal when the deadline passes first. */
async function withDeadline<T>(work: (signal: AbortSignal) => Promise<T>, ms: number, what: string): Promise<T> {
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work(abort.signal),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`${what} did not answer within ${formatMs(ms)} (the BMC hangs)`));
          abort.abort();
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export class Deadman {
  private records = new Map<string, FencingRecord>();
  /** Nodes being handled right now (fenced or re-placed). */
  private readonly busy = new Map<string, Promise<void>>();
  /** Nodes whose handling failed (the store refused a write...): left alone until then. */
  private readonly pausedUntil = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private running = false;
  /** Bumped on start and stop: work begun under an older generation stops acting. */
  private generation = 0;
  readonly fenceTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly retryMs: number;
  private readonly maxSweepMs: number;

  constructor(
    private readonly host: DeadmanHost,
    private readonly options: DeadmanOptions,
  ) {
    this.fenceTimeoutMs = options.fenceTimeoutMs ?? DEFAULT_FENCE_TIMEOUT_MS;
    this.pollIntervalMs = options.pollIntervalMs ?? DEFAULT_FENCE_POLL_INTERVAL_MS;
    this.retryMs = options.retryMs ?? DEFAULT_FENCE_RETRY_MS;
    if (!(this.fenceTimeoutMs >= 100)) throw new RangeError(`fence timeout ${this.fenceTimeoutMs} ms is too short (at least 100 ms)`);
    if (!(this.pollIntervalMs >= 10 && this.pollIntervalMs <= this.fenceTimeoutMs))
      throw new RangeError(`fence poll interval ${this.pollIntervalMs} ms is out of range (10 ms to the fence timeout)`);
    if (!(this.retryMs >= 100)) throw new RangeError(`fence retry ${this.retryMs} ms is too short (at least 100 ms)`);
    this.maxSweepMs = Math.min(1000, Math.max(20, Math.floor(options.leaseTtlMs / 10)));
  }

  /** Reads the fencing records (on becoming the leader). */
  async load(): Promise<void> {
    const records = new Map<string, FencingRecord>();
    for (const entry of await this.host.store.list(FENCING_PREFIX)) {
      try {
        const r = JSON.parse(entry.value) as FencingRecord;
        if (typeof r.node === "string" && Array.isArray(r.stale)) records.set(r.node, r);
      } catch (err) {
        this.host.log.warn({ key: entry.key, err: describeError(err) }, "skipping an unreadable fencing record");
      }
    }
    this.records = records;
  }

  /** Starts the loop (this replica leads). */
  start(): void {
    this.generation++;
    this.running = true;
    this.schedule(0);
  }

  /** Stops the loop (leadership lost, shutdown); work under way stops acting at its next step. */
  stop(): void {
    this.generation++;
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.records = new Map();
    this.pausedUntil.clear();
  }

  private schedule(ms: number): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    const generation = this.generation;
    this.timer = setTimeout(() => void this.tick(generation), Math.max(0, ms));
    this.timer.unref();
  }

  /** Sweeps expired leases, starts handling every node that needs it, and sleeps until the next lease can run out. */
  private async tick(generation: number): Promise<void> {
    if (generation !== this.generation || this.ticking) return;
    this.ticking = true;
    try {
      await this.host.registry.sweep(Date.now());
    } catch (err) {
      this.host.log.warn({ err: describeError(err) }, "lease sweep failed");
    }
    const now = Date.now();
    let nextRetry = Number.POSITIVE_INFINITY;
    try {
      for (const node of this.host.registry.list()) {
        if (this.busy.has(node.id)) continue;
        const paused = this.pausedUntil.get(node.id) ?? 0;
        if (paused > now) {
          nextRetry = Math.min(nextRetry, paused);
          continue;
        }
        const record = this.records.get(node.id);
        switch (node.state) {
          case NodeState.SUSPECT:
            if (record?.alertedLease !== undefined && record.alertedLease === node.lease?.id) break;
            this.begin(node.id, () => this.fence(node.id, generation));
            break;
          case NodeState.FENCING:
            this.begin(node.id, () => this.fence(node.id, generation));
            break;
          case NodeState.FENCE_FAILED: {
            const at = record?.nextAttemptMs ?? 0;
            if (at <= now) this.begin(node.id, () => this.fence(node.id, generation));
            else nextRetry = Math.min(nextRetry, at);
            break;
          }
          case NodeState.FENCED:
            if (this.host.movablePlacements(node.id).length > 0) this.begin(node.id, () => this.replaceAll(node.id, generation));
            break;
          default:
            break;
        }
      }
    } finally {
      this.ticking = false;
    }
    // Wake at the first lease that can run out (plus a millisecond), at the next retry, or within a second at most.
    const expiry = this.host.registry.nextExpiry();
    let wait = this.maxSweepMs;
    if (expiry !== undefined) wait = Math.min(wait, expiry - Date.now() + 1);
    if (Number.isFinite(nextRetry)) wait = Math.min(wait, nextRetry - Date.now() + 1);
    if (generation === this.generation) this.schedule(Math.max(1, wait));
  }

  private begin(id: string, work: () => Promise<void>): void {
    this.pausedUntil.delete(id);
    const run = work()
      .catch((err: unknown) => {
        this.pausedUntil.set(id, Date.now() + this.maxSweepMs);
        this.host.log.error({ node: id, err: describeError(err) }, "the deadman could not finish handling a node; it tries again");
      })
      .finally(() => {
        if (this.busy.get(id) === run) this.busy.delete(id);
        // Whatever is left (a failed step, a retry) is looked at by the next tick, which also finds the next wake-up.
        this.schedule(0);
      });
    this.busy.set(id, run);
  }

  private async save(record: FencingRecord): Promise<void> {
    await this.host.store.put(fencingKey(record.node), JSON.stringify(record));
    this.records.set(record.node, record);
  }

  private recordOf(node: Node): FencingRecord {
    return (
      this.records.get(node.id) ?? { node: node.id, incarnation: 1, phase: "member", leaseId: node.lease?.id ?? "", attempts: 0, stale: [] }
    );
  }

  /** One fence attempt of a SUSPECT, FENCING (after a takeover) or FENCE_FAILED node. */
  private async fence(id: string, generation: number): Promise<void> {
    const node = this.host.registry.get(id);
    if (!node || generation !== this.generation) return;
    if (node.state !== NodeState.SUSPECT && node.state !== NodeState.FENCING && node.state !== NodeState.FENCE_FAILED) return;
    const { fencer } = this.options;
    const target = fenceTargetOf(node);
    const leaseId = node.lease?.id ?? "";
    const lastHeartbeatMs = msOf(node.heartbeatTime);
    const previous = this.recordOf(node);
    const sameEpisode = previous.leaseId === leaseId && previous.phase !== "member";
    const record: FencingRecord = {
      ...previous,
      leaseId,
      lastHeartbeatMs,
      suspectMs: sameEpisode && previous.suspectMs !== undefined ? previous.suspectMs : Date.now(),
      attempts: sameEpisode ? previous.attempts : 0,
    };
    const location = fencer.locate(target);

    if ("none" in location) {
      // Nothing can switch it off, so nothing may start its workloads elsewhere: say so, once per episode.
      const reason = `${location.none}: it cannot be fenced, so its workloads stay where they are (they may still run). Register a BMC for it (aggregator config [[bmcs]]) or power it off, then deregister it with re_place.`;
      const sentence = reason.charAt(0).toUpperCase() + reason.slice(1);
      const updated = await this.host.registry.transition(
        id,
        (n) => n.state === NodeState.SUSPECT && n.lease?.id === leaseId,
        NodeState.SUSPECT,
        `${node.stateReason} ${sentence}`,
      );
      if (!updated || generation !== this.generation) return;
      await this.save({ ...record, phase: "suspect", alertedLease: leaseId });
      this.host.log.error(
        { node: id, name: node.name, position: positionOf(target) },
        "cannot fence a silent node: no BMC is registered for it; its workloads stay put",
      );
      await this.host.emit({
        kind: ClusterEventKind.NODE_FENCE_FAILED,
        node: id,
        message: `ALERT: node ${id} (${node.name}) is silent and ${reason}`,
        attributes: {
          alert: "true",
          cause: "no_bmc",
          position: positionOf(target),
          last_heartbeat: iso(lastHeartbeatMs),
          workloads_left: String(this.host.movablePlacements(id).length),
        },
      });
      return;
    }
    const bmc = location.found;
    const attempt = record.attempts + 1;

    // The same BMC mapped to another node that is not fenced: switching it off could hit the wrong machine.
    const clash = this.host.registry.list().find((other) => {
      if (other.id === id || other.state === NodeState.FENCED) return false;
      const l = fencer.locate(fenceTargetOf(other));
      return "found" in l && l.found.key === bmc.key;
    });
    if (clash) {
      await this.failed(
        node,
        record,
        attempt,
        bmc,
        `refused to fence: ${bmc.description} also matches node ${clash.name} (${clash.id}, ${NodeState[clash.state]}, ${positionOf(fenceTargetOf(clash))}), so it might switch off the wrong machine; fix the nodes' slot labels or register the BMC by node name`,
        "ambiguous_bmc",
        generation,
      );
      return;
    }

    const startMs = Date.now();
    const fencing = await this.host.registry.transition(
      id,
      (n) =>
        (n.state === NodeState.SUSPECT || n.state === NodeState.FENCING || n.state === NodeState.FENCE_FAILED) && n.lease?.id === leaseId,
      NodeState.FENCING,
      `no heartbeat since ${iso(lastHeartbeatMs)}: being fenced through ${bmc.description} (attempt ${attempt}, since ${iso(startMs)}).`,
    );
    if (!fencing || generation !== this.generation) return;
    await this.save({
      ...record,
      phase: "fencing",
      attempts: attempt,
      fenceStartMs: startMs,
      bmc: bmc.description,
      nextAttemptMs: undefined,
    });
    this.host.log.warn({ node: id, name: node.name, bmc: bmc.endpoint, attempt }, "fencing a silent node through its BMC");
    await this.host.emit({
      kind: ClusterEventKind.NODE_FENCING,
      node: id,
      message: `fencing node ${id} (${node.name}), silent since ${iso(lastHeartbeatMs)}, through ${bmc.description} (attempt ${attempt}).`,
      attributes: {
        bmc: bmc.endpoint,
        attempt: String(attempt),
        last_heartbeat: iso(lastHeartbeatMs),
        timeout_ms: String(this.fenceTimeoutMs),
      },
    });

    const t0 = performance.now();
    let outcome: FenceOutcome;
    try {
      outcome = await withDeadline(
        (signal) => fencer.fence(target, bmc, { timeoutMs: this.fenceTimeoutMs, pollIntervalMs: this.pollIntervalMs, signal }),
        this.fenceTimeoutMs + Math.min(HANG_GUARD_MS, this.fenceTimeoutMs),
        `${bmc.description}`,
      );
    } catch (err) {
      outcome = { confirmed: false, reason: describeError(err) };
    }
    const fenceMs = performance.now() - t0;
    if (generation !== this.generation) return; // Another replica leads now and fences again.
    const current = this.records.get(id) ?? record;

    if (!outcome.confirmed) {
      await this.failed(
        fencing,
        { ...current, attempts: attempt },
        attempt,
        bmc,
        `the fence was not confirmed after ${formatMs(fenceMs)}: ${outcome.reason.replace(/\.$/, "")}`,
        outcome.powerState ? `unconfirmed_${outcome.powerState}` : "unconfirmed",
        generation,
      );
      return;
    }
    const fencedMs = Date.now();
    const fenced = await this.host.registry.transition(
      id,
      (n) => n.state === NodeState.FENCING && n.lease?.id === leaseId,
      NodeState.FENCED,
      `powered off through ${bmc.description} at ${iso(fencedMs)} (${outcome.reason.replace(/\.$/, "")}); its workloads are re-placed on other nodes; it rejoins as a new member when it registers again.`,
    );
    if (!fenced) {
      this.host.log.warn(
        { node: id },
        "the node was fenced, but it was deregistered meanwhile; its workloads are left as the operator set them",
      );
      return;
    }
    await this.save({ ...current, phase: "fenced", attempts: attempt, fencedMs, nextAttemptMs: undefined });
    this.host.log.warn({ node: id, name: node.name, bmc: bmc.endpoint, fenceMs: Math.round(fenceMs) }, "node fenced: power off confirmed");
    await this.host.emit({
      kind: ClusterEventKind.NODE_FENCED,
      node: id,
      message: `node ${id} (${node.name}) fenced: power off confirmed through ${bmc.description} after ${formatMs(fenceMs)} (${outcome.reason.replace(/\.$/, "")}); its workloads are re-placed.`,
      attributes: {
        bmc: bmc.endpoint,
        attempt: String(attempt),
        last_heartbeat: iso(lastHeartbeatMs),
        suspect_time: iso(current.suspectMs ?? startMs),
        fence_start_time: iso(startMs),
        fence_duration_ms: String(Math.round(fenceMs)),
        already_off: String(outcome.alreadyOff === true),
        ...(outcome.powerState !== undefined && { power_state: outcome.powerState }),
      },
    });
    await this.replaceAll(id, generation);
  }

  /** Records an unconfirmed fence: FENCE_FAILED, an alert, a retry later; the workloads stay put. */
  private async failed(
    node: Node,
    record: FencingRecord,
    attempt: number,
    bmc: LocatedBmc,
    why: string,
    cause: string,
    generation: number,
  ): Promise<void> {
    const delay = Math.min(MAX_FENCE_RETRY_MS, this.retryMs * 2 ** Math.min(20, Math.max(0, attempt - 1)));
    const nextAttemptMs = Date.now() + delay;
    const leaseId = node.lease?.id ?? "";
    const sentence = `fencing through ${bmc.description} failed (attempt ${attempt}): ${why.replace(/\.$/, "")}. Its workloads stay where they are (they may still run); fencing is tried again at ${iso(nextAttemptMs)}. Fix the BMC, or power the node off and deregister it with re_place.`;
    const updated = await this.host.registry.transition(
      node.id,
      (n) =>
        (n.state === NodeState.SUSPECT || n.state === NodeState.FENCING || n.state === NodeState.FENCE_FAILED) && n.lease?.id === leaseId,
      NodeState.FENCE_FAILED,
      sentence,
    );
    if (!updated || generation !== this.generation) return;
    await this.save({ ...record, phase: "fence_failed", attempts: attempt, nextAttemptMs, bmc: bmc.description });
    this.host.log.error(
      { node: node.id, name: node.name, bmc: bmc.endpoint, attempt, retryInMs: delay, why },
      "ALERT: fencing a silent node failed; its workloads stay put",
    );
    await this.host.emit({
      kind: ClusterEventKind.NODE_FENCE_FAILED,
      node: node.id,
      message: `ALERT: node ${node.id} (${node.name}): ${sentence}`,
      attributes: {
        alert: "true",
        cause,
        bmc: bmc.endpoint,
        attempt: String(attempt),
        next_attempt: iso(nextAttemptMs),
        last_heartbeat: iso(record.lastHeartbeatMs ?? msOf(node.heartbeatTime)),
        workloads_left: String(this.host.movablePlacements(node.id).length),
      },
    });
  }

  /** Moves every workload still on a FENCED node: restartable ones by a new auction, the others marked FAILED. */
  private async replaceAll(id: string, generation: number): Promise<void> {
    const node = this.host.registry.get(id);
    if (!node || node.state !== NodeState.FENCED || generation !== this.generation) return;
    const placements = this.host.movablePlacements(id);
    if (placements.length === 0) return;
    const record = this.recordOf(node);
    // Remember them first, so that whatever happens next they are released on the node before it rejoins;
    // except a VM whose disks exist only there: releasing it would delete the only copy of its data.
    const known = new Set(record.stale.map((w) => w.workloadId));
    const stale = [
      ...record.stale,
      ...placements
        .filter(
          (p) =>
            !known.has(p.workloadId) && (vmDataAtRisk(p.spec) === undefined || this.host.replicaHolders?.(p.workloadId, id) !== undefined),
        )
        .map((p) => ({ workloadId: p.workloadId, tenant: p.tenant, name: p.name })),
    ];
    await this.save({ ...record, stale });
    if (generation !== this.generation) return;
    const lastHeartbeatMs = record.lastHeartbeatMs ?? msOf(node.heartbeatTime);
    await pool(placements, REPLACE_CONCURRENCY, async (p) => {
      if (generation !== this.generation) return;
      try {
        const atRisk = vmDataAtRisk(p.spec);
        // A VM with replicas of its volumes on live nodes starts on one of them, from its last point.
        const holders = atRisk === undefined ? undefined : this.host.replicaHolders?.(p.workloadId, id);
        if (restartPolicy(p.spec) === "on-fence" && (atRisk === undefined || holders !== undefined))
          await this.host.replaceFenced(p, node, lastHeartbeatMs, holders);
        else {
          const fenced = `its node ${id} (${node.name}) was fenced (powered off)`;
          const reason =
            atRisk !== undefined
              ? `${fenced} and ${atRisk}. Its disks are kept there: once the node is back, start the VM on it again.`
              : p.spec?.labels[RESTART_LABEL] === "never"
                ? `${fenced} and its label ${RESTART_LABEL}=never says not to start it elsewhere: deploy it again if it is still needed.`
                : `${fenced} and a cell's contents are started by its owner, so it is not allocated elsewhere (label it ${RESTART_LABEL}=on-fence to change that): deploy it again if it is still needed.`;
          await this.host.abandonFenced(p, node, reason);
        }
      } catch (err) {
        this.host.log.warn({ node: id, workload: p.workloadId, err: describeError(err) }, "re-placing a workload of a fenced node failed");
      }
    });
  }

  /**
   * Before a node registers: a fenced node rejoins as a new member once every workload it had when
   * it was fenced is released on it (rejoin.ts). Returns the rejoin, or undefined for an ordinary
   * registration; throws UNAVAILABLE when the release fails (the node retries).
   */
  async beforeRegister(req: RegisterNodeRequest): Promise<Rejoin | undefined> {
    return rejoinOf(this.host, this.records.get(req.nodeId), req);
  }

  /** After a node registered: a rejoin becomes the new member; a recovered node's episode ends. */
  async afterRegister(node: Node, rejoin: Rejoin | undefined): Promise<void> {
    const next = memberRecord(node, this.records.get(node.id), rejoin);
    if (next) await this.save(next);
  }
}
