import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect } from "./connect.js";
import { resolveTarget } from "./target.js";
import { defaultSocketPath } from "./address.js";

describe("finding the daemon", () => {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.AETHER_HOST;
    delete process.env.AETHER_HOST;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.AETHER_HOST;
    else process.env.AETHER_HOST = saved;
  });

  const configFile = (text: string) => {
    const path = join(mkdtempSync(join(tmpdir(), "aether-cfg-")), "config.toml");
    writeFileSync(path, text);
    return path;
  };

  it("prefers the option, then AETHER_HOST, then the config file, then the default socket", () => {
    const cfg = configFile('address = "https://node1:7443"\nca = "/etc/aether/ca.pem"\ncert = "/c.pem"\nkey = "/c.key"\n');
    process.env.AETHER_HOST = "unix:///env.sock";
    assert.deepEqual(resolveTarget({ address: "unix:///opt.sock", configPath: cfg }), {
      kind: "unix",
      path: "/opt.sock",
      address: "unix:///opt.sock",
    });
    assert.deepEqual(resolveTarget({ configPath: cfg }), { kind: "unix", path: "/env.sock", address: "unix:///env.sock" });
    delete process.env.AETHER_HOST;
    assert.deepEqual(resolveTarget({ configPath: cfg }), {
      kind: "https",
      url: "https://node1:7443",
      address: "https://node1:7443",
      tls: { ca: "/etc/aether/ca.pem", cert: "/c.pem", key: "/c.key" },
    });
    const missing = join(tmpdir(), "no-such-dir", "config.toml");
    assert.deepEqual(resolveTarget({ configPath: missing }), {
      kind: "unix",
      path: defaultSocketPath(),
      address: `unix://${defaultSocketPath()}`,
    });
    assert.equal(resolveTarget({ address: "/plain/path.sock" }).address, "unix:///plain/path.sock");
  });

  it("refuses an address it does not understand, and a config file that is not TOML", () => {
    assert.throws(
      () => resolveTarget({ address: "tcp://x:1" }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument,
    );
    assert.throws(() => resolveTarget({ configPath: configFile("address = [") }), /not valid TOML/);
  });

  it("says which address it tried and how to start aetherd when nothing is there", async () => {
    const socket = join(mkdtempSync(join(tmpdir(), "aether-none-")), "aetherd.sock");
    await assert.rejects(connect({ address: `unix://${socket}` }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unavailable);
      assert.equal(
        err.rawMessage,
        `cannot reach aetherd at unix://${socket}: no socket exists there. Start it with \`aetherd --socket ${socket}\` (or \`npm run aetherd -- --socket ${socket}\` in the Aether repository), or point AETHER_HOST at a running daemon.`,
      );
      return true;
    });
  });
});
