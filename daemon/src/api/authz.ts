// What other programs (aether-aggregator) use of aetherd's identity and authorization: the same
// policy file format, roles and tenant scoping on every Aether server.
export { Authorizer, methodsOf, requireClusterWide, scopeKey, type CallerScope } from "./authorize.js";
export { callerOf, certificateCaller, certificateTrustDomain, spiffeRefusal, tenantOf, uriSans, type Caller } from "./identity.js";
export { decide, defaultPolicy, loadPolicy, parsePolicy, PolicyError, ROLES, type Decision, type Policy, type RoleName } from "./policy.js";
