// Exit codes scripts can rely on. Every error is printed on stderr as one sentence.
import { Code, ConnectError } from "@aether/sdk/client";
import { cliWords } from "./api-words.js";

export const EXIT = {
  ok: 0,
  /** aetherd answered with an error (invalid argument, failed precondition, ...). */
  failed: 1,
  /** The command line was wrong (commander's own exit code for usage errors). */
  usage: 2,
  /** The executable, node or resource does not exist. */
  notFound: 3,
  /** aetherd could not be reached (not running, wrong address, TLS refused). */
  unreachable: 4,
  /**
   * aetherd was reached but refused the caller: its certificate (UNAUTHENTICATED) or what it may do
   * (PERMISSION_DENIED). Apart from 4, so a script does not retry what only new credentials fix.
   */
  denied: 5,
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  aetherd refused or failed the request (the message says why)
  2  usage error (a malformed value, or a number its field cannot hold)
  3  not found
  4  aetherd could not be reached
  5  aetherd refused the caller: certificate not accepted, or not allowed to do this
  aether exec wait exits with the executable's own exit code (128+N when killed by signal N).`;

/** The exit code of each gRPC code that is not simply "refused or failed" (1). */
const EXIT_OF_CODE: ReadonlyMap<Code, number> = new Map([
  [Code.NotFound, EXIT.notFound],
  [Code.Unavailable, EXIT.unreachable],
  [Code.Unauthenticated, EXIT.denied],
  [Code.PermissionDenied, EXIT.denied],
]);

/** Prints an error the way every aether command does (aetherd's sentence in the command's words) and exits with its code. */
export function fail(err: unknown): never {
  if (err instanceof ConnectError) {
    process.stderr.write(`aether: ${cliWords(err.rawMessage)}\n`);
    process.exit(EXIT_OF_CODE.get(err.code) ?? EXIT.failed);
  }
  process.stderr.write(`aether: ${(err as Error).message ?? String(err)}\n`);
  process.exit(EXIT.failed);
}
