// The authorization policy: who may call which RPC, and in which tenants. A pure function of the
// policy, the caller and the method, so it is tested without a daemon (policy.test.ts).
//
// A policy file (TOML) has groups, bindings of built-in roles, and allow/deny rules:
//
//   [groups]
//   ops = ["spiffe://prod/user/alice", "spiffe://prod/user/bob"]
//
//   [[bindings]]
//   members = ["group:ops"]
//   role = "operator"
//
//   [[rules]]
//   effect = "deny"
//   members = ["spiffe://prod/user/bob"]
//   methods = ["aether.vm.v1.VmService/DeleteVm"]
//
// Members are identities (see identity.ts) or "group:<name>"; methods are "<service>/<method>" with
// the service's full name. In both, "*" matches any run of characters but "/", "**" any run at all,
// and a lone "*" everything. A deny rule that matches wins over every role and allow rule; a caller
// nothing grants gets nothing.
import { readFileSync } from "node:fs";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { DNS_LABEL } from "@aether/sdk/names";
import type { Caller } from "./identity.js";

export type RoleName = "admin" | "operator" | "tenant" | "auditor";

interface Role {
  /** cluster: every tenant; tenant: only the tenant of the binding (or of the caller's certificate). */
  scope: "cluster" | "tenant";
  allow: string[];
  deny: string[];
  summary: string;
}

/** What reads only: an auditor's view. */
const READ_ONLY = ["*/Get*", "*/List*", "*/Stream*", "*/Watch*", "*/Wait*", "*/Check*", "grpc.reflection.**"];

export const ROLES: Record<RoleName, Role> = {
  admin: { scope: "cluster", allow: ["*"], deny: [], summary: "every RPC in every tenant" },
  operator: {
    scope: "cluster",
    allow: ["*"],
    // BMC credentials are the admin's: an operator may fence and read power states, not (re)register BMCs.
    deny: ["aether.fence.v1.FenceService/RegisterBmc", "aether.fence.v1.FenceService/UnregisterBmc"],
    summary: "every RPC in every tenant except registering BMCs",
  },
  auditor: {
    scope: "cluster",
    allow: READ_ONLY,
    deny: ["aether.vm.v1.VmService/AttachConsole"],
    summary: "read-only RPCs in every tenant",
  },
  tenant: {
    scope: "tenant",
    allow: [
      "aether.runtime.v1.ExecutableService/*",
      "aether.cells.v1.CellService/*",
      "aether.vm.v1.VmService/*",
      "aether.storage.v1.StorageService/*",
      "aether.observe.v1.ObserveService/StreamLogs",
      "aether.observe.v1.ObserveService/StreamEvents",
      "aether.observe.v1.ObserveService/ListAuditRecords",
      // The node's identity and health; not its log level (SetLogLevel is cluster-wide).
      "aether.node.v1.NodeService/GetNodeInfo",
      "aether.node.v1.NodeService/CheckHealth",
      "grpc.reflection.**",
      // The cluster (aether-aggregator): its own workloads, placements, auctions and events.
      "aether.auction.v1.AggregatorService/Deploy",
      "aether.auction.v1.AggregatorService/ReleasePlacement",
      "aether.auction.v1.AggregatorService/GetPlacement",
      "aether.auction.v1.AggregatorService/ListPlacements",
      "aether.auction.v1.AggregatorService/GetAuction",
      "aether.auction.v1.AggregatorService/ListAuctions",
      "aether.auction.v1.AggregatorService/StreamClusterEvents",
      // Its own deployments (their instances are its placements).
      "aether.auction.v1.AggregatorService/CreateDeployment",
      "aether.auction.v1.AggregatorService/GetDeployment",
      "aether.auction.v1.AggregatorService/ListDeployments",
      "aether.auction.v1.AggregatorService/UpdateDeployment",
      "aether.auction.v1.AggregatorService/DeleteDeployment",
      "aether.auction.v1.AggregatorService/ScaleDeployment",
      "aether.auction.v1.AggregatorService/WatchDeployment",
      // Its deployments' rollouts.
      "aether.auction.v1.AggregatorService/GetRollout",
      "aether.auction.v1.AggregatorService/ListRollouts",
      "aether.auction.v1.AggregatorService/WatchRollout",
      "aether.auction.v1.AggregatorService/PauseRollout",
      "aether.auction.v1.AggregatorService/ResumeRollout",
      "aether.auction.v1.AggregatorService/PromoteRollout",
      "aether.auction.v1.AggregatorService/RollbackRollout",
    ],
    deny: [],
    summary:
      "its own tenant's executables, cells, VMs, volumes, logs, events, audit records, placements, auctions, deployments and rollouts",
  },
};

