import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { merge, offsetOfLastLines, tailFile } from "./log-tail.js";

const tmp = () => mkdtempSync(join(tmpdir(), "aether-tail-"));

it("finds where the last N lines start, with or without a final newline", async () => {
  const dir = tmp();
  const f = join(dir, "log");
  writeFileSync(f, "a\nb\nc\n");
  assert.equal(await offsetOfLastLines(f, 1), 4);
  assert.equal(await offsetOfLastLines(f, 2), 2);
  assert.equal(await offsetOfLastLines(f, 10), 0);
  assert.equal(await offsetOfLastLines(f, 0), 6);
  writeFileSync(f, "a\nb\nc");
  assert.equal(await offsetOfLastLines(f, 1), 4);
  assert.equal(await offsetOfLastLines(join(dir, "missing"), 3), 0);
  // Longer than one read chunk.
  writeFileSync(f, `${"x".repeat(200_000)}\nlast\n`);
  assert.equal(await offsetOfLastLines(f, 1), 200_001);
});

it("follows a growing file until the writer ends, then returns every byte", async () => {
  const f = join(tmp(), "log");
  writeFileSync(f, "one\n");
  let end: () => void = () => {};
  const ended = new Promise<void>((r) => (end = r));
  const chunks: string[] = [];
  const reading = (async () => {
    for await (const c of tailFile(f, { offset: 0, follow: true, ended, signal: new AbortController().signal })) {
      chunks.push(Buffer.from(c.data).toString());
    }
  })();
  await new Promise((r) => setTimeout(r, 100));
  appendFileSync(f, "two\n");
  await new Promise((r) => setTimeout(r, 100));
  appendFileSync(f, "three\n");
  end();
  await reading;
  assert.equal(chunks.join(""), "one\ntwo\nthree\n");
});

it("stops following when the reader cancels", async () => {
  const f = join(tmp(), "log");
  writeFileSync(f, "x\n");
  const abort = new AbortController();
  const reading = (async () => {
    let n = 0;
    for await (const _ of tailFile(f, { offset: 0, follow: true, ended: new Promise(() => {}), signal: abort.signal })) n++;
    return n;
  })();
  setTimeout(() => abort.abort(), 100);
  assert.equal(await reading, 1);
});

it("merges streams in arrival order and finishes when all are done", async () => {
  async function* gen(prefix: string, delays: number[]) {
    for (const d of delays) {
      await new Promise((r) => setTimeout(r, d));
      yield `${prefix}${d}`;
    }
  }
  const out: string[] = [];
  for await (const v of merge([gen("a", [10, 100]), gen("b", [50])])) out.push(v);
  assert.deepEqual(out, ["a10", "b50", "a100"]);
});
