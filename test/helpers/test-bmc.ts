// A test BMC: an HTTPS Redfish service on 127.0.0.1 that serves the published mockups in
// test/fixtures/redfish (HPE iLO 5 "ilo5", or DMTF's generic rack server "dmtf"), with real
// sessions, Basic auth, the ComputerSystem.Reset action and a power state that moves through
// PoweringOff/PoweringOn. It can be told to misbehave the ways real BMCs do (hang, 500, 401,
// sessions that expire mid-fence, a system stuck in PoweringOff, no session service).
//
//   const bmc = await startTestBmc({ profile: "ilo5", powerOffDelayMs: 300, onPowerOff: () => node.kill9() });
//   // register { endpoint: bmc.url, username: bmc.username, password: bmc.password, caPem: bmc.caPem }
//   bmc.setMisbehaviour({ kind: "status", status: 500, on: "action" });
//   assert.equal(bmc.activeSessions, 0); // every session was logged out
//   await bmc.close();
//
// Past 400 lines because it is one service: the sessions, the mockup's resources, the reset action's
// power-state machine and the misbehaviours share one request handler and its state. At the end,
// writeBmcRegistration writes what an aggregator needs to fence a test node through it.
import { execFileSync } from "node:child_process";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** Which published mockup the BMC serves. */
export type TestBmcProfile = "ilo5" | "dmtf";

/** Redfish PowerState values the test BMC moves through. */
export type TestBmcPowerState = "On" | "Off" | "PoweringOn" | "PoweringOff";

/**
 * The kind of a request, as the misbehaviours select them:
 * `read` (any GET), `login` (POST to the Sessions collection), `logout` (DELETE of a session),
 * `action` (POST to ComputerSystem.Reset), `other` (anything else).
 */
export type TestBmcRequestKind = "read" | "login" | "logout" | "action" | "other";

/**
 * A way for the BMC to misbehave. Several can be active at once (see {@link TestBmc.setMisbehaviour}).
 *
 * - `hang`: accept the request and never answer it (the socket stays open until close()).
 *   `on` selects which requests (default: every request).
 * - `status`: answer with this HTTP status and a Redfish error body (MessageId `messageId`, default
 *   one that fits the status: Base.1.x.InternalError for 500, NoValidSession for 401...).
 *   `on` selects which requests (default: `action`); `times` limits how many requests get it
 *   (default: all of them, until cleared).
 * - `expireSessionsOnPowerOff`: right after a ForceOff/GracefulShutdown is accepted, every session
 *   expires (later requests with their X-Auth-Token get 401), as when a BMC restarts its web
 *   server or the session timeout strikes mid-fence. Basic auth and new logins keep working.
 * - `stuckPoweringOff`: a power-off is accepted, but PowerState stays "PoweringOff" forever.
 * - `offBeforeAction`: the system switches itself off between the client's read and its
 *   ForceOff: the action finds it already Off (iLO 5 then answers 400 InvalidOperationForSystemState).
 * - `noSessionService`: POST to the Sessions collection answers 405 (sessions unavailable), so
 *   only Basic auth works.
 */
export type TestBmcMisbehaviour =
  | { kind: "hang"; on?: TestBmcRequestKind | "any" }
  | { kind: "status"; status: number; on?: TestBmcRequestKind | "any"; times?: number; messageId?: string }
  | { kind: "expireSessionsOnPowerOff" }
  | { kind: "stuckPoweringOff" }
  | { kind: "offBeforeAction" }
  | { kind: "noSessionService" };

/** One request the BMC received, in arrival order. */
export interface TestBmcRequest {
  /** HTTP method. */
  readonly method: string;
  /** The request target exactly as sent (path and query). */
  readonly url: string;
  /** The path, without query and trailing slash. */
  readonly path: string;
  /** What the request did (see {@link TestBmcRequestKind}). */
  readonly kind: TestBmcRequestKind;
  /** How it authenticated: a valid session token, valid Basic credentials, none, or invalid ones. */
  readonly auth: "session" | "basic" | "none" | "invalid";
  /** For `action` requests: the ResetType in the body. */
  readonly resetType?: string;
  /** The HTTP status answered; 0 while unanswered (or forever, for a hung request). */
  status: number;
  /** Date.now() when the request arrived. */
  readonly time: number;
}