/** Bindings every policy starts with unless it sets include_defaults = false. */
export const DEFAULT_BINDINGS: Binding[] = [
  // The unix socket is mode 0600: whoever reaches it is aetherd's own user or root.
  { members: ["unix:*"], role: "admin" },
  // aether-aggregator's plain HTTP/2 listener, allowed on loopback only.
  { members: ["local:*"], role: "admin" },
  { members: ["spiffe://*/tenant/*/**"], role: "tenant" },
  { members: ["spiffe://*/user/*", "spiffe://*/node/*", "spiffe://*/service/*"], role: "operator" },
];

const dnsLabel = z.string().regex(DNS_LABEL, "must be a DNS label (lowercase letters, digits, '-')");
const member = z.string().min(1).max(512);

const BindingSchema = z
  .object({
    members: z.array(member).min(1),
    role: z.enum(["admin", "operator", "tenant", "auditor"]),
    /** For role tenant: the tenant, when the members' certificates do not name one. */
    tenant: dnsLabel.optional(),
  })
  .strict();
export type Binding = z.infer<typeof BindingSchema>;

const RuleSchema = z
  .object({
    effect: z.enum(["allow", "deny"]),
    members: z.array(member).min(1),
    methods: z.array(z.string().min(1).max(512)).min(1),
  })
  .strict();
export type Rule = z.infer<typeof RuleSchema>;

const PolicySchema = z
  .object({
    include_defaults: z.boolean().default(true),
    groups: z.record(dnsLabel, z.array(member)).default({}),
    bindings: z.array(BindingSchema).default([]),
    rules: z.array(RuleSchema).default([]),
  })
  .strict();

export interface Policy {
  groups: Record<string, string[]>;
  bindings: Binding[];
  rules: Rule[];
  /** Where it came from, for messages: a file path or "built-in defaults". */
  source: string;
}

export class PolicyError extends Error {}

export function defaultPolicy(): Policy {
  return { groups: {}, bindings: DEFAULT_BINDINGS, rules: [], source: "built-in defaults" };
}

/**
 * Parses a policy. Every method pattern must match at least one method aetherd serves (a typo in a
 * deny rule must not silently deny nothing), and every group a member names must exist.
 */
export function parsePolicy(text: string, source: string, knownMethods: string[]): Policy {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    throw new PolicyError(`${source} is not valid TOML: ${(err as Error).message}`);
  }
  const parsed = PolicySchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PolicyError(`${source}: ${issue?.path.join(".") || "policy"}: ${issue?.message ?? "invalid"}`);
  }
  const p = parsed.data;
  const members = [...p.bindings.flatMap((b) => b.members), ...p.rules.flatMap((r) => r.members)];
  const missing = members.filter((m) => m.startsWith("group:") && !(m.slice(6) in p.groups));
  if (missing.length > 0) throw new PolicyError(`${source}: ${missing[0]} names no group of [groups]; define it or fix the name.`);
  p.rules.forEach((r, i) => {
    for (const pattern of r.methods) {
      const re = glob(pattern);
      if (!knownMethods.some((m) => re.test(m))) {
        throw new PolicyError(
          `${source}: rules[${i}] method ${JSON.stringify(pattern)} matches no RPC aetherd serves; write "<service full name>/<method>", e.g. "aether.vm.v1.VmService/DeleteVm" (wildcard *).`,
        );
      }
    }
  });
  return { groups: p.groups, bindings: [...(p.include_defaults ? DEFAULT_BINDINGS : []), ...p.bindings], rules: p.rules, source };
}

