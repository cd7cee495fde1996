// Structured logs (pino): to stderr for whoever runs the aggregator, and to a file in its state
// directory.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino, { type Logger } from "pino";

export function createLogger(level: string, file: string): Logger {
  mkdirSync(dirname(file), { recursive: true });
  return pino(
    { level, base: { service: "aether-aggregator" }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.multistream([
      { level: level as pino.Level, stream: process.stderr },
      { level: level as pino.Level, stream: pino.destination({ dest: file, append: true, sync: false }) },
    ]),
  );
}

/** A logger that drops everything (library use without logs). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
