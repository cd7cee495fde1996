// The aggregator's BMC configuration: [[bmcs]] in the config file and in a --bmcs file, checked by
// the schema; passwords read from their files (never from the config or argv), with sentences that
// name the entry and the file but never the password.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ConfigError, loadConfig, readBmcEntries } from "../config.js";

describe("aggregator config: [[bmcs]]", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-bmcs-config-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const base = { socket: join(dir, "agg.sock"), stateDir: join(dir, "state") };
  const file = (name: string, text: string, mode = 0o600) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    chmodSync(path, mode);
    return path;
  };
  const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

  it("reads entries from the config file and the --bmcs file, paths relative to the file that names them", () => {
    file("pw-a", "secret-a\n");
    file("pw-b", "secret-b\nsecond line ignored\n");
    file("ca.pem", CA);
    const config = file(
      "agg.toml",
      `lease_ttl_ms = 5000\nfence_timeout_ms = 20000\n\n[[bmcs]]\nnode = "node-a"\nendpoint = "https://10.0.0.1"\nusername = "fence"\npassword_file = "pw-a"\nca_file = "ca.pem"\nprofile = "ilo5"\n`,
    );
    const bmcs = file(
      "bmcs.toml",
      `[[bmcs]]\nslot = 2\nchassis = "c1"\nendpoint = "https://10.0.0.2/redfish/v1"\nusername = "fence"\npassword_file = "pw-b"\ninsecure = true\nrequest_timeout_ms = 2000\nretries = 0\n`,
    );
    const c = loadConfig({ ...base, config, bmcs, fencePollIntervalMs: 100 });
    assert.equal(c.fence_timeout_ms, 20_000);
    assert.equal(c.fence_poll_interval_ms, 100);
    assert.equal(c.fence_retry_ms, 10_000);
    assert.equal(c.bmcs.length, 2);
    assert.equal(c.bmcs[0]?.password_file, join(dir, "pw-a"));
    const entries = readBmcEntries(c);
    assert.deepEqual(entries, [
      { node: "node-a", endpoint: "https://10.0.0.1", username: "fence", password: "secret-a", caPem: CA, profile: "ilo5" },
      {
        slot: 2,
        chassis: "c1",
        endpoint: "https://10.0.0.2/redfish/v1",
        username: "fence",
        password: "secret-b",
        insecureSkipVerify: true,
        requestTimeoutMs: 2000,
        retries: 0,
      },
    ]);
    assert.ok(!JSON.stringify(c).includes("secret-"), "the parsed config holds file paths, not passwords");
  });

  it("refuses what it cannot use, with a sentence that names the entry and never the password", () => {
    file("pw-ok", "hunter2-secret\n");
    const bad = (name: string, body: string) => file(name, `[[bmcs]]\n${body}\n`);
    const entry = `endpoint = "https://10.0.0.9"\nusername = "fence"\npassword_file = "pw-ok"`;
    const cases: Array<[string, RegExp]> = [
      [`${entry}`, /give either node .* or slot/],
      [`node = "n1"\nslot = 1\n${entry}`, /give either node .* or slot/],
      [`slot = 1\nendpoint = "http://10.0.0.9"\nusername = "fence"\npassword_file = "pw-ok"`, /https:\/\/ URL/],
      [`chassis = "c1"\nnode = "n1"\n${entry}`, /chassis and rack narrow a slot/],
      [`node = "n1"\n${entry}\ninsecure = true\nca_file = "ca.pem"`, /ca_file or insecure = true, not both/],
      [`node = "n1"\n${entry}\npassword = "inline"`, /password/],
    ];
    for (const [i, [body, pattern]] of cases.entries()) {
      assert.throws(
        () => loadConfig({ ...base, bmcs: bad(`bad-${i}.toml`, body) }),
        (err: unknown) => err instanceof ConfigError && pattern.test(err.message),
        body,
      );
    }
    assert.throws(
      () => loadConfig({ ...base, bmcs: file("extra.toml", `lease_ttl_ms = 1\n[[bmcs]]\nnode = "n"\n${entry}\n`) }),
      /may hold only \[\[bmcs\]\] tables; it also has lease_ttl_ms/,
    );

    const read = (body: string) => readBmcEntries(loadConfig({ ...base, bmcs: bad(`read-${body.length}-${Math.random()}.toml`, body) }));
    file("pw-open", "hunter2-secret\n", 0o644);
    file("pw-empty", "\n");
    assert.throws(
      () => read(`node = "n1"\nendpoint = "https://10.0.0.9"\nusername = "fence"\npassword_file = "pw-open"`),
      /password_file .*pw-open of BMC https:\/\/10\.0\.0\.9 .*for node n1.*readable by every user .*chmod 600/,
    );
    assert.throws(
      () => read(`node = "n1"\nendpoint = "https://10.0.0.9"\nusername = "fence"\npassword_file = "pw-empty"`),
      /is empty; put the BMC user's password on its first line/,
    );
    assert.throws(
      () => read(`node = "n1"\nendpoint = "https://10.0.0.9"\nusername = "fence"\npassword_file = "pw-missing"`),
      /cannot use the password_file .*pw-missing .*ENOENT/,
    );
    file("not-ca.pem", "nope");
    assert.throws(() => read(`node = "n1"\n${entry}\nca_file = "not-ca.pem"`), /holds no PEM certificate/);
    assert.throws(
      () =>
        readBmcEntries(
          loadConfig({ ...base, bmcs: file("dup.toml", `[[bmcs]]\nnode = "n1"\n${entry}\n[[bmcs]]\nnode = "n1"\n${entry}\n`) }),
        ),
      /second BMC for the same node/,
    );
    try {
      read(`node = "n1"\n${entry}\nca_file = "not-ca.pem"`);
    } catch (err) {
      assert.ok(!(err as Error).message.includes("hunter2"), "no password in the sentence");
    }
    assert.throws(
      () => loadConfig({ ...base, fenceTimeoutMs: 1000, fencePollIntervalMs: 2000 }),
      /fence_poll_interval_ms: must not be longer than fence_timeout_ms/,
    );
  });
});
