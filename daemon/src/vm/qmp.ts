// A small QMP client: greeting, capabilities negotiation, commands with ids and timeouts, events.
import { EventEmitter } from "node:events";
import { JsonLinesSocket } from "./json-lines.js";

export class QmpError extends Error {
  constructor(
    message: string,
    readonly errorClass: string,
  ) {
    super(message);
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

export class QmpClient {
  readonly events = new EventEmitter();
  private nextId = 1;

  private constructor(private readonly conn: JsonLinesSocket) {
    conn.onMessage((m) => {
      if (typeof m.event === "string") this.events.emit("event", { event: m.event, data: (m.data ?? {}) as Record<string, unknown> });
    });
  }

  /** Connects to QEMU's QMP socket, reads the greeting and enters command mode. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const conn = await JsonLinesSocket.open(path, timeoutMs, "QMP");
    try {
      await conn.next((m) => "QMP" in m, timeoutMs, "QMP greeting");
      const client = new QmpClient(conn);
      await client.execute("qmp_capabilities");
      return client;
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  async execute<T = Record<string, unknown>>(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
    const id = `aether-${this.nextId++}`;
    const reply = this.conn.next((m) => m.id === id, timeoutMs, `QMP ${command}`);
    this.conn.send(args ? { execute: command, arguments: args, id } : { execute: command, id });
    const m = await reply;
    if (m.error) {
      const e = m.error as { class?: string; desc?: string };
      throw new QmpError(`QMP ${command} failed: ${e.desc ?? "unknown error"}`, e.class ?? "GenericError");
    }
    return m.return as T;
  }

  get isClosed(): boolean {
    return this.conn.isClosed;
  }

  close(): void {
    this.conn.close();
  }
}
