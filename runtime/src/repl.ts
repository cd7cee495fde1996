// `aetherscript` with no file: a REPL with a connected client bound as `aether`, top-level await,
// persistent history, and completion of services and methods.
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import * as repl from "node:repl";
import * as sdk from "@aether/sdk";
import type { AetherClient } from "@aether/sdk";

/** Service names on the client and the methods of each, for completion. */
export function clientShape(aether: AetherClient): Record<string, string[]> {
  const shape: Record<string, string[]> = {};
  for (const [key, value] of Object.entries(aether)) {
    if (typeof value !== "object" || value === null || key === "transport") continue;
    shape[key] = Object.keys(value)
      .filter((m) => typeof (value as Record<string, unknown>)[m] === "function")
      .sort();
  }
  return shape;
}

/** Completes `aether.<service>` and `aether.<service>.<method>` at the end of a line; undefined otherwise. */
export function completeAether(line: string, shape: Record<string, string[]>): [string[], string] | undefined {
  const method = /\baether\.(\w+)\.(\w*)$/.exec(line);
  if (method) {
    const [, service = "", prefix = ""] = method;
    const names = (shape[service] ?? []).filter((m) => m.startsWith(prefix));
    return [names, prefix];
  }
  const service = /\baether\.(\w*)$/.exec(line);
  if (service) {
    const prefix = service[1] ?? "";
    return [
      Object.keys(shape)
        .filter((s) => s.startsWith(prefix))
        .sort(),
      prefix,
    ];
  }
  return undefined;
}

export async function startRepl(historyFile: string): Promise<void> {
  const aether = await sdk.connect();
  const shape = clientShape(aether);
  const out = process.stdout.isTTY ? `connected to ${aether.address}; try: await aether.node.getNodeInfo({})\n` : "";
  process.stdout.write(out);
  const server = repl.start({ prompt: "aether> ", useGlobal: false, breakEvalOnSigint: true });
  server.context.aether = aether;
  server.context.sdk = sdk;
  // The REPL keeps its readline completer in `completer`; wrap it so Aether's names come first.
  type Callback = (err: Error | null, result?: [string[], string]) => void;
  const holder = server as unknown as { completer: (line: string, callback: Callback) => void };
  const fallback = holder.completer.bind(server);
  holder.completer = (line, callback) => {
    const mine = completeAether(line, shape);
    if (mine) callback(null, mine);
    else fallback(line, callback);
  };
  mkdirSync(dirname(historyFile), { recursive: true });
  server.setupHistory(historyFile, () => {});
  server.on("exit", () => {
    aether.close();
    process.exit(0);
  });
}

export function defaultHistoryFile(): string {
  const base = process.env.XDG_STATE_HOME ?? join(process.env.HOME ?? "/tmp", ".local", "state");
  return join(base, "aether", "repl_history");
}