/** Options of {@link startTestBmc}. */
export interface TestBmcOptions {
  /** Which mockup to serve: "ilo5" (HPE iLO 5, DL325 Gen10 Plus) or "dmtf" (public-rackmount1). */
  profile: TestBmcProfile;
  /** Time a power-off spends in "PoweringOff" before "Off"; 0 (default): "Off" at once. */
  powerOffDelayMs?: number;
  /** Time a power-on spends in "PoweringOn" before "On"; default 0. */
  powerOnDelayMs?: number;
  /**
   * Called when the system reaches "Off" because of an action (ForceOff, GracefulShutdown, a
   * PushPowerButton while on), before "Off" is reported: the multi-node tests kill the node's
   * daemon here, so "Off" is only ever read once the node really is down. With no delay, the
   * action's answer waits for it. Not called by the {@link TestBmc.powerState} setter.
   */
  onPowerOff?: () => void | Promise<void>;
  /** Called when the system reaches "On" because of an action. */
  onPowerOn?: () => void | Promise<void>;
  /** Account name; default "admin". */
  username?: string;
  /** Account password; default a random one (so tests can grep logs for it). */
  password?: string;
  /** Power state at start; default "On". */
  initialPowerState?: TestBmcPowerState;
  /** Accept HTTP Basic auth; default true. */
  basicAuth?: boolean;
  /** Extra DNS names in the certificate (always: IP 127.0.0.1, localhost, bmc.test). */
  certNames?: string[];
  /**
   * Serve on this unix socket instead of 127.0.0.1, for a BMC reached through a relay in another
   * network namespace at `origin` (https://IP:PORT; the IP goes into the certificate).
   */
  behind?: { socket: string; origin: string };
}

/** A running test BMC. */
export interface TestBmc {
  /** The Redfish service root, "https://127.0.0.1:PORT/redfish/v1". */
  readonly url: string;
  /** The bare origin, "https://127.0.0.1:PORT" (clients append /redfish/v1). */
  readonly origin: string;
  /** PEM of the BMC's self-signed certificate: trust it alone to verify the BMC. */
  readonly caPem: string;
  /** The account that logs in. */
  readonly username: string;
  /** Its password. */
  readonly password: string;
  readonly profile: TestBmcProfile;
  /** Path of the computer system ("/redfish/v1/Systems/1" on ilo5, "/redfish/v1/Systems/437XR1138R2" on dmtf). */
  readonly systemPath: string;
  /** ResetType@Redfish.AllowableValues of the system, from the mockup. */
  readonly allowableResetTypes: readonly string[];
  /** The current PowerState. Setting it cancels a transition in progress and calls no hook. */
  powerState: TestBmcPowerState;
  /** Power-off delay, changeable between calls. */
  powerOffDelayMs: number;
  /** Every request received, in order. */
  readonly requests: readonly TestBmcRequest[];
  /** Forgets the request log. */
  clearRequests(): void;
  /** Number of sessions created and not deleted (nor expired): 0 when every client logged out. */
  readonly activeSessions: number;
  /** Number of sessions ever created. */
  readonly sessionsCreated: number;
  /** Number of times the system reached "Off" through an action. */
  readonly powerOffCount: number;
  /** ResetTypes accepted so far, in order. */
  readonly resets: readonly string[];
  /** Replaces the active misbehaviours (none: behave). */
  setMisbehaviour(...misbehaviours: TestBmcMisbehaviour[]): void;
  /** Expires every session now (their tokens get 401 from now on). */
  expireSessions(): void;
  /** Stops the server, dropping hung requests. */
  close(): Promise<void>;
}

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "redfish");

type Json = Record<string, unknown>;

