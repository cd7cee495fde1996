// Pure parsing of what Redfish services send: endpoint URLs, PowerState, the reset action and its
// allowable values, and @Message.ExtendedInfo messages (iLO 5 sends bare MessageIds; the texts of
// the common ones are filled in from the DMTF Base and HPE iLO registries).
import type { BmcMessage, PowerStateName } from "./bmc.js";

/** A parsed endpoint: the origin every request goes to and the service root path on it. */
export interface RedfishEndpoint {
  /** "https://10.0.0.11" (or with a port). */
  origin: string;
  /** "/redfish/v1". */
  rootPath: string;
  /** origin + rootPath. */
  url: string;
}

/**
 * Parses a Redfish endpoint: https only, no credentials, query or fragment in it; a bare host URL
 * gets "/redfish/v1". Throws a RangeError with a sentence saying what is wrong.
 */
export function parseEndpoint(endpoint: string): RedfishEndpoint {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new RangeError(
      `endpoint ${JSON.stringify(endpoint.slice(0, 100))} is not a URL: give the BMC's Redfish service root, e.g. https://10.0.0.11/redfish/v1.`,
    );
  }
  if (url.protocol !== "https:") {
    throw new RangeError(
      `endpoint ${JSON.stringify(endpoint.slice(0, 100))} uses ${url.protocol.replace(/:$/, "")}: BMC credentials only travel over https; give an https:// URL.`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new RangeError(
      "endpoint must not carry a username or password: give them as credentials (they are stored encrypted and never shown).",
    );
  }
  if (url.search !== "" || url.hash !== "")
    throw new RangeError("endpoint must not have a query or fragment: give the service root, e.g. https://10.0.0.11/redfish/v1.");
  if (url.hostname === "") throw new RangeError("endpoint has no host.");
  let path = url.pathname.replace(/\/+$/, "");
  if (path === "") path = "/redfish/v1";
  return { origin: url.origin, rootPath: path, url: `${url.origin}${path}` };
}

