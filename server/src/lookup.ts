// How every registry finds a resource a request names: by id, else by name, else by a unique prefix of
// its id (the short ids tables show, as git and docker accept them), and for what belongs to a tenant
// only within the request's tenant (an id, or a prefix of one, is no key to another tenant's resource).
import { DomainError } from "./errors.js";
import { clip } from "./validate.js";

/** What a registry keeps its resources in: by id, and all of them (a Map is one). */
export interface ById<T> {
  get(id: string): T | undefined;
  values(): Iterable<T>;
}

/** The fewest characters of an id a lookup takes as a prefix (git's minimum): fewer match by accident. */
export const MIN_ID_PREFIX = 4;
/** At most this many matches are named when a prefix is ambiguous. */
const MAX_LISTED = 5;
/** What may be a prefix of a server id (a UUID): hex digits and '-', at least MIN_ID_PREFIX of them. */
const ID_PREFIX = new RegExp(`^[0-9a-f][0-9a-f-]{${MIN_ID_PREFIX - 1},}$`, "i");

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

/**
 * The resources whose id starts with ref, among those `within` accepts, when ref can be an id prefix
 * (MIN_ID_PREFIX or more hex digits and '-', any case); none otherwise.
 */
export function findByIdPrefix<T>(items: ById<T>, ref: string, idOf: (item: T) => string, within: (item: T) => boolean = () => true): T[] {
  if (!ID_PREFIX.test(ref)) return [];
  const prefix = ref.toLowerCase();
  const matches: T[] = [];
  for (const item of items.values()) if (within(item) && idOf(item).toLowerCase().startsWith(prefix)) matches.push(item);
  return matches;
}

/** How a kind of resource is named in a NOT_FOUND sentence: "VM", and where to look ("list them with ListVms."). */
export interface Described {
  noun: string;
  hint: string;
  /** Where it was looked for, when not in the tenant: "in volume data". */
  where?: string;
  /** false when names do not count here (a snapshot's name means something only within its volume). */
  byName?: boolean;
}

/** What a lookup needs to know of a resource. */
export interface Identity {
  id: string;
  tenant: string;
  name: string;
}

/**
 * The one resource of tenant whose id starts with ref (MIN_ID_PREFIX or more characters; see
 * resolveInTenant), for a registry that finds by id and name in its own way first; undefined when
 * none has it, INVALID_ARGUMENT naming them (ids and names, a few) when several do.
 */
export function resolveIdPrefix<T>(
  items: ById<T>,
  ref: string,
  tenant: string,
  of: (item: T) => Identity,
  describe: Described,
): T | undefined {
  const matches = findByIdPrefix(
    items,
    ref,
    (item) => of(item).id,
    (item) => of(item).tenant === tenant,
  );
  if (matches.length <= 1) return matches[0];
  const byName = describe.byName !== false;
  const listed = matches
    .map(of)
    .sort((a, b) => a.id.localeCompare(b.id))
    .slice(0, MAX_LISTED)
    .map((m) => (byName && m.name !== "" ? `${m.id} (${m.name})` : m.id));
  const more = matches.length > MAX_LISTED ? ` and ${matches.length - MAX_LISTED} more` : "";
  throw new DomainError(
    "invalid_argument",
    `${JSON.stringify(clip(ref))} is the start of the id of ${matches.length} ${describe.noun}s ${describe.where ?? `in tenant ${tenant}`}: ${listed.join(", ")}${more}; give more of the id, or the name.`,
  );
}

/**
 * The resource of tenant that ref names; else a DomainError. The rule, the same for every kind of
 * resource: an exact id wins, then an exact name (so a resource named "cafe" is found by that name
 * even when some id starts with cafe), then a prefix of an id of at least MIN_ID_PREFIX characters
 * that only one resource of the tenant has. A prefix that several have is INVALID_ARGUMENT naming
 * them (ids and names, a few); nothing at all is NOT_FOUND:
 * "no VM with id or name "web" in tenant acme; list them with ListVms."
 */
export function resolveInTenant<T>(items: ById<T>, ref: string, tenant: string, of: (item: T) => Identity, describe: Described): T {
  const byName = describe.byName !== false;
  const found =
    findByIdOrName(
      items,
      ref,
      (item) => (byName ? of(item).name : ""),
      (item) => of(item).tenant === tenant,
    ) ?? resolveIdPrefix(items, ref, tenant, of, describe);
  if (found !== undefined) return found;
  throw new DomainError(
    "not_found",
    `no ${describe.noun} with ${byName ? "id or name" : "id"} ${JSON.stringify(clip(ref))} ${describe.where ?? `in tenant ${tenant}`}; ${describe.hint}`,
  );
}
