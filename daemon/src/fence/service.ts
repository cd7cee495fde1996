// aether.fence.v1.FenceService: validates requests into typed values, lets the registry and its
// Bmc drivers (Redfish) do the work, and translates records, outcomes and RedfishErrors into the
// contract's messages and Codes. BMC credentials are write-only: no response carries them.
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  BmcMessageSchema,
  BmcProfile,
  BmcSchema,
  BmcState,
  BmcTlsSchema,
  FenceResponseSchema,
  FenceService,
  GetPowerStatusResponseSchema,
  PowerOnResponseSchema,
  PowerState,
  ResetResponseSchema,
  type Bmc,
  type BmcCredentials,
  type BmcTls,
} from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import {
  clip,
  dnsLabel,
  duration,
  durationMs,
  invalidArgument,
  labelFilter,
  labels,
  matchesFilter,
  paginate,
  reference,
  requireClusterWide,
  scopeKey,
  timestamp,
} from "@aether/server";
import { type BmcMessage, type BmcProfileName, type OperationOptions, parseEndpoint, RedfishError } from "@aether/fence";
import type { Credentials } from "./credential-store.js";
import type { BmcRecord, BmcRegistry } from "./registry.js";

const POWER: Record<BmcRecord["powerState"], PowerState> = {
  On: PowerState.ON,
  Off: PowerState.OFF,
  PoweringOn: PowerState.POWERING_ON,
  PoweringOff: PowerState.POWERING_OFF,
  Unknown: PowerState.UNKNOWN,
  "": PowerState.UNKNOWN,
};
const STATE: Record<BmcRecord["state"], BmcState> = {
  reachable: BmcState.REACHABLE,
  unreachable: BmcState.UNREACHABLE,
  unauthorized: BmcState.UNAUTHORIZED,
};
const PROFILE: Record<BmcProfileName, BmcProfile> = { ilo5: BmcProfile.ILO5, dmtf: BmcProfile.DMTF_GENERIC };

const MIN = 60_000;
/** Bounds of the durations a caller may give (ms). */
export const LIMITS = {
  fenceTimeout: { min: 1000, max: 30 * MIN, fallback: 60_000 },
  pollInterval: { min: 100, max: MIN, fallback: 1000 },
  powerOnTimeout: { min: 0, max: 30 * MIN, fallback: 0 },
} as const;

const CONTROL = /[\u0000-\u001f\u007f]/;

function bounded(field: string, value: Parameters<typeof durationMs>[1], limits: { min: number; max: number; fallback: number }): number {
  const ms = durationMs(field, value, limits.fallback);
  if (ms < limits.min || ms > limits.max) {
    throw invalidArgument(
      `${field} ${ms} ms is out of range: give ${limits.min === 0 ? "0" : `${limits.min / 1000} s`} to ${limits.max / MIN} minutes.`,
    );
  }
  return ms;
}

function endpointOf(value: string): string {
  if (value === "") throw invalidArgument("endpoint is required: give the BMC's Redfish service root, e.g. https://10.0.0.11/redfish/v1.");
  if (value.length > 2048) throw invalidArgument("endpoint is longer than 2048 characters.");
  try {
    return parseEndpoint(value).url;
  } catch (err) {
    throw invalidArgument((err as Error).message);
  }
}

function credentialsOf(value: BmcCredentials | undefined): Credentials {
  if (!value || (value.username === "" && value.password === "")) {
    throw invalidArgument(
      "credentials are required: give the BMC account's username and password (the CLI reads the password from --password-file or AETHER_BMC_PASSWORD).",
    );
  }
  // Never quote either back: they are secrets.
  if (value.username === "") throw invalidArgument("credentials.username is empty: give the BMC account's name.");
  if (value.username.length > 256 || CONTROL.test(value.username))
    throw invalidArgument("credentials.username must be 1 to 256 printable characters.");
  if (value.password === "") throw invalidArgument("credentials.password is empty: give the BMC account's password.");
  if (value.password.length > 1024) throw invalidArgument("credentials.password is longer than 1024 characters.");
  if (CONTROL.test(value.password))
    throw invalidArgument("credentials.password contains control characters (a trailing newline from a password file?); remove them.");
  return { username: value.username, password: value.password };
}

