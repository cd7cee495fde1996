// The BMCs aetherd may power off: one record per node under <state>/fence/bmcs/<id>.json, written
// atomically, credentials sealed with AES-256-GCM (credential-store.ts). It keeps one Bmc driver
// per registration, serializes the power operations on a BMC (a ForceOff and an On never
// interleave), updates each record's state after every call, and reports fences as events.
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Mutex } from "async-mutex";
import type { Logger } from "pino";
import { z } from "zod";
import { clip, DomainError, findByIdOrName, writeJsonAtomic } from "@aether/server";
import type { EventBus } from "../observe/event-bus.js";
import {
  type Bmc,
  type BmcDiscovery,
  type BmcProfileName,
  type BmcTarget,
  type FenceOutcome,
  type OperationOptions,
  type PowerOnOutcome,
  type PowerStatus,
  RedfishClient,
  RedfishError,
  type ResetOutcome,
} from "@aether/fence";
import { CredentialStore, SealedSchema, type Credentials } from "./credential-store.js";

const POWER_STATES = ["On", "Off", "PoweringOn", "PoweringOff", "Unknown", ""] as const;

export const BmcRecordSchema = z.object({
  id: z.string(),
  node: z.string(),
  labels: z.record(z.string(), z.string()),
  createTimeMs: z.number(),
  endpoint: z.string(),
  profile: z.enum(["ilo5", "dmtf"]),
  tls: z.object({ caPem: z.string().optional(), insecureSkipVerify: z.boolean(), serverName: z.string() }),
  credentials: SealedSchema,
  state: z.enum(["reachable", "unreachable", "unauthorized"]),
  stateReason: z.string(),
  systemPath: z.string(),
  manufacturer: z.string(),
  model: z.string(),
  firmwareVersion: z.string(),
  powerState: z.enum(POWER_STATES),
  rawPowerState: z.string(),
  checkTimeMs: z.number().optional(),
  requestId: z.string(),
});
export type BmcRecord = z.infer<typeof BmcRecordSchema>;
export type BmcRecordState = BmcRecord["state"];

export interface RegisterInput {
  node: string;
  labels: Record<string, string>;
  endpoint: string;
  profile: BmcProfileName;
  credentials: Credentials;
  tls: { caPem?: string; insecureSkipVerify: boolean; serverName: string };
  allowUnreachable: boolean;
  replace: boolean;
  requestId: string;
}

export interface FenceInput {
  timeoutMs: number;
  pollIntervalMs: number;
  reason: string;
  requestId: string;
}

/** Builds the driver for a target; RedfishClient unless a test says otherwise. */
export type BmcConnector = (target: BmcTarget, log: Logger) => Bmc;

const defaultConnector: BmcConnector = (target, log) => new RedfishClient(target, { log });

/** Fence results kept for request_id retries. */
const FENCE_MEMORY_MS = 60 * 60 * 1000;
const FENCE_MEMORY_MAX = 1000;

export const INSECURE_WARNING =
  "certificate verification is off (insecure_skip_verify): anyone on the network path could pose as this BMC; give its CA certificate instead.";

export class BmcRegistry {
  private readonly records = new Map<string, BmcRecord>();
  private readonly clients = new Map<string, Bmc>();
  private readonly nodeLocks = new Map<string, Mutex>();
  private readonly powerLocks = new Map<string, Mutex>();
  private readonly saves = new Map<string, Promise<void>>();
  private readonly fences = new Map<string, { bmcId: string; atMs: number; result: Promise<FenceOutcome> }>();
  private readonly dir: string;
  private credentials?: CredentialStore;

