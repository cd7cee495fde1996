// Exit codes scripts can rely on. Every error is printed on stderr as one sentence.
import { Code, ConnectError } from "@aether/sdk";

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
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  aetherd refused or failed the request (the message says why)
  2  usage error
  3  not found
  4  aetherd could not be reached
  aether exec wait exits with the executable's own exit code (128+N when killed by signal N).`;

/** Prints an error the way every aether command does and exits with its code. */
export function fail(err: unknown): never {
  if (err instanceof ConnectError) {
    process.stderr.write(`aether: ${err.rawMessage}\n`);
    const code =
      err.code === Code.NotFound ? EXIT.notFound : err.code === Code.Unavailable || err.code === Code.Unauthenticated ? EXIT.unreachable : EXIT.failed;
    process.exit(code);
  }
  process.stderr.write(`aether: ${(err as Error).message ?? String(err)}\n`);
  process.exit(EXIT.failed);
}
