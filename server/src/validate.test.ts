import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { dnsLabel, labelFilter, labels, matchesFilter, nextPageToken, pageOffset, pageSize, reference, tenant } from "./validate.js";

const invalid = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && pattern.test(e.rawMessage));

describe("validation at the edge", () => {
  it("accepts DNS labels and refuses path tricks, case, length and unicode", () => {
    assert.equal(dnsLabel("name", "web-1"), "web-1");
    for (const bad of ["", "-a", "a-", "A", "a/b", "..", "../x", "a".repeat(64), "é", "a b", "a\0"]) {
      invalid(() => dnsLabel("name", bad), /not a valid name/);
    }
  });

  it("defaults the tenant and validates it", () => {
    assert.equal(tenant(""), "default");
    assert.equal(tenant("team-a"), "team-a");
    invalid(() => tenant("Team A"), /not a valid name/);
  });

  it("clips echoed input so an error cannot carry a megabyte back", () => {
    try {
      dnsLabel("name", "X".repeat(1_000_000));
      assert.fail("should throw");
    } catch (e) {
      assert.ok((e as ConnectError).rawMessage.length < 300);
    }
  });

  it("validates references, labels, filters and pages", () => {
    invalid(() => reference("executable", ""), /is empty/);
    invalid(() => reference("executable", "a/b"), /neither an id nor a name/);
    assert.deepEqual(labels({ team: "a", "example.com/tier": "gold" }), { team: "a", "example.com/tier": "gold" });
    invalid(() => labels({ "bad key!": "x" }), /label key/);
    invalid(() => labels({ ok: "v".repeat(64) }), /invalid value/);
    assert.deepEqual(labelFilter("a=1, b=2"), [
      ["a", "1"],
      ["b", "2"],
    ]);
    invalid(() => labelFilter("a"), /key=value/);
    assert.equal(matchesFilter({ a: "1", b: "2" }, [["a", "1"]]), true);
    assert.equal(matchesFilter({ a: "1" }, [["a", "2"]]), false);
    assert.equal(pageSize(0), 100);
    invalid(() => pageSize(1001), /too large/);
    assert.equal(pageOffset(nextPageToken(0, 10, 25)), 10);
    assert.equal(nextPageToken(20, 10, 25), "");
    invalid(() => pageOffset("%%%"), /page_token/);
  });
});
