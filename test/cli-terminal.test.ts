// Issue 23, item 1: the aether command on terminals, against a real aetherd. Progress is drawn only on
// a terminal with a real width; on a pty nobody sized (script(1) with no terminal of its own reports
// 0 columns, as CI runners and ssh -T wrappers do) the command prints a line or two, finishes, and
// never runs away. It dies on SIGTERM within moments, restoring the terminal, and when whoever reads
// it goes away: its terminal (SIGHUP) or the reader of its pipe (EPIPE).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { stripVTControlCharacters } from "node:util";
import { describe, it } from "node:test";
import { eventually, isRunning, useDaemon } from "./helpers/daemon.js";
import { binDir, runCommand } from "./helpers/run.js";

/** A program that ignores SIGTERM, so `exec stop` has to wait out its grace period. */
const STUBBORN = ["/bin/sh", "-c", 'trap "" TERM; sleep 600'];

interface UnderScript {
  child: ChildProcess;
  /** Everything the terminal showed so far. */
  output(): string;
  /** The aether process (it prints nothing itself: the shell says its pid before exec'ing it). */
  pid: Promise<number>;
  /** script's exit code (with -e: the command's, 128+N when it died of signal N). */
  exited: Promise<number | null>;
}

/**
 * Runs `aether ARGS` in a pseudo-terminal from script(1), with no terminal of our own on stdin: the
 * pty then reports 0 columns and 0 rows, unless `columns` sizes it first (as a real terminal would be).
 */
