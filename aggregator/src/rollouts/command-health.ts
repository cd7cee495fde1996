// Command health checks (DeploymentTraffic.command_check), run by the rollout controller on the
// leader: HAProxy can only check what it reaches over the network, so a command inside the instance
// is run from here, through the node that hosts it. For an executable, a short-lived process in the
// instance's own cell (same tenant, user, environment and working directory, started with
// ExecutableService and forgotten after it ended); for a VM, ExecVm through its guest agent.
// Exit 0 passes; another status, a signal, an error or the timeout fails. Each instance is checked
// every interval, one check at a time; `fall` failures in a row make it down (its backend goes to
// MAINT and it is not ready for rollouts), `rise` passes in a row make it up again. An instance not
// yet decided counts as not ready (a new instance serves after its first passes) but is not put in
// maintenance, so the proxy's own check runs meanwhile.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CommandHealthCheck, Deployment, WorkloadPlacement } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { describeError, duration, msOf } from "@aether/server";
import type { Context } from "../context.js";

export const DEFAULT_COMMAND_INTERVAL_MS = 2_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 1_000;
export const DEFAULT_COMMAND_RISE = 1;
export const DEFAULT_COMMAND_FALL = 2;
/** Longest an RPC around a check (start, stop, forget) may take besides the check's own timeout. */
const CALL_TIMEOUT_MS = 10_000;

export interface CommandCheckSettings {
  argv: string[];
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
}

export function commandCheckSettings(c: CommandHealthCheck): CommandCheckSettings {
  return {
    argv: [...c.argv],
    intervalMs: c.interval ? msOf(c.interval) : DEFAULT_COMMAND_INTERVAL_MS,
    timeoutMs: c.timeout ? msOf(c.timeout) : DEFAULT_COMMAND_TIMEOUT_MS,
    rise: c.rise || DEFAULT_COMMAND_RISE,
    fall: c.fall || DEFAULT_COMMAND_FALL,
  };
}

/** One instance's consecutive results and the verdict they make. */
export interface Tally {
  /** undefined until `rise` passes or `fall` failures decide it. */
  up: boolean | undefined;
  passes: number;
  failures: number;
  lastError: string;
}

/** Counts one result: `rise` passes in a row make the instance up, `fall` failures in a row make it down. */
export function tally(h: Tally, error: string | undefined, s: Pick<CommandCheckSettings, "rise" | "fall">): void {
  if (error === undefined) {
    h.passes++;
    h.failures = 0;
    if (h.passes >= s.rise) h.up = true;
  } else {
    h.failures++;
    h.passes = 0;
    h.lastError = error;
    if (h.failures >= s.fall) h.up = false;
  }
}

interface InstanceHealth extends Tally {
  deploymentId: string;
  lastRunMs: number;
  running: boolean;
}

export class CommandHealth {
  /** By workload id. */
  private readonly instances = new Map<string, InstanceHealth>();

  constructor(private readonly ctx: Context) {}

  clear(): void {
    this.instances.clear();
  }

  /** false when the instance's command check says down or has not passed yet; true without a check. */
  ready(d: Deployment, p: WorkloadPlacement): boolean {
    if (!d.traffic?.commandCheck) return true;
    return this.instances.get(p.workloadId)?.up === true;
  }

  /** true when the command check has decided the instance is down (its backend goes to MAINT). */
  down(d: Deployment, p: WorkloadPlacement): boolean {
    if (!d.traffic?.commandCheck) return false;
    return this.instances.get(p.workloadId)?.up === false;
  }

  /** Starts the checks that are due for these running instances; forgets instances no longer listed. */
  observe(d: Deployment, running: WorkloadPlacement[]): void {
    const check = d.traffic?.commandCheck;
    const ids = new Set(running.map((p) => p.workloadId));
    // Instances of this deployment gone, or the check removed: forgotten (a late result is dropped).
    for (const [id, h] of this.instances) if (h.deploymentId === d.id && (!check || !ids.has(id))) this.instances.delete(id);
    if (!check) return;
    const settings = commandCheckSettings(check);
    for (const p of running) {
      let h = this.instances.get(p.workloadId);
      if (!h) {
        h = { deploymentId: d.id, up: undefined, passes: 0, failures: 0, lastRunMs: 0, running: false, lastError: "" };
        this.instances.set(p.workloadId, h);
      }
      if (h.running || Date.now() - h.lastRunMs < settings.intervalMs) continue;
      h.running = true;
      h.lastRunMs = Date.now();
      const state = h;
      void this.run(p, settings)
        .then((error) => this.record(d, p, state, settings, error))
        .finally(() => (state.running = false));
    }
  }