function tlsOf(value: BmcTls | undefined): { caPem?: string; insecureSkipVerify: boolean; serverName: string } {
  const serverName = value?.serverName ?? "";
  if (
    serverName !== "" &&
    (serverName.length > 253 || !(isIP(serverName) || /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(serverName)))
  ) {
    throw invalidArgument(`tls.server_name ${JSON.stringify(clip(serverName))} is not a host name or an IP address.`);
  }
  const v = value?.verification;
  if (v?.case === "caPem") {
    if (v.value.length > 256 * 1024) throw invalidArgument("tls.ca_pem is larger than 256 KiB; give only the CA certificate.");
    try {
      new X509Certificate(v.value);
    } catch {
      throw invalidArgument(
        'tls.ca_pem holds no PEM certificate: give the BMC\'s CA certificate (or its self-signed certificate), "-----BEGIN CERTIFICATE-----" and all.',
      );
    }
    return { caPem: v.value, insecureSkipVerify: false, serverName };
  }
  if (v?.case === "insecureSkipVerify") {
    if (!v.value)
      throw invalidArgument("tls.insecure_skip_verify is set to false: leave it unset to use the system trust store, or give ca_pem.");
    return { insecureSkipVerify: true, serverName };
  }
  return { insecureSkipVerify: false, serverName };
}

function profileOf(value: BmcProfile): BmcProfileName {
  switch (value) {
    case BmcProfile.UNSPECIFIED:
    case BmcProfile.DMTF_GENERIC:
      return "dmtf";
    case BmcProfile.ILO5:
      return "ilo5";
    default:
      throw invalidArgument(`profile ${value} is not a BMC profile: use BMC_PROFILE_ILO5 or BMC_PROFILE_DMTF_GENERIC.`);
  }
}

function requestIdOf(value: string): string {
  if (value.length > 128 || CONTROL.test(value)) throw invalidArgument("request_id must be at most 128 printable characters.");
  return value;
}

/** The caller's deadline and cancellation, handed down to the BMC's requests. */
function limitsOf(ctx: HandlerContext): OperationOptions {
  const t = ctx.timeoutMs();
  return { signal: ctx.signal, ...(t !== undefined ? { deadlineMs: Date.now() + t } : {}) };
}

function messagesOf(messages: BmcMessage[]) {
  return messages.map((m) => create(BmcMessageSchema, m));
}

/** A RedfishError as a ConnectError: its Code, the node in the sentence, the BMC's messages as details. */
export function bmcError(err: unknown, node: string): unknown {
  if (!(err instanceof RedfishError)) return err;
  const code =
    err.kind === "invalid"
      ? Code.InvalidArgument
      : err.kind === "timeout"
        ? Code.DeadlineExceeded
        : err.kind === "unreachable"
          ? Code.Unavailable
          : err.kind === "refused" && err.statusCode >= 500
            ? Code.Unavailable
            : // unauthorized (the BMC refused aetherd's stored credentials: not the caller's), refused, protocol
              Code.FailedPrecondition;
  const details = err.messages.map((m) => ({ desc: BmcMessageSchema, value: { ...m } }));
  return new ConnectError(`BMC of node ${node}: ${err.message}`, code, undefined, details);
}

