// The one way aetherd runs host commands: argv arrays through execa, with a timeout and errors that
// carry the command's own stderr, never ad-hoc shell strings.
import { execa } from "execa";

export class HostCommandError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly stderr: string,
    readonly exitCode: number | undefined,
  ) {
    super(message);
  }
}

export interface HostCommandResult {
  stdout: string;
  stderr: string;
}

export async function runHost(
  file: string,
  args: readonly string[],
  options: {
    timeoutMs?: number;
    input?: string;
    /** Exit codes that still count as success (smartctl's exit status is a bit mask of findings). */
    acceptExitCodes?: (code: number) => boolean;
  } = {},
): Promise<HostCommandResult> {
  const timeout = options.timeoutMs ?? 30_000;
  const result = await execa(file, args, {
    timeout,
    reject: false,
    stripFinalNewline: true,
    ...(options.input === undefined ? {} : { input: options.input }),
  });
  const command = [file, ...args].join(" ");
  if (result.timedOut) {
    throw new HostCommandError(`${command} did not finish within ${timeout} ms`, command, String(result.stderr), undefined);
  }
  const accepted = result.exitCode !== undefined && result.exitCode !== 0 && options.acceptExitCodes?.(result.exitCode) === true;
  if (result.failed && !accepted) {
    const stderr = String(result.stderr ?? "").trim();
    const why = stderr !== "" ? stderr : (result.shortMessage ?? "failed");
    throw new HostCommandError(`${command} failed: ${why}`, command, stderr, result.exitCode);
  }
  return { stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** Finds an executable on PATH (or an absolute path) without running it. */
export async function which(name: string): Promise<string | undefined> {
  const { access } = await import("node:fs/promises");
  const { constants } = await import("node:fs");
  const candidates = name.includes("/")
    ? [name]
    : (process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .split(":")
        .concat(["/usr/sbin", "/sbin"])
        .filter((d) => d !== "")
        .map((d) => `${d}/${name}`);
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; try the next folder
    }
  }
  return undefined;
}

/** A host command whose input or output the caller streams (zfs send | zfs receive). */
export interface StreamingHostCommand {
  child: import("node:child_process").ChildProcessByStdio<
    import("node:stream").Writable | null,
    import("node:stream").Readable | null,
    null
  >;
  /** Settles when the command ends: rejects with a HostCommandError (its stderr) unless it exited 0. */
  done: Promise<void>;
}

/**
 * Starts a host command with its stdin and/or stdout as streams for the caller; argv only, never a
 * shell. Its stderr is kept for the error. The command is killed when `signal` aborts.
 */
export function spawnHost(
  file: string,
  args: readonly string[],
  options: { stdin: boolean; stdout: boolean; signal?: AbortSignal },
): StreamingHostCommand {
  const command = [file, ...args].join(" ");
  const child = execa(file, args, {
    stdin: options.stdin ? "pipe" : "ignore",
    stdout: options.stdout ? "pipe" : "ignore",
    stderr: "pipe",
    buffer: { stdout: false, stderr: true },
    reject: false,
    ...(options.signal && { cancelSignal: options.signal }),
  });
  const done = (async () => {
    const result = await child;
    if (result.exitCode === 0 && !result.failed) return;
    const stderr = String(result.stderr ?? "").trim();
    const why = stderr !== "" ? stderr : (result.shortMessage ?? "failed");
    throw new HostCommandError(`${command} failed: ${why}`, command, stderr, result.exitCode);
  })();
  done.catch(() => undefined);
  return { child: child as unknown as StreamingHostCommand["child"], done };
}
