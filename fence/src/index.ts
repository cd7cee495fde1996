// The fence room's library: the Redfish client and the driver interface it implements, for aetherd's
// FenceService and for other programs (the aggregator's deadman switch imports @aether/daemon/fence).
export {
  RedfishClient,
  RedfishError,
  type BmcProfileName,
  type BmcTarget,
  type RedfishErrorKind,
  type RedfishLogger,
} from "./redfish-client.js";
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
} from "./bmc.js";
export { describeMessages, extendedInfo, parseEndpoint, powerStateOf, type RedfishEndpoint } from "./redfish-messages.js";
