// @aether/fence: the Redfish client and the BMC driver interface it implements, for aetherd's fence
// room (daemon/src/fence: FenceService, its registry and credentials) and the aggregator's deadman
// switch. A library of its own, so neither program imports the other for it.
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
