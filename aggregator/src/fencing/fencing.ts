// Fencing: which BMC switches off which node, and the Fencer that does it. The deadman (deadman.ts)
// asks the Fencer only about nodes that stopped heartbeating; the Fencer never decides anything.
//
// A BMC is registered for a node by its name (`node = "node-b"`) or by its position in the rack
// (`slot = 2`, optionally narrowed by `chassis` and `rack`). A name wins over a position. Two
// entries for the same name, or for the same position, are refused when the configuration loads;
// a node that matches several position entries (one with a chassis, one without) is not fenced
// (the deadman raises an alert) rather than fenced through a guess.
//
// Credentials are held here and handed to the Redfish client only: describe() and every error
// sentence name the endpoint and the user, never the password.
import type { Node } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import type { BmcTarget } from "@aether/fence";

/** Which node a BMC entry fences: one by name, or the node at a position (slot, optionally narrowed by chassis and rack). */
export interface BmcPlacement {
  node?: string;
  slot?: number;
  chassis?: string;
  rack?: string;
}

/** A configured BMC: which node it fences, and how the Redfish client reaches it (the password is read
 * from a file when the config loads, and never logged). */
export type BmcEntry = BmcPlacement & BmcTarget;

/** What the deadman knows of a node it wants fenced. */
export interface FenceTarget {
  id: string;
  name: string;
  rack: string;
  chassis: string;
  slot: number;
}

export function fenceTargetOf(node: Node): FenceTarget {
  return {
    id: node.id,
    name: node.name,
    rack: node.position?.rack ?? "",
    chassis: node.position?.chassis ?? "",
    slot: node.position?.slot ?? 0,
  };
}

/** The node's position as words: "slot 2 of chassis c1 in rack r1", or "no slot" when unknown. */
export function positionOf(t: FenceTarget): string {
  if (t.slot === 0) return t.chassis || t.rack ? `no slot (chassis ${t.chassis || "-"}, rack ${t.rack || "-"})` : "no slot";
  return `slot ${t.slot}${t.chassis ? ` of chassis ${t.chassis}` : ""}${t.rack ? ` in rack ${t.rack}` : ""}`;
}

/** The BMC found for a node: a key (the same BMC, the same key) and a description without credentials. */
export interface LocatedBmc {
  key: string;
  description: string;
  endpoint: string;
}

export type Location = { found: LocatedBmc } | { none: string };

/** How a fence ended. Only `confirmed` (power state "Off" read back) lets workloads move. */
export interface FenceOutcome {
  confirmed: boolean;
  /** A sentence: already off, confirmed after N polls, the BMC's refusal, the deadline passed in PoweringOff. */
  reason: string;
  alreadyOff?: boolean;
  /** The last power state read ("Off", "PoweringOff", ...), when one was read. */
  powerState?: string;
  pollCount?: number;
}

export interface FenceOptions {
  /** Longest time from the call to power state "Off". */
  timeoutMs: number;
  /** Time between power state reads. */
  pollIntervalMs: number;
  /** Aborts the fence (the deadman gave up on a BMC that hangs). */
  signal?: AbortSignal;
}

/** How a shutdown (graceful, then forced) may go. */
export interface ShutdownOptions {
  /** How long to wait for "Off" after GracefulShutdown before sending ForceOff. */
  gracefulTimeoutMs: number;
  /** Longest time from ForceOff to "Off". */
  timeoutMs: number;
  /** Time between power state reads. */
  pollIntervalMs: number;
}

/** How a shutdown ended: a fence outcome, and whether the graceful shutdown alone got it "Off". */
export interface ShutdownOutcome extends FenceOutcome {
  graceful: boolean;
}

/** Switches nodes off through their BMCs. */
export interface Fencer {
  /** The BMC registered for the node, or a sentence saying why there is none. */
  locate(node: FenceTarget): Location;
  /**
   * Powers the node off and reads "Off" back. An unconfirmed fence is an outcome (confirmed false);
   * a thrown error (wrong password, unreachable BMC) counts as unconfirmed too.
   */
  fence(node: FenceTarget, bmc: LocatedBmc, options: FenceOptions): Promise<FenceOutcome>;
  /**
   * Shuts the node down for good (ShutdownNode): GracefulShutdown, power state reads until "Off" or
   * the graceful timeout, then as fence(). Unset: only fence() (forced) is available.
   */
  shutdown?(node: FenceTarget, bmc: LocatedBmc, options: ShutdownOptions): Promise<ShutdownOutcome>;
}

