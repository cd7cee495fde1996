// A manifest as code: what should run on the node. `aetherscript plan` shows the difference from
// what runs now; `aetherscript apply` makes it so, and running apply again changes nothing.
//   aetherscript plan examples/web.manifest.ts
//   aetherscript apply examples/web.manifest.ts
import { defineManifest } from "@aether/sdk";

export default defineManifest({
  name: "example-web",
  tenant: "examples",
  executables: [
    { name: "web", argv: ["/bin/sh", "-c", "while :; do sleep 1; done"], labels: { tier: "front" } },
    { name: "worker", argv: ["/bin/sleep", "3600"], env: { QUEUE: "default" } },
  ],
});
