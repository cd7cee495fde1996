// A Redfish client for fencing: discovery from the service root, session login (Basic auth when
// sessions are unavailable) with logout after every operation, power status, ForceOff with a
// read-back of "Off", power on and resets checked against the system's allowable values. Written
// for HPE iLO 5 first and for any BMC that follows DMTF's Redfish specification.
//
// Every request has a timeout and repeatable requests are retried (fence_redfish has no HTTP
// timeouts and ignores a failed POST). Errors are RedfishErrors: a kind, the HTTP status and the
// BMC's @Message.ExtendedInfo messages, in a sentence. Credentials never appear in errors or logs.
import type { IncomingHttpHeaders } from "node:http";
import type {
  Bmc,
  BmcDiscovery,
  BmcMessage,
  FenceOptions,
  FenceOutcome,
  OperationOptions,
  PowerOnOptions,
  PowerOnOutcome,
  PowerStateName,
  PowerStatus,
  ResetOutcome,
} from "./bmc.js";
import { HttpsTransport, TransportError, type HttpResponse, type TransportFailure } from "./https-transport.js";
import {
  allowableFromActionInfo,
  describeMessages,
  extendedInfo,
  isInvalidForSystemState,
  memberPaths,
  odataId,
  parseEndpoint,
  powerStateOf,
  resetActionOf,
  stringProp,
  type RedfishEndpoint,
} from "./redfish-messages.js";

export type {
  Bmc,
  BmcDiscovery,
  BmcMessage,
  FenceOptions,
  FenceOutcome,
  OperationOptions,
  PowerOnOptions,
  PowerOnOutcome,
  PowerStateName,
  PowerStatus,
  ResetOutcome,
};

/** Which Redfish dialect a BMC speaks. */
export type BmcProfileName = "ilo5" | "dmtf";

/** A BMC to talk to, and how. */
export interface BmcTarget {
  /** Redfish service root, "https://10.0.0.11/redfish/v1"; a bare "https://10.0.0.11" gets "/redfish/v1". https only. */
  endpoint: string;
  /** Account name on the BMC. */
  username: string;
  /** Account password. Never logged, never part of an error. */
  password: string;
  /** "ilo5" (HPE iLO 5) or "dmtf" (generic DMTF Redfish, the default). */
  profile?: BmcProfileName;
  /** PEM of the CA (or the BMC's own self-signed certificate) to trust, alone. Unset: the system trust store. */
  caPem?: string;
  /** Do not verify the BMC's certificate at all (must be asked for explicitly; exclusive with caPem). */
  insecureSkipVerify?: boolean;
  /** Name the certificate must carry; unset: the host of the endpoint. */
  serverName?: string;
  /** Longest time one HTTP request may take (connect, TLS, answer); default 10000. */
  requestTimeoutMs?: number;
  /** How many times a failed repeatable request is tried again (connection refused or reset, 5xx); default 2. */
  retries?: number;
  /** Path of the computer system when the BMC manages several; default: the first member of Systems. */
  systemPath?: string;
}

/** Where the client reports what it does (pino's Logger fits). Fields never hold credentials. */
export interface RedfishLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/**
 * Why a Redfish call failed:
 * - `unreachable`: no answer (connection refused or reset, DNS, or the TLS certificate was not accepted);
 * - `timeout`: no answer in time (the request timeout or the operation's deadline), or cancelled;
 * - `unauthorized`: the BMC rejected the credentials (HTTP 401/403);
 * - `refused`: the BMC answered with an error status (4xx/5xx other than those);
 * - `invalid`: this client refused the call before sending it (bad target, a reset type the system does not allow);
 * - `protocol`: the BMC's answer is not what Redfish promises (no computer system, not JSON).
 */
export type RedfishErrorKind = "unreachable" | "unauthorized" | "refused" | "timeout" | "invalid" | "protocol";

/** A failed Redfish call: the kind, the HTTP status (0 if none) and the BMC's messages, in a sentence. */
export class RedfishError extends Error {
  constructor(
    readonly kind: RedfishErrorKind,
    message: string,
    readonly statusCode = 0,
    readonly messages: BmcMessage[] = [],
    /** For a refused reset type: the values the system allows. */
    readonly allowed: string[] = [],
    /** For `unreachable`: true when the TLS certificate was not accepted. */
    readonly tls = false,
  ) {
    super(message);
    this.name = "RedfishError";
  }
}