export function loadPolicy(path: string, knownMethods: string[]): Policy {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new PolicyError(`cannot read the policy file ${path}: ${(err as Error).message}`);
  }
  return parsePolicy(text, path, knownMethods);
}

export interface Decision {
  allowed: boolean;
  /** Allowed in every tenant (undefined) or only in this one. */
  tenant?: string;
  /** Why: the sentence a denied caller gets, or what granted it (for debug logs). */
  reason: string;
}

/** Decides whether caller may call method ("aether.vm.v1.VmService/DeleteVm"). */
export function decide(policy: Policy, caller: Caller, method: string): Decision {
  const { identity } = caller;
  const groups = new Set(
    Object.entries(policy.groups)
      .filter(([, ms]) => ms.some((m) => glob(m).test(identity)))
      .map(([g]) => g),
  );
  const names = (m: string) => (m.startsWith("group:") ? groups.has(m.slice(6)) : glob(m).test(identity));
  const matching = (list: string[]) => list.some((p) => glob(p).test(method));

  const denyIndex = policy.rules.findIndex((r) => r.effect === "deny" && r.members.some(names) && matching(r.methods));
  if (denyIndex >= 0)
    return {
      allowed: false,
      reason: `${identity} may not call ${method}: rule ${denyIndex + 1} of the policy (${policy.source}) denies it.`,
    };

  const bindings = policy.bindings.filter((b) => b.members.some(names));
  const allowRules = policy.rules.filter((r) => r.effect === "allow" && r.members.some(names));
  if (bindings.length === 0 && allowRules.length === 0) {
    return {
      allowed: false,
      reason: `${identity} is unknown to the policy (${policy.source}): no binding or rule names it, so it may call nothing; ask an admin to bind it to a role.`,
    };
  }
  let tenantGrant: string | undefined;
  for (const b of bindings) {
    const role = ROLES[b.role];
    if (!matching(role.allow) || matching(role.deny)) continue;
    if (role.scope === "cluster") return { allowed: true, reason: `role ${b.role}` };
    tenantGrant ??= b.tenant ?? caller.tenant;
  }
  // An allow rule grants in every tenant, except to a caller whose certificate names a tenant.
  if (allowRules.some((r) => matching(r.methods))) {
    if (caller.tenant === undefined) return { allowed: true, reason: "an allow rule" };
    tenantGrant ??= caller.tenant;
  }
  if (tenantGrant !== undefined) return { allowed: true, tenant: tenantGrant, reason: `role tenant of ${tenantGrant}` };
  const roles = [...new Set(bindings.map((b) => b.role))];
  const tenantless = bindings.some((b) => ROLES[b.role].scope === "tenant" && b.tenant === undefined && caller.tenant === undefined);
  return {
    allowed: false,
    reason: tenantless
      ? `${identity} has role tenant but no tenant: its certificate names none (spiffe://<cluster>/tenant/<t>/...) and its binding sets none.`
      : `${identity} may not call ${method}: ${roles.length > 0 ? `its roles (${roles.join(", ")}) do not include it` : "no rule allows it"} (policy: ${policy.source}).`,
  };
}

const compiled = new Map<string, RegExp>();

/** "*" matches any run of characters but "/", "**" any run at all, a lone "*" everything. */
export function glob(pattern: string): RegExp {
  let re = compiled.get(pattern);
  if (!re) {
    const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
    const body =
      pattern === "*"
        ? ".*"
        : pattern
            .split("**")
            .map((part) => part.split("*").map(escape).join("[^/]*"))
            .join(".*");
    re = new RegExp(`^${body}$`);
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(pattern, re);
  }
  return re;
}
