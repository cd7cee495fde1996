// Every RPC that targets an executable accepts its id or its name (within the request's tenant).
import { reference, resolveInTenant, tenant as parseTenant } from "@aether/server";
import type { Supervisor, TrackedExecutable } from "./supervisor.js";

export function resolveExecutable(supervisor: Supervisor, ref: string, tenantField: string, field = "executable"): TrackedExecutable {
  const key = reference(field, ref);
  const owner = parseTenant(tenantField);
  const executables = { get: (id: string) => supervisor.get(id), values: () => supervisor.list() };
  return resolveInTenant(executables, key, owner, (e) => e.spec, { noun: "executable", hint: "list them with ListExecutables." });
}
