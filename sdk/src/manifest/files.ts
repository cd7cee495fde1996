// Which files of a folder are manifests, the same for `aether apply -f DIR` and `aetherscript export
// DIR` / `apply --watch DIR`: scripts (.ts, .mts, .js, .mjs; not .d.ts) and JSON, directly in the
// folder (shared code lives in subfolders), except the configuration files of the tools a
// TypeScript project keeps next to its code.
const EXTENSIONS = [".ts", ".mts", ".js", ".mjs", ".json"];

/** Tool configurations that are JSON or scripts but never manifests. */
const TOOL_FILES =
  /^(package(-lock)?\.json|tsconfig(\..+)?\.json|jsconfig\.json|deno\.jsonc?|deno\.lock|\.?prettierrc(\..+)?|\.?eslintrc(\..+)?|eslint\.config\..+|vitest\.config\..+)$/;

/** Whether a file in a folder of manifests is one (by its name). */
export function isManifestFileName(name: string): boolean {
  if (name.endsWith(".d.ts") || TOOL_FILES.test(name)) return false;
  return EXTENSIONS.some((e) => name.endsWith(e));
}