  private record(d: Deployment, p: WorkloadPlacement, h: InstanceHealth, s: CommandCheckSettings, error: string | undefined): void {
    if (this.instances.get(p.workloadId) !== h) return;
    const before = h.up;
    tally(h, error, s);
    if (before !== h.up && h.up !== undefined)
      this.ctx.log.info(
        { deployment: d.name, instance: p.name, healthy: h.up, ...(h.up ? {} : { reason: h.lastError }) },
        h.up ? "instance's command health check passes" : "instance's command health check fails; its backend is put in maintenance",
      );
  }

  /** Runs the check once: undefined when it passed, else why it failed. */
  private async run(p: WorkloadPlacement, s: CommandCheckSettings): Promise<string | undefined> {
    const node = this.ctx.registry.get(p.node);
    if (!node) return `node ${p.node} is not registered`;
    try {
      if (p.spec?.kind.case === "vm") {
        const res = await this.ctx.clients
          .vm(node)
          .execVm(
            { vm: p.resourceId, tenant: p.tenant, argv: s.argv, timeout: duration(s.timeoutMs / 1000) },
            { timeoutMs: s.timeoutMs + CALL_TIMEOUT_MS },
          );
        return res.exitCode === 0 ? undefined : `exited with ${res.signal || `status ${res.exitCode}`}`;
      }
      return await this.runInCell(node, p, s);
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) return `did not end within ${s.timeoutMs} ms`;
      return describeError(err);
    }
  }

  private async runInCell(
    node: { address: string; name: string },
    p: WorkloadPlacement,
    s: CommandCheckSettings,
  ): Promise<string | undefined> {
    const runtime = this.ctx.clients.runtime(node);
    const instance = (await runtime.getExecutable({ executable: p.resourceId, tenant: p.tenant }, { timeoutMs: CALL_TIMEOUT_MS }))
      .executable;
    if (!instance || instance.state !== ExecutableState.RUNNING) return "the instance's process is not running";
    const started = (
      await runtime.startExecutable(
        {
          name: `${p.name.slice(0, 50)}-hc-${randomUUID().slice(0, 8)}`,
          tenant: instance.tenant,
          labels: { "aether.health-check-of": p.name },
          argv: s.argv,
          env: instance.env,
          cwd: instance.cwd,
          // The host ids the instance really runs as: this call is the cluster's, not the tenant's, so
          // a tenant's id offsets (uid, gid) would be taken as host ids (0: root).
          uid: instance.hostUid,
          gid: instance.hostGid,
          cell: instance.cell,
          logLimitBytes: 64n << 10n,
        },
        { timeoutMs: CALL_TIMEOUT_MS },
      )
    ).executable;
    if (!started) return "the check's process did not start";
    const ref = { executable: started.id, tenant: started.tenant };
    try {
      const ended = (
        await runtime.waitExecutable({ ...ref, timeout: duration(s.timeoutMs / 1000) }, { timeoutMs: s.timeoutMs + CALL_TIMEOUT_MS })
      ).executable;
      if (ended?.exitCode === 0) return undefined;
      return `exited with ${ended?.signal || `status ${ended?.exitCode ?? "unknown"}`}`;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) {
        await runtime.stopExecutable({ ...ref, gracePeriod: duration(0) }, { timeoutMs: CALL_TIMEOUT_MS }).catch(() => undefined);
        return `did not end within ${s.timeoutMs} ms`;
      }
      throw err;
    } finally {
      // Forgotten once ended (its logs too), so checks leave nothing on the node.
      await runtime
        .waitExecutable({ ...ref, timeout: duration(CALL_TIMEOUT_MS / 1000) }, { timeoutMs: CALL_TIMEOUT_MS * 2 })
        .then(() => runtime.deleteExecutable(ref, { timeoutMs: CALL_TIMEOUT_MS }))
        .catch((err: unknown) =>
          this.ctx.log.warn({ instance: p.name, err: describeError(err) }, "could not forget a health check's process"),
        );
    }
  }
}
