// Structured logs (pino): to stderr for whoever runs the server, and to a file in its state
// directory (aetherd's <state>/aetherd.log, which ObserveService streams; the aggregator's
// <state>/aggregator.log).
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino, { type Logger } from "pino";

/** service: the program's name on every line ("aetherd", "aether-aggregator"). */
export function createLogger(level: string, file: string, service: string): Logger {
  mkdirSync(dirname(file), { recursive: true });
  return pino(
    { level, base: { service }, timestamp: pino.stdTimeFunctions.isoTime },
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
