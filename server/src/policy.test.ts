import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decide, defaultPolicy, glob, parsePolicy, PolicyError } from "./policy.js";
import { tenantOf } from "./identity.js";

const METHODS = [
  "aether.vm.v1.VmService/DeleteVm",
  "aether.vm.v1.VmService/ListVms",
  "aether.vm.v1.VmService/AttachConsole",
  "aether.runtime.v1.ExecutableService/StartExecutable",
  "aether.fence.v1.FenceService/RegisterBmc",
  "aether.fence.v1.FenceService/Fence",
  "aether.observe.v1.ObserveService/GetTelemetry",
];

describe("authorization policy", () => {
  it("globs: * stays within a path segment, ** crosses them, a lone * matches all", () => {
    assert.ok(glob("spiffe://*/user/*").test("spiffe://prod/user/alice"));
    assert.ok(!glob("spiffe://*/user/*").test("spiffe://prod/tenant/a/user/alice"), "a tenant's user is not a cluster user");
    assert.ok(glob("spiffe://*/tenant/*/**").test("spiffe://prod/tenant/a/user/alice"));
    assert.ok(glob("*").test("aether.vm.v1.VmService/DeleteVm"));
    assert.ok(glob("*/List*").test("aether.vm.v1.VmService/ListVms"));
    assert.ok(!glob("aether.vm.v1.VmService/Delete").test("aether.vm.v1.VmService/DeleteVm"));
    assert.ok(!glob("a.b").test("aXb"), "dots are literal");
  });

  it("reads the tenant from a SPIFFE path /tenant/<t>/...", () => {
    assert.equal(tenantOf("spiffe://prod/tenant/acme/user/alice"), "acme");
    assert.equal(tenantOf("spiffe://prod/user/alice"), undefined);
    assert.equal(tenantOf("spiffe://prod/tenant/Bad_Name/user/x"), undefined);
    assert.equal(tenantOf("spiffe://prod/tenant/acme"), undefined);
  });

  it("built-in defaults: unix is admin, cluster users operators, tenant users held to their tenant", () => {
    const p = defaultPolicy();
    assert.deepEqual(decide(p, { identity: "unix:uid=0" }, METHODS[4] as string), { allowed: true, reason: "role admin" });
    assert.equal(decide(p, { identity: "spiffe://prod/user/op" }, "aether.fence.v1.FenceService/Fence").allowed, true);
    const reg = decide(p, { identity: "spiffe://prod/user/op" }, "aether.fence.v1.FenceService/RegisterBmc");
    assert.equal(reg.allowed, false);
    assert.match(reg.reason, /its roles \(operator\) do not include it/);
    const t = { identity: "spiffe://prod/tenant/acme/user/alice", tenant: "acme" };
    assert.deepEqual(decide(p, t, "aether.vm.v1.VmService/DeleteVm"), { allowed: true, tenant: "acme", reason: "role tenant of acme" });
    assert.equal(decide(p, t, "aether.fence.v1.FenceService/Fence").allowed, false);
    assert.equal(decide(p, t, "aether.observe.v1.ObserveService/GetTelemetry").allowed, false);
    const stranger = decide(p, { identity: "cn:stranger" }, "aether.vm.v1.VmService/ListVms");
    assert.equal(stranger.allowed, false);
    assert.match(stranger.reason, /unknown to the policy/);
  });

  it("deny wins over roles and allow rules; groups and tenant bindings apply", () => {
    const p = parsePolicy(
      `include_defaults = false
[groups]
ops = ["spiffe://prod/user/alice", "spiffe://prod/user/bob"]
[[bindings]]
members = ["group:ops"]
role = "admin"
[[bindings]]
members = ["spiffe://prod/service/billing"]
role = "tenant"
tenant = "acme"
[[bindings]]
members = ["spiffe://prod/audit/*"]
role = "auditor"
[[rules]]
effect = "deny"
members = ["spiffe://prod/user/bob"]
methods = ["aether.vm.v1.VmService/Delete*"]
[[rules]]
effect = "allow"
members = ["spiffe://prod/user/carol"]
methods = ["*/List*"]
`,
      "test.toml",
      METHODS,
    );
    assert.equal(decide(p, { identity: "spiffe://prod/user/alice" }, "aether.vm.v1.VmService/DeleteVm").allowed, true);
    const bob = decide(p, { identity: "spiffe://prod/user/bob" }, "aether.vm.v1.VmService/DeleteVm");
    assert.equal(bob.allowed, false);
    assert.match(bob.reason, /rule 1 of the policy \(test\.toml\) denies it/);
    assert.equal(decide(p, { identity: "spiffe://prod/user/bob" }, "aether.vm.v1.VmService/ListVms").allowed, true);
    assert.deepEqual(decide(p, { identity: "spiffe://prod/user/carol" }, "aether.vm.v1.VmService/ListVms"), {
      allowed: true,
      reason: "an allow rule",
    });
    assert.equal(decide(p, { identity: "spiffe://prod/user/carol" }, "aether.vm.v1.VmService/DeleteVm").allowed, false);
    assert.equal(decide(p, { identity: "spiffe://prod/service/billing" }, "aether.vm.v1.VmService/DeleteVm").tenant, "acme");
    assert.equal(decide(p, { identity: "spiffe://prod/audit/eve" }, "aether.vm.v1.VmService/ListVms").allowed, true);
    assert.equal(
      decide(p, { identity: "spiffe://prod/audit/eve" }, "aether.vm.v1.VmService/AttachConsole").allowed,
      false,
      "a console is interactive",
    );
    assert.equal(
      decide(p, { identity: "unix:uid=0" }, "aether.vm.v1.VmService/ListVms").allowed,
      false,
      "without the defaults, unix is nobody",
    );
  });

  it("refuses a policy with a typo in a method, an unknown group, or an unknown key", () => {
    assert.throws(
      () => parsePolicy(`[[rules]]\neffect = "deny"\nmembers = ["*"]\nmethods = ["aether.vm.v1.VmService/DeletVm"]\n`, "p.toml", METHODS),
      (e: Error) => e instanceof PolicyError && /matches no RPC aetherd serves/.test(e.message),
    );
    assert.throws(
      () => parsePolicy(`[[bindings]]\nmembers = ["group:nope"]\nrole = "admin"\n`, "p.toml", METHODS),
      /group:nope names no group/,
    );
    assert.throws(() => parsePolicy(`[[bindings]]\nmembers = ["x"]\nrole = "root"\n`, "p.toml", METHODS), /bindings\.0\.role/);
    assert.throws(() => parsePolicy(`colour = "red"\n`, "p.toml", METHODS), PolicyError);
    assert.throws(() => parsePolicy(`[[rules\n`, "p.toml", METHODS), /not valid TOML/);
  });
});
