// StreamClusterEvents: the retained cluster events from the requested start, then (with follow)
// new ones as they happen. Every open stream ends when this replica stops leading (the client
// reconnects to the new leader and resumes with after_sequence) and when the aggregator shuts down.
import type { ConnectError } from "@connectrpc/connect";
import type { ClusterEvent, StreamClusterEventsRequest } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { dnsLabel, unavailable } from "@aether/server";
import type { EventLog } from "./events.js";

/** What a stream asks of leadership before it starts. */
export interface StreamGate {
  readonly isLeader: boolean;
  standbySentence(): Promise<string>;
}

export class EventStreams {
  /** Ends open event streams (leadership lost, shutdown). */
  private readonly enders = new Set<(why: ConnectError | undefined) => void>();
  private closed = false;

  constructor(
    private readonly events: EventLog,
    private readonly replica: string,
    private readonly leadership: StreamGate,
  ) {}

  /** Ends every open stream, with why (undefined: they end cleanly). */
  endAll(why: ConnectError | undefined): void {
    for (const end of [...this.enders]) end(why);
  }

  /** Ends every open stream and refuses new ones (the first step of shutting down). */
  close(): void {
    this.closed = true;
    const why = unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`);
    for (const end of [...this.enders]) end(why);
  }

  /**
   * The retained events from the requested start, then (with follow) new ones as they happen, until
   * signal aborts (the client cancelled), leadership is lost or the aggregator stops.
   */
  async *stream(req: StreamClusterEventsRequest, signal?: AbortSignal): AsyncGenerator<ClusterEvent> {
    if (!this.leadership.isLeader) throw unavailable(await this.leadership.standbySentence());
    if (this.closed)
      throw unavailable(`this replica (${this.replica}) is shutting down; reconnect to another replica (resume with after_sequence).`);
    const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
    const kinds = new Set(req.kinds);
    const wanted = (e: ClusterEvent) =>
      (kinds.size === 0 || kinds.has(e.kind)) && (tenant === undefined || e.tenant === "" || e.tenant === tenant);

    const queue: ClusterEvent[] = [];
    let wake: () => void = () => {};
    let ended: { why: ConnectError | undefined } | undefined;
    const unsubscribe = req.follow
      ? this.events.subscribe((e) => {
          queue.push(e);
          wake();
        })
      : () => false;
    const end = (why: ConnectError | undefined) => {
      ended = { why };
      wake();
    };
    this.enders.add(end);
    const onAbort = () => end(undefined);
    signal?.addEventListener("abort", onAbort);
    try {
      const history = this.events.history();
      let backlog: readonly ClusterEvent[];
      switch (req.start.case) {
        case "tailEvents":
          backlog = req.start.value === 0 ? [] : history.slice(-req.start.value);
          break;
        case "afterSequence": {
          const after = req.start.value;
          backlog = history.filter((e) => e.sequence > after);
          break;
        }
        default:
          backlog = history;
      }
      let last = history.at(-1)?.sequence ?? 0n;
      for (const e of backlog) if (wanted(e)) yield e;
      if (!req.follow) return;
      for (;;) {
        while (queue.length > 0) {
          const e = queue.shift() as ClusterEvent;
          if (e.sequence <= last) continue;
          last = e.sequence;
          if (wanted(e)) yield e;
        }
        if (ended !== undefined) break;
        if (signal?.aborted) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = () => {};
      }
      const why = (ended as { why: ConnectError | undefined } | undefined)?.why;
      if (why !== undefined && !signal?.aborted) throw why;
    } finally {
      unsubscribe();
      this.enders.delete(end);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
