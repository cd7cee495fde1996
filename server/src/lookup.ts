// How every registry finds a resource a request names: by id, else by name, and for what belongs to a
// tenant only within the request's tenant (an id is no key to another tenant's resource).
import { DomainError } from "./errors.js";
import { clip } from "./validate.js";

/** What a registry keeps its resources in: by id, and all of them (a Map is one). */
export interface ById<T> {
  get(id: string): T | undefined;
  values(): Iterable<T>;
}

/** The resource whose id, else whose name, is ref, among those `within` accepts (all by default). */
export function findByIdOrName<T>(
  items: ById<T>,
  ref: string,
  nameOf: (item: T) => string,
  within: (item: T) => boolean = () => true,
): T | undefined {
  const byId = items.get(ref);
  if (byId !== undefined && within(byId)) return byId;
  for (const item of items.values()) if (within(item) && nameOf(item) === ref) return item;
  return undefined;
}

/** How a kind of resource is named in a NOT_FOUND sentence: "VM", and where to look ("list them with ListVms."). */
export interface Described {
  noun: string;
  hint: string;
}

/**
 * The resource of tenant whose id, else whose name, is ref; else a not_found DomainError:
 * "no VM with id or name "web" in tenant acme; list them with ListVms."
 */
export function resolveInTenant<T>(
  items: ById<T>,
  ref: string,
  tenant: string,
  of: (item: T) => { tenant: string; name: string },
  describe: Described,
): T {
  const found = findByIdOrName(
    items,
    ref,
    (item) => of(item).name,
    (item) => of(item).tenant === tenant,
  );
  if (found !== undefined) return found;
  throw new DomainError(
    "not_found",
    `no ${describe.noun} with id or name ${JSON.stringify(clip(ref))} in tenant ${tenant}; ${describe.hint}`,
  );
}
