// Loaded with --import before a script under the Node engine: registers the module hooks and
// reports a failure the way aetherscript does (see report-error.ts).
import { register } from "node:module";
import { pathToFileURL } from "node:url";
import { describeFailure } from "../report-error.js";

const entry = process.env.AETHERSCRIPT_ENTRY ?? "";
register("./node-hooks.js", import.meta.url, {
  data: { entryUrl: pathToFileURL(entry).href, sdkParentUrl: import.meta.url },
});

process.on("uncaughtException", (err) => {
  process.stderr.write(`${describeFailure(err)}\n`);
  process.exit(1);
});
