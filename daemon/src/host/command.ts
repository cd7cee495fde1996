// The one way aetherd runs host commands: argv arrays through node:child_process, with a timeout and
// errors that carry the command's own stderr, never ad-hoc shell strings.
//
// Straight on child_process rather than through execa: execa is some 100 modules and 1.6 MiB of heap
// that every aetherd loaded at start (it runs `zfs version` and `qemu --version` there), for the
// little this file needs of it (issue 18: aetherd's idle footprint).
import { spawn, type ChildProcess } from "node:child_process";

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

/** More output than this from one host command is refused (the command is killed), as execa did. */
const MAX_OUTPUT_BYTES = 100 * 1024 * 1024;
/** A command that ignores SIGTERM at its timeout gets SIGKILL this much later. */
const FORCE_KILL_AFTER_MS = 5_000;

/** What ended a command: its exit code, the signal that killed it, or why it could not start. */
interface Ending {
  exitCode: number | undefined;
  signal: NodeJS.Signals | undefined;
  spawnError: Error | undefined;
  /** Whether the command ran at all (a spawn error before it did: no such file, no permission). */
  started: boolean;
}

/** Collects a stream's bytes up to MAX_OUTPUT_BYTES; past that, `over` is called once. */
function collect(stream: NodeJS.ReadableStream | null, over: () => void): () => string {
  const chunks: Buffer[] = [];
  let size = 0;
  stream?.on("data", (chunk: Buffer) => {
    if (size > MAX_OUTPUT_BYTES) return;
    size += chunk.length;
    if (size > MAX_OUTPUT_BYTES) over();
    else chunks.push(chunk);
  });
  return () => Buffer.concat(chunks).toString("utf8");
}

/** Settles once the child has ended and its streams are closed; never rejects. */
function ended(child: ChildProcess): Promise<Ending> {
  return new Promise((resolve) => {
    let spawnError: Error | undefined;
    child.once("error", (err) => {
      spawnError = err;
      // A child that never started emits no close when it has no streams to close.
      if (child.pid === undefined) resolve({ exitCode: undefined, signal: undefined, spawnError, started: false });
    });
    child.once("close", (code, signal) =>
      resolve({ exitCode: code ?? undefined, signal: signal ?? undefined, spawnError, started: child.pid !== undefined }),
    );
  });
}

/** Why a command failed when it said nothing on stderr: the start error, the signal, or its exit code. */
function shortReason(ending: Ending): string {
  // An error after the start is the abort of the caller's signal, which killed the command.
  if (ending.spawnError)
    return ending.started ? `${ending.spawnError.message} (${ending.signal ?? "ended"})` : `could not start: ${ending.spawnError.message}`;
  if (ending.signal) return `killed by ${ending.signal}`;
  return `exit code ${ending.exitCode}`;
}

/** One final newline off, as a shell's $(...) would. */
function stripFinalNewline(text: string): string {
  return text.endsWith("\r\n") ? text.slice(0, -2) : text.endsWith("\n") ? text.slice(0, -1) : text;
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
  const command = [file, ...args].join(" ");
  const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
  const ending = ended(child);
  let tooMuch = false;
  const over = () => {
    tooMuch = true;
    child.kill("SIGKILL");
  };
  const stdout = collect(child.stdout, over);
  const stderr = collect(child.stderr, over);
  // A command that reads its stdin sees the input, or at once its end.
  child.stdin?.on("error", () => undefined);
  child.stdin?.end(options.input);
  let timedOut = false;
  let forceKill: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGTERM");
    forceKill = setTimeout(() => child.kill("SIGKILL"), FORCE_KILL_AFTER_MS);
  }, timeout);
  const end = await ending;
  clearTimeout(timer);
  clearTimeout(forceKill);
  const out = stripFinalNewline(stdout());
  const err = stripFinalNewline(stderr());
  if (timedOut) throw new HostCommandError(`${command} did not finish within ${timeout} ms`, command, err, undefined);
  if (tooMuch)
    throw new HostCommandError(`${command} failed: it wrote more than ${MAX_OUTPUT_BYTES} bytes of output`, command, err, undefined);
  const failed = end.spawnError !== undefined || end.exitCode !== 0;
  const accepted = end.exitCode !== undefined && end.exitCode !== 0 && options.acceptExitCodes?.(end.exitCode) === true;
  if (failed && !accepted) {
    const why = err.trim() !== "" ? err.trim() : shortReason(end);
    throw new HostCommandError(`${command} failed: ${why}`, command, err.trim(), end.exitCode);
  }
  return { stdout: out, stderr: err };
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
  const child = spawn(file, args, {
    stdio: [options.stdin ? "pipe" : "ignore", options.stdout ? "pipe" : "ignore", "pipe"],
    // An abort ends the command with SIGTERM (the spawn option's default signal).
    ...(options.signal && { signal: options.signal }),
  });
  const stderr = collect(child.stderr, () => undefined);
  const done = (async () => {
    const end = await ended(child);
    if (end.exitCode === 0 && end.spawnError === undefined) return;
    const text = stderr().trim();
    const why = text !== "" ? text : shortReason(end);
    throw new HostCommandError(`${command} failed: ${why}`, command, text, end.exitCode);
  })();
  done.catch(() => undefined);
  return { child: child as unknown as StreamingHostCommand["child"], done };
}
