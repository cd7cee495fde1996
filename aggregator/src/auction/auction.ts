// The auction: what each node's answer counts as, who wins, and how a tie is broken. decide() and
// classifyAnswer() are pure functions (same inputs, same result, every time); collectBids() is the
// only part that talks to nodes.
//
// The rules:
// - A node answers 1..1000 (a bid, higher is a better fit) or -1 (it cannot host the workload; the
//   breakdown's decline_reason says why). Anything else (0, 5000, a fraction of a score, an answer
//   that names another node, a second answer) is recorded as an ERROR and ignored; so is a failed
//   call. A node that has not answered when the window closes is TIMED_OUT.
// - The highest score wins. Equal scores go through a chain of rules, each applied only among the
//   nodes still tied, each narrowing them down until one is left:
//     1. fewest placements on the node (spread the load);
//     2. cooler: lower CPU temperature, then lower inlet temperature, each only when every tied node
//        reported it (a node that cannot read its temperature is not guessed hotter or cooler);
//     3. less disk wear: the higher "disk_wear" factor of the bid's breakdown (1 = no wear), only
//        when every tied node's breakdown carries it;
//     4. the lowest node id (always decides).
// - The winner is asked to provision; if it fails, the next node of the full order is, and so on.
//   The full order is the same chain applied again to the nodes left after each pick.
import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BidOutcome,
  BidSchema,
  type Bid,
  type BidBreakdown,
  type RequestBidRequest,
  type RequestBidResponse,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { duration } from "@aether/server";

export const MIN_SCORE = 1;
export const MAX_SCORE = 1000;
export const DECLINE_SCORE = -1;
/** Name of the bid factor that carries disk wear (0..1, 1 = no wear). */
export const DISK_WEAR_FACTOR = "disk_wear";

/** A node that bid, with what the tie-breakers look at. */
export interface Contender {
  node: string;
  /** 1..1000. */
  score: number;
  /** Live placements on the node (PROVISIONING or PLACED). */
  placements: number;
  /** Highest CPU package temperature, when the node reported it. */
  cpuCelsius?: number;
  /** Inlet temperature, when the node reported it. */
  inletCelsius?: number;
  /** The bid's disk_wear factor (0..1, higher = less wear), when the breakdown carries it. */
  diskWear?: number;
}

/** The rule that settled a tie for the highest score. */
export type TieBreakRule = "placements" | "thermal" | "disk_wear" | "node_id";

export interface Decision {
  /** Every contender, best first: the winner, then whom to try if it fails to provision. */
  order: Contender[];
  /** Which rule picked the winner among equal scores; undefined when the winner's score was alone. */
  decidedBy: TieBreakRule | undefined;
  /** A sentence saying how the tie was broken; empty when there was no tie. */
  tieBreakReason: string;
}

interface Choice {
  winner: Contender;
  decidedBy: TieBreakRule | undefined;
  reason: string;
}

const celsius = (v: number) => `${Number(v.toFixed(1))} °C`;
const names = (cs: Contender[]) => cs.map((c) => c.node).join(", ");
const byNodeId = (a: Contender, b: Contender) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);

