// Module hooks for the Node engine (registered by node-preload): `@aether/sdk` resolves to this
// installation's SDK wherever the script lives, and scripts are ES modules compiled from TypeScript
// (as under Deno): top-level await works whether or not a package.json says "type": "module", and
// an extensionless script run by its shebang is TypeScript too.
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import { transform } from "esbuild";

interface HookData {
  /** file: URL of the script being run. */
  entryUrl: string;
  /** A file: URL inside this package, from which `@aether/sdk` resolves to our SDK. */
  sdkParentUrl: string;
}

interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
interface LoadResult {
  format?: string;
  source?: string | ArrayBuffer | Uint8Array;
  shortCircuit?: boolean;
}
type NextResolve = (specifier: string, context?: ResolveContext) => Promise<{ url: string; format?: string | null }>;
type NextLoad = (url: string, context?: { format?: string | null }) => Promise<LoadResult>;

let data: HookData;

export function initialize(init: HookData): void {
  data = init;
}

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve) {
  if (specifier === "@aether/sdk" || specifier.startsWith("@aether/sdk/")) {
    return next(specifier, { ...context, parentURL: data.sdkParentUrl });
  }
  return next(specifier, context);
}

/** The script and the TypeScript files next to it; not packages, and not explicit CommonJS (.cts). */
function isScriptModule(url: string): boolean {
  if (!url.startsWith("file:") || url.includes("/node_modules/")) return false;
  const ext = extname(fileURLToPath(url));
  return ext === ".ts" || ext === ".mts" || (ext === "" && url === data.entryUrl);
}

export async function load(url: string, context: { format?: string | null }, next: NextLoad): Promise<LoadResult> {
  if (isScriptModule(url)) {
    const path = fileURLToPath(url);
    const source = await readFile(path, "utf8");
    const out = await transform(source, { loader: "ts", format: "esm", sourcemap: "inline", sourcefile: path, target: "node20" });
    return { format: "module", source: out.code, shortCircuit: true };
  }
  return next(url, context);
}
