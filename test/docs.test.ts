// The documents a clone of the repository has must not point outside it: every relative link in
// README.md and docs/*.md names a file that exists in the repository.
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

const documents = [
  "README.md",
  ...readdirSync(join(repoRoot, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
];

describe("documentation links", () => {
  it("README.md links to docs/architecture.md", () => {
    assert.match(readFileSync(join(repoRoot, "README.md"), "utf8"), /\]\(docs\/architecture\.md\)/);
  });

  for (const doc of documents) {
    it(`${doc}: every relative link stays in the repository and exists`, () => {
      const text = readFileSync(join(repoRoot, doc), "utf8");
      const targets = [...text.matchAll(/\]\(([^)\s]+)\)/g)]
        .map((m) => m[1] ?? "")
        .filter((t) => !/^[a-z]+:/.test(t) && !t.startsWith("#"));
      for (const target of targets) {
        const path = resolve(dirname(join(repoRoot, doc)), target.replace(/#.*$/, ""));
        const inside = relative(repoRoot, path);
        assert.ok(!inside.startsWith("..") && !inside.startsWith("/"), `${doc} links to ${target}, outside the repository`);
        assert.ok(existsSync(path), `${doc} links to ${target}, which does not exist`);
      }
    });
  }
});
