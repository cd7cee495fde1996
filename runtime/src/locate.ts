// Where the pieces aetherscript runs with are installed: this package's compiled files, the SDK,
// the Deno binary from the pinned `deno` npm package, and tsx.
import { existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, platform } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** runtime/dist: the compiled preloads and the manifest driver. */
export const distDir = dirname(fileURLToPath(import.meta.url));

/** The SDK's compiled entry point (sdk/dist/index.js), as this package resolves `@aether/sdk`. */
export function sdkEntry(): string {
  return realpathSync(fileURLToPath(import.meta.resolve("@aether/sdk")));
}

/** The node_modules folder that the SDK's own dependencies resolve from. */
export function sdkDependencyRoot(): string {
  const entry = realpathSync(fileURLToPath(import.meta.resolve("@connectrpc/connect")));
  const at = entry.lastIndexOf("/node_modules/");
  return entry.slice(0, at + "/node_modules".length);
}

/** Import-map entries for `@aether/sdk` and each of its generated modules (for Deno). */
export function sdkImportMap(): Record<string, string> {
  const entry = sdkEntry();
  const dist = dirname(entry);
  const imports: Record<string, string> = { "@aether/sdk": `file://${entry}` };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith("_pb.js")) imports[`@aether/sdk/${relative(dist, path).replace(/\.js$/, "")}`] = `file://${path}`;
    }
  };
  walk(join(dist, "gen"));
  return imports;
}

/** The Deno binary shipped by the pinned `deno` npm package for this platform. */
export function denoBinary(): string {
  const pkgDir = dirname(require.resolve("deno/package.json"));
  const target = platform() === "linux" ? `linux-${arch() === "arm64" ? "arm64" : "x64"}-glibc` : `${platform()}-${arch()}`;
  const candidates = [join(pkgDir, "deno")];
  try {
    candidates.unshift(join(dirname(createRequire(join(pkgDir, "package.json")).resolve(`@deno/${target}/package.json`)), "deno"));
  } catch {
    // the platform package is missing; the error below says so
  }
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(`the Deno engine is not installed for ${target} (npm package @deno/${target}); run npm ci, or use --engine node.`);
  }
  return found;
}

/** tsx's ESM entry, for `node --import`. */
export function tsxLoaderUrl(): string {
  return import.meta.resolve("tsx");
}
