// The pure parts of the HAProxy driver: the A/B bucket map, the config's frame, `show stat` and the
// request log ring parsed into statistics, and addresses validated.
import assert from "node:assert/strict";
import { it } from "node:test";
import { frameOf, mapEntries, renderConfig, SIDE_A, SIDE_B } from "./haproxy-config.js";
import { p95FromLog, parseStat } from "./runtime-api.js";
import { address } from "./validate.js";
import { DEFAULT_HEALTH_CHECK, type EndpointSpec } from "./types.js";

const spec: EndpointSpec = {
  name: "web",
  listenHost: "127.0.0.1",
  listenPort: 8080,
  backends: [
    { id: "v1", host: "127.0.0.1", port: 9001, weight: 95, state: "ready" },
    { id: "v2", host: "::1", port: 9002, weight: 5, state: "ready" },
  ],
  healthCheck: DEFAULT_HEALTH_CHECK,
};
const files = { config: "/s/haproxy.cfg", map: "/s/ab.map", pidFile: "/s/haproxy.pid", adminSocket: "/s/admin.sock" };

it("sends hash buckets below percent_a to side A, the rest to side B", () => {
  const split = { key: { type: "header" as const, name: "x-user" }, sideA: ["v1"], sideB: ["v2"], percentA: 30 };
  const entries = mapEntries(split);
  assert.equal(entries.length, 100);
  assert.equal(entries.filter(([, side]) => side === SIDE_A).length, 30);
  assert.deepEqual(entries[29], [29, SIDE_A]);
  assert.deepEqual(entries[30], [30, SIDE_B]);
  assert.equal(mapEntries({ ...split, percentA: 0 }).filter(([, s]) => s === SIDE_A).length, 0);
});

it("changes the frame only for what needs a restart", () => {
  const reweighted = { ...spec, backends: spec.backends.map((b) => ({ ...b, weight: 50 })) };
  assert.equal(frameOf(reweighted), frameOf(spec));
  assert.notEqual(frameOf({ ...spec, listenPort: 8081 }), frameOf(spec));
  const text = renderConfig(spec, files);
  assert.match(text, /bind 127\.0\.0\.1:8080/);
  assert.match(text, /server v2 \[::1\]:9002 weight 5 check inter 2000 rise 2 fall 2/);
  assert.match(text, /stats socket \/s\/admin\.sock mode 600 level admin/);
});

it("parses show stat and the request log into per-backend statistics", () => {
  const csv = [
    "# pxname,svname,scur,status,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,econ,eresp,rtime,chkfail,check_status,addr,req_tot",
    "listener,FRONTEND,3,OPEN,,0,90,0,0,10,,,,,,,100",
    "pool,v1,2,UP,95,0,85,0,0,5,1,2,4,0,L7OK,127.0.0.1:9001,",
    "pool,v2,0,DOWN,5,0,5,0,0,5,0,0,9,3,* L4CON,[::1]:9002,",
    "pool,BACKEND,2,UP,100,0,90,0,0,10,1,2,4,,,,",
  ].join("\n");
  const { backends, frontend } = parseStat(csv);
  assert.deepEqual(frontend, { currentSessions: 3, totalRequests: 100, responses5xx: 10 });
  assert.deepEqual(
    backends.map((b) => [b.id, b.status, b.weight, b.errors, b.responses["5xx"], b.lastCheck]),
    [
      ["v1", "UP", 95, 3, 5, "L7OK"],
      ["v2", "DOWN", 5, 0, 5, "L4CON"],
    ],
  );
  const log = Array.from({ length: 100 }, (_, i) => `<134>x aether-req pool v1 200 ${i + 1}`).join("\n") + "\naether-req pool v2 503 -1\n";
  const p95 = p95FromLog(log);
  assert.equal(p95.get("v1"), 95);
  assert.equal(p95.has("v2"), false, "a request without a response time is not a sample");
});

it("takes IP literal addresses only, saying what to give", () => {
  assert.deepEqual(address("listen", "127.0.0.1:80"), { host: "127.0.0.1", port: 80 });
  assert.deepEqual(address("listen", "[::1]:8080"), { host: "::1", port: 8080 });
  assert.throws(() => address("listen", "localhost:80"), /IP literal/);
  assert.throws(() => address("listen", "::1:80"), /IP literal/);
  assert.throws(() => address("listen", "127.0.0.1:0"), /1 to 65535/);
});
