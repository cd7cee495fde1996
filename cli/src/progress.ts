// Progress on a terminal (stopping, booting, importing): one line redrawn in place, never wider than
// the terminal, so it never wraps and there is never more than that one line to clear. It is drawn
// only on a terminal with a real width: a pty nobody sized (script, CI runners, ssh -T wrappers)
// reports 0 columns, and there, as under CI or TERM=dumb, the first and the last line are printed and
// nothing in between. (ora, used before, divided by those 0 columns and cleared Infinity lines in a
// loop that never returned, with signal handlers installed that it could never run: the CLI ignored
// SIGTERM, outlived its parent and wrote gigabytes; issue 23.)
//
// The command line must always die when asked to, and when whoever reads it goes away: while a line
// is drawn, SIGINT, SIGTERM and SIGHUP clear it and show the cursor again, then the process dies of
// the same signal (a shell sees 128+N); with no line drawn nothing is installed and the default
// (dying) applies. Output that can no longer be written (EPIPE, EIO: the reader or the terminal is
// gone) ends the process too: exitWhenOutputGoes.
import { constants } from "node:os";

const UNICODE = process.platform !== "win32" && process.env.TERM !== "linux";
const FRAMES = UNICODE ? ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"] : ["-", "\\", "|", "/"];
const SUCCESS = UNICODE ? "✔" : "+";
const FAILURE = UNICODE ? "✖" : "x";
const INTERVAL_MS = 80;
const HIDE_CURSOR = "\u001b[?25l";
const SHOW_CURSOR = "\u001b[?25h";
const CLEAR_TO_END = "\u001b[K";
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** Text as one line: control characters (a reason with a newline, an escape sequence) become spaces. */
const oneLine = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");

/** The first `width` characters of a line (code points, so a character is never cut in half). */
function fit(line: string, width: number): string {
  const chars = Array.from(line);
  return chars.length <= width ? line : chars.slice(0, Math.max(0, width)).join("");
}

/** Whether a line may be redrawn in place on this stream: a terminal with a real width, not CI, not TERM=dumb. */
export function canRedraw(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && (stream.columns ?? 0) > 0 && process.env.TERM !== "dumb" && !("CI" in process.env);
}

export class Progress {
  private text: string;
  private frame = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly live: boolean;
  private readonly onSignal = (signal: NodeJS.Signals) => this.die(signal);

  constructor(
    text: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.text = oneLine(text);
    this.live = canRedraw(stream);
    if (!this.live) {
      this.write(`- ${this.text}\n`);
      return;
    }
    for (const signal of SIGNALS) process.on(signal, this.onSignal);
    this.write(HIDE_CURSOR);
    this.draw();
    this.timer = setInterval(() => this.draw(), INTERVAL_MS);
    // A forgotten stop must never keep the command alive.
    this.timer.unref();
  }

  /** Shows new text at once (not at the next frame: a fast import would show no progress at all). */
  update(text: string): void {
    this.text = oneLine(text);
    if (this.timer) this.draw();
  }

  /** Ends with a line saying it worked. */
  succeed(text: string): void {
    this.end(`${SUCCESS} ${oneLine(text)}\n`);
  }

  /** Ends with a line saying it failed. */
  fail(text: string): void {
    this.end(`${FAILURE} ${oneLine(text)}\n`);
  }

  /** Ends and leaves nothing behind (an error is printed next). */
  stop(): void {
    this.end("");
  }

  private draw(): void {
    // Read every time: the terminal may be resized, even to nothing (then nothing is drawn).
    const columns = this.stream.columns ?? 0;
    if (columns <= 0) return;
    this.frame = (this.frame + 1) % FRAMES.length;
    // The last column stays free: a line exactly as wide as the terminal wraps on some of them.
    this.write(`\r${fit(`${FRAMES[this.frame]} ${this.text}`, columns - 1)}${CLEAR_TO_END}`);
  }

  private end(last: string): void {
    if (this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.write(`\r${CLEAR_TO_END}${SHOW_CURSOR}`);
      for (const signal of SIGNALS) process.removeListener(signal, this.onSignal);
    }
    if (last) this.write(last);
  }

  /** The terminal as it was, then the death the signal asked for. */
  private die(signal: NodeJS.Signals): never {
    this.end("");
    // No listener is left for it now, so the default action (ending the process) applies; should
    // anything else still listen, the exit code a shell would have seen is used instead.
    process.kill(process.pid, signal);
    process.exit(128 + constants.signals[signal]);
  }

  private write(text: string): void {
    try {
      this.stream.write(text);
    } catch {
      // The terminal is gone; exitWhenOutputGoes ends the process.
    }
  }
}

/**
 * Ends the process when its output can no longer be written: EPIPE (the reader of a pipe went away)
 * exits 141 as SIGPIPE would, EIO (the terminal hung up) 129 as SIGHUP would. Node ignores SIGPIPE,
 * so without this the command would run on (or crash with a stack trace nobody can read).
 */
export function exitWhenOutputGoes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(128 + constants.signals.SIGPIPE);
      if (err.code === "EIO") process.exit(128 + constants.signals.SIGHUP);
      throw err;
    });
  }
}

/** Progress on stderr for a command that prints `json` or not: undefined when stderr is no terminal or for --json. */
export function startProgress(text: string, json: boolean): Progress | undefined {
  return process.stderr.isTTY && !json ? new Progress(text) : undefined;
}
