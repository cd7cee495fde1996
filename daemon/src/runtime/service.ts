// aether.runtime.v1.ExecutableService: validates requests, resolves ids and names, and translates
// between the supervisor's records and the contract's messages.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ExecutableSchema,
  ExecutableService,
  ExecutableState,
  type Executable,
  type StartExecutableRequest,
} from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import {
  alreadyExists,
  clip,
  deadlineExceeded,
  durationMs,
  failedPrecondition,
  internal,
  invalidArgument,
  labelFilter,
  matchesFilter,
  paginate,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import { resolveExecutable } from "./resolve.js";
import { fileSize, signalName, SpawnError, type Placement, type Supervisor, type TrackedExecutable } from "./supervisor.js";
import { validateStart } from "./validate-start.js";
import type { TenantIds } from "./tenant-ids.js";
import { constants as osConstants } from "node:os";

const DEFAULT_GRACE_MS = 10_000;
/** How many completed DeleteExecutable request_ids are remembered for retries. */
const REMEMBERED_DELETES = 1024;

/** Resolves a cell by id or name in a tenant to where a process must go; throws a DomainError. */
export type CellPlacer = (cell: string, tenant: string) => Placement;

export function executableService(
  supervisor: Supervisor,
  placeInCell: CellPlacer,
  tenantIds: TenantIds,
): ServiceImpl<typeof ExecutableService> {
  const resolve = (ref: string, tenantField: string) => resolveExecutable(supervisor, ref, tenantField);
  const completedDeletes = new Set<string>();
  /** Starts with a request_id that are still in progress, by tenant/request_id. */
  const startsInFlight = new Map<string, Promise<Executable>>();
  /**
   * Validates and starts one executable (no request_id handling). confined: the caller acts for a
   * tenant, so the process runs as that tenant's own host ids, with no supplementary groups, in a
   * pid namespace of its own (it sees and can signal only its own tree).
   */
  const start = async (req: StartExecutableRequest, confined: boolean): Promise<Executable> => {
    const validated = await validateStart(req, randomBytes(3).toString("hex"));
    const host = confined ? await tenantIds.hostIds(validated.tenant, req.uid, req.gid) : undefined;
    const input = host
      ? { ...validated, uid: req.uid ?? 0, gid: req.gid ?? 0, hostUid: host.uid, hostGid: host.gid, pidNamespace: true }
      : validated;
    const clash = supervisor.list().find((e) => e.spec.name === input.name && e.spec.tenant === input.tenant);
    if (clash) {
      throw alreadyExists(
        `an executable named ${input.name} already exists in tenant ${input.tenant} (${stateWord(clash)}); delete it first or pick another name.`,
      );
    }
    const placement = input.cell === "" ? undefined : placeInCell(input.cell, input.tenant);
    try {
      return toMessage(supervisor, await supervisor.start(input, placement));
    } catch (err) {
      if (err instanceof SpawnError) throw failedPrecondition(`could not start ${clip(input.argv[0] ?? "")}: ${err.message}.`);
      throw internal(`could not start ${clip(input.argv[0] ?? "")}: ${(err as Error).message}`);
    }
  };

  return {
    async startExecutable(req, ctx) {
      const confined = ctx.values.get(scopeKey).tenant !== undefined;
      if (req.requestId === "") return { executable: await start(req, confined) };
      // A retry that arrives while the first call is still starting waits for it, then answers with
      // what it started: two calls with one request_id never start two processes.
      const key = `${parseTenant(req.tenant)}/${req.requestId}`;
      for (let pending = startsInFlight.get(key); pending; pending = startsInFlight.get(key)) await pending.catch(() => undefined);
      const earlier = supervisor.list().find((e) => e.spec.requestId === req.requestId && e.spec.tenant === parseTenant(req.tenant));
      if (earlier) return { executable: toMessage(supervisor, earlier) };
      const started = start(req, confined);
      startsInFlight.set(key, started);
      try {
        return { executable: await started };
      } finally {
        if (startsInFlight.get(key) === started) startsInFlight.delete(key);
      }
    },

    async stopExecutable(req) {
      const exe = resolve(req.executable, req.tenant);
      if (exe.status !== "running") {
        throw failedPrecondition(`executable ${exe.spec.name} is not running (it ${exe.reason}); there is nothing to stop.`);
      }
      const signal = req.signal === "" ? "SIGTERM" : req.signal.toUpperCase();
      if (!(signal in osConstants.signals) || signal === "SIGSTOP") {
        throw invalidArgument(
          `signal ${JSON.stringify(clip(req.signal))} is not a signal name this host knows (for example SIGTERM, SIGINT, SIGKILL).`,
        );
      }
      const graceMs = durationMs("grace_period", req.gracePeriod, DEFAULT_GRACE_MS);
      await supervisor.stop(exe, signal as NodeJS.Signals, graceMs);
      return { executable: toMessage(supervisor, exe) };
    },

    async waitExecutable(req, ctx) {
      const exe = resolve(req.executable, req.tenant);
      const timeoutMs = durationMs("timeout", req.timeout, 0);
      const outcome = await new Promise<"ended" | "timeout" | "cancelled">((done) => {
        // A deadline that passed before the wait began (connect-timeout-ms: 0) fires no abort event.
        if (ctx.signal.aborted) return done("cancelled");
        const timer = timeoutMs > 0 ? setTimeout(() => done("timeout"), timeoutMs) : undefined;
        const onAbort = () => done("cancelled");
        ctx.signal.addEventListener("abort", onAbort, { once: true });
        void exe.ended.then(() => {
          if (timer) clearTimeout(timer);
          ctx.signal.removeEventListener("abort", onAbort);
          done("ended");
        });
      });
      if (outcome === "timeout") {
        throw deadlineExceeded(`executable ${exe.spec.name} was still running after ${timeoutMs} ms.`);
      }
      if (outcome === "cancelled") throw deadlineExceeded("the wait was cancelled by the caller.");
      return { executable: toMessage(supervisor, exe) };
    },

    async getExecutable(req) {
      return { executable: toMessage(supervisor, resolve(req.executable, req.tenant)) };
    },

    async listExecutables(req) {
      const owner = req.tenant === "" ? undefined : parseTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const wanted = req.state === ExecutableState.UNSPECIFIED ? undefined : req.state;
      const matching = supervisor
        .list()
        .filter((e) => owner === undefined || e.spec.tenant === owner)
        .filter((e) => matchesFilter(e.spec.labels, terms))
        .filter((e) => wanted === undefined || stateOf(e) === wanted)
        .sort((a, b) => b.spec.createTimeMs - a.spec.createTimeMs || a.spec.id.localeCompare(b.spec.id));
      const { page, nextPageToken } = paginate(matching, req.pageSize, req.pageToken);
      return { executables: page.map((e) => toMessage(supervisor, e)), nextPageToken };
    },

    async deleteExecutable(req) {
      const retryKey = req.requestId === "" ? "" : `${parseTenant(req.tenant)}/${req.requestId}`;
      if (retryKey !== "" && completedDeletes.has(retryKey)) return {};
      const exe = resolve(req.executable, req.tenant);
      if (exe.status === "running") {
        throw failedPrecondition(`executable ${exe.spec.name} is still running; stop it first with StopExecutable.`);
      }
      await supervisor.delete(exe);
      if (retryKey !== "") {
        completedDeletes.add(retryKey);
        if (completedDeletes.size > REMEMBERED_DELETES) completedDeletes.delete(completedDeletes.values().next().value as string);
      }
      return {};
    },
  };
}

function stateOf(exe: TrackedExecutable): ExecutableState {
  switch (exe.status) {
    case "running":
      return ExecutableState.RUNNING;
    case "exited":
      return ExecutableState.EXITED;
    case "lost":
      return ExecutableState.LOST;
  }
}

function stateWord(exe: TrackedExecutable): string {
  return exe.status === "running" ? "running" : exe.status === "exited" ? "exited" : "lost";
}

export function toMessage(supervisor: Supervisor, exe: TrackedExecutable): Executable {
  const { spec, exit } = exe;
  const stdoutBytes = fileSize(supervisor.logPath(exe, "stdout"));
  const stderrBytes = fileSize(supervisor.logPath(exe, "stderr"));
  return create(ExecutableSchema, {
    id: spec.id,
    name: spec.name,
    tenant: spec.tenant,
    labels: spec.labels,
    argv: spec.argv,
    env: spec.env,
    cwd: spec.cwd,
    uid: spec.uid,
    gid: spec.gid,
    hostUid: spec.hostUid ?? spec.uid,
    hostGid: spec.hostGid ?? spec.gid,
    otherProcesses: supervisor.otherProcesses(exe),
    cell: spec.cell,
    state: stateOf(exe),
    stateReason: exe.reason,
    pid: exe.status === "running" ? (exe.started?.pid ?? 0) : 0,
    createTime: timestamp(spec.createTimeMs),
    exitTime: exit ? timestamp(exit.timeMs) : undefined,
    exitCode: exit?.exitCode ?? undefined,
    signal: exit ? signalName(exit.signal) : "",
    stdoutBytes: BigInt(stdoutBytes),
    stderrBytes: BigInt(stderrBytes),
    logLimitBytes: BigInt(spec.logLimitBytes),
    droppedBytes: BigInt(exit?.droppedBytes ?? 0),
  });
}
