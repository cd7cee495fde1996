// The audit log: every call that changes something (start, stop, create, delete, exec, ...) is
// appended to <state>/audit.log as one JSON line with who called, the method, the target, its
// tenant and the result, whether it succeeded or not. Reads go through ObserveService.ListAuditRecords.
// Lines are appended synchronously: a record must not be lost because aetherd died right after
// answering, and one small append costs microseconds.
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { z } from "zod";
import { callerOf, peerKey } from "@aether/server";

export const AuditEntrySchema = z.object({
  timeMs: z.number(),
  identity: z.string(),
  method: z.string(),
  tenant: z.string(),
  target: z.string(),
  result: z.string(),
});
export type AuditEntry = z.infer<typeof AuditEntrySchema>;

/** Methods that only read: everything else is audited. */
const READ_ONLY = /^(Get|List|Watch|Wait|Stream|Check|RequestBid$|ServerReflectionInfo$)/;

/** Request fields that name the target of a call, most specific first. */
const TARGET_FIELDS = ["executable", "vm", "cell", "volume", "image", "snapshot", "workload", "bmc", "node", "nodeId", "name"] as const;

/** Cut at 253 UTF-16 units, without leaving half of a surrogate pair (not UTF-8: unreadable by clients). */
function clipField(value: string): string {
  return value.length <= 253 ? value : value.slice(0, 253).replace(/[\ud800-\udbff]$/, "");
}

/** The gRPC code name of a result, as gRPC spells it in lowercase ("ok", "not_found", ...). */
function resultOf(err: unknown): string {
  if (err === undefined) return "ok";
  const code = err instanceof ConnectError ? err.code : Code.Unknown;
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export class AuditLog {
  readonly path: string;

  constructor(stateDir: string) {
    this.path = join(stateDir, "audit.log");
  }

  append(entry: AuditEntry): void {
    appendFileSync(this.path, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
  }

  /** Every record, newest first; a torn last line (a crash mid-append) is skipped. */
  read(): AuditEntry[] {
    if (!existsSync(this.path)) return [];
    const entries: AuditEntry[] = [];
    for (const line of readFileSync(this.path, "utf8").split("\n")) {
      if (line === "") continue;
      try {
        entries.push(AuditEntrySchema.parse(JSON.parse(line)));
      } catch {
        // a partial line: skip it
      }
    }
    return entries.reverse();
  }

  /** Records every mutating call once it has answered (for a stream: once it was accepted). */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      if (READ_ONLY.test(req.method.name)) return next(req);
      const peer = req.contextValues.get(peerKey);
      // The unix socket is mode 0600: only aetherd's own user (or root) can connect to it.
      const caller = callerOf(peer);
      const { identity } = caller;
      const message = (req.stream ? undefined : req.message) as Record<string, unknown> | undefined;
      const field = (name: string) => (message && typeof message[name] === "string" ? (message[name] as string) : "");
      const target = clipField(TARGET_FIELDS.map(field).find((v) => v !== "") ?? "");
      // Read when the call ends: the authorization step fills in an empty tenant with the caller's.
      // Clipped too: a refused request may carry a tenant of megabytes, and every line is kept.
      const record = (err: unknown) =>
        this.append({
          timeMs: Date.now(),
          identity,
          method: `/${req.service.typeName}/${req.method.name}`,
          tenant: clipField(field("tenant") || caller.tenant || "default"),
          target,
          result: resultOf(err),
        });
      try {
        const res = await next(req);
        record(undefined);
        return res;
      } catch (err) {
        record(err);
        throw err;
      }
    };
  }
}
