// Errors every handler of aetherd and aether-aggregator raises: a Code plus a sentence a person can
// act on (what failed, why, what to do).
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

/** The sentence of any error: a ConnectError's own message with its code ("[unavailable] ..."), else the message. */
export function describeError(err: unknown): string {
  if (err instanceof ConnectError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
