// Structured logs (pino): to stderr for whoever runs aetherd, and to <state>/aetherd.log so that
// ObserveService can stream the daemon's own log.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino, { type Logger } from "pino";

export function createLogger(level: string, file: string): Logger {
  mkdirSync(dirname(file), { recursive: true });
  return pino(
    { level, base: { service: "aetherd" }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.multistream([
      { level: level as pino.Level, stream: process.stderr },
      { level: level as pino.Level, stream: pino.destination({ dest: file, append: true, sync: false }) },
    ]),
  );
}