  constructor(
    private readonly stateDir: string,
    private readonly log: Logger,
    private readonly events: EventBus,
    private readonly connect: BmcConnector = defaultConnector,
  ) {
    this.dir = join(stateDir, "fence", "bmcs");
  }

  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.credentials = await CredentialStore.open(join(this.stateDir, "fence", "credentials.key"));
    for (const file of await readdir(this.dir)) {
      if (!file.endsWith(".json")) continue;
      try {
        const record = BmcRecordSchema.parse(JSON.parse(await readFile(join(this.dir, file), "utf8")));
        this.records.set(record.id, record);
      } catch (err) {
        this.log.error({ file, err: (err as Error).message }, "ignoring an unreadable BMC record");
      }
    }
    if (this.records.size > 0) this.log.info({ bmcs: this.records.size }, "BMC registrations loaded");
  }

  /** Every registration, by node name. */
  list(): BmcRecord[] {
    return [...this.records.values()].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  /** A registration by id or node name. */
  resolve(ref: string): BmcRecord {
    const found = findByIdOrName(this.records, ref, (r) => r.node);
    if (found) return found;
    throw new DomainError(
      "not_found",
      `no BMC is registered for ${JSON.stringify(clip(ref))} (neither a node name nor a registration id); list them with \`aether fence list\`, register one with \`aether fence register NODE --endpoint https://BMC --username USER --password-file FILE\`.`,
    );
  }

  /**
   * Registers (or, with replace, re-registers) a node's BMC: logs in, discovers the system and reads
   * its power state before anything is recorded, unless allowUnreachable. Throws RedfishError when
   * the BMC cannot be used (nothing is recorded then).
   */
  async register(input: RegisterInput, options: OperationOptions): Promise<BmcRecord> {
    return this.lockOf(this.nodeLocks, input.node).runExclusive(async () => {
      if (input.requestId !== "") {
        const earlier = [...this.records.values()].find((r) => r.requestId === input.requestId);
        if (earlier) {
          if (earlier.node !== input.node)
            throw new DomainError(
              "invalid_argument",
              `request_id ${JSON.stringify(clip(input.requestId))} was already used to register node ${earlier.node}; use a new request_id.`,
            );
          return earlier;
        }
      }
      const existing = [...this.records.values()].find((r) => r.node === input.node);
      if (existing && !input.replace) {
        throw new DomainError(
          "already_exists",
          `node ${input.node} already has a BMC registered (${existing.endpoint}, id ${existing.id}); pass replace to change its endpoint, credentials or TLS settings, or unregister it first.`,
        );
      }
      const target: BmcTarget = {
        endpoint: input.endpoint,
        username: input.credentials.username,
        password: input.credentials.password,
        profile: input.profile,
        ...(input.tls.caPem !== undefined ? { caPem: input.tls.caPem } : {}),
        ...(input.tls.insecureSkipVerify ? { insecureSkipVerify: true } : {}),
        ...(input.tls.serverName !== "" ? { serverName: input.tls.serverName } : {}),
      };
      const client = this.connect(target, this.log.child({ node: input.node }));
      let discovery: BmcDiscovery | undefined;
      let failure: RedfishError | undefined;
      try {
        discovery = await client.discover(options);
      } catch (err) {
        if (!(err instanceof RedfishError) || !input.allowUnreachable || err.kind === "invalid") {
          client.close();
          throw err;
        }
        failure = err;
      }
      const id = existing?.id ?? randomUUID();
      const record: BmcRecord = {
        id,
        node: input.node,
        labels: input.labels,
        createTimeMs: Date.now(),
        endpoint: input.endpoint,
        profile: input.profile,
        tls: {
          ...(input.tls.caPem !== undefined ? { caPem: input.tls.caPem } : {}),
          insecureSkipVerify: input.tls.insecureSkipVerify,
          serverName: input.tls.serverName,
        },
        credentials: this.store().seal(input.credentials, id),
        state: failure ? stateOf(failure) : "reachable",
        stateReason: failure ? failure.message : this.okReason(input.tls.insecureSkipVerify),
        systemPath: discovery?.systemPath ?? "",
        manufacturer: discovery?.manufacturer ?? "",
        model: discovery?.model ?? "",
        firmwareVersion: discovery?.firmwareVersion ?? "",
        powerState: discovery?.powerState ?? "",
        rawPowerState: discovery?.raw ?? "",
        ...(discovery ? { checkTimeMs: discovery.readTimeMs } : {}),
        requestId: input.requestId,
      };
      // A power operation on the registration being replaced finishes first, on its old client.
      await this.lockOf(this.powerLocks, id).runExclusive(async () => {
        await this.save(record);
        this.clients.get(id)?.close();
        this.records.set(id, record);
        // The client that discovered the system also knows its path; it serves the next calls.
        this.clients.set(id, client);
      });
      this.log.info(
        {
          node: record.node,
          bmc: record.id,
          endpoint: record.endpoint,
          profile: record.profile,
          state: record.state,
          system: record.systemPath,
          replaced: existing !== undefined,
        },
        "BMC registered",
      );
      this.publish(
        "fence.bmc_registered",
        record,
        `BMC ${record.endpoint} registered for node ${record.node} (${record.state}${failure ? `: ${failure.message}` : ""})`,
        { endpoint: record.endpoint, state: record.state },
      );
      return record;
    });
  }

  /** Forgets a registration and its credentials (waits for a power operation in progress). */
  async unregister(ref: string): Promise<void> {
    const record = this.resolve(ref);
    await this.lockOf(this.nodeLocks, record.node).runExclusive(() =>
      this.lockOf(this.powerLocks, record.id).runExclusive(async () => {
        if (this.records.get(record.id) !== record) return;
        this.records.delete(record.id);
        this.clients.get(record.id)?.close();
        this.clients.delete(record.id);
        await this.saves.get(record.id)?.catch(() => undefined);
        await rm(join(this.dir, `${record.id}.json`), { force: true });
        this.log.info({ node: record.node, bmc: record.id }, "BMC unregistered");
        this.publish("fence.bmc_unregistered", record, `BMC ${record.endpoint} of node ${record.node} unregistered`, {
          endpoint: record.endpoint,
        });
      }),
    );
  }

  async powerStatus(ref: string, options: OperationOptions): Promise<{ record: BmcRecord; status: PowerStatus }> {
    const record = this.resolve(ref);
    const status = await this.track(
      record,
      (bmc) => bmc.powerStatus(options),
      (s) => s.powerState,
      (s) => s.raw,
    );
    return { record, status };
  }

  /** Fences a node; a retried request_id gets the first call's result (waiting for it while it runs). */
  async fence(ref: string, input: FenceInput, options: OperationOptions): Promise<{ record: BmcRecord; outcome: FenceOutcome }> {
    const record = this.resolve(ref);
    this.forgetOldFences();
    if (input.requestId !== "") {
      const earlier = this.fences.get(input.requestId);
      if (earlier) {
        if (earlier.bmcId !== record.id)
          throw new DomainError(
            "invalid_argument",
            `request_id ${JSON.stringify(clip(input.requestId))} was already used to fence another node; use a new request_id.`,
          );
        return { record, outcome: await earlier.result };
      }
    }
    const run = this.lockOf(this.powerLocks, record.id).runExclusive(async () => {
      this.log.warn(
        { node: record.node, bmc: record.id, endpoint: record.endpoint, reason: input.reason, timeoutMs: input.timeoutMs },
        "fencing node",
      );
      this.publish(
        "fence.started",
        record,
        `fencing node ${record.node} through ${record.endpoint}${input.reason ? `: ${input.reason}` : ""}`,
        { reason: input.reason },
      );
      const outcome = await this.track(
        record,
        (bmc) => bmc.fence({ ...options, timeoutMs: input.timeoutMs, pollIntervalMs: input.pollIntervalMs }),
        (o) => o.powerState,
        (o) => o.rawPowerState,
      );
      const fields = {
        node: record.node,
        bmc: record.id,
        confirmed: outcome.confirmed,
        alreadyOff: outcome.alreadyOff,
        powerState: outcome.rawPowerState,
        polls: outcome.pollCount,
        durationMs: outcome.totalDurationMs,
        reason: outcome.reason,
      };
      if (outcome.confirmed) this.log.warn(fields, "node fenced");
      else this.log.error(fields, "fence NOT confirmed");
      this.publish(
        outcome.confirmed ? "fence.confirmed" : "fence.unconfirmed",
        record,
        `node ${record.node} ${outcome.confirmed ? "fenced" : "NOT fenced"}: ${outcome.reason}`,
        {
          confirmed: String(outcome.confirmed),
          already_off: String(outcome.alreadyOff),
          power_state: outcome.rawPowerState,
          reason: input.reason,
          poll_count: String(outcome.pollCount),
          action_status_code: String(outcome.actionStatusCode),
        },
      );
      return outcome;
    });
    if (input.requestId !== "") {
      this.fences.set(input.requestId, { bmcId: record.id, atMs: Date.now(), result: run });
      // A fence that threw (unreachable BMC) may be tried again with the same request_id.
      run.catch(() => this.fences.delete(input.requestId));
    }
    return { record, outcome: await run };
  }

  async powerOn(
    ref: string,
    options: OperationOptions & { timeoutMs: number; pollIntervalMs: number },
  ): Promise<{ record: BmcRecord; outcome: PowerOnOutcome }> {
    const record = this.resolve(ref);
    const outcome = await this.lockOf(this.powerLocks, record.id).runExclusive(() =>
      this.track(
        record,
        (bmc) => bmc.powerOn(options),
        (o) => o.powerState,
        (o) => o.rawPowerState,
      ),
    );
    this.log.info(
      { node: record.node, bmc: record.id, alreadyOn: outcome.alreadyOn, powerState: outcome.rawPowerState },
      "node powered on",
    );
    this.publish(
      "fence.powered_on",
      record,
      `node ${record.node} ${outcome.alreadyOn ? "was already on" : "powered on"} (PowerState ${outcome.rawPowerState || "unknown"})`,
      { already_on: String(outcome.alreadyOn) },
    );
    return { record, outcome };
  }

  async reset(ref: string, resetType: string, options: OperationOptions): Promise<{ record: BmcRecord; outcome: ResetOutcome }> {
    const record = this.resolve(ref);
    const outcome = await this.lockOf(this.powerLocks, record.id).runExclusive(() =>
      this.track(
        record,
        (bmc) => bmc.reset(resetType, options),
        (o) => o.powerState,
        (o) => o.rawPowerState,
      ),
    );
    this.log.info({ node: record.node, bmc: record.id, resetType, status: outcome.actionStatusCode }, "reset sent");
    this.publish("fence.reset", record, `ResetType ${resetType} sent to node ${record.node}`, { reset_type: resetType });
    return { record, outcome };
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  // ---- internals ---------------------------------------------------------------------------

  private store(): CredentialStore {
    if (!this.credentials) throw new Error("BmcRegistry.load() was not called");
    return this.credentials;
  }

  private okReason(insecure: boolean): string {
    return insecure ? `reachable, but ${INSECURE_WARNING}` : "";
  }

  private clientOf(record: BmcRecord): Bmc {
    const cached = this.clients.get(record.id);
    if (cached) return cached;
    const credentials = this.store().unseal(record.credentials, record.id);
    const client = this.connect(
      {
        endpoint: record.endpoint,
        username: credentials.username,
        password: credentials.password,
        profile: record.profile,
        ...(record.tls.caPem !== undefined ? { caPem: record.tls.caPem } : {}),
        ...(record.tls.insecureSkipVerify ? { insecureSkipVerify: true } : {}),
        ...(record.tls.serverName !== "" ? { serverName: record.tls.serverName } : {}),
        ...(record.systemPath !== "" ? { systemPath: record.systemPath } : {}),
      },
      this.log.child({ node: record.node }),
    );
    this.clients.set(record.id, client);
    return client;
  }

  /** Runs a call on the record's BMC and records how it went (state, power state, check time). */
  private async track<T>(
    record: BmcRecord,
    call: (bmc: Bmc) => Promise<T>,
    power: (v: T) => BmcRecord["powerState"],
    raw: (v: T) => string,
  ): Promise<T> {
    let result: T;
    try {
      result = await call(this.clientOf(record));
    } catch (err) {
      if (err instanceof RedfishError && err.kind !== "invalid") {
        const state = err.kind === "refused" || err.kind === "protocol" ? "reachable" : stateOf(err);
        await this.update(record, { state, stateReason: err.message, checkTimeMs: Date.now() });
      }
      throw err;
    }
    await this.update(record, {
      state: "reachable",
      stateReason: this.okReason(record.tls.insecureSkipVerify),
      powerState: power(result),
      rawPowerState: raw(result),
      checkTimeMs: Date.now(),
    });
    return result;
  }

  private async update(record: BmcRecord, fields: Partial<BmcRecord>): Promise<void> {
    if (this.records.get(record.id) !== record) return; // unregistered or replaced meanwhile
    Object.assign(record, fields);
    await this.save(record).catch((err: unknown) =>
      this.log.error({ bmc: record.id, err: (err as Error).message }, "could not record a BMC's state"),
    );
  }

  /** Writes a record; writes of one record happen one after the other. */
  private save(record: BmcRecord): Promise<void> {
    const previous = this.saves.get(record.id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => writeJsonAtomic(join(this.dir, `${record.id}.json`), record));
    this.saves.set(record.id, next);
    return next;
  }

  private lockOf(locks: Map<string, Mutex>, key: string): Mutex {
    let lock = locks.get(key);
    if (!lock) {
      lock = new Mutex();
      locks.set(key, lock);
    }
    return lock;
  }

  private forgetOldFences(): void {
    const cutoff = Date.now() - FENCE_MEMORY_MS;
    for (const [key, f] of this.fences) if (f.atMs < cutoff) this.fences.delete(key);
    while (this.fences.size > FENCE_MEMORY_MAX) {
      const oldest = this.fences.keys().next().value;
      if (oldest === undefined) break;
      this.fences.delete(oldest);
    }
  }

  private publish(kind: string, record: BmcRecord, message: string, attributes: Record<string, string>): void {
    this.events.publish({
      kind,
      tenant: "default",
      resourceId: record.id,
      resourceName: record.node,
      message,
      attributes: { node: record.node, ...attributes },
    });
  }
}

function stateOf(err: RedfishError): BmcRecordState {
  return err.kind === "unauthorized" ? "unauthorized" : "unreachable";
}
