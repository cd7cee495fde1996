// Writes a stream to a file leaving holes where the data is zeros. A raw disk image is mostly
// unwritten space: a 2 GiB image with 28 MiB of data must take 28 MiB in the pool, not 2 GiB, as
// it does when every zero byte is written out (and as its source file did, if it was sparse).
import { open, type FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";

/** The unit checked for zeros: the usual file system block, so a hole is a whole block. */
const BLOCK = 4096;
const ZEROS = Buffer.alloc(BLOCK);

export class SparseFileWriter extends Writable {
  private fh: FileHandle | undefined;
  private offset = 0;

  constructor(private readonly path: string) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _construct(done: (err?: Error | null) => void): void {
    open(this.path, "w", 0o600).then(
      (fh) => {
        this.fh = fh;
        done();
      },
      (err: Error) => done(err),
    );
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.writeSparse(chunk).then(() => done(), done);
  }

  /** Writes the runs of blocks that are not all zeros; zero blocks are skipped (left as holes). */
  private async writeSparse(chunk: Buffer): Promise<void> {
    const fh = this.fh as FileHandle;
    const start = this.offset;
    let runStart = -1;
    let at = 0;
    while (at < chunk.length) {
      // Blocks are aligned to the file, not to the chunk, so holes line up with the file system's.
      const end = Math.min(chunk.length, at + BLOCK - ((start + at) % BLOCK));
      const piece = chunk.subarray(at, end);
      const zero = piece.length === BLOCK ? piece.equals(ZEROS) : piece.equals(ZEROS.subarray(0, piece.length));
      if (!zero && runStart < 0) runStart = at;
      if (zero && runStart >= 0) {
        await fh.write(chunk, runStart, at - runStart, start + runStart);
        runStart = -1;
      }
      at = end;
    }
    if (runStart >= 0) await fh.write(chunk, runStart, chunk.length - runStart, start + runStart);
    this.offset += chunk.length;
  }

  /** Sets the length (a trailing hole writes nothing) and makes the data durable. */
  override _final(done: (err?: Error | null) => void): void {
    const fh = this.fh as FileHandle;
    fh.truncate(this.offset)
      .then(() => fh.sync())
      .then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = undefined;
    if (!fh) return done(err);
    fh.close().then(
      () => done(err),
      (closeErr: Error) => done(err ?? closeErr),
    );
  }
}