export function fenceService(registry: BmcRegistry): ServiceImpl<typeof FenceService> {
  const clusterWide = (ctx: HandlerContext) =>
    requireClusterWide(ctx.values.get(scopeKey), "use the BMCs of nodes (fencing acts on whole hosts)");
  const target = (value: string) => registry.resolve(reference("bmc", value));

  const bmcMessage = (r: BmcRecord): Bmc =>
    create(BmcSchema, {
      id: r.id,
      node: r.node,
      labels: r.labels,
      createTime: timestamp(r.createTimeMs),
      state: STATE[r.state],
      stateReason: r.stateReason,
      endpoint: r.endpoint,
      profile: PROFILE[r.profile],
      tls: create(BmcTlsSchema, {
        verification:
          r.tls.caPem !== undefined
            ? { case: "caPem", value: r.tls.caPem }
            : r.tls.insecureSkipVerify
              ? { case: "insecureSkipVerify", value: true }
              : { case: undefined },
        serverName: r.tls.serverName,
      }),
      systemPath: r.systemPath,
      manufacturer: r.manufacturer,
      model: r.model,
      firmwareVersion: r.firmwareVersion,
      powerState: POWER[r.powerState],
      ...(r.checkTimeMs !== undefined ? { checkTime: timestamp(r.checkTimeMs) } : {}),
    });

  return {
    async registerBmc(req, ctx) {
      clusterWide(ctx);
      const node = dnsLabel("node", req.node);
      const input = {
        node,
        labels: labels(req.labels),
        endpoint: endpointOf(req.endpoint),
        profile: profileOf(req.profile),
        credentials: credentialsOf(req.credentials),
        tls: tlsOf(req.tls),
        allowUnreachable: req.allowUnreachable,
        replace: req.replace,
        requestId: requestIdOf(req.requestId),
      };
      try {
        return { bmc: bmcMessage(await registry.register(input, limitsOf(ctx))) };
      } catch (err) {
        throw bmcError(err, node);
      }
    },

    async unregisterBmc(req, ctx) {
      clusterWide(ctx);
      await registry.unregister(reference("bmc", req.bmc));
      return {};
    },

    async listBmcs(req, ctx) {
      clusterWide(ctx);
      const terms = labelFilter(req.filter);
      const wanted = req.state;
      if (!(wanted in BmcState)) throw invalidArgument(`state ${wanted} is not a BMC state.`);
      const all = registry
        .list()
        .filter((r) => matchesFilter(r.labels, terms) && (wanted === BmcState.UNSPECIFIED || STATE[r.state] === wanted));
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { bmcs: page.map(bmcMessage), nextPageToken };
    },

    async getPowerStatus(req, ctx) {
      clusterWide(ctx);
      const record = target(req.bmc);
      try {
        const { status } = await registry.powerStatus(record.id, limitsOf(ctx));
        return create(GetPowerStatusResponseSchema, {
          bmc: bmcMessage(record),
          powerState: POWER[status.powerState],
          rawPowerState: status.raw,
          allowableResetTypes: status.allowableResetTypes,
          readTime: timestamp(status.readTimeMs),
        });
      } catch (err) {
        throw bmcError(err, record.node);
      }
    },

    async fence(req, ctx) {
      clusterWide(ctx);
      const record = target(req.bmc);
      const timeoutMs = bounded("timeout", req.timeout, LIMITS.fenceTimeout);
      const pollIntervalMs = bounded("poll_interval", req.pollInterval, LIMITS.pollInterval);
      if (pollIntervalMs > timeoutMs)
        throw invalidArgument(
          `poll_interval (${pollIntervalMs} ms) is longer than timeout (${timeoutMs} ms); poll more often than the deadline.`,
        );
      if (req.reason.length > 1024 || /[\u0000-\u0009\u000b-\u001f\u007f]/.test(req.reason))
        throw invalidArgument("reason must be at most 1024 printable characters.");
      // Not the caller's signal: a ForceOff once sent is followed through to its read-back even if
      // the caller goes away (and a retry with the same request_id then gets the result).
      const t = ctx.timeoutMs();
      try {
        const { outcome: o } = await registry.fence(
          record.id,
          { timeoutMs, pollIntervalMs, reason: req.reason, requestId: requestIdOf(req.requestId) },
          t !== undefined ? { deadlineMs: Date.now() + t } : {},
        );
        return create(FenceResponseSchema, {
          confirmed: o.confirmed,
          reason: o.reason,
          alreadyOff: o.alreadyOff,
          powerState: POWER[o.powerState],
          rawPowerState: o.rawPowerState,
          startTime: timestamp(o.startTimeMs),
          ...(o.commandTimeMs !== undefined ? { commandTime: timestamp(o.commandTimeMs) } : {}),
          ...(o.confirmTimeMs !== undefined ? { confirmTime: timestamp(o.confirmTimeMs) } : {}),
          ...(o.commandLatencyMs !== undefined ? { commandLatency: duration(o.commandLatencyMs) } : {}),
          totalDuration: duration(Math.max(0, o.totalDurationMs)),
          pollCount: o.pollCount,
          actionStatusCode: o.actionStatusCode,
          messages: messagesOf(o.messages),
        });
      } catch (err) {
        throw bmcError(err, record.node);
      }
    },

    async powerOn(req, ctx) {
      clusterWide(ctx);
      const record = target(req.bmc);
      const timeoutMs = bounded("timeout", req.timeout, LIMITS.powerOnTimeout);
      const pollIntervalMs = bounded("poll_interval", req.pollInterval, LIMITS.pollInterval);
      try {
        const { outcome: o } = await registry.powerOn(record.id, { ...limitsOf(ctx), timeoutMs, pollIntervalMs });
        return create(PowerOnResponseSchema, {
          alreadyOn: o.alreadyOn,
          powerState: POWER[o.powerState],
          rawPowerState: o.rawPowerState,
          actionStatusCode: o.actionStatusCode,
          messages: messagesOf(o.messages),
        });
      } catch (err) {
        throw bmcError(err, record.node);
      }
    },

    async reset(req, ctx) {
      clusterWide(ctx);
      const record = target(req.bmc);
      if (req.resetType === "")
        throw invalidArgument(
          "reset_type is required: give a Redfish ResetType the system allows (see `aether fence status NODE`), e.g. ForceRestart.",
        );
      if (!/^[A-Za-z]{1,64}$/.test(req.resetType))
        throw invalidArgument(
          `reset_type ${JSON.stringify(clip(req.resetType))} is not a Redfish ResetType (letters only, e.g. ForceRestart).`,
        );
      try {
        const { outcome: o } = await registry.reset(record.id, req.resetType, limitsOf(ctx));
        return create(ResetResponseSchema, {
          actionStatusCode: o.actionStatusCode,
          messages: messagesOf(o.messages),
          powerState: POWER[o.powerState],
          rawPowerState: o.rawPowerState,
        });
      } catch (err) {
        throw bmcError(err, record.node);
      }
    },
  };
}