interface MessageInfo {
  MessageId: string;
  Message?: string;
  Severity?: string;
  Resolution?: string;
  MessageArgs?: string[];
}

/** Loads `<set>/redfish/v1/<path>/index.json` into a map by URL path (no trailing slash). */
function loadMockup(profile: TestBmcProfile): Map<string, Json> {
  const root = join(FIXTURES, profile);
  const out = new Map<string, Json>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name === "index.json") {
        const rel = relative(root, dir).split(sep).join("/");
        out.set(`/${rel}`, JSON.parse(readFileSync(full, "utf8")) as Json);
      }
    }
  };
  walk(root);
  return out;
}

function selfSignedCertificate(names: string[], ips: string[]): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), "aether-test-bmc-"));
  try {
    const san = ["IP:127.0.0.1", ...ips.map((ip) => `IP:${ip}`), "DNS:localhost", "DNS:bmc.test", ...names.map((n) => `DNS:${n}`)].join(
      ",",
    );
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aether-test-bmc",
        "-addext",
        `subjectAltName=${san}`,
      ],
      { cwd: dir, stdio: ["ignore", "ignore", "pipe"] },
    );
    return { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function odataId(v: unknown): string | undefined {
  return typeof v === "object" && v !== null && typeof (v as Json)["@odata.id"] === "string"
    ? ((v as Json)["@odata.id"] as string)
    : undefined;
}

function normalizePath(pathname: string): string {
  const p = pathname.replace(/\/+$/, "");
  return p === "" ? "/" : p;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a test BMC on 127.0.0.1 (a free port), or on options.behind's socket, and resolves once it listens. */
export async function startTestBmc(options: TestBmcOptions): Promise<TestBmc> {
  const profile = options.profile;
  const ilo = profile === "ilo5";
  const mockup = loadMockup(profile);
  const systemsCollection = mockup.get("/redfish/v1/Systems");
  const systemPath = odataId((systemsCollection?.["Members"] as unknown[] | undefined)?.[0]);
  if (!systemPath || !mockup.has(systemPath)) throw new Error(`the ${profile} mockup has no computer system`);
  const system = mockup.get(systemPath) as Json;
  const resetAction = ((system["Actions"] as Json)["#ComputerSystem.Reset"] ?? {}) as Json;
  const actionTarget = normalizePath(String(resetAction["target"]));
  const allowable = (resetAction["ResetType@Redfish.AllowableValues"] as string[] | undefined) ?? [];
  const sessionsPath = "/redfish/v1/SessionService/Sessions";

  const username = options.username ?? "admin";
  const password = options.password ?? `bmc-${randomBytes(12).toString("base64url")}`;
  const basicAuth = options.basicAuth ?? true;
  const behindIp = options.behind && new URL(options.behind.origin).hostname;
  const { key, cert } = selfSignedCertificate(options.certNames ?? [], behindIp ? [behindIp] : []);

  let power: TestBmcPowerState = options.initialPowerState ?? "On";
  let transition: NodeJS.Timeout | undefined;
  let powerOffDelayMs = options.powerOffDelayMs ?? 0;
  const powerOnDelayMs = options.powerOnDelayMs ?? 0;
  let powerOffCount = 0;
  let sessionsCreated = 0;
  const resets: string[] = [];
  const sessions = new Map<string, { id: string; token: string; created: string }>(); // by token
  let requests: TestBmcRequest[] = [];
  let misbehaviours: Array<TestBmcMisbehaviour & { left?: number }> = [];
  let closed = false;

  const has = (kind: TestBmcMisbehaviour["kind"]) => misbehaviours.some((m) => m.kind === kind);

  const message = (id: string, text: string, resolution: string, args: string[] = []): MessageInfo =>
    ilo
      ? // iLO 5 sends MessageId (and MessageArgs) only; the text lives in its registries.
        { MessageId: `${id.includes(".") ? id : `Base.1.4.${id}`}`, ...(args.length ? { MessageArgs: args } : {}) }
      : {
          MessageId: id.includes(".") ? id : `Base.1.18.${id}`,
          Message: text,
          Severity: "Critical",
          Resolution: resolution,
          ...(args.length ? { MessageArgs: args } : {}),
        };

  const errorBody = (messages: MessageInfo[]): Json => ({
    error: ilo
      ? { code: "iLO.0.10.ExtendedInfo", message: "See @Message.ExtendedInfo for more information.", "@Message.ExtendedInfo": messages }
      : {
          code: messages[0]?.MessageId ?? "Base.1.18.GeneralError",
          message: messages[0]?.Message ?? "A general error has occurred.",
          "@Message.ExtendedInfo": messages.map((m) => ({ "@odata.type": "#Message.v1_1_1.Message", ...m })),
        },
  });

  const defaultMessage = (status: number): MessageInfo => {
    switch (status) {
      case 400:
        return message("GeneralError", "A general error has occurred.", "None.");
      case 401:
        return message(
          "NoValidSession",
          "There is no valid session established with the implementation.",
          "Establish a session before attempting any operations.",
        );
      case 403:
        return message(
          "InsufficientPrivilege",
          "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
          "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.",
        );
      case 503:
        return message(
          "ServiceTemporarilyUnavailable",
          "The service is temporarily unavailable.  Retry in 5 seconds.",
          "Wait for the indicated retry duration and retry the operation.",
          ["5"],
        );
      default:
        return message(
          "InternalError",
          "The request failed due to an internal service error.  The service is still operational.",
          "Resubmit the request.  If the problem persists, consider resetting the service.",
        );
    }
  };

  const send = (res: ServerResponse, entry: TestBmcRequest, status: number, body?: Json, headers: Record<string, string> = {}): void => {
    entry.status = status;
    const text = body === undefined ? "" : JSON.stringify(body, null, ilo ? 4 : 2);
    res.writeHead(status, {
      ...(body === undefined ? {} : { "Content-Type": "application/json; charset=utf-8" }),
      "OData-Version": "4.0",
      ...(ilo ? { Server: "HPE-iLO-Server/1.0" } : {}),
      ...headers,
    });
    res.end(text);
  };
  const fail = (res: ServerResponse, entry: TestBmcRequest, status: number, info: MessageInfo = defaultMessage(status)) =>
    send(res, entry, status, errorBody([info]), status === 401 ? { "WWW-Authenticate": 'Basic realm="Redfish"' } : {});
  const success = (): Json => ({
    error: {
      code: "iLO.0.10.ExtendedInfo",
      message: "See @Message.ExtendedInfo for more information.",
      "@Message.ExtendedInfo": [{ MessageId: "Base.1.4.Success" }],
    },
  });

  const finish = async (to: "On" | "Off") => {
    transition = undefined;
    try {
      await (to === "Off" ? options.onPowerOff?.() : options.onPowerOn?.());
    } catch (err) {
      process.stderr.write(`test BMC: the ${to === "Off" ? "onPowerOff" : "onPowerOn"} hook failed: ${String(err)}\n`);
    }
    if (to === "Off") powerOffCount++;
    power = to;
  };
  const startTransition = async (to: "On" | "Off") => {
    if (transition) clearTimeout(transition);
    transition = undefined;
    if (to === "Off" && has("stuckPoweringOff")) {
      power = "PoweringOff";
      return;
    }
    const delay = to === "Off" ? powerOffDelayMs : powerOnDelayMs;
    if (delay <= 0) return finish(to);
    power = to === "Off" ? "PoweringOff" : "PoweringOn";
    transition = setTimeout(() => void finish(to), delay);
  };

  const authenticate = (req: IncomingMessage): TestBmcRequest["auth"] => {
    const token = req.headers["x-auth-token"];
    if (typeof token === "string") return sessions.has(token) ? "session" : "invalid";
    const header = req.headers.authorization;
    if (typeof header === "string") {
      const m = /^Basic\s+(\S+)$/i.exec(header);
      if (!m || !basicAuth) return "invalid";
      const decoded = Buffer.from(m[1] as string, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      const ok = colon >= 0 && sameSecret(decoded.slice(0, colon), username) && sameSecret(decoded.slice(colon + 1), password);
      return ok ? "basic" : "invalid";
    }
    return "none";
  };

  const readBody = (req: IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      let size = 0;
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > 65536) req.destroy(new Error("body too large"));
        else chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });

  const sessionResource = (s: { id: string; created: string }): Json =>
    ilo
      ? {
          "@odata.context": "/redfish/v1/$metadata#Session.Session",
          "@odata.id": `${sessionsPath}/${s.id}`,
          "@odata.type": "#Session.v1_0_0.Session",
          Id: s.id,
          Description: "Manager User Session",
          Name: "User Session",
          Oem: {
            Hpe: {
              "@odata.type": "#HpeiLOSession.v2_1_0.HpeiLOSession",
              LoginTime: s.created,
              MySession: true,
              UserTag: "REST",
              UserType: "Local",
            },
          },
          UserName: username,
        }
      : {
          "@odata.type": "#Session.v1_8_0.Session",
          Id: s.id,
          Name: "User Session",
          Description: "Manager User Session",
          UserName: username,
          CreatedTime: s.created,
          "@odata.id": `${sessionsPath}/${s.id}`,
        };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? "GET";
    const target = req.url ?? "/";
    const path = normalizePath(new URL(target, "https://bmc.invalid").pathname);
    const body = await readBody(req).catch(() => "");
    const kind: TestBmcRequestKind =
      method === "GET" || method === "HEAD"
        ? "read"
        : method === "POST" && path === sessionsPath
          ? "login"
          : method === "DELETE" && path.startsWith(`${sessionsPath}/`)
            ? "logout"
            : method === "POST" && path === actionTarget
              ? "action"
              : "other";
    let parsed: Json | undefined;
    let malformed = false;
    if (body.trim() !== "") {
      try {
        const v: unknown = JSON.parse(body);
        if (typeof v === "object" && v !== null && !Array.isArray(v)) parsed = v as Json;
        else malformed = true;
      } catch {
        malformed = true;
      }
    }
    const resetType = kind === "action" && typeof parsed?.["ResetType"] === "string" ? (parsed["ResetType"] as string) : undefined;
    const auth = authenticate(req);
    const entry: TestBmcRequest = {
      method,
      url: target,
      path,
      kind,
      auth,
      status: 0,
      time: Date.now(),
      ...(resetType !== undefined ? { resetType } : {}),
    };
    requests.push(entry);

    for (const m of misbehaviours) {
      if (m.kind === "hang" && ((m.on ?? "any") === "any" || m.on === kind)) return; // never answer
      if (m.kind === "status" && ((m.on ?? "action") === "any" || (m.on ?? "action") === kind) && (m.left === undefined || m.left > 0)) {
        if (m.left !== undefined) m.left--;
        const info = m.messageId ? message(m.messageId, `Injected ${m.status}.`, "None.") : defaultMessage(m.status);
        return fail(res, entry, m.status, info);
      }
    }

    if (malformed)
      return fail(
        res,
        entry,
        400,
        message(
          "MalformedJSON",
          "The request body submitted was malformed JSON and could not be parsed by the receiving service.",
          "Ensure that the request body is valid JSON and resubmit the request.",
        ),
      );

    // Unauthenticated resources: /redfish, the service root, and the login itself.
    if (method === "GET" && path === "/redfish") return send(res, entry, 200, { v1: "/redfish/v1/" });
    if (method === "GET" && path === "/redfish/v1") return send(res, entry, 200, mockup.get("/redfish/v1") as Json);

    if (kind === "login") {
      if (has("noSessionService"))
        return fail(res, entry, 405, message("OperationNotAllowed", "The HTTP method is not allowed on this resource.", "None."));
      const user = parsed?.["UserName"];
      const pass = parsed?.["Password"];
      if (typeof user !== "string" || typeof pass !== "string") {
        return fail(
          res,
          entry,
          400,
          message(
            "PropertyMissing",
            "The property UserName or Password is a required property and must be included in the request.",
            "Ensure that the property is in the request body and has a valid value and resubmit the request.",
            ["UserName"],
          ),
        );
      }
      if (!sameSecret(user, username) || !sameSecret(pass, password)) {
        return fail(
          res,
          entry,
          401,
          message(
            "NoValidSession",
            "There is no valid session established with the implementation.",
            "Establish a session before attempting any operations.",
          ),
        );
      }
      const id = ilo ? `${username}${randomBytes(12).toString("hex")}` : randomBytes(8).toString("hex").toUpperCase();
      const token = randomBytes(16).toString("hex");
      const s = { id, token, created: new Date().toISOString().replace(/\.\d+Z$/, "Z") };
      sessions.set(token, s);
      sessionsCreated++;
      const location = ilo ? `${origin}${sessionsPath}/${id}/` : `${sessionsPath}/${id}`;
      return send(res, entry, 201, sessionResource(s), { "X-Auth-Token": token, Location: location });
    }

    if (auth !== "session" && auth !== "basic") return fail(res, entry, 401);

    if (kind === "logout") {
      const id = path.slice(sessionsPath.length + 1);
      const found = [...sessions.values()].find((s) => s.id === id);
      if (!found)
        return fail(
          res,
          entry,
          404,
          message(
            "ResourceMissingAtURI",
            `The resource at the URI ${path} was not found.`,
            "Place a valid resource at the URI or correct the URI and resubmit the request.",
            [path],
          ),
        );
      sessions.delete(found.token);
      return ilo ? send(res, entry, 200, success()) : send(res, entry, 204);
    }

    if (kind === "action") {
      if (resetType === undefined) {
        return fail(
          res,
          entry,
          400,
          message(
            "ActionParameterMissing",
            "The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.",
            "Supply the action with the required parameter in the request body when the request is resubmitted.",
            ["ComputerSystem.Reset", "ResetType"],
          ),
        );
      }
      if (!allowable.includes(resetType)) {
        return fail(
          res,
          entry,
          400,
          message(
            "ActionParameterNotSupported",
            `The parameter ResetType for the action ComputerSystem.Reset is not supported on the target resource.`,
            "Remove the parameter supplied and resubmit the request if the operation failed.",
            [resetType, "ComputerSystem.Reset"],
          ),
        );
      }
      if (has("offBeforeAction") && (resetType === "ForceOff" || resetType === "GracefulShutdown")) {
        if (transition) clearTimeout(transition);
        transition = undefined;
        if (power !== "Off") await finish("Off");
      }
      const isOff = power === "Off" || power === "PoweringOff";
      const offType = resetType === "ForceOff" || resetType === "GracefulShutdown" || (resetType === "PushPowerButton" && !isOff);
      const onType = resetType === "On" || resetType === "ForceOn" || (resetType === "PushPowerButton" && isOff);
      // iLO 5 refuses to switch off what is off, or on what is on.
      if (ilo && ((offType && power === "Off") || (onType && power === "On"))) {
        return fail(res, entry, 400, { MessageId: "iLO.2.14.InvalidOperationForSystemState" });
      }
      resets.push(resetType);
      if (offType) {
        if (power !== "Off") await startTransition("Off");
        if (has("expireSessionsOnPowerOff")) sessions.clear();
      } else if (onType) {
        if (power !== "On") await startTransition("On");
      } else if (resetType === "ForceRestart" || resetType === "GracefulRestart" || resetType === "PowerCycle") {
        if (power === "Off" || power === "PoweringOff") await startTransition("On");
      } // Nmi and others: no power change.
      return ilo ? send(res, entry, 200, success()) : send(res, entry, 204);
    }

    if (method === "GET" || method === "HEAD") {
      if (path === sessionsPath) {
        const members = [...sessions.values()].map((s) => ({ "@odata.id": `${sessionsPath}/${s.id}` }));
        return send(res, entry, 200, { ...(mockup.get(sessionsPath) as Json), Members: members, "Members@odata.count": members.length });
      }
      if (path.startsWith(`${sessionsPath}/`)) {
        const s = [...sessions.values()].find((x) => `${sessionsPath}/${x.id}` === path);
        if (s) return send(res, entry, 200, sessionResource(s));
      }
      const resource = mockup.get(path);
      if (resource && path !== `${sessionsPath}` && !path.startsWith(`${sessionsPath}/`)) {
        return send(res, entry, 200, path === systemPath ? { ...resource, PowerState: power } : resource);
      }
      return fail(
        res,
        entry,
        404,
        message(
          "ResourceMissingAtURI",
          `The resource at the URI ${path} was not found.`,
          "Place a valid resource at the URI or correct the URI and resubmit the request.",
          [path],
        ),
      );
    }
    if (mockup.has(path))
      return fail(res, entry, 405, message("OperationNotAllowed", "The HTTP method is not allowed on this resource.", "None."));
    return fail(
      res,
      entry,
      404,
      message(
        "ResourceMissingAtURI",
        `The resource at the URI ${path} was not found.`,
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
        [path],
      ),
    );
  };

  const server: Server = createServer({ key, cert }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { "Content-Type": "text/plain" });
        res.end(`test BMC failed: ${String(err)}`);
      }
    });
  });
  server.on("tlsClientError", () => undefined); // clients that reject the certificate: not our problem
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (options.behind) server.listen(options.behind.socket, () => resolve());
    else server.listen(0, "127.0.0.1", () => resolve());
  });
  const origin = options.behind?.origin ?? `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url: `${origin}/redfish/v1`,
    origin,
    caPem: cert,
    username,
    password,
    profile,
    systemPath,
    allowableResetTypes: allowable,
    get powerState() {
      return power;
    },
    set powerState(state: TestBmcPowerState) {
      if (transition) clearTimeout(transition);
      transition = undefined;
      power = state;
    },
    get powerOffDelayMs() {
      return powerOffDelayMs;
    },
    set powerOffDelayMs(ms: number) {
      powerOffDelayMs = ms;
    },
    get requests() {
      return requests;
    },
    clearRequests() {
      requests = [];
    },
    get activeSessions() {
      return sessions.size;
    },
    get sessionsCreated() {
      return sessionsCreated;
    },
    get powerOffCount() {
      return powerOffCount;
    },
    get resets() {
      return resets;
    },
    setMisbehaviour(...list: TestBmcMisbehaviour[]) {
      misbehaviours = list.map((m) => (m.kind === "status" && m.times !== undefined ? { ...m, left: m.times } : { ...m }));
    },
    expireSessions() {
      sessions.clear();
    },
    async close() {
      if (closed) return;
      closed = true;
      if (transition) clearTimeout(transition);
      transition = undefined;
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await Promise.race([done, sleep(2000)]);
    },
  };
}

/**
 * Registers `bmc` as `node`'s BMC for an aether-aggregator: its password file (0600) and CA beside a
 * bmcs.toml in `dir`, with a short request timeout and no retries so a fencing test moves quickly.
 * Returns the bmcs.toml path, for `--bmcs`.
 */
export function writeBmcRegistration(dir: string, node: string, bmc: TestBmc): string {
  const password = `${node}.password`;
  const ca = `${node}-ca.pem`;
  writeFileSync(join(dir, password), `${bmc.password}\n`);
  chmodSync(join(dir, password), 0o600);
  writeFileSync(join(dir, ca), bmc.caPem);
  const path = join(dir, "bmcs.toml");
  writeFileSync(
    path,
    `[[bmcs]]\nnode = "${node}"\nendpoint = "${bmc.url}"\nusername = "${bmc.username}"\npassword_file = "${password}"\nca_file = "${ca}"\nprofile = "${bmc.profile}"\nrequest_timeout_ms = 800\nretries = 0\n`,
  );
  return path;
}
