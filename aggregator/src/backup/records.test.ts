// A store record and its file in the backup repository (pure): which keys are backed up, the file's
// path and content, and the way back, byte for byte; a node without what its heartbeats rewrite; the
// diff a restore reports and the summary a commit carries.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clone, create, toJsonString } from "@bufbuild/protobuf";
import { NodeLifecycle, NodeSchema, NodeState, NodeThermalSchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { timestamp } from "@aether/server";
import { backedUpValue, diffRecords, filesOf, isBackedUp, recordFile, recordOf, recordsOf, summarize } from "./records.js";
import { configDocuments } from "./documents.js";

describe("backup records", () => {
  it("backs up the cluster's state, not its event log, its leader record or a bare prefix", () => {
    for (const key of [
      "nodes/n1",
      "placements/w",
      "auctions/a",
      "requests/default/r1",
      "fencing/n1",
      "drains/n1",
      "alerts/thresholds",
      "deployments/d1",
      "deployment-requests/default/r1",
    ])
      assert.ok(isBackedUp(key), key);
    for (const key of ["events/00000000000000000001", "leader", "nodes/", "other/x", "alerts/active/n1/cpu"])
      assert.ok(!isBackedUp(key), key);
    assert.deepEqual(recordOf(recordFile("alerts/thresholds", '{"cpu_warning":0.5}').path, '{"cpu_warning":0.5}'), {
      key: "alerts/thresholds",
      value: '{"cpu_warning":0.5}',
    });
    assert.equal(recordOf("alerts/active%2Fn1%2Fcpu.json", "{}"), undefined, "a raised alert in a backup is not restored");
  });

  it("a compact JSON record becomes an indented file and comes back as the same bytes", () => {
    const value = JSON.stringify({ workloadId: "w-1", name: "web", zeta: 1, alpha: [1, { b: "é\u2028" }], n: 1.5 });
    const { path, content } = recordFile("placements/w-1", value);
    assert.equal(path, "placements/w-1.json");
    assert.match(content, /^\{\n {2}"workloadId": "w-1",\n/);
    assert.ok(content.endsWith("}\n"));
    assert.deepEqual(recordOf(path, content), { key: "placements/w-1", value });
  });

  it("a value that is not compact JSON (a request's workload id) is kept as it is, in a .txt file", () => {
    for (const value of ["6f1c0e0a-workload", '{ "spaced": true }', "42"]) {
      const { path, content } = recordFile("requests/default/retry-1", value);
      assert.equal(path, "requests/default%2Fretry-1.txt");
      assert.equal(content, value);
      assert.deepEqual(recordOf(path, content), { key: "requests/default/retry-1", value });
    }
  });

  it("keys become one file name each, whatever their characters", () => {
    const key = "requests/tenant a/../x%y";
    const { path, content } = recordFile(key, "w");
    assert.equal(path.split("/").length, 2);
    assert.equal(recordOf(path, content)?.key, key);
    assert.equal(recordOf("config/policy.toml", "x"), undefined, "configuration documents are no records");
    assert.equal(recordOf("nodes/sub/n1.json", "{}"), undefined);
  });

  it("a node is backed up without its heartbeat time, lease expiry and temperatures", () => {
    const node = create(NodeSchema, {
      id: "n1",
      name: "n1",
      state: NodeState.READY,
      lifecycle: NodeLifecycle.CORDONED,
      lease: { id: "l1", expireTime: timestamp(2_000_000), ttl: { seconds: 15n, nanos: 0 } },
      heartbeatTime: timestamp(1_000_000),
      thermal: { cpuCelsius: 55 },
    });
    const value = toJsonString(NodeSchema, node);
    const stored = backedUpValue("nodes/n1", value);
    assert.doesNotMatch(stored, /heartbeatTime|expireTime|thermal|cpuCelsius/);
    assert.match(stored, /"lifecycle":"NODE_LIFECYCLE_CORDONED"/);
    assert.match(stored, /"lease":\{"id":"l1","ttl":"15s"\}/);
    // A heartbeat changes nothing that is backed up.
    const later = clone(NodeSchema, node);
    later.heartbeatTime = timestamp(9_000_000);
    later.thermal = create(NodeThermalSchema, { cpuCelsius: 70 });
    if (later.lease) later.lease.expireTime = timestamp(10_000_000);
    assert.equal(backedUpValue("nodes/n1", toJsonString(NodeSchema, later)), stored);
    assert.equal(backedUpValue("placements/w", value), value, "other records are as they are");
  });

  it("diffs and summaries name the records added, changed and removed, in key order", () => {
    const from = new Map([
      ["nodes/a", "1"],
      ["nodes/b", "1"],
      ["placements/x", "1"],
    ]);
    const to = new Map([
      ["nodes/b", "2"],
      ["placements/x", "1"],
      ["auctions/z", "1"],
    ]);
    const changes = diffRecords(from, to);
    assert.deepEqual(changes, [
      { key: "auctions/z", kind: "added" },
      { key: "nodes/a", kind: "removed" },
      { key: "nodes/b", kind: "changed" },
    ]);
    assert.equal(summarize(changes), "1 added, 1 changed, 1 removed: auctions/z, nodes/a, nodes/b");
    assert.equal(summarize([]), "no change");
    const many = Array.from({ length: 7 }, (_, i) => ({ key: `nodes/n${i}`, kind: "added" as const }));
    assert.equal(summarize(many), "7 added: nodes/n0, nodes/n1, nodes/n2, nodes/n3, and 3 more");
    assert.deepEqual(recordsOf(filesOf(to)), to);
  });

  it("BMC registrations are copied field by field: never a password, its file or a field added later", () => {
    const bmc = {
      node: "n1",
      endpoint: "https://10.0.0.121",
      username: "admin",
      password_file: "/etc/aether/bmc-n1.password",
      password: "hunter2",
      profile: "ilo5",
      some_future_secret: "s",
    };
    const docs = configDocuments([bmc], "[[bindings]]\n");
    assert.deepEqual([...docs.keys()], ["config/bmcs/node-n1.json", "config/policy.toml"]);
    const text = docs.get("config/bmcs/node-n1.json") ?? "";
    assert.deepEqual(JSON.parse(text), { node: "n1", endpoint: "https://10.0.0.121", username: "admin", profile: "ilo5" });
    assert.doesNotMatch(text, /hunter2|password|future/);
    const slot = configDocuments([{ slot: 3, chassis: "c7000-a", endpoint: "https://oa", username: "u" }], undefined);
    assert.deepEqual([...slot.keys()], ["config/bmcs/slot-3-chassis-c7000-a.json"]);
  });
});
