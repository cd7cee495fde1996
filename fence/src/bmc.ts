// The driver interface of the fence room: what aetherd needs from a baseboard management
// controller. RedfishClient (redfish-client.ts) implements it for Redfish BMCs (HPE iLO 5 and
// generic DMTF Redfish); the FenceService handler only ever talks to a `Bmc`.

/** A system's power state as this client understands it; anything else is "Unknown" (see `raw`). */
export type PowerStateName = "On" | "Off" | "PoweringOn" | "PoweringOff" | "Unknown";

/** One message of a BMC's @Message.ExtendedInfo array. */
export interface BmcMessage {
  /** MessageId, e.g. "Base.1.4.Success" or "iLO.2.14.InvalidOperationForSystemState". */
  messageId: string;
  /** The human-readable Message (iLO 5 often sends none: then the registry text this client knows, or ""). */
  message: string;
  /** Severity or MessageSeverity ("OK", "Warning", "Critical"); "" if not given. */
  severity: string;
  /** Suggested Resolution; "" if not given. */
  resolution: string;
  /** MessageArgs, in order. */
  messageArgs: string[];
}

/** The system's power state and the reset types its BMC allows. */
export interface PowerStatus {
  powerState: PowerStateName;
  /** PowerState exactly as the BMC sent it ("" if absent). */
  raw: string;
  /** ResetType@Redfish.AllowableValues of the system, in the BMC's order. */
  allowableResetTypes: string[];
  /** Date.now() when the state was read. */
  readTimeMs: number;
}

/** What logging in and looking around the service root found. */
export interface BmcDiscovery extends PowerStatus {
  /** Path of the computer system ("/redfish/v1/Systems/1"). */
  systemPath: string;
  /** Target of the system's ComputerSystem.Reset action. */
  resetTarget: string;
  /** Manufacturer of the system ("" if not reported). */
  manufacturer: string;
  /** Model of the system ("" if not reported). */
  model: string;
  /** Firmware version of the BMC ("iLO 5 v2.46"; "" if not reported). */
  firmwareVersion: string;
  /** The service root's RedfishVersion. */
  redfishVersion: string;
  /** The service root's Vendor, or what its Oem section names ("HPE"); "" if unknown. */
  vendor: string;
  /** How this client authenticated: a Redfish session, or Basic auth when sessions are unavailable. */
  auth: "session" | "basic";
}

/** Deadline and cancellation of one operation. */
export interface OperationOptions {
  /** Aborts the operation (its requests are dropped; the session is still logged out). */
  signal?: AbortSignal;
  /** Date.now() value after which no request of this operation may still run. */
  deadlineMs?: number;
}

/** How long a fence may take. */
export interface FenceOptions extends OperationOptions {
  /** Longest time from the call to PowerState "Off". */
  timeoutMs: number;
  /** Time between PowerState reads. */
  pollIntervalMs: number;
}

/** How a fence ended. Only `confirmed` (PowerState "Off" read back) means the node is down. */
export interface FenceOutcome {
  /** PowerState "Off" was read back before the deadline. */
  confirmed: boolean;
  /** A sentence: already off, confirmed after N reads, the BMC's refusal, the deadline passed in PoweringOff. */
  reason: string;
  /** The system was already "Off" at the first read, so no ForceOff was sent. */
  alreadyOff: boolean;
  /** The last power state read. */
  powerState: PowerStateName;
  /** The last PowerState exactly as the BMC sent it. */
  rawPowerState: string;
  /** Date.now() when the fence started. */
  startTimeMs: number;
  /** When the BMC accepted ForceOff; undefined if none was sent or it was refused. */
  commandTimeMs?: number;
  /** When "Off" was read back; undefined unless confirmed. */
  confirmTimeMs?: number;
  /** Time the ForceOff request took to be answered; undefined if none was sent. */
  commandLatencyMs?: number;
  /** Time from the start to the confirmed "Off" (or to the end of the attempt). */
  totalDurationMs: number;
  /** Number of PowerState reads, including the first. */
  pollCount: number;
  /** HTTP status of the ForceOff action; 0 if none was sent. */
  actionStatusCode: number;
  /** The BMC's @Message.ExtendedInfo messages from the ForceOff answer. */
  messages: BmcMessage[];
}

/** How long a power-on may wait for "On". */
export interface PowerOnOptions extends OperationOptions {
  /** Also poll until PowerState is "On", for up to this long; 0 or unset: return once the BMC accepts. */
  timeoutMs?: number;
  /** Time between PowerState reads while waiting; default 1000. */
  pollIntervalMs?: number;
}

/** How a power-on ended. */
export interface PowerOnOutcome {
  /** The system was already "On", so no command was sent. */
  alreadyOn: boolean;
  powerState: PowerStateName;
  rawPowerState: string;
  /** HTTP status of the On action; 0 if none was sent. */
  actionStatusCode: number;
  messages: BmcMessage[];
}

/** How a reset ended. */
export interface ResetOutcome {
  /** HTTP status of the action (200 or 204 on success). */
  actionStatusCode: number;
  messages: BmcMessage[];
  /** The power state read after the action was accepted. */
  powerState: PowerStateName;
  rawPowerState: string;
}

/** A baseboard management controller that can switch one system off and on. */
export interface Bmc {
  /** Logs in, finds the computer system and the BMC's firmware, reads the power state. */
  discover(options?: OperationOptions): Promise<BmcDiscovery>;
  /** Reads the power state and the allowed reset types. */
  powerStatus(options?: OperationOptions): Promise<PowerStatus>;
  /** ForceOff unless already "Off", then polls until "Off" or the deadline. Never throws for an unconfirmed fence. */
  fence(options: FenceOptions): Promise<FenceOutcome>;
  /** Powers on (ResetType On) unless already "On". */
  powerOn(options?: PowerOnOptions): Promise<PowerOnOutcome>;
  /** Sends a reset type the system allows. */
  reset(resetType: string, options?: OperationOptions): Promise<ResetOutcome>;
  /** Releases connections. */
  close(): void;
}
