// Turns a StartExecutableRequest into a checked spec: every path exists, every size is sane.
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { isAbsolute, normalize } from "node:path";
import type { StartExecutableRequest } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { describeSize } from "@aether/sdk/size";
import { clip, dnsLabel, failedPrecondition, invalidArgument, labels, tenant } from "@aether/server";
import type { StartInput } from "./supervisor.js";

export const DEFAULT_LOG_LIMIT_BYTES = 64 * 1024 * 1024;
const MAX_LOG_LIMIT_BYTES = 16 * 1024 * 1024 * 1024;
const MAX_ARGS = 4096;
const MAX_ENV = 4096;

export async function validateStart(req: StartExecutableRequest, generatedSuffix: string): Promise<StartInput> {
  const argv = req.argv;
  if (argv.length === 0) throw invalidArgument("argv is empty: give the program's absolute path as argv[0], then its arguments.");
  if (argv.length > MAX_ARGS) throw invalidArgument(`argv has ${argv.length} entries; at most ${MAX_ARGS} are allowed.`);
  if (argv.some((a) => a.includes("\0"))) throw invalidArgument("argv contains a NUL character, which no program argument can hold.");
  const program = argv[0] ?? "";
  if (!isAbsolute(program)) {
    throw invalidArgument(
      `argv[0] ${JSON.stringify(clip(program))} is not an absolute path: aetherd does not search PATH; give the full path (for example /usr/bin/${clip(program, 40)}).`,
    );
  }
  await requireExecutableFile(program);

  const envEntries = Object.entries(req.env);
  if (envEntries.length > MAX_ENV) throw invalidArgument(`env has ${envEntries.length} variables; at most ${MAX_ENV} are allowed.`);
  for (const [k, v] of envEntries) {
    if (k === "" || k.includes("=") || k.includes("\0") || v.includes("\0")) {
      throw invalidArgument(
        `env variable ${JSON.stringify(clip(k))} is invalid: names must be non-empty without '=' or NUL, values without NUL.`,
      );
    }
  }

  const cwd = req.cwd === "" ? "/" : req.cwd;
  if (!isAbsolute(cwd) || cwd.includes("\0")) throw invalidArgument(`cwd ${JSON.stringify(clip(cwd))} is not an absolute path.`);
  const cwdStat = await stat(cwd).catch(() => undefined);
  if (!cwdStat) throw failedPrecondition(`cwd ${clip(cwd)} does not exist on this host; create it or pick another working directory.`);
  if (!cwdStat.isDirectory()) throw failedPrecondition(`cwd ${clip(cwd)} is not a directory.`);

  if (req.logLimitBytes > MAX_LOG_LIMIT_BYTES) {
    throw invalidArgument(`log_limit_bytes ${req.logLimitBytes} is larger than the maximum of ${describeSize(MAX_LOG_LIMIT_BYTES)}.`);
  }
  if (req.requestId.length > 128) throw invalidArgument("request_id is longer than 128 characters.");

  const uid = req.uid ?? process.getuid?.() ?? 0;
  const gid = req.gid ?? process.getgid?.() ?? 0;
  const owner = tenant(req.tenant);
  const base = normalize(program).split("/").pop() ?? "exe";
  const name =
    req.name === ""
      ? dnsLabel(
          "name",
          `${
            base
              .toLowerCase()
              .replace(/[^a-z0-9-]+/g, "-")
              .replace(/^-+|-+$/g, "")
              .slice(0, 50) || "exe"
          }-${generatedSuffix}`,
        )
      : dnsLabel("name", req.name);
  return {
    name,
    tenant: owner,
    labels: labels(req.labels),
    argv: [...argv],
    env: { ...req.env },
    cwd,
    uid,
    gid,
    cell: req.cell,
    logLimitBytes: req.logLimitBytes === 0n ? DEFAULT_LOG_LIMIT_BYTES : Number(req.logLimitBytes),
    requestId: req.requestId,
  };
}

async function requireExecutableFile(path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw failedPrecondition(`argv[0] ${clip(path)} does not exist on this host.`);
  if (!st.isFile()) throw failedPrecondition(`argv[0] ${clip(path)} is not a regular file.`);
  try {
    await access(path, constants.X_OK);
  } catch {
    throw failedPrecondition(`argv[0] ${clip(path)} is not executable (no execute permission); chmod +x it or pick another program.`);
  }
}