/** The part of the Redfish client (@aether/fence) the aggregator uses. */
export interface RedfishFenceClient {
  fence(opts: {
    timeoutMs: number;
    pollIntervalMs: number;
    signal?: AbortSignal;
  }): Promise<{ confirmed: boolean; reason: string; alreadyOff?: boolean; powerState?: string; pollCount?: number }>;
  /** Reads the power state and the reset types the BMC allows (for a graceful shutdown). */
  powerStatus?(options?: { signal?: AbortSignal; deadlineMs?: number }): Promise<{ powerState: string; allowableResetTypes: string[] }>;
  /** Sends a reset type (GracefulShutdown). */
  reset?(resetType: string, options?: { signal?: AbortSignal; deadlineMs?: number }): Promise<unknown>;
  /** Releases its connections. */
  close?(): void;
}

/** The target handed to the Redfish client. */
export type RedfishTarget = BmcTarget;

const positionKey = (e: { slot?: number; chassis?: string; rack?: string }) =>
  `slot=${e.slot ?? 0},chassis=${e.chassis ?? "*"},rack=${e.rack ?? "*"}`;

/** Describes an entry without its credentials. */
export function describeBmc(e: BmcEntry): string {
  const what =
    e.node !== undefined
      ? `node ${e.node}`
      : positionOf({ id: "", name: "", slot: e.slot ?? 0, chassis: e.chassis ?? "", rack: e.rack ?? "" });
  return `the BMC at ${e.endpoint} (user ${e.username}${e.profile ? `, ${e.profile}` : ""}) registered for ${what}`;
}

/** The aggregator's BMC registry: which BMC fences which node. */
export class BmcRegistry {
  private readonly byNode = new Map<string, { entry: BmcEntry; index: number }>();
  private readonly byPosition: Array<{ entry: BmcEntry; index: number }> = [];

  constructor(readonly entries: readonly BmcEntry[]) {
    const seenPositions = new Set<string>();
    entries.forEach((entry, index) => {
      if ((entry.node === undefined) === (entry.slot === undefined)) {
        throw new RangeError(`BMC entry ${index + 1} (${entry.endpoint}) must name either a node or a slot (not both, not neither).`);
      }
      if (entry.node !== undefined) {
        if (this.byNode.has(entry.node)) throw new RangeError(`two BMC entries are registered for node ${entry.node}; keep one.`);
        this.byNode.set(entry.node, { entry, index });
      } else {
        if (!((entry.slot ?? 0) >= 1))
          throw new RangeError(`BMC entry ${index + 1} (${entry.endpoint}) gives slot ${entry.slot}; slots start at 1.`);
        const key = positionKey(entry);
        if (seenPositions.has(key))
          throw new RangeError(`two BMC entries are registered for ${describeBmc(entry).replace(/^.* registered for /, "")}; keep one.`);
        seenPositions.add(key);
        this.byPosition.push({ entry, index });
      }
    });
  }

  get size(): number {
    return this.entries.length;
  }

  /** The entry for a node: by name, else the one position entry that matches. */
  find(node: FenceTarget): { entry: BmcEntry; key: string } | { none: string } {
    const named = this.byNode.get(node.name);
    if (named) return { entry: named.entry, key: `bmc-${named.index + 1}` };
    if (node.slot === 0) {
      return {
        none: `no BMC is registered for node ${node.name} (${node.id}), and it reports no slot to match one by position (${positionOf(node)})`,
      };
    }
    const matches = this.byPosition.filter(
      ({ entry }) =>
        entry.slot === node.slot &&
        (entry.chassis === undefined || entry.chassis === node.chassis) &&
        (entry.rack === undefined || entry.rack === node.rack),
    );
    if (matches.length === 0) return { none: `no BMC is registered for node ${node.name} (${node.id}, ${positionOf(node)})` };
    if (matches.length > 1) {
      return {
        none: `${matches.length} BMC entries match node ${node.name} (${positionOf(node)}): ${matches.map((m) => m.entry.endpoint).join(", ")}; give the node's chassis/rack in them, or register the BMC by node name`,
      };
    }
    const only = matches[0] as { entry: BmcEntry; index: number };
    return { entry: only.entry, key: `bmc-${only.index + 1}` };
  }
}