type Json = Record<string, unknown>;

interface Session {
  /** X-Auth-Token of a Redfish session; undefined with Basic auth. */
  token?: string;
  /** URL of the session resource, to DELETE on logout. */
  location?: string;
  basic: boolean;
}

/** One operation's login and limits. */
interface Operation {
  session: Session;
  deadlineMs: number;
  signal?: AbortSignal;
  /** The last transport failure, so a logout after a timeout does not wait as long again. */
  lastFailure?: TransportFailure;
}

interface JsonResponse extends HttpResponse {
  json: unknown;
}

interface RequestOptions {
  body?: Json;
  /** Send the session token or Basic credentials (default true). */
  auth?: boolean;
  /** The request may be repeated without harm (GET, DELETE, login, ForceOff, On). */
  repeatable: boolean;
  /** What the request does, for errors: "reading the power state of /redfish/v1/Systems/1". */
  what: string;
  /** Do not log in again on a 401. */
  noReauth?: boolean;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRIES = 2;
const RESET_REPEATABLE = new Set(["ForceOff", "On", "ForceOn", "GracefulShutdown"]);

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseJson(body: string): unknown {
  if (body.trim() === "") return undefined;
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** The Redfish client: one instance per BMC; every operation logs in and out on its own. */
export class RedfishClient implements Bmc {
  readonly endpoint: RedfishEndpoint;
  readonly profile: BmcProfileName;
  private readonly transport: HttpsTransport;
  private readonly requestTimeoutMs: number;
  private readonly retries: number;
  private readonly username: string;
  private readonly password: string;
  private readonly log?: RedfishLogger;
  private sessionsPath?: string;
  private sessionsUnavailable = false;
  private systemPath?: string;
  private resetTarget?: string;
  private actionInfoAllowable?: string[];

  /** Throws a RedfishError of kind `invalid` when the target is unusable (not https, no credentials...). */
  constructor(target: BmcTarget, options: { log?: RedfishLogger } = {}) {
    try {
      this.endpoint = parseEndpoint(target.endpoint);
    } catch (err) {
      throw new RedfishError("invalid", (err as Error).message);
    }
    if (target.username === "") throw new RedfishError("invalid", "the BMC username is empty: give the account aetherd logs in with.");
    if (target.password === "") throw new RedfishError("invalid", "the BMC password is empty: give the account's password.");
    if (target.caPem && target.insecureSkipVerify)
      throw new RedfishError("invalid", "give either a CA certificate to verify the BMC with or insecure_skip_verify, not both.");
    const timeout = target.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeout >= 1 && timeout <= 600_000))
      throw new RedfishError("invalid", `requestTimeoutMs ${timeout} is out of range: give 1..600000 ms.`);
    const retries = target.retries ?? DEFAULT_RETRIES;
    if (!(Number.isInteger(retries) && retries >= 0 && retries <= 10))
      throw new RedfishError("invalid", `retries ${retries} is out of range: give 0..10.`);
    this.profile = target.profile ?? "dmtf";
    this.requestTimeoutMs = timeout;
    this.retries = retries;
    this.username = target.username;
    this.password = target.password;
    if (target.systemPath) this.systemPath = target.systemPath;
    if (options.log) this.log = options.log;
    this.transport = new HttpsTransport(this.endpoint.origin, {
      ...(target.caPem ? { caPem: target.caPem } : {}),
      ...(target.insecureSkipVerify ? { insecureSkipVerify: true } : {}),
      ...(target.serverName ? { serverName: target.serverName } : {}),
    });
  }

  // ---- the operations -----------------------------------------------------------------------

  /** Logs in, finds the computer system (Systems collection) and the BMC's firmware (Managers), reads the power state. */
  discover(options: OperationOptions = {}): Promise<BmcDiscovery> {
    return this.operation(options, async (op) => {
      const root = await this.getJson(op, this.endpoint.rootPath, "reading the Redfish service root");
      const systemPath = await this.findSystem(op, root);
      const system = await this.getJson(op, systemPath, `reading the computer system ${systemPath}`);
      const status = await this.statusOf(op, system, systemPath);
      const firmwareVersion = await this.firmwareVersion(op, root, system);
      const vendor = stringProp(root, "Vendor") || (this.hasOem(root, "Hpe") ? "HPE" : "");
      return {
        ...status,
        systemPath,
        resetTarget: this.resetTarget ?? `${systemPath}/Actions/ComputerSystem.Reset`,
        manufacturer: stringProp(system, "Manufacturer"),
        model: stringProp(system, "Model"),
        firmwareVersion,
        redfishVersion: stringProp(root, "RedfishVersion"),
        vendor,
        auth: op.session.basic ? "basic" : "session",
      };
    });
  }

