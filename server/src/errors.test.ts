import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError, DomainError, rpcCode, rpcError } from "./errors.js";
import { findByIdOrName, resolveInTenant } from "./lookup.js";

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

describe("lookup by id or name", () => {
  const items = new Map([
    ["id-1", { tenant: "a", name: "web" }],
    ["id-2", { tenant: "b", name: "web" }],
    ["id-3", { tenant: "b", name: "id-1" }],
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

  it("says what is missing where, and where to look", () => {
    assert.throws(
      () => resolveInTenant(items, "id-2", "a", (i) => i, describe),
      (err: unknown) =>
        err instanceof DomainError &&
        err.kind === "not_found" &&
        err.message === 'no VM with id or name "id-2" in tenant a; list them with ListVms.',
    );
  });
});
