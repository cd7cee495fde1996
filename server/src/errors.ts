// Errors every handler of aetherd and aether-aggregator raises: a Code plus a sentence a person can
// act on (what failed, why, what to do). Handlers and request validation (the API layer) raise
// ConnectErrors with the helpers below; domain code (registries, managers) throws DomainError, which
// the API layer maps to the same codes in one place (rpcError).
import { Code, ConnectError } from "@connectrpc/connect";

export const invalidArgument = (sentence: string) => new ConnectError(sentence, Code.InvalidArgument);
export const notFound = (sentence: string) => new ConnectError(sentence, Code.NotFound);
export const alreadyExists = (sentence: string) => new ConnectError(sentence, Code.AlreadyExists);
export const failedPrecondition = (sentence: string) => new ConnectError(sentence, Code.FailedPrecondition);
export const deadlineExceeded = (sentence: string) => new ConnectError(sentence, Code.DeadlineExceeded);
export const internal = (sentence: string) => new ConnectError(sentence, Code.Internal);
export const unavailable = (sentence: string) => new ConnectError(sentence, Code.Unavailable);
export const resourceExhausted = (sentence: string) => new ConnectError(sentence, Code.ResourceExhausted);
export const permissionDenied = (sentence: string) => new ConnectError(sentence, Code.PermissionDenied);
export const unimplemented = (sentence: string) => new ConnectError(sentence, Code.Unimplemented);

/** The sentence of any error: a ConnectError's own message with its code ("[unavailable] ..."), a domain error's as its code, else the message. */
export function describeError(err: unknown): string {
  err = rpcError(err);
  if (err instanceof ConnectError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** What went wrong, in the words of the domain; each kind is answered with one RPC code (CODES). */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "resource_exhausted"
  | "permission_denied"
  | "unavailable"
  | "deadline_exceeded"
  | "internal";

/**
 * What domain code (registries, managers, lookups) throws: a kind and a sentence a person can act
 * on. It knows nothing of RPC; the API layer answers it with the kind's code (rpcError, applied to
 * every RPC by listen()'s interceptor chain), the sentence unchanged.
 */
export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    sentence: string,
  ) {
    super(sentence);
    this.name = "DomainError";
  }
}

/** The one place where a domain error becomes an RPC code. */
const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  permission_denied: Code.PermissionDenied,
  unavailable: Code.Unavailable,
  deadline_exceeded: Code.DeadlineExceeded,
  internal: Code.Internal,
};

/** A DomainError as the ConnectError callers get (same sentence, the kind's code); anything else unchanged. */
export function rpcError(err: unknown): unknown {
  return err instanceof DomainError ? new ConnectError(err.message, CODES[err.kind], undefined, undefined, err) : err;
}

/** The RPC code an error is answered with, whether a domain error or already a ConnectError; undefined for anything else. */
export function rpcCode(err: unknown): Code | undefined {
  const mapped = rpcError(err);
  return mapped instanceof ConnectError ? mapped.code : undefined;
}