  /** Reads the system's PowerState and ResetType@Redfish.AllowableValues. */
  powerStatus(options: OperationOptions = {}): Promise<PowerStatus> {
    return this.operation(options, (op) => this.readPower(op));
  }

  /**
   * Fences the system: unless PowerState is already exactly "Off", sends ForceOff, then reads
   * PowerState until it is exactly "Off" ("PoweringOff" does not count) or the deadline passes.
   * An unconfirmed fence (refused, deadline passed) is an outcome with `confirmed: false`; only a
   * BMC that cannot be reached or logged in to throws.
   */
  async fence(options: FenceOptions): Promise<FenceOutcome> {
    if (!(options.timeoutMs > 0)) throw new RedfishError("invalid", `the fence timeout must be positive (got ${options.timeoutMs} ms).`);
    if (!(options.pollIntervalMs > 0))
      throw new RedfishError("invalid", `the poll interval must be positive (got ${options.pollIntervalMs} ms).`);
    const startTimeMs = Date.now();
    const deadlineMs = Math.min(startTimeMs + options.timeoutMs, options.deadlineMs ?? Infinity);
    return this.operation({ ...options, deadlineMs }, async (op) => {
      let pollCount = 0;
      const read = async () => {
        const s = await this.readPower(op);
        pollCount++;
        return s;
      };
      let status = await read();
      const outcome = (fields: Partial<FenceOutcome> & { confirmed: boolean; reason: string }): FenceOutcome => {
        const end = Date.now();
        return {
          alreadyOff: false,
          powerState: status.powerState,
          rawPowerState: status.raw,
          startTimeMs,
          totalDurationMs: (fields.confirmTimeMs ?? end) - startTimeMs,
          pollCount,
          actionStatusCode: 0,
          messages: [],
          ...fields,
        };
      };
      if (status.raw === "Off") {
        return outcome({
          confirmed: true,
          alreadyOff: true,
          confirmTimeMs: status.readTimeMs,
          reason: 'the system was already off (PowerState "Off" at the first read); no ForceOff was sent.',
        });
      }
      if (status.allowableResetTypes.length > 0 && !status.allowableResetTypes.includes("ForceOff")) {
        return outcome({
          confirmed: false,
          reason: `the BMC does not offer ResetType ForceOff for ${this.systemPath} (it allows ${status.allowableResetTypes.join(", ")}); the system is ${describeState(status.raw)}.`,
        });
      }
      const sent = Date.now();
      const answer = await this.request(op, "POST", this.resetTargetPath(), {
        body: { ResetType: "ForceOff" },
        repeatable: true,
        what: `sending ResetType ForceOff to ${this.systemPath}`,
      });
      const commandLatencyMs = Date.now() - sent;
      const messages = this.messagesOf(answer.json);
      const action = { actionStatusCode: answer.status, messages, commandLatencyMs };
      if (answer.status === 401 || answer.status === 403) throw this.httpError(answer, `sending ResetType ForceOff to ${this.systemPath}`);
      if (answer.status < 200 || answer.status >= 300) {
        // Refused: perhaps because the system went off meanwhile (iLO 5: 400 InvalidOperationForSystemState).
        status = await read();
        const refusal = `the BMC answered ForceOff with HTTP ${answer.status}${messages.length ? ` (${describeMessages(messages)})` : ""}`;
        if (status.raw === "Off") {
          const why = isInvalidForSystemState(messages) ? "because the system was already off" : 'but PowerState reads "Off"';
          return outcome({
            ...action,
            confirmed: true,
            confirmTimeMs: status.readTimeMs,
            reason: `${refusal} ${why}; PowerState "Off" read back, the node is fenced.`,
          });
        }
        return outcome({
          ...action,
          confirmed: false,
          reason: `${refusal}; the system is ${describeState(status.raw)}, so the node is NOT fenced.`,
        });
      }
      const commandTimeMs = Date.now();
      let lastError: RedfishError | undefined;
      for (;;) {
        try {
          status = await read();
          lastError = undefined;
        } catch (err) {
          // A read that fails (timeout, 5xx) does not end the fence: the next one may succeed.
          if (!(err instanceof RedfishError) || err.kind === "unauthorized" || err.kind === "invalid" || err.kind === "protocol") throw err;
          lastError = err;
        }
        if (!lastError && status.raw === "Off") {
          return outcome({
            ...action,
            commandTimeMs,
            confirmed: true,
            confirmTimeMs: status.readTimeMs,
            reason: `PowerState "Off" read back ${status.readTimeMs - commandTimeMs} ms after the BMC accepted ForceOff (${pollCount} reads); the node is fenced.`,
          });
        }
        const remaining = deadlineMs - Date.now();
        if (remaining <= 0 || op.signal?.aborted) break;
        await sleep(Math.min(options.pollIntervalMs, remaining), op.signal);
        if (op.signal?.aborted || deadlineMs - Date.now() <= 0) break;
      }
      const cancelled = op.signal?.aborted && Date.now() < startTimeMs + options.timeoutMs;
      const last = lastError ? `; the last read failed: ${lastError.message.replace(/\.$/, "")}` : "";
      return outcome({
        ...action,
        commandTimeMs,
        confirmed: false,
        reason: `${cancelled ? "the fence was cancelled" : `the ${seconds(options.timeoutMs)} deadline passed`} with PowerState ${status.raw === "" ? "absent" : `"${status.raw}"`} after ${pollCount} reads${last}; the node is NOT fenced (only "Off" counts).`,
      });
    });
  }

