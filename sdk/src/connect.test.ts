import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect } from "./connect.js";
import { resolveTarget } from "./target.js";
import { DEFAULT_CONTEXT, readClientConfig, selectContext } from "./client-config.js";
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

describe("contexts of the client config (issue 23, item 10)", () => {
  const saved = { host: process.env.AETHER_HOST, context: process.env.AETHER_CONTEXT };
  beforeEach(() => {
    delete process.env.AETHER_HOST;
    delete process.env.AETHER_CONTEXT;
  });
  afterEach(() => {
    for (const [key, value] of [
      ["AETHER_HOST", saved.host],
      ["AETHER_CONTEXT", saved.context],
    ] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });
  const configFile = (text: string) => {
    const path = join(mkdtempSync(join(tmpdir(), "aether-cfg-")), "config.toml");
    writeFileSync(path, text);
    return path;
  };
  const twoContexts = () =>
    configFile(
      [
        'current-context = "b"',
        'address = "unix:///top.sock"',
        "[contexts.b]",
        'address = "https://b:7443"',
        'ca = "/b/ca.pem"',
        'cert = "/b/c.pem"',
        'key = "/b/c.key"',
        'tenant = "team-b"',
        "[contexts.c]",
        'address = "unix:///c.sock"',
        "",
      ].join("\n"),
    );

  it("reads the top-level fields as the context named default, current-context or default when unset", () => {
    const old = readClientConfig(configFile('address = "unix:///old.sock"\n'));
    assert.equal(old.current, DEFAULT_CONTEXT);
    assert.deepEqual([...old.contexts.entries()], [["default", { address: "unix:///old.sock" }]]);
    const cfg = readClientConfig(twoContexts());
    assert.equal(cfg.current, "b");
    assert.deepEqual([...cfg.contexts.keys()], ["default", "b", "c"]);
    assert.equal(selectContext(cfg).context.tenant, "team-b");
    assert.throws(() => selectContext(cfg, "nope"), /no context "nope" .*default, b, c/);
  });

  it("uses the current context, a named one before AETHER_HOST, and an address option before both", () => {
    const cfg = twoContexts();
    assert.deepEqual(resolveTarget({ configPath: cfg }), {
      kind: "https",
      url: "https://b:7443",
      address: "https://b:7443",
      tls: { ca: "/b/ca.pem", cert: "/b/c.pem", key: "/b/c.key" },
    });
    process.env.AETHER_HOST = "unix:///env.sock";
    assert.equal(resolveTarget({ configPath: cfg }).address, "unix:///env.sock");
    assert.equal(resolveTarget({ configPath: cfg, context: "c" }).address, "unix:///c.sock");
    process.env.AETHER_CONTEXT = "default";
    assert.equal(resolveTarget({ configPath: cfg }).address, "unix:///top.sock");
    assert.equal(resolveTarget({ configPath: cfg, address: "unix:///opt.sock", context: "c" }).address, "unix:///opt.sock");
    assert.throws(() => resolveTarget({ configPath: cfg, context: "nope" }), /no context "nope"/);
    assert.throws(() => readClientConfig(configFile('[contexts.default]\naddress = "unix:///x"\n')), /not allowed/);
  });
});
