// Structured logs (pino): to stderr for whoever runs the server, and to a file in its state
// directory (aetherd's <state>/aetherd.log, which ObserveService streams; the aggregator's
// <state>/aggregator.log). The level can change at runtime (setLogLevel, NodeService.SetLogLevel):
// the destinations take every level, and the logger and each of its children filter, so every child
// logger made so far is told the new level too (pino's children copy the level when they are made).
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino, { type Logger } from "pino";

/** The loggers of each root logger createLogger made, so a level change reaches the children too. */
const families = new WeakMap<Logger, Set<WeakRef<Logger>>>();

/** service: the program's name on every line ("aetherd", "aether-aggregator"). */
export function createLogger(level: string, file: string, service: string): Logger {
  mkdirSync(dirname(file), { recursive: true });
  const members = new Set<WeakRef<Logger>>();
  const root = pino(
    {
      level,
      base: { service },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Inherited by the children's children: every descendant is registered.
      onChild: (child) => void members.add(new WeakRef(child)),
    },
    pino.multistream([
      { level: "trace", stream: process.stderr },
      { level: "trace", stream: pino.destination({ dest: file, append: true, sync: false }) },
    ]),
  );
  families.set(root, members);
  return root;
}

/** Sets the level of a logger createLogger made and of every child logger made from it. */
export function setLogLevel(root: Logger, level: string): void {
  root.level = level;
  const members = families.get(root);
  if (!members) return;
  for (const ref of members) {
    const child = ref.deref();
    if (child === undefined) members.delete(ref);
    else child.level = level;
  }
}

/** A logger that drops everything (library use without logs). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