/** Maps a Redfish PowerState string to the names this client knows ("Unknown" for anything else). */
export function powerStateOf(raw: unknown): PowerStateName {
  switch (raw) {
    case "On":
    case "Off":
    case "PoweringOn":
    case "PoweringOff":
      return raw;
    default:
      return "Unknown";
  }
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The "@odata.id" of a link object, if it is one. */
export function odataId(v: unknown): string | undefined {
  return isObject(v) && typeof v["@odata.id"] === "string" ? v["@odata.id"] : undefined;
}

/** The members of a Redfish collection, as paths. */
export function memberPaths(collection: unknown): string[] {
  if (!isObject(collection) || !Array.isArray(collection["Members"])) return [];
  return collection["Members"].map(odataId).filter((p): p is string => p !== undefined);
}

/** A string property, or "". */
export function stringProp(resource: unknown, name: string): string {
  return isObject(resource) && typeof resource[name] === "string" ? resource[name] : "";
}

/** The ComputerSystem.Reset action of a system: its target and ResetType allowable values. */
export interface ResetAction {
  target: string;
  allowableResetTypes: string[];
  /** @Redfish.ActionInfo link, when the allowable values live there instead. */
  actionInfo?: string;
}

export function resetActionOf(system: unknown, systemPath: string): ResetAction {
  const actions = isObject(system) && isObject(system["Actions"]) ? system["Actions"] : {};
  const reset = isObject(actions["#ComputerSystem.Reset"]) ? actions["#ComputerSystem.Reset"] : {};
  const target = typeof reset["target"] === "string" ? reset["target"] : `${systemPath.replace(/\/+$/, "")}/Actions/ComputerSystem.Reset`;
  const values = reset["ResetType@Redfish.AllowableValues"];
  const allowableResetTypes = Array.isArray(values) ? values.filter((v): v is string => typeof v === "string") : [];
  const actionInfo = typeof reset["@Redfish.ActionInfo"] === "string" ? reset["@Redfish.ActionInfo"] : undefined;
  return { target, allowableResetTypes, ...(actionInfo !== undefined ? { actionInfo } : {}) };
}

/** ResetType allowable values from an ActionInfo resource. */
export function allowableFromActionInfo(info: unknown): string[] {
  if (!isObject(info) || !Array.isArray(info["Parameters"])) return [];
  for (const p of info["Parameters"]) {
    if (isObject(p) && p["Name"] === "ResetType" && Array.isArray(p["AllowableValues"])) {
      return p["AllowableValues"].filter((v): v is string => typeof v === "string");
    }
  }
  return [];
}

/** Registry texts of messages iLO 5 sends as bare MessageIds (keyed by the id without registry version). */
const KNOWN_MESSAGES: Record<string, string> = {
  "Base.Success": "Successfully Completed Request.",
  "Base.NoValidSession": "There is no valid session established with the implementation.",
  "Base.InsufficientPrivilege":
    "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
  "Base.ResourceMissingAtURI": "The resource at the URI %1 was not found.",
  "Base.ActionParameterNotSupported": "The parameter %1 for the action %2 is not supported on the target resource.",
  "Base.ActionParameterMissing": "The action %1 requires the parameter %2 to be present in the request body.",
  "Base.ActionNotSupported": "The action %1 is not supported by the resource.",
  "Base.PropertyValueNotInList": "The value %1 for the property %2 is not in the list of acceptable values.",
  "Base.InternalError": "The request failed due to an internal service error. The service is still operational.",
  "Base.GeneralError": "A general error has occurred.",
  "Base.ServiceTemporarilyUnavailable": "The service is temporarily unavailable. Retry in %1 seconds.",
  "Base.SessionLimitExceeded":
    "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.",
  "Base.MalformedJSON": "The request body submitted was malformed JSON and could not be parsed by the receiving service.",
  "Base.OperationNotAllowed": "The HTTP method is not allowed on this resource.",
  "iLO.InvalidOperationForSystemState":
    "The operation was not successful due to the current power state (for example, attempting to turn the power off when it is already off).",
  "iLO.UnauthorizedLoginAttempt": "The login was not successful, because the supplied credentials could not be authenticated.",
  "iLO.SessionLimitExceeded":
    "The session establishment failed because the number of simultaneous sessions has reached the limit of the implementation.",
};

/** "iLO.2.14.InvalidOperationForSystemState" → "iLO.InvalidOperationForSystemState". */
export function messageKey(messageId: string): string {
  const parts = messageId.split(".");
  return parts.length >= 2 ? `${parts[0]}.${parts[parts.length - 1]}` : messageId;
}

/** The last segment of a MessageId ("InvalidOperationForSystemState"). */
export function messageName(messageId: string): string {
  return messageId.split(".").pop() ?? messageId;
}

function fillArgs(text: string, args: string[]): string {
  return text.replace(/%(\d+)/g, (m, n: string) => args[Number(n) - 1] ?? m);
}

function toMessage(v: unknown): BmcMessage | undefined {
  if (!isObject(v)) return undefined;
  const messageId = typeof v["MessageId"] === "string" ? v["MessageId"] : "";
  const messageArgs = Array.isArray(v["MessageArgs"]) ? v["MessageArgs"].map((a) => (typeof a === "string" ? a : JSON.stringify(a))) : [];
  let message = typeof v["Message"] === "string" ? v["Message"] : "";
  if (message === "" && messageId !== "") {
    const known = KNOWN_MESSAGES[messageKey(messageId)];
    if (known) message = fillArgs(known, messageArgs);
  }
  const severity = typeof v["Severity"] === "string" ? v["Severity"] : typeof v["MessageSeverity"] === "string" ? v["MessageSeverity"] : "";
  const resolution = typeof v["Resolution"] === "string" ? v["Resolution"] : "";
  if (messageId === "" && message === "") return undefined;
  return { messageId, message, severity, resolution, messageArgs };
}

/**
 * The @Message.ExtendedInfo messages of an answer: from `error` (error answers, and iLO's 200
 * answers) and from the top level. An `error` with no ExtendedInfo gives its code and message.
 */
export function extendedInfo(body: unknown): BmcMessage[] {
  if (!isObject(body)) return [];
  const out: BmcMessage[] = [];
  const collect = (holder: Json) => {
    const info = holder["@Message.ExtendedInfo"];
    if (Array.isArray(info))
      for (const m of info) {
        const parsed = toMessage(m);
        if (parsed) out.push(parsed);
      }
  };
  if (isObject(body["error"])) {
    const error = body["error"];
    collect(error);
    if (out.length === 0 && (typeof error["code"] === "string" || typeof error["message"] === "string")) {
      out.push({
        messageId: stringProp(error, "code"),
        message: stringProp(error, "message"),
        severity: "",
        resolution: "",
        messageArgs: [],
      });
    }
  }
  collect(body);
  return out;
}

/** Messages as one clause: "iLO.2.14.InvalidOperationForSystemState: The operation was ... ; Base...". */
export function describeMessages(messages: BmcMessage[]): string {
  return messages
    .map((m) => {
      const head = m.messageId !== "" ? m.messageId : "message";
      const text =
        m.message !== ""
          ? `: ${m.message.replace(/\s+/g, " ").replace(/\.?$/, "")}`
          : m.messageArgs.length
            ? ` (${m.messageArgs.join(", ")})`
            : "";
      const resolution =
        m.resolution !== "" && m.resolution !== "None" && m.resolution !== "None."
          ? ` (resolution: ${m.resolution.replace(/\.?$/, "")})`
          : "";
      return `${head}${text}${resolution}`;
    })
    .join("; ");
}

/** True when the messages say the system's power state made the operation pointless (iLO: already off/on). */
export function isInvalidForSystemState(messages: BmcMessage[]): boolean {
  return messages.some((m) => messageName(m.messageId) === "InvalidOperationForSystemState");
}
