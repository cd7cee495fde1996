// The QEMU guest agent protocol over its virtio-serial chardev: ping, exec with captured output,
// shutdown. The chardev takes one client at a time, so calls are queued on one connection.
import { JsonLinesSocket } from "./json-lines.js";

export interface GuestExecResult {
  pid: number;
  exitCode?: number;
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export class GuestExecTimeout extends Error {
  constructor(
    readonly pid: number,
    timeoutMs: number,
  ) {
    super(`the command was still running in the guest (pid ${pid}) after ${timeoutMs} ms`);
  }
}

export class GuestAgent {
  private conn: JsonLinesSocket | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private syncId = Math.floor(Math.random() * 1e9);

  constructor(private readonly path: string) {}

  /** Runs calls one at a time: the agent's chardev serves a single client. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async connection(timeoutMs: number): Promise<JsonLinesSocket> {
    if (this.conn && !this.conn.isClosed) return this.conn;
    const conn = await JsonLinesSocket.open(this.path, timeoutMs, "guest agent");
    // Drop whatever an earlier client left half-read: sync on a fresh id first.
    const id = ++this.syncId;
    const synced = conn.next((m) => m.return === id, timeoutMs, "guest agent sync");
    conn.send({ execute: "guest-sync-delimited", arguments: { id } }, "\u00ff");
    try {
      await synced;
    } catch (err) {
      conn.close();
      throw err;
    }
    this.conn = conn;
    return conn;
  }

  private async call<T>(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    const conn = await this.connection(timeoutMs);
    const reply = conn.next((m) => "return" in m || "error" in m, timeoutMs, `guest agent ${command}`);
    conn.send(args ? { execute: command, arguments: args } : { execute: command });
    try {
      const m = await reply;
      if (m.error) throw new Error(`guest agent ${command} failed: ${(m.error as { desc?: string }).desc ?? "unknown error"}`);
      return m.return as T;
    } catch (err) {
      // A timed-out call leaves the stream out of step: reconnect (and resync) next time.
      conn.close();
      this.conn = undefined;
      throw err;
    }
  }

  ping(timeoutMs = 1000): Promise<void> {
    return this.serial(async () => {
      await this.call("guest-ping", undefined, timeoutMs);
    });
  }

  exec(argv: string[], env: Record<string, string>, stdin: Uint8Array, timeoutMs: number): Promise<GuestExecResult> {
    return this.serial(async () => {
      const started = Date.now();
      // How long the agent may take to answer one call: a TCG guest on a loaded host is slow to (a
      // fixed 5 s failed execs there), but never longer than the program itself may run.
      const answerMs = Math.max(5000, Math.min(timeoutMs, 30_000));
      const { pid } = await this.call<{ pid: number }>(
        "guest-exec",
        {
          path: argv[0],
          arg: argv.slice(1),
          env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
          ...(stdin.length > 0 ? { "input-data": Buffer.from(stdin).toString("base64") } : {}),
          "capture-output": true,
        },
        answerMs,
      );
      for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
        const s = await this.call<{
          exited: boolean;
          exitcode?: number;
          signal?: number;
          "out-data"?: string;
          "err-data"?: string;
          "out-truncated"?: boolean;
          "err-truncated"?: boolean;
        }>("guest-exec-status", { pid }, answerMs);
        if (s.exited) {
          return {
            pid,
            exitCode: s.exitcode,
            signal: s.signal,
            stdout: Buffer.from(s["out-data"] ?? "", "base64"),
            stderr: Buffer.from(s["err-data"] ?? "", "base64"),
            stdoutTruncated: s["out-truncated"] ?? false,
            stderrTruncated: s["err-truncated"] ?? false,
          };
        }
        if (Date.now() - started > timeoutMs) throw new GuestExecTimeout(pid, timeoutMs);
        await new Promise((r) => setTimeout(r, delay));
      }
    });
  }

  /** Runs one guest agent command (guest-file-*, guest-fsfreeze-*...) and returns its answer. */
  command<T = unknown>(name: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    return this.serial(() => this.call<T>(name, args, timeoutMs));
  }

  /** Asks the guest to power off. The agent does not answer a successful shutdown. */
  shutdown(): Promise<void> {
    return this.serial(async () => {
      const conn = await this.connection(2000);
      conn.send({ execute: "guest-shutdown", arguments: { mode: "powerdown" } });
    });
  }

  close(): void {
    this.conn?.close();
    this.conn = undefined;
  }
}
