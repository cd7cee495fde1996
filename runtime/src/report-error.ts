// How a script's failure is shown, the same under both engines: an Aether error as the one sentence
// it carries (no stack of transport internals), anything else with the script's own stack.

interface ErrorLike {
  name?: string;
  message?: string;
  rawMessage?: string;
  stack?: string;
  /** esbuild's compile errors (Node engine): the message already names file, line and column. */
  errors?: unknown[];
}

/** The text to print for an error that ended a script. */
export function describeFailure(err: unknown): string {
  const e = (typeof err === "object" && err !== null ? err : { message: String(err) }) as ErrorLike;
  switch (e.name) {
    case "ConnectError":
      return `aetherscript: ${e.rawMessage ?? e.message}`;
    case "ManifestError":
    case "ApplyError":
      return `aetherscript: ${e.message}`;
    default:
      if (Array.isArray(e.errors) && e.message?.startsWith("Transform failed")) return `aetherscript: ${e.message}`;
      // The script's frames only: the engine's own module-loading frames say nothing about the script.
      return (e.stack ?? `${e.name ?? "Error"}: ${e.message}`)
        .split("\n")
        .filter((l) => !/\(?(node:internal|ext:)/.test(l))
        .join("\n");
  }
}