/** Picks the best contender of a non-empty set. */
function pickBest(all: Contender[]): Choice {
  const top = Math.max(...all.map((c) => c.score));
  let tied = all.filter((c) => c.score === top).sort(byNodeId);
  const first = tied[0];
  if (first === undefined) throw new Error("pickBest needs at least one contender");
  if (tied.length === 1) return { winner: first, decidedBy: undefined, reason: "" };

  const steps: string[] = [];
  const intro = `${tied.length} nodes bid ${top} (${names(tied)})`;
  const settle = (rule: TieBreakRule, sentence: string): Choice => {
    const winner = tied[0] as Contender;
    return { winner, decidedBy: rule, reason: `${intro}; ${[...steps, sentence].join("; ")}.` };
  };
  /** Keeps the contenders with the best value; returns true when that narrowed the set. */
  const narrow = (value: (c: Contender) => number, best: "min" | "max"): boolean => {
    const values = tied.map(value);
    const target = best === "min" ? Math.min(...values) : Math.max(...values);
    const kept = tied.filter((c) => value(c) === target);
    const narrowed = kept.length < tied.length;
    tied = kept;
    return narrowed;
  };

  // 1. Fewest placements.
  {
    const before = tied;
    if (narrow((c) => c.placements, "min")) {
      const others = before
        .filter((c) => !tied.includes(c))
        .map((c) => `${c.node} ${c.placements}`)
        .join(", ");
      if (tied.length === 1)
        return settle("placements", `fewest placements decided: ${names(tied)} has ${tied[0]?.placements} (${others})`);
      steps.push(`fewest placements (${tied[0]?.placements}) left ${names(tied)}`);
    } else {
      steps.push(`all have ${tied[0]?.placements} placements`);
    }
  }

  // 2. Cooler: CPU temperature, then inlet temperature, each only when every tied node knows it.
  for (const [label, read] of [
    ["CPU", (c: Contender) => c.cpuCelsius],
    ["inlet", (c: Contender) => c.inletCelsius],
  ] as const) {
    if (tied.some((c) => read(c) === undefined)) {
      steps.push(`${label} temperature not known for every tied node`);
      continue;
    }
    const before = tied;
    if (narrow((c) => read(c) as number, "min")) {
      const others = before
        .filter((c) => !tied.includes(c))
        .map((c) => `${c.node} ${celsius(read(c) as number)}`)
        .join(", ");
      if (tied.length === 1)
        return settle("thermal", `cooler decided: ${names(tied)} at ${celsius(read(tied[0] as Contender) as number)} ${label} (${others})`);
      steps.push(`cooler (${celsius(read(tied[0] as Contender) as number)} ${label}) left ${names(tied)}`);
    } else {
      steps.push(`same ${label} temperature`);
    }
  }

  // 3. Less disk wear (higher disk_wear factor), only when every tied node's bid carries it.
  if (tied.some((c) => c.diskWear === undefined)) {
    steps.push("disk wear not known for every tied node");
  } else {
    const before = tied;
    if (narrow((c) => c.diskWear as number, "max")) {
      const others = before
        .filter((c) => !tied.includes(c))
        .map((c) => `${c.node} ${c.diskWear}`)
        .join(", ");
      if (tied.length === 1)
        return settle("disk_wear", `less disk wear decided: ${names(tied)} with disk_wear ${tied[0]?.diskWear} (${others})`);
      steps.push(`less disk wear (${tied[0]?.diskWear}) left ${names(tied)}`);
    } else {
      steps.push("same disk wear");
    }
  }

  // 4. Lowest node id (tied is sorted by id).
  const rest = tied
    .slice(1)
    .map((c) => c.node)
    .join(", ");
  return settle("node_id", `lowest node id decided: ${tied[0]?.node} (before ${rest})`);
}

/**
 * Orders the contenders best first and says how a tie for the highest score was broken. Pure and
 * deterministic: the input order does not matter.
 */
export function decide(contenders: Contender[]): Decision {
  if (contenders.length === 0) return { order: [], decidedBy: undefined, tieBreakReason: "" };
  const remaining = [...contenders];
  const order: Contender[] = [];
  let decidedBy: TieBreakRule | undefined;
  let tieBreakReason = "";
  while (remaining.length > 0) {
    const pick = pickBest(remaining);
    if (order.length === 0) {
      decidedBy = pick.decidedBy;
      tieBreakReason = pick.reason;
    }
    order.push(pick.winner);
    remaining.splice(remaining.indexOf(pick.winner), 1);
  }
  return { order, decidedBy, tieBreakReason };
}

/** The disk_wear factor of a breakdown (0..1), when it carries a usable one. */
export function diskWearOf(breakdown: BidBreakdown | undefined): number | undefined {
  const factor = breakdown?.factors.find((f) => f.name === DISK_WEAR_FACTOR);
  if (factor === undefined || !Number.isFinite(factor.value) || factor.value < 0 || factor.value > 1) return undefined;
  return factor.value;
}

/** How much later than the bid window a node's own deadline (connect-timeout-ms) is; see collectBids(). */
export const NODE_DEADLINE_MARGIN_MS = 250;

/** What came back from one node's RequestBid. */
export type BidAnswer =
  | { kind: "answer"; response: RequestBidResponse; latencyMs: number }
  | { kind: "error"; error: unknown; latencyMs: number }
  | { kind: "timeout"; latencyMs: number };

