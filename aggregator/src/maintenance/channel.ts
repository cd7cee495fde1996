// A queue one stream reads from: the drain pushes progress into it and ends it once (cleanly, or
// with the error the stream ends with); the reader stops when its client cancels.
import type { ConnectError } from "@connectrpc/connect";

export class Channel<T> {
  private readonly queue: T[] = [];
  private wake: () => void = () => {};
  private ended: { error?: ConnectError } | undefined;

  push(value: T): void {
    if (this.ended) return;
    this.queue.push(value);
    this.wake();
  }

  end(error?: ConnectError): void {
    if (this.ended) return;
    this.ended = { error };
    this.wake();
  }

  async *read(signal?: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => this.end();
    signal?.addEventListener("abort", onAbort);
    try {
      for (;;) {
        const next = this.queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.ended) {
          if (this.ended.error) throw this.ended.error;
          return;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
