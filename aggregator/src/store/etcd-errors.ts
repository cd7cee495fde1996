// How the etcd store tells "could not talk to etcd" from "etcd said no", and says either in a
// sentence: the errors its own timers raise, and the phrasing of etcd3's.
import { EtcdLeaseInvalidError, GRPCCancelledError, GRPCDeadlineExceededError, GRPCUnavailableError, isRecoverableError } from "etcd3";

/** Raised by the timer around a call; translated into StoreUnavailableError. */
export class CallTimeoutError extends Error {}

/** A candidacy's lease went unrenewed for so long that etcd may have expired it. */
export class LeaseUnconfirmedError extends Error {}

export function describeError(error: unknown): string {
  if (error instanceof EtcdLeaseInvalidError) {
    return "the lease could not be renewed (etcd expired or revoked it, or did not answer for twice its TTL)";
  }
  if (!(error instanceof Error)) return String(error);
  if (/circuit breaker is open/i.test(error.message)) {
    return "several requests in a row failed, so the client waits a few seconds before trying it again";
  }
  return error.message.replace(/\s*Resolution note:\s*$/, "");
}

/** Whether an error from etcd3 means "could not talk to etcd" rather than "etcd said no". */
export function isUnreachable(error: unknown): boolean {
  if (error instanceof CallTimeoutError || error instanceof LeaseUnconfirmedError) return true;
  if (error instanceof GRPCUnavailableError || error instanceof GRPCDeadlineExceededError) return true;
  if (error instanceof GRPCCancelledError || error instanceof EtcdLeaseInvalidError) return true;
  if (!(error instanceof Error)) return false;
  // cockatiel's BrokenCircuitError: etcd3 stops calling a host for a while after repeated failures.
  if (/circuit breaker is open/i.test(error.message)) return true;
  return isRecoverableError(error);
}
