// The clone's `used` read with the clone stands in for one read, for under a second, and not after
// a command changed the dataset.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RECENT_USAGE_MS, RecentUsage } from "./zfs-recent-usage.js";

describe("RecentUsage", () => {
  it("answers once, while recent", () => {
    let now = 1_000;
    const usage = new RecentUsage(() => now);
    usage.remember("p/volumes/a", 19_456);
    assert.equal(usage.take("p/volumes/a"), 19_456);
    assert.equal(usage.take("p/volumes/a"), undefined, "a reading is used once; the next read asks ZFS");
    usage.remember("p/volumes/b", 1);
    now += RECENT_USAGE_MS;
    assert.equal(usage.take("p/volumes/b"), undefined, "a reading a second old no longer stands");
  });

  it("forgets a dataset a command changed, and keeps no unreadable number", () => {
    const usage = new RecentUsage(() => 0);
    usage.remember("p/volumes/a", 4096);
    usage.forget("p/volumes/a");
    assert.equal(usage.take("p/volumes/a"), undefined);
    usage.remember("p/volumes/c", Number("not a number"));
    assert.equal(usage.take("p/volumes/c"), undefined);
  });
});
