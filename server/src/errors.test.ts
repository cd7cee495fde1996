import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError, DomainError, rpcCode, rpcError } from "./errors.js";
import { findByIdOrName, findByIdPrefix, resolveInTenant } from "./lookup.js";

describe("domain errors", () => {
  it("become the ConnectError of their kind, with the same sentence", () => {
    const mapped = rpcError(new DomainError("not_found", 'no VM with id or name "web" in tenant acme; list them with ListVms.'));
    assert.ok(mapped instanceof ConnectError);
    assert.equal(mapped.code, Code.NotFound);
    assert.equal(mapped.rawMessage, 'no VM with id or name "web" in tenant acme; list them with ListVms.');
    assert.equal(rpcCode(new DomainError("failed_precondition", "busy")), Code.FailedPrecondition);
    assert.equal(describeError(new DomainError("already_exists", "taken")), "[already_exists] taken");
  });

  it("leave every other error as it is", () => {
    const plain = new Error("boom");
    assert.equal(rpcError(plain), plain);
    assert.equal(rpcCode(plain), undefined);
    const rpc = new ConnectError("gone", Code.Unavailable);
    assert.equal(rpcError(rpc), rpc);
    assert.equal(rpcCode(rpc), Code.Unavailable);
  });
});

describe("lookup by id, name or id prefix", () => {
  const items = new Map([
    ["id-1", { id: "id-1", tenant: "a", name: "web" }],
    ["id-2", { id: "id-2", tenant: "b", name: "web" }],
    ["id-3", { id: "id-3", tenant: "b", name: "id-1" }],
    ["53abc070-aaaa", { id: "53abc070-aaaa", tenant: "a", name: "api" }],
    ["53abd111-bbbb", { id: "53abd111-bbbb", tenant: "a", name: "db" }],
    ["53abe222-cccc", { id: "53abe222-cccc", tenant: "b", name: "other" }],
    ["cafe0000-dddd", { id: "cafe0000-dddd", tenant: "a", name: "x" }],
    ["ffff0000-eeee", { id: "ffff0000-eeee", tenant: "a", name: "cafe" }],
  ]);
  const describe = { noun: "VM", hint: "list them with ListVms." };

  it("finds by id, then by name, only within the tenant", () => {
    assert.equal(
      resolveInTenant(items, "id-1", "a", (i) => i, describe),
      items.get("id-1"),
    );
    assert.equal(
      resolveInTenant(items, "web", "b", (i) => i, describe),
      items.get("id-2"),
    );
    // An id of tenant a is no key in tenant b; there it is a name.
    assert.equal(
      resolveInTenant(items, "id-1", "b", (i) => i, describe),
      items.get("id-3"),
    );
    assert.equal(
      findByIdOrName(items, "web", (i) => i.name),
      items.get("id-1"),
    );
  });

  it("takes a unique prefix of 4 or more characters of an id, in any case; a name wins over a prefix", () => {
    assert.equal(resolveInTenant(items, "53abc070", "a", (i) => i, describe)?.name, "api");
    assert.equal(resolveInTenant(items, "53ABD", "a", (i) => i, describe)?.name, "db");
    assert.equal(resolveInTenant(items, "53abc070-aa", "a", (i) => i, describe)?.name, "api");
    // Tenant b has one 53ab id: the other two are tenant a's and neither match nor show.
    assert.equal(resolveInTenant(items, "53ab", "b", (i) => i, describe)?.name, "other");
    assert.equal(resolveInTenant(items, "cafe", "a", (i) => i, describe)?.id, "ffff0000-eeee", "the name cafe, not the id cafe0000");
    assert.equal(resolveInTenant(items, "cafe0", "a", (i) => i, describe)?.name, "x");
    assert.throws(() => resolveInTenant(items, "53a", "a", (i) => i, describe), /no VM with id or name "53a"/, "3 characters are too few");
    assert.deepEqual(findByIdPrefix(items, "53ab", (i) => i.id).length, 3);
    assert.deepEqual(
      findByIdPrefix(items, "web1", (i) => i.id),
      [],
      "not hex: never a prefix",
    );
  });

  it("refuses an ambiguous prefix, naming the matches", () => {
    assert.throws(
      () => resolveInTenant(items, "53ab", "a", (i) => i, describe),
      (err: unknown) =>
        err instanceof DomainError &&
        err.kind === "invalid_argument" &&
        err.message ===
          '"53ab" is the start of the id of 2 VMs in tenant a: 53abc070-aaaa (api), 53abd111-bbbb (db); give more of the id, or the name.',
    );
  });

  it("says what is missing where, and where to look", () => {
    assert.throws(
      () => resolveInTenant(items, "id-2", "a", (i) => i, describe),
      (err: unknown) =>
        err instanceof DomainError &&
        err.kind === "not_found" &&
        err.message === 'no VM with id or name "id-2" in tenant a; list them with ListVms.',
    );
    assert.throws(
      () => resolveInTenant(items, "web", "a", (i) => i, { noun: "snapshot", hint: "give its volume.", byName: false }),
      /^DomainError: no snapshot with id "web" in tenant a; give its volume\.$/,
    );
  });
});