  /** Powers the system on (ResetType On, or ForceOn where On is not offered) unless it is already "On". */
  powerOn(options: PowerOnOptions = {}): Promise<PowerOnOutcome> {
    const waitMs = options.timeoutMs ?? 0;
    const deadlineMs = Math.min(waitMs > 0 ? Date.now() + waitMs : Infinity, options.deadlineMs ?? Infinity);
    return this.operation({ ...options, deadlineMs }, async (op) => {
      let status = await this.readPower(op);
      if (status.raw === "On")
        return { alreadyOn: true, powerState: status.powerState, rawPowerState: status.raw, actionStatusCode: 0, messages: [] };
      const allowed = status.allowableResetTypes;
      const resetType = allowed.length === 0 || allowed.includes("On") ? "On" : allowed.includes("ForceOn") ? "ForceOn" : undefined;
      if (!resetType) {
        throw new RedfishError(
          "invalid",
          `the BMC offers neither ResetType On nor ForceOn for ${this.systemPath} (it allows ${allowed.join(", ")}).`,
          0,
          [],
          allowed,
        );
      }
      const what = `sending ResetType ${resetType} to ${this.systemPath}`;
      const answer = await this.request(op, "POST", this.resetTargetPath(), { body: { ResetType: resetType }, repeatable: true, what });
      const messages = this.messagesOf(answer.json);
      if (answer.status < 200 || answer.status >= 300) {
        status = await this.readPower(op);
        // iLO 5 refuses to power on what is (now) on.
        if (!(isInvalidForSystemState(messages) && (status.raw === "On" || status.raw === "PoweringOn")))
          throw this.httpError(answer, what);
      } else status = await this.readPower(op);
      if (waitMs > 0) {
        const interval = options.pollIntervalMs ?? 1000;
        while (status.raw !== "On") {
          const remaining = deadlineMs - Date.now();
          if (remaining <= 0 || op.signal?.aborted) {
            throw new RedfishError(
              "timeout",
              `the system ${this.systemPath} did not reach PowerState "On" within ${seconds(waitMs)} after ${resetType} (it is ${describeState(status.raw)}).`,
              answer.status,
              messages,
            );
          }
          await sleep(Math.min(interval, remaining), op.signal);
          status = await this.readPower(op);
        }
      }
      return { alreadyOn: false, powerState: status.powerState, rawPowerState: status.raw, actionStatusCode: answer.status, messages };
    });
  }

