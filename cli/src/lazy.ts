// Libraries only some commands need, loaded on their first use instead of at start: aether starts
// afresh for every command, and loading every library of every command was most of a short
// command's time (about 0.8 s of CPU; scripts and the tests run it hundreds of times).
// require() keeps the callers synchronous; these libraries ship CommonJS builds for Node.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** A function returning the module `id`, required on its first call. */
export function lazyRequire<T>(id: string, onLoad?: (module: T) => void): () => T {
  let module: T | undefined;
  return () => {
    if (module === undefined) {
      module = require(id) as T;
      onLoad?.(module);
    }
    return module;
  };
}
