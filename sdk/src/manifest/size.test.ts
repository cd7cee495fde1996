import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeSize, formatSize, parseSize } from "./size.js";

describe("sizes as people read them", () => {
  it("formatSize rounds to 0.01 of the largest unit that fits", () => {
    assert.equal(formatSize(700), "700 bytes");
    assert.equal(formatSize(2 ** 30), "1 GiB");
    assert.equal(formatSize(1.5 * 2 ** 20), "1.5 MiB");
    assert.equal(formatSize(2 ** 30 - 1), "1024 MiB");
  });

  it("describeSize adds the exact count only when the rounded figure is not exact", () => {
    assert.equal(describeSize(2 ** 30), "1 GiB");
    assert.equal(describeSize(512 * 1024), "512 KiB");
    assert.equal(describeSize(1000), "1000 bytes");
    assert.equal(describeSize(2 ** 30 - 1), "1024 MiB (1073741823 bytes)");
    assert.equal(describeSize(Number.MAX_SAFE_INTEGER), `8192 TiB (${Number.MAX_SAFE_INTEGER} bytes)`);
    assert.equal(parseSize("1.5G"), 1.5 * 2 ** 30);
  });
});