  /** Sends a reset type; one the system's AllowableValues does not list is refused (kind `invalid`) without asking the BMC. */
  async reset(resetType: string, options: OperationOptions = {}): Promise<ResetOutcome> {
    if (!/^[A-Za-z]{1,64}$/.test(resetType))
      throw new RedfishError(
        "invalid",
        `reset type ${JSON.stringify(resetType.slice(0, 64))} is not a Redfish ResetType (letters only, e.g. ForceRestart).`,
      );
    return this.operation(options, async (op) => {
      const before = await this.readPower(op);
      const allowed = before.allowableResetTypes;
      if (allowed.length > 0 && !allowed.includes(resetType)) {
        throw new RedfishError(
          "invalid",
          `reset type ${resetType} is not allowed for ${this.systemPath}; the BMC allows: ${allowed.join(", ")}.`,
          0,
          [],
          allowed,
        );
      }
      const what = `sending ResetType ${resetType} to ${this.systemPath}`;
      const answer = await this.request(op, "POST", this.resetTargetPath(), {
        body: { ResetType: resetType },
        repeatable: RESET_REPEATABLE.has(resetType),
        what,
      });
      if (answer.status < 200 || answer.status >= 300) throw this.httpError(answer, what);
      const after = await this.readPower(op);
      return {
        actionStatusCode: answer.status,
        messages: this.messagesOf(answer.json),
        powerState: after.powerState,
        rawPowerState: after.raw,
      };
    });
  }

  /** Closes the connections to the BMC. */
  close(): void {
    this.transport.close();
  }

  // ---- sessions ----------------------------------------------------------------------------

  /** Runs `fn` logged in; always logs out afterwards (DELETE of the session), also when `fn` failed. */
  private async operation<T>(options: OperationOptions, fn: (op: Operation) => Promise<T>): Promise<T> {
    const op: Operation = {
      session: { basic: false },
      deadlineMs: options.deadlineMs ?? Infinity,
      ...(options.signal ? { signal: options.signal } : {}),
    };
    try {
      await this.login(op);
      return await fn(op);
    } finally {
      await this.logout(op);
    }
  }

  private async sessionsCollection(op: Operation): Promise<string> {
    if (this.sessionsPath) return this.sessionsPath;
    let path = `${this.endpoint.rootPath}/SessionService/Sessions`;
    // The service root answers without authentication (Redfish spec); it names the Sessions collection.
    const root = await this.request(op, "GET", this.endpoint.rootPath, {
      auth: false,
      repeatable: true,
      what: "reading the Redfish service root",
    });
    if (root.status >= 200 && root.status < 300) {
      const links = (root.json as Json | undefined)?.["Links"];
      path = odataId(typeof links === "object" && links !== null ? (links as Json)["Sessions"] : undefined) ?? path;
    }
    this.sessionsPath = path.replace(/\/+$/, "");
    return this.sessionsPath;
  }

  /** POST SessionService/Sessions; Basic auth when the BMC has no usable session service. */
  private async login(op: Operation): Promise<void> {
    if (this.sessionsUnavailable) {
      op.session = { basic: true };
      return;
    }
    const path = await this.sessionsCollection(op);
    const what = "logging in to the BMC";
    const res = await this.request(op, "POST", path, {
      body: { UserName: this.username, Password: this.password },
      auth: false,
      repeatable: true,
      what,
    });
    if (res.status === 401 || res.status === 403) throw this.httpError(res, what);
    const token = header(res.headers, "x-auth-token");
    if (res.status >= 200 && res.status < 300 && token) {
      const body = res.json as Json | undefined;
      const id = stringProp(body, "Id");
      const location =
        this.sameOrigin(header(res.headers, "location")) ??
        this.sameOrigin(odataId(body)) ??
        (id ? this.sameOrigin(`${path}/${id}`) : undefined);
      op.session = { token, basic: false, ...(location ? { location } : {}) };
      if (!location)
        this.log?.warn(
          { bmc: this.endpoint.origin },
          "the BMC created a session without saying where it lives; it cannot be logged out and expires on its own",
        );
      return;
    }
    // No session service (404/405/501), or one that does not work: Basic auth on every request.
    if (res.status === 404 || res.status === 405 || res.status === 501) this.sessionsUnavailable = true;
    this.log?.debug({ bmc: this.endpoint.origin, status: res.status }, "Redfish sessions are unavailable; using Basic auth");
    op.session = { basic: true };
  }

  /** The session was refused mid-operation (expired): log in again, and delete the old session if it still exists. */
  private async relogin(op: Operation): Promise<void> {
    const old = op.session;
    this.log?.debug({ bmc: this.endpoint.origin }, "the BMC no longer accepts the session; logging in again");
    await this.login(op);
    if (old.location && (op.session.token || op.session.basic)) {
      await this.request(op, "DELETE", old.location, { repeatable: false, noReauth: true, what: "deleting the expired session" }).catch(
        () => undefined,
      );
    }
  }