/** How one answer counts, as the Bid recorded in the auction. Pure. */
export function classifyAnswer(node: string, answer: BidAnswer, windowMs: number): Bid {
  const latency = duration(answer.latencyMs);
  if (answer.kind === "timeout") {
    return create(BidSchema, {
      node,
      outcome: BidOutcome.TIMED_OUT,
      score: 0,
      latency,
      error: `no answer within the ${formatMs(windowMs)} bid window; the node was left out`,
    });
  }
  if (answer.kind === "error") {
    const err = answer.error;
    const timedOut = err instanceof ConnectError && err.code === Code.DeadlineExceeded;
    return create(BidSchema, {
      node,
      outcome: timedOut ? BidOutcome.TIMED_OUT : BidOutcome.ERROR,
      score: 0,
      latency,
      error: err instanceof ConnectError ? err.message : err instanceof Error ? err.message : String(err),
    });
  }
  const { response } = answer;
  const breakdown = response.breakdown;
  const invalid = (why: string) =>
    create(BidSchema, {
      node,
      outcome: BidOutcome.ERROR,
      score: response.score,
      breakdown,
      latency,
      error: `${why}; the answer was ignored`,
    });
  if (response.node !== "" && response.node !== node) {
    return invalid(`the answer names node ${JSON.stringify(response.node.slice(0, 80))}, not ${node} (a misrouted or duplicate answer)`);
  }
  if (response.score === DECLINE_SCORE) {
    return create(BidSchema, { node, outcome: BidOutcome.DECLINED, score: DECLINE_SCORE, breakdown, latency });
  }
  if (!Number.isInteger(response.score) || response.score < MIN_SCORE || response.score > MAX_SCORE) {
    return invalid(`score ${response.score} is out of range (a bid is ${MIN_SCORE}..${MAX_SCORE}, or ${DECLINE_SCORE} to decline)`);
  }
  if (breakdown?.factors.some((f) => !Number.isFinite(f.value) || !Number.isFinite(f.weight))) {
    return invalid("the breakdown carries a factor that is not a finite number");
  }
  return create(BidSchema, { node, outcome: BidOutcome.BID, score: response.score, breakdown, latency });
}

/** Why a node took no part or did not win, in a few words (for the "no capacity" sentence). */
export function whyNoBid(bid: Bid): string {
  switch (bid.outcome) {
    case BidOutcome.DECLINED:
      return bid.breakdown?.declineReason || "declined without giving a reason";
    case BidOutcome.TIMED_OUT:
    case BidOutcome.ERROR:
      return bid.error;
    default:
      return `bid ${bid.score}`;
  }
}

export function formatMs(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000} s` : `${Number(ms.toFixed(1))} ms`;
}

/** A node to ask, and what reaches its BidService's RequestBid (a Connect client, or the aggregator's BidCaller). */
export interface BidTarget {
  node: string;
  client: {
    requestBid(request: RequestBidRequest, options: { signal: AbortSignal; timeoutMs: number }): Promise<RequestBidResponse>;
  };
}

export interface Bidding {
  /** One Bid per node asked, by node id. */
  bids: Bid[];
  /** From the first request to the last answer, or to the window's close. */
  biddingMs: number;
}

/**
 * Asks every target in parallel and returns once all have answered or the window closed, whichever
 * comes first; calls still open at the close are cancelled and count as TIMED_OUT. Only the first
 * answer of a node counts.
 */
export async function collectBids(targets: BidTarget[], request: RequestBidRequest, windowMs: number): Promise<Bidding> {
  const start = performance.now();
  const results = new Map<string, Bid>();
  let closed = false;
  let lastAnswer = start;
  let closeWindow: () => void = () => {};
  const windowClosed = new Promise<void>((resolve) => (closeWindow = resolve));
  const timer = setTimeout(closeWindow, windowMs);
  let open = targets.length;
  const settle = (node: string, answer: BidAnswer) => {
    if (closed || results.has(node)) return;
    results.set(node, classifyAnswer(node, answer, windowMs));
    lastAnswer = performance.now();
    if (--open === 0) closeWindow();
  };
  // One signal cancels every call still open when the window closes (it carries one listener per
  // node, hence no listener limit); the window's one timer ends the wait. The deadline also travels
  // in the Connect timeout header, as the node's backstop should the cancel not reach it: a margin
  // past the window, or a node whose own clock for it runs early (its event loop's time is stale
  // on a loaded host) gives up first and its "cancelled" error, arriving before the window's close,
  // counts as an ERROR instead of a TIMED_OUT.
  const abort = new AbortController();
  setMaxListeners(0, abort.signal);
  const options = { signal: abort.signal, timeoutMs: Math.ceil(windowMs) + NODE_DEADLINE_MARGIN_MS };
  targets.forEach((target) => {
    const sent = performance.now();
    target.client.requestBid(request, options).then(
      (response) => settle(target.node, { kind: "answer", response, latencyMs: performance.now() - sent }),
      (error: unknown) => settle(target.node, { kind: "error", error, latencyMs: performance.now() - sent }),
    );
  });
  if (targets.length === 0) closeWindow();
  await windowClosed;
  clearTimeout(timer);
  const end = open > 0 ? performance.now() : lastAnswer;
  closed = true;
  if (open > 0) abort.abort();
  const bids = targets
    .map((t) => results.get(t.node) ?? classifyAnswer(t.node, { kind: "timeout", latencyMs: end - start }, windowMs))
    .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  return { bids, biddingMs: end - start };
}