function underScript(address: string, args: string[], columns?: number): UnderScript {
  const size = columns === undefined ? "" : `stty cols ${columns} rows 20; `;
  // CI in the environment would turn progress off; unset it, so only the terminal's width decides.
  const command = `${size}echo "pid=$$"; exec env -u CI aether ${args.join(" ")}`;
  const child = spawn("script", ["-qefc", command, "/dev/null"], {
    env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, AETHER_HOST: address },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  const pid = eventually(() => /pid=(\d+)/.exec(output)?.[1], 10_000, "the shell under script to print its pid").then(Number);
  return { child, output: () => output, pid, exited };
}

/** Resolves with how long the promise took, or rejects after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)));
  try {
    const value = await Promise.race([promise, timeout]);
    return { value, ms: Date.now() - start };
  } finally {
    clearTimeout(timer);
  }
}

describe("aether on terminals: progress only with a real width, and always ending when told to or left alone", () => {
  const env = useDaemon();

  const startStubborn = async (name: string) => {
    await env.aether.runtime.startExecutable({ name, argv: STUBBORN });
  };
  /** Ends a stubborn executable at once (a stop the CLI began may still be waiting out its grace). */
  const kill = async (name: string) => {
    await env.aether.runtime.stopExecutable({ executable: name, signal: "SIGKILL", gracePeriod: { seconds: 1n } }).catch(() => undefined);
  };

  it("on a pty with 0 columns, exec stop prints its first and last line, nothing in between, and finishes", async () => {
    await startStubborn("zero-columns");
    const run = underScript(env.daemon.address, ["exec", "stop", "zero-columns", "--grace", "2s"]);
    const { value: code, ms } = await within(15_000, "exec stop --grace 2s on a 0-column pty", run.exited);
    const screen = run.output();
    assert.equal(code, 0, screen);
    assert.ok(screen.length < 1024, `a few lines, not a runaway redraw: ${screen.length} bytes`);
    assert.ok(!screen.includes("\u001b"), `nothing is drawn in place (no escape sequences): ${JSON.stringify(screen)}`);
    assert.match(screen, /- stopping zero-columns \(SIGTERM, 2s grace\)\r\n/);
    assert.match(screen, /✔ zero-columns \([0-9a-f-]{36}\) .*SIGKILL/, "then how it ended");
    assert.ok(ms < 10_000, `it ends after the grace period (took ${ms} ms)`);
  });

  it("on a pty with 0 columns, SIGTERM ends exec stop at once, with 128+15", async () => {
    await startStubborn("zero-columns-term");
    const run = underScript(env.daemon.address, ["exec", "stop", "zero-columns-term", "--grace", "60s"]);
    try {
      const pid = await run.pid;
      await eventually(() => (run.output().includes("- stopping zero-columns-term") ? true : undefined), 10_000, "the first line");
      process.kill(pid, "SIGTERM");
      const { value: code } = await within(2000, "exec stop to die of SIGTERM", run.exited);
      assert.equal(code, 128 + 15, run.output());
      assert.equal(isRunning(pid), false);
      assert.ok(run.output().length < 1024, `bounded output: ${run.output().length} bytes`);
    } finally {
      run.child.kill("SIGKILL");
      await kill("zero-columns-term");
    }
  });

  it("on a sized terminal, progress is one line redrawn within the width; SIGTERM clears it, shows the cursor and ends with 128+15", async () => {
    const name = "a-long-name-so-the-progress-line-is-wider-than-the-terminal";
    await startStubborn(name);
    const run = underScript(env.daemon.address, ["exec", "stop", name, "--grace", "60s"], 50);
    try {
      const pid = await run.pid;
      // A few frames: the spinner turns while aetherd waits out the grace period.
      await eventually(() => ((run.output().match(/\r/g)?.length ?? 0) > 5 ? true : undefined), 10_000, "a few frames");
      process.kill(pid, "SIGTERM");
      const { value: code } = await within(2000, "exec stop to die of SIGTERM", run.exited);
      const screen = run.output();
      assert.equal(code, 128 + 15, screen);
      assert.ok(screen.includes("\u001b[?25l"), "the cursor was hidden while drawing");
      assert.ok(
        screen.endsWith("\r\u001b[K\u001b[?25h"),
        `the line is cleared and the cursor shown again: ${JSON.stringify(screen.slice(-40))}`,
      );
      const frames = screen
        .slice(screen.indexOf("\u001b[?25l"))
        .split("\r")
        .map((f) => stripVTControlCharacters(f))
        .filter((f) => f.includes("stopping"));
      assert.ok(frames.length > 3, `frames drawn: ${frames.length}`);
      for (const f of frames) assert.ok(Array.from(f).length <= 49, `a frame fits in 49 of the 50 columns: ${JSON.stringify(f)}`);
      const first = Array.from(frames[0] ?? "");
      assert.equal(first.length, 49, `cut at the width, not wrapped: ${JSON.stringify(frames[0])}`);
      assert.ok(`stopping ${name} (SIGTERM, 60s grace)`.startsWith(first.slice(2).join("")), JSON.stringify(frames[0]));
    } finally {
      run.child.kill("SIGKILL");
      await kill(name);
    }
  });

  it("when its terminal goes away (script killed), a command drawing progress ends too", async () => {
    await startStubborn("orphaned");
    const run = underScript(env.daemon.address, ["exec", "stop", "orphaned", "--grace", "60s"], 80);
    try {
      const pid = await run.pid;
      await eventually(() => (run.output().includes("stopping orphaned") ? true : undefined), 10_000, "progress");
      run.child.kill("SIGKILL");
      await within(
        2000,
        "the orphaned aether to end",
        eventually(() => (isRunning(pid) ? undefined : true), 2000, "its end"),
      );
    } finally {
      await kill("orphaned");
    }
  });

  it("when the reader of its output goes away (EPIPE), a following command ends with 128+13, without a stack trace", async () => {
    await env.aether.runtime.startExecutable({ name: "chatty", argv: ["/bin/sh", "-c", "while :; do echo hello; sleep 0.02; done"] });
    try {
      const r = await runCommand(
        "bash",
        ["-c", 'aether exec logs chatty -f | head -c 20 > /dev/null; echo "aether exited ${PIPESTATUS[0]}"'],
        { env: { AETHER_HOST: env.daemon.address }, timeoutMs: 15_000 },
      );
      assert.equal(r.stdout, "aether exited 141\n", r.stderr);
      assert.equal(r.stderr, "", "no stack trace, no message: nobody is reading");
    } finally {
      await kill("chatty");
    }
  });
});