  /** DELETE of the session, whatever happened before; never throws. */
  private async logout(op: Operation): Promise<void> {
    const { token, location } = op.session;
    if (!token) return;
    if (!location) return;
    // After a timeout the BMC is probably hung: do not wait as long again.
    const timeoutMs =
      op.lastFailure === "timeout" || op.lastFailure === "aborted" ? Math.min(this.requestTimeoutMs, 3000) : this.requestTimeoutMs;
    const headers = { ...this.baseHeaders(), "X-Auth-Token": token };
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.transport.send("DELETE", location, headers, undefined, timeoutMs);
        if ((res.status >= 200 && res.status < 300) || res.status === 404) {
          this.log?.debug({ bmc: this.endpoint.origin }, "logged out of the BMC");
        } else if (res.status === 401) {
          this.log?.debug({ bmc: this.endpoint.origin }, "the session had already expired");
        } else if (res.status >= 500 && attempt < 1) {
          continue;
        } else {
          this.log?.warn(
            { bmc: this.endpoint.origin, status: res.status, messages: describeMessages(this.messagesOf(parseJson(res.body))) },
            "the BMC refused the logout; the session expires on its own",
          );
        }
      } catch (err) {
        if (err instanceof TransportError && !err.maybeDelivered && err.failure === "unreachable" && attempt < 1) continue;
        this.log?.warn(
          { bmc: this.endpoint.origin, err: (err as Error).message },
          "could not log out of the BMC; the session expires on its own",
        );
      }
      op.session = { basic: false };
      return;
    }
  }

  // ---- reading the system --------------------------------------------------------------------

  private async findSystem(op: Operation, root?: unknown): Promise<string> {
    const r = root ?? (await this.getJson(op, this.endpoint.rootPath, "reading the Redfish service root"));
    const systemsPath = odataId((r as Json)["Systems"]) ?? `${this.endpoint.rootPath}/Systems`;
    const members = memberPaths(await this.getJson(op, systemsPath, `reading the Systems collection ${systemsPath}`));
    if (this.systemPath) {
      const wanted = this.systemPath.replace(/\/+$/, "");
      if (!members.some((m) => m.replace(/\/+$/, "") === wanted)) {
        throw new RedfishError(
          "invalid",
          `the BMC has no computer system ${wanted}; its Systems collection lists ${members.length ? members.join(", ") : "none"}.`,
        );
      }
      return this.systemPath;
    }
    const first = members[0];
    if (!first)
      throw new RedfishError(
        "protocol",
        `the BMC's Systems collection ${systemsPath} lists no computer system, so there is nothing to power off.`,
      );
    if (members.length > 1)
      this.log?.warn(
        { bmc: this.endpoint.origin, systems: members, chosen: first },
        "the BMC manages several computer systems; using the first",
      );
    this.systemPath = first.replace(/\/+$/, "");
    return this.systemPath;
  }

  private async readPower(op: Operation): Promise<PowerStatus> {
    const path = this.systemPath ?? (await this.findSystem(op));
    const system = await this.getJson(op, path, `reading the power state of ${path}`);
    return this.statusOf(op, system, path);
  }

  private async statusOf(op: Operation, system: unknown, path: string): Promise<PowerStatus> {
    const readTimeMs = Date.now();
    const action = resetActionOf(system, path);
    this.resetTarget = action.target;
    let allowable = action.allowableResetTypes;
    if (allowable.length === 0 && action.actionInfo) {
      this.actionInfoAllowable ??= allowableFromActionInfo(
        await this.getJson(op, action.actionInfo, `reading the reset action's parameters ${action.actionInfo}`),
      );
      allowable = this.actionInfoAllowable;
    }
    const raw = stringProp(system, "PowerState");
    return { powerState: powerStateOf(raw), raw, allowableResetTypes: [...allowable], readTimeMs };
  }

  private async firmwareVersion(op: Operation, root: unknown, system: unknown): Promise<string> {
    try {
      const links = (system as Json)["Links"] as Json | undefined;
      const managedBy = Array.isArray(links?.["ManagedBy"])
        ? (links["ManagedBy"] as unknown[]).map(odataId).find((p) => p !== undefined)
        : undefined;
      const managersPath = odataId((root as Json)["Managers"]);
      const managerPath =
        managedBy ??
        (managersPath
          ? memberPaths(await this.getJson(op, managersPath, `reading the Managers collection ${managersPath}`))[0]
          : undefined);
      if (managerPath) {
        const version = stringProp(await this.getJson(op, managerPath, `reading the manager ${managerPath}`), "FirmwareVersion");
        if (version) return version;
      }
    } catch (err) {
      if (err instanceof RedfishError && (err.kind === "unauthorized" || err.kind === "timeout" || err.kind === "unreachable")) throw err;
      this.log?.debug({ bmc: this.endpoint.origin, err: (err as Error).message }, "the BMC's firmware version could not be read");
    }
    // iLO names its firmware in the service root too.
    const hpe = this.oem(root, "Hpe");
    const manager = Array.isArray(hpe?.["Manager"]) ? (hpe["Manager"] as unknown[])[0] : undefined;
    const v = stringProp(manager, "ManagerFirmwareVersion");
    return v ? `${stringProp(manager, "ManagerType") || "iLO"} v${v}` : "";
  }

  private oem(resource: unknown, vendor: string): Json | undefined {
    const oem = (resource as Json | undefined)?.["Oem"];
    const v = typeof oem === "object" && oem !== null ? (oem as Json)[vendor] : undefined;
    return typeof v === "object" && v !== null ? (v as Json) : undefined;
  }

  private hasOem(resource: unknown, vendor: string): boolean {
    return this.oem(resource, vendor) !== undefined;
  }

  private resetTargetPath(): string {
    return this.resetTarget ?? `${this.systemPath ?? `${this.endpoint.rootPath}/Systems/1`}/Actions/ComputerSystem.Reset`;
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private baseHeaders(): Record<string, string> {
    return { Accept: "application/json", "OData-Version": "4.0", "User-Agent": "aetherd-fence/1" };
  }

  private authHeaders(session: Session): Record<string, string> {
    if (session.token) return { "X-Auth-Token": session.token };
    return { Authorization: `Basic ${Buffer.from(`${this.username}:${this.password}`).toString("base64")}` };
  }

  /** A URL on the BMC's own origin (a Location elsewhere is not followed: the token would leave the BMC). */
  private sameOrigin(pathOrUrl: string | undefined): string | undefined {
    if (!pathOrUrl) return undefined;
    try {
      const url = new URL(pathOrUrl, this.endpoint.origin);
      if (url.origin !== this.endpoint.origin) return undefined;
      url.pathname = url.pathname.replace(/(.)\/+$/, "$1");
      return url.toString();
    } catch {
      return undefined;
    }
  }

  private async getJson(op: Operation, path: string, what: string): Promise<Json> {
    const res = await this.request(op, "GET", path, { repeatable: true, what });
    if (res.status < 200 || res.status >= 300) throw this.httpError(res, what);
    if (typeof res.json !== "object" || res.json === null || Array.isArray(res.json)) {
      throw new RedfishError(
        "protocol",
        `${what}: the BMC at ${this.endpoint.origin} answered HTTP ${res.status} without a JSON object.`,
        res.status,
      );
    }
    return res.json as Json;
  }

  /**
   * One request with the operation's credentials, retried when repeatable: a connection refused or
   * reset, 502/503/504 (and 500 for repeatable requests), after a short backoff (Retry-After is
   * honoured). A timeout is not retried: a BMC that did not answer in time is not answering. On a
   * 401 with a session token it logs in again once (the session expired) and repeats the request.
   */
  private async request(op: Operation, method: string, path: string, options: RequestOptions): Promise<JsonResponse> {
    const url = this.sameOrigin(path);
    if (!url)
      throw new RedfishError(
        "protocol",
        `${options.what}: the BMC pointed to ${JSON.stringify(path.slice(0, 200))}, which is not on ${this.endpoint.origin}.`,
      );
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    let attempt = 0;
    let reauthenticated = options.noReauth ?? false;
    for (;;) {
      const remaining = op.deadlineMs - Date.now();
      if (remaining <= 0)
        throw new RedfishError("timeout", `${options.what}: the deadline passed before ${this.endpoint.origin} answered.`);
      if (op.signal?.aborted) throw new RedfishError("timeout", `${options.what}: cancelled.`);
      const headers = {
        ...this.baseHeaders(),
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...(options.auth === false ? {} : this.authHeaders(op.session)),
      };
      let res: HttpResponse;
      try {
        res = await this.transport.send(method, url, headers, body, Math.min(this.requestTimeoutMs, remaining), op.signal);
      } catch (err) {
        if (!(err instanceof TransportError)) throw err;
        op.lastFailure = err.failure;
        const repeat = err.failure === "unreachable" && (options.repeatable || !err.maybeDelivered);
        if (repeat && attempt < this.retries && (await this.backoff(op, attempt))) {
          attempt++;
          continue;
        }
        throw this.transportError(err, options.what, remaining < this.requestTimeoutMs && err.failure === "timeout");
      }
      if (res.status === 401 && options.auth !== false && op.session.token && !reauthenticated) {
        reauthenticated = true;
        await this.relogin(op);
        continue;
      }
      const transient = res.status === 502 || res.status === 503 || res.status === 504 || (res.status === 500 && options.repeatable);
      if (transient && attempt < this.retries && (await this.backoff(op, attempt, retryAfterMs(res.headers)))) {
        this.log?.debug(
          { bmc: this.endpoint.origin, status: res.status, attempt: attempt + 1 },
          `${options.what}: the BMC answered ${res.status}; trying again`,
        );
        attempt++;
        continue;
      }
      return { ...res, json: parseJson(res.body) };
    }
  }

  /** Waits before a retry; false when the wait would pass the deadline. */
  private async backoff(op: Operation, attempt: number, retryAfter?: number): Promise<boolean> {
    const delay = Math.min(retryAfter ?? 250 * 2 ** attempt, 5000);
    if (Date.now() + delay >= op.deadlineMs || op.signal?.aborted) return false;
    await sleep(delay, op.signal);
    return !op.signal?.aborted;
  }

  private transportError(err: TransportError, what: string, deadline: boolean): RedfishError {
    switch (err.failure) {
      case "timeout":
        return new RedfishError(
          "timeout",
          deadline
            ? `${what}: the operation's deadline passed while waiting for ${this.endpoint.origin}.`
            : `${what}: ${err.message}; the BMC may be hung or overloaded (each request may take ${this.requestTimeoutMs} ms).`,
        );
      case "aborted":
        return new RedfishError("timeout", `${what}: cancelled before ${this.endpoint.origin} answered.`);
      case "tls":
        return new RedfishError(
          "unreachable",
          `${what}: ${err.message}. Give the BMC's CA certificate (or its self-signed certificate) to trust, set the name its certificate carries (server_name), or, knowingly, skip verification (insecure_skip_verify).`,
          0,
          [],
          [],
          true,
        );
      default:
        return new RedfishError("unreachable", `${what}: ${err.message}.`);
    }
  }

  /** The BMC's messages, with the credentials cut out should a BMC echo them back. */
  private messagesOf(json: unknown): BmcMessage[] {
    const secrets = [this.password, this.username].filter((v) => v.length >= 3);
    const redact = (text: string) => secrets.reduce((t, secret) => t.split(secret).join("[redacted]"), text);
    return extendedInfo(json).map((m) => ({
      messageId: redact(m.messageId),
      message: redact(m.message),
      severity: m.severity,
      resolution: redact(m.resolution),
      messageArgs: m.messageArgs.map(redact),
    }));
  }

  private httpError(res: JsonResponse, what: string): RedfishError {
    const messages = this.messagesOf(res.json);
    const detail = messages.length ? `: ${describeMessages(messages)}` : "";
    const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
    if (res.status === 401 || res.status === 403) {
      return new RedfishError(
        "unauthorized",
        `${what}: the BMC at ${this.endpoint.origin} refused the credentials (${status}${detail}); check the username, password and the account's privileges, and register the BMC again with the right ones.`,
        res.status,
        messages,
      );
    }
    return new RedfishError(
      "refused",
      `${what}: the BMC at ${this.endpoint.origin} answered ${status}${detail || " without a message"}.`,
      res.status,
      messages,
    );
  }
}

function retryAfterMs(headers: IncomingHttpHeaders): number | undefined {
  const v = header(headers, "retry-after");
  if (!v) return undefined;
  const s = Number(v);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : undefined;
}

function describeState(raw: string): string {
  return raw === "" ? "in no reported power state" : `"${raw}"`;
}
