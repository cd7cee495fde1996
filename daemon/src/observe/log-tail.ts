// Reads a growing log file: what is there from an offset, then (follow) new bytes as they are
// written, until the writer has ended and everything is read, or the reader cancels.
import { watch } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

const CHUNK_BYTES = 64 * 1024;
const POLL_MS = 250;

export interface LogChunk {
  data: Uint8Array;
  offset: number;
}

export interface TailOptions {
  offset: number;
  follow: boolean;
  /** Resolves when nothing more will be written to the file. */
  ended: Promise<void>;
  signal: AbortSignal;
}

export async function* tailFile(path: string, options: TailOptions): AsyncGenerator<LogChunk> {
  let offset = options.offset;
  let writerDone = false;
  void options.ended.then(() => (writerDone = true));
  let fh: FileHandle | undefined;
  try {
    for (;;) {
      fh ??= await open(path, "r").catch(() => undefined);
      // Read everything there is now.
      while (fh) {
        const buf = Buffer.allocUnsafe(CHUNK_BYTES);
        const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, offset);
        if (bytesRead === 0) break;
        yield { data: buf.subarray(0, bytesRead), offset };
        offset += bytesRead;
      }
      if (!options.follow || options.signal.aborted) return;
      // The writer finished before this read began, so that read saw its last byte.
      if (writerDone) return;
      await nextChange(path, options);
    }
  } finally {
    await fh?.close();
  }
}

/** Waits until the file may have grown: a change event, a poll tick, the writer's end, or cancel. */
function nextChange(path: string, options: TailOptions): Promise<void> {
  return new Promise((resolve) => {
    const cleanups: Array<() => void> = [];
    const done = () => {
      for (const c of cleanups) c();
      resolve();
    };
    try {
      const watcher = watch(path, done);
      watcher.on("error", done);
      cleanups.push(() => watcher.close());
    } catch {
      // the file may not exist yet; the poll finds it
    }
    const timer = setTimeout(done, POLL_MS);
    cleanups.push(() => clearTimeout(timer));
    void options.ended.then(done);
    options.signal.addEventListener("abort", done, { once: true });
    cleanups.push(() => options.signal.removeEventListener("abort", done));
  });
}

/** Offset where the last `lines` lines of the file begin (0 when it has fewer). */
export async function offsetOfLastLines(path: string, lines: number): Promise<number> {
  const fh = await open(path, "r").catch(() => undefined);
  if (!fh) return 0;
  try {
    const size = (await fh.stat()).size;
    if (lines === 0) return size;
    let pos = size;
    let newlines = 0;
    // A final newline ends the last line; it does not start another one.
    let skipTrailing = true;
    while (pos > 0) {
      const len = Math.min(CHUNK_BYTES, pos);
      pos -= len;
      const buf = Buffer.allocUnsafe(len);
      await fh.read(buf, 0, len, pos);
      for (let i = len - 1; i >= 0; i--) {
        if (buf[i] !== 0x0a) {
          skipTrailing = false;
          continue;
        }
        if (skipTrailing) {
          skipTrailing = false;
          continue;
        }
        newlines++;
        if (newlines === lines) return pos + i + 1;
      }
    }
    return 0;
  } finally {
    await fh.close();
  }
}

/** Interleaves several async streams in arrival order. */
export async function* merge<T>(sources: Array<AsyncGenerator<T>>): AsyncGenerator<T> {
  const pending = new Map<number, Promise<{ index: number; result: IteratorResult<T> }>>();
  const pull = (index: number) => {
    const source = sources[index];
    if (source)
      pending.set(
        index,
        source.next().then((result) => ({ index, result })),
      );
  };
  sources.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(index);
      } else {
        pull(index);
        yield result.value;
      }
    }
  } finally {
    await Promise.all(sources.map((s) => s.return(undefined)));
  }
}