/** The Fencer on real BMCs: a Redfish client per fence, built by `connect` (RedfishClient in production). */
export class RedfishFencer implements Fencer {
  /** Shuts a node down: graceful, then forced (see redfishShutdown). */
  async shutdown(node: FenceTarget, bmc: LocatedBmc, options: ShutdownOptions): Promise<ShutdownOutcome> {
    const found = this.bmcs.find(node);
    if ("none" in found) return { confirmed: false, graceful: false, reason: found.none };
    if (found.key !== bmc.key)
      return { confirmed: false, graceful: false, reason: `the BMC registered for node ${node.name} changed while shutting it down` };
    const e = found.entry;
    let client: RedfishFenceClient | undefined;
    try {
      const { node: _node, slot: _slot, chassis: _chassis, rack: _rack, ...target } = e;
      client = this.connect(target);
      const outcome = await redfishShutdown(client, options);
      return { ...outcome, reason: scrub(outcome.reason, e.password) };
    } catch (err) {
      return { confirmed: false, graceful: false, reason: scrub(err instanceof Error ? err.message : String(err), e.password) };
    } finally {
      client?.close?.();
    }
  }

  constructor(
    private readonly bmcs: BmcRegistry,
    private readonly connect: (target: RedfishTarget) => RedfishFenceClient,
  ) {}

  locate(node: FenceTarget): Location {
    const found = this.bmcs.find(node);
    if ("none" in found) return found;
    return { found: { key: found.key, description: describeBmc(found.entry), endpoint: found.entry.endpoint } };
  }

  async fence(node: FenceTarget, bmc: LocatedBmc, options: FenceOptions): Promise<FenceOutcome> {
    const found = this.bmcs.find(node);
    if ("none" in found) return { confirmed: false, reason: found.none };
    if (found.key !== bmc.key)
      return { confirmed: false, reason: `the BMC registered for node ${node.name} changed while fencing it; fencing again` };
    const e = found.entry;
    let client: RedfishFenceClient | undefined;
    let result: Awaited<ReturnType<RedfishFenceClient["fence"]>>;
    try {
      // The client gets how to reach the BMC, not which node the entry is for.
      const { node: _node, slot: _slot, chassis: _chassis, rack: _rack, ...target } = e;
      client = this.connect(target);
      result = await client.fence({
        timeoutMs: options.timeoutMs,
        pollIntervalMs: options.pollIntervalMs,
        ...(options.signal && { signal: options.signal }),
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      return { confirmed: false, reason: scrub(message, e.password) };
    } finally {
      client?.close?.();
    }
    return {
      confirmed: result.confirmed === true,
      reason: scrub(result.reason, e.password),
      ...(result.alreadyOff !== undefined && { alreadyOff: result.alreadyOff }),
      ...(result.powerState !== undefined && { powerState: result.powerState }),
      ...(result.pollCount !== undefined && { pollCount: result.pollCount }),
    };
  }
}

/**
 * Shuts a node down through its Redfish client: GracefulShutdown (when the BMC offers it), "Off"
 * awaited for gracefulTimeoutMs, then the client's fence (ForceOff, "Off" read back).
 */
export async function redfishShutdown(client: RedfishFenceClient, options: ShutdownOptions): Promise<ShutdownOutcome> {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  let gracefulNote = "";
  if (client.powerStatus && client.reset) {
    const status = await client.powerStatus();
    if (status.powerState === "Off")
      return {
        confirmed: true,
        graceful: true,
        alreadyOff: true,
        powerState: "Off",
        reason: 'the system was already off (PowerState "Off").',
      };
    if (status.allowableResetTypes.length === 0 || status.allowableResetTypes.includes("GracefulShutdown")) {
      const t0 = Date.now();
      await client.reset("GracefulShutdown");
      let reads = 0;
      while (Date.now() - t0 < options.gracefulTimeoutMs) {
        await sleep(Math.min(options.pollIntervalMs, Math.max(1, options.gracefulTimeoutMs - (Date.now() - t0))));
        reads++;
        const now = await client.powerStatus();
        if (now.powerState === "Off")
          return {
            confirmed: true,
            graceful: true,
            powerState: "Off",
            pollCount: reads,
            reason: `PowerState "Off" read back ${Date.now() - t0} ms after GracefulShutdown (${reads} reads).`,
          };
      }
      gracefulNote = `GracefulShutdown did not reach "Off" within ${options.gracefulTimeoutMs} ms; `;
    } else {
      gracefulNote = `the BMC offers no GracefulShutdown (it allows ${status.allowableResetTypes.join(", ")}); `;
    }
  } else {
    gracefulNote = "this BMC client cannot shut down gracefully; ";
  }
  const forced = await client.fence({ timeoutMs: options.timeoutMs, pollIntervalMs: options.pollIntervalMs });
  return { ...forced, confirmed: forced.confirmed === true, graceful: false, reason: `${gracefulNote}ForceOff: ${forced.reason}` };
}

/** Removes a secret from a sentence (in case a BMC or a library echoes it back). */
export function scrub(sentence: string, secret: string): string {
  return secret.length >= 4 ? sentence.split(secret).join("********") : sentence;
}
