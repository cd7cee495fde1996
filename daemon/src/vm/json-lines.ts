// A JSON-per-line connection over a unix socket, the framing both QMP and the guest agent use.
import { connect, type Socket } from "node:net";

export class JsonLinesSocket {
  private buffer = "";
  private readonly listeners = new Set<(message: Record<string, unknown>) => void>();
  private closed = false;
  private closeReason = "";

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("close", () => {
      this.closed = true;
      this.closeReason ||= "the connection closed";
    });
    socket.on("error", (err) => (this.closeReason = err.message));
  }

  /** Connects, retrying while the socket does not exist yet (QEMU is still starting). */
  static async open(path: string, timeoutMs: number, what: string): Promise<JsonLinesSocket> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        return new JsonLinesSocket(socket);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOENT" && code !== "ECONNREFUSED") || Date.now() > deadline) {
          throw new Error(`cannot connect to the ${what} socket ${path}: ${(err as Error).message}`);
        }
        // QEMU is starting: its QMP socket appears within tens of milliseconds; poll closely.
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(message: Record<string, unknown>, prefix = ""): void {
    this.socket.write(`${prefix}${JSON.stringify(message)}\n`);
  }

  /** Resolves with the first message `match` accepts; rejects on timeout or close. */
  next(match: (m: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error(`${what}: ${this.closeReason}`));
      const done = (fn: () => void) => {
        clearTimeout(timer);
        clearInterval(watch);
        this.listeners.delete(listener);
        fn();
      };
      const listener = (m: Record<string, unknown>) => {
        if (match(m)) done(() => resolve(m));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`${what}: no answer within ${timeoutMs} ms`))), timeoutMs);
      const watch = setInterval(() => this.closed && done(() => reject(new Error(`${what}: ${this.closeReason}`))), 50);
      this.listeners.add(listener);
    });
  }

  onMessage(listener: (m: Record<string, unknown>) => void): void {
    this.listeners.add(listener);
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    // The guest agent marks a resync with 0xFF; it never appears inside JSON.
    this.buffer += chunk.replace(/\uFFFD|\u00FF/g, "");
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line === "") continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // garbage from a guest that restarted mid-line
      }
      for (const l of [...this.listeners]) l(message);
    }
  }
}
