// Every RPC that targets an executable accepts its id or its name (within the request's tenant).
import { clip, notFound, reference, tenant as parseTenant } from "@aether/server";
import type { Supervisor, TrackedExecutable } from "./supervisor.js";

export function resolveExecutable(supervisor: Supervisor, ref: string, tenantField: string, field = "executable"): TrackedExecutable {
  const key = reference(field, ref);
  const owner = parseTenant(tenantField);
  // By id too only within the tenant: an id is no key to another tenant's executable.
  const byId = supervisor.get(key);
  if (byId && byId.spec.tenant === owner) return byId;
  const byName = supervisor.list().find((e) => e.spec.name === key && e.spec.tenant === owner);
  if (byName) return byName;
  throw notFound(`no executable with id or name ${JSON.stringify(clip(key))} in tenant ${owner}; list them with ListExecutables.`);
}
