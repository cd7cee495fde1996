// The one door every RPC goes through after authentication: the policy (policy.ts) decides whether
// the caller may call the method, and a caller limited to one tenant is held to it here, before any
// handler runs: a request's `tenant` field is filled in with the caller's tenant when empty and
// refused when it names another. Handlers then resolve ids and names within that tenant only, so a
// tenant cannot reach another's resources by id either. What a handler must refine (a tenant may
// not read aetherd's own log, run processes as root, or read host files) it reads from scopeKey.
//
// The policy file is read again on SIGHUP and whenever it changes on disk; a bad file is refused
// and the policy in force stays.
import { watch, type FSWatcher } from "node:fs";
import { basename, dirname } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Caller } from "./identity.js";
import { callerOf, peerKey } from "./peer.js";
import { decide, defaultPolicy, loadPolicy, type Policy } from "./policy.js";

export interface CallerScope {
  identity: string;
  /** The only tenant the caller may act in; undefined: every tenant. */
  tenant?: string;
}

export const scopeKey = createContextKey<CallerScope>(
  { identity: "", tenant: undefined },
  { description: "the caller's identity and tenant scope" },
);

/** "<service full name>/<method>" of every method of these services. */
export function methodsOf(services: DescService[]): string[] {
  return services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
}

export class Authorizer {
  private policy: Policy;
  private watcher?: FSWatcher;
  private debounce?: NodeJS.Timeout;

  /** Throws PolicyError when the file cannot be read or is invalid (the server then does not start). */
  constructor(
    private readonly path: string | undefined,
    private readonly knownMethods: string[],
    private readonly log: Logger,
  ) {
    this.policy = path ? loadPolicy(path, knownMethods) : defaultPolicy();
  }

  get source(): string {
    return this.policy.source;
  }

  /** Reads the policy file again; on a bad file keeps the policy in force. Resolves whether it took. */
  reload(): boolean {
    if (!this.path) return true;
    try {
      this.policy = loadPolicy(this.path, this.knownMethods);
      this.log.info(
        { policy: this.path, bindings: this.policy.bindings.length, rules: this.policy.rules.length },
        "authorization policy loaded",
      );
      return true;
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "the authorization policy was not reloaded; the one loaded before stays in force");
      return false;
    }
  }

  /** Reloads when the file changes. The folder is watched: editors and `mv` replace the file. */
  watch(): void {
    if (!this.path || this.watcher) return;
    const name = basename(this.path);
    this.watcher = watch(dirname(this.path), (_event, file) => {
      if (file !== null && file !== name) return;
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => this.reload(), 50);
    });
    this.watcher.on("error", (err) => this.log.warn({ err: err.message }, "cannot watch the policy file; send SIGHUP to reload it"));
  }

  close(): void {
    clearTimeout(this.debounce);
    this.watcher?.close();
  }

  /** The interceptor. identify tells who calls; by default the request's peer context (peer.ts). */
  interceptor(identify: (req: UnaryRequest | StreamRequest) => Caller = (req) => callerOf(req.contextValues.get(peerKey))): Interceptor {
    return (next) => async (req) => {
      const caller = identify(req);
      const method = `${req.service.typeName}/${req.method.name}`;
      const decision = decide(this.policy, caller, method);
      if (!decision.allowed) throw new ConnectError(decision.reason, Code.PermissionDenied);
      req.contextValues.set(scopeKey, { identity: caller.identity, tenant: decision.tenant });
      const tenant = decision.tenant;
      if (tenant === undefined || !req.method.input.fields.some((f) => f.localName === "tenant")) return next(req);
      if (!req.stream) {
        holdToTenant(req.message as unknown as { tenant: string }, tenant, caller.identity);
        return next(req);
      }
      // Client streams (AttachConsole): every message is held, though handlers read the first only.
      const messages = req.message as AsyncIterable<{ tenant: string }>;
      async function* held() {
        for await (const m of messages) {
          holdToTenant(m, tenant as string, caller.identity);
          yield m;
        }
      }
      return next({ ...req, message: held() } as typeof req);
    };
  }
}

/**
 * Holds a message's tenant field to the caller's tenant: filled in when empty, refused when it names
 * another. field and verb phrase the refusal for a tenant held elsewhere than a request's own
 * `tenant` (the aggregator's Deploy holds spec.tenant: "may not deploy in tenant ...").
 */
export function holdToTenant(
  message: { tenant: string },
  tenant: string,
  identity: string,
  phrase: { field?: string; verb?: string } = {},
): void {
  const { field = "tenant", verb = "act" } = phrase;
  if (message.tenant === "") message.tenant = tenant;
  else if (message.tenant !== tenant) {
    throw new ConnectError(
      `${identity} belongs to tenant ${tenant} and may not ${verb} in tenant ${JSON.stringify(message.tenant.slice(0, 63))}; leave ${field} empty or set it to ${tenant}.`,
      Code.PermissionDenied,
    );
  }
}

/** For handlers: refuses what only a cluster-wide caller may do, naming why. */
export function requireClusterWide(scope: CallerScope, what: string): void {
  if (scope.tenant !== undefined)
    throw new ConnectError(`${scope.identity} acts for tenant ${scope.tenant} and may not ${what}.`, Code.PermissionDenied);
}
