// What aetherd knows about one executable, and how that is kept on disk.
//
// Each executable has a folder under <state>/executables/<id>/:
//   record.json   the request as validated, written (atomically) by aetherd before the spawn
//   started.json  pid and kernel start time, written by the shim once the program has been exec'd
//   exit.json     exit code or signal, written by the shim when the program has ended
//   stop.json     how a StopExecutable ended it, written by aetherd
//   stdout.log, stderr.log   captured output, capped by the shim
// The state is derived from which of these exist, so a kill -9 of aetherd at any moment leaves a
// folder that the next aetherd reads back to the same truth.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

export const ExecutableSpecSchema = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string(),
  labels: z.record(z.string(), z.string()),
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()),
  cwd: z.string(),
  /** As requested: for a tenant, offsets in the tenant's id block (see tenant-ids.ts). */
  uid: z.number().int().nonnegative(),
  gid: z.number().int().nonnegative(),
  /** The host ids the process runs as; records from before tenant id blocks have none (= uid/gid). */
  hostUid: z.number().int().nonnegative().optional(),
  hostGid: z.number().int().nonnegative().optional(),
  /** Started as pid 1 of a pid namespace of its own (every tenant process: it sees only its own tree). */
  pidNamespace: z.boolean().default(false),
  /** Name path of the cell, as shown to users; "" for none. */
  cell: z.string(),
  /** Id of the cell (stable across renames of nothing, and what a cell's Free looks for). */
  cellId: z.string().default(""),
  /** The cell's OOM-kill counter when the process started: a SIGKILL with a higher count is an OOM kill. */
  cellOomKillsAtStart: z.number().default(0),
  logLimitBytes: z.number().int().positive(),
  requestId: z.string(),
  createTimeMs: z.number(),
});
export type ExecutableSpec = z.infer<typeof ExecutableSpecSchema>;

export const StartedSchema = z.object({
  pid: z.number().int().positive(),
  startTime: z.string(),
  shimPid: z.number().int().positive(),
  shimStartTime: z.string(),
  timeMs: z.number(),
});
export type Started = z.infer<typeof StartedSchema>;

export const ExitSchema = z.object({
  exitCode: z.number().int().nullable(),
  signal: z.number().int(),
  timeMs: z.number(),
  droppedBytes: z.number().int().nonnegative(),
});
export type Exit = z.infer<typeof ExitSchema>;

export const StopSchema = z.object({ reason: z.string() });

export const recordFiles = {
  spec: "record.json",
  started: "started.json",
  exit: "exit.json",
  stop: "stop.json",
  stdout: "stdout.log",
  stderr: "stderr.log",
} as const;

/**
 * Reads and validates one JSON file of an executable's folder; undefined when it does not exist.
 * Synchronous on purpose: these files are a few hundred bytes on local disk and are read on the
 * start/exit hot path, where a thread-pool round trip costs more than the read.
 */
export function readRecordFile<T>(dir: string, file: string, schema: z.ZodType<T>): T | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, file), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  return schema.parse(JSON.parse(text));
}
