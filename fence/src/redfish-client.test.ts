// The Redfish client against the test BMC (test/helpers/test-bmc.ts, HTTPS on 127.0.0.1 serving
// the iLO 5 and DMTF mockups): timeouts and retries on every request, sessions always logged out,
// re-login when a session expires, Basic auth fallback, TLS checks, cancellation.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, describe, it } from "node:test";
import { startTestBmc, type TestBmc, type TestBmcOptions } from "../../test/helpers/test-bmc.js";
import { RedfishClient, RedfishError, type BmcTarget } from "./redfish-client.js";

const started: TestBmc[] = [];
const clients: RedfishClient[] = [];
after(async () => {
  clients.forEach((c) => c.close());
  await Promise.all(started.map((b) => b.close()));
});

async function bmcAndClient(options: TestBmcOptions, target: Partial<BmcTarget> = {}): Promise<{ bmc: TestBmc; client: RedfishClient }> {
  const bmc = await startTestBmc(options);
  started.push(bmc);
  const client = new RedfishClient({
    endpoint: bmc.origin,
    username: bmc.username,
    password: bmc.password,
    caPem: bmc.caPem,
    profile: options.profile,
    ...target,
  });
  clients.push(client);
  return { bmc, client };
}

const kindOf = (kind: RedfishError["kind"], pattern?: RegExp) => (err: unknown) => {
  assert.ok(err instanceof RedfishError, `expected a RedfishError, got ${String(err)}`);
  assert.equal(err.kind, kind, err.message);
  if (pattern) assert.match(err.message, pattern);
  return true;
};

describe("RedfishClient", () => {
  it("discovers both mockups from the service root", async () => {
    for (const profile of ["ilo5", "dmtf"] as const) {
      const { bmc, client } = await bmcAndClient({ profile });
      const d = await client.discover();
      assert.equal(d.systemPath, bmc.systemPath);
      assert.equal(d.resetTarget, `${bmc.systemPath}/Actions/ComputerSystem.Reset`);
      assert.equal(d.powerState, "On");
      assert.equal(d.auth, "session");
      assert.deepEqual(d.allowableResetTypes, [...bmc.allowableResetTypes]);
      assert.equal(d.firmwareVersion, profile === "ilo5" ? "iLO 5 v2.46" : "1.45.455b66-rev4");
      assert.equal(d.vendor, profile === "ilo5" ? "HPE" : "");
      assert.equal(bmc.activeSessions, 0);
      // The login went to the Sessions collection the root names, with the credentials in the body only.
      const login = bmc.requests.find((r) => r.kind === "login");
      assert.equal(login?.path, "/redfish/v1/SessionService/Sessions");
      assert.equal(bmc.requests.filter((r) => r.kind === "logout" && r.status >= 200 && r.status < 300).length, 1);
    }
  });

  it("times out a request that gets no answer, and still logs out", async () => {
    const { bmc, client } = await bmcAndClient({ profile: "ilo5" }, { requestTimeoutMs: 400 });
    await client.powerStatus(); // the Sessions collection and the system are known from now on
    bmc.clearRequests();
    bmc.setMisbehaviour({ kind: "hang", on: "read" });
    const t = Date.now();
    await assert.rejects(client.powerStatus(), kindOf("timeout", /did not answer GET \/redfish\/v1\/Systems\/1 within 400 ms/));
    const took = Date.now() - t;
    assert.ok(took >= 380 && took < 1500, `gave up after the request timeout, not retried (${took} ms)`);
    assert.equal(bmc.requests.filter((r) => r.kind === "read").length, 1, "a timeout is not retried");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(bmc.activeSessions, 0, "logged out after the timeout");
  });

  it("retries a refused connection, then says the BMC is unreachable", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const client = new RedfishClient({ endpoint: `https://127.0.0.1:${port}`, username: "u", password: "p", retries: 2 });
    clients.push(client);
    const t = Date.now();
    await assert.rejects(client.powerStatus(), kindOf("unreachable", /could not be reached.*ECONNREFUSED/));
    assert.ok(Date.now() - t >= 250 + 500 - 50, "two backoffs happened");
  });

  it("retries 503, and 500 on repeatable requests only", async () => {
    const { bmc, client } = await bmcAndClient({ profile: "dmtf" });
    bmc.setMisbehaviour({ kind: "status", status: 503, on: "read", times: 2 });
    assert.equal((await client.powerStatus()).powerState, "On");
    bmc.clearRequests();
    bmc.setMisbehaviour({ kind: "status", status: 500, on: "action" });
    await assert.rejects(client.reset("ForceRestart"), kindOf("refused", /answered HTTP 500/));
    assert.equal(bmc.requests.filter((r) => r.kind === "action").length, 1, "ForceRestart is not repeated");
    bmc.clearRequests();
    assert.equal((await client.powerOn()).alreadyOn, true, "already on: no action sent");
    bmc.powerState = "Off";
    await assert.rejects(client.powerOn(), kindOf("refused", /answered HTTP 500/));
    assert.equal(bmc.requests.filter((r) => r.kind === "action").length, 3, "On is repeated (2 retries)");
    bmc.setMisbehaviour();
    assert.equal(bmc.activeSessions, 0);
  });

  it('fences through PoweringOff, and counts only "Off"', async () => {
    const { bmc, client } = await bmcAndClient({ profile: "ilo5", powerOffDelayMs: 500 });
    const outcome = await client.fence({ timeoutMs: 5000, pollIntervalMs: 50 });
    assert.equal(outcome.confirmed, true);
    assert.equal(outcome.rawPowerState, "Off");
    assert.ok(outcome.pollCount >= 6, `${outcome.pollCount} reads`);
    assert.ok((outcome.confirmTimeMs ?? 0) - (outcome.commandTimeMs ?? 0) >= 450);
    bmc.powerState = "On";
    bmc.setMisbehaviour({ kind: "stuckPoweringOff" });
    const stuck = await client.fence({ timeoutMs: 600, pollIntervalMs: 100 });
    assert.equal(stuck.confirmed, false);
    assert.equal(stuck.powerState, "PoweringOff");
    assert.match(stuck.reason, /deadline passed with PowerState "PoweringOff"/);
    assert.ok(stuck.totalDurationMs >= 550 && stuck.totalDurationMs < 1500, `${stuck.totalDurationMs} ms`);
    assert.equal(bmc.activeSessions, 0);
    await assert.rejects(client.fence({ timeoutMs: 0, pollIntervalMs: 100 }), kindOf("invalid"));
  });

  it("logs in again when the session expires mid-fence, and falls back to Basic auth without sessions", async () => {
    const { bmc, client } = await bmcAndClient({ profile: "dmtf", powerOffDelayMs: 200 });
    bmc.setMisbehaviour({ kind: "expireSessionsOnPowerOff" });
    const outcome = await client.fence({ timeoutMs: 5000, pollIntervalMs: 50 });
    assert.equal(outcome.confirmed, true, outcome.reason);
    assert.equal(bmc.requests.filter((r) => r.kind === "login").length, 2);
    assert.equal(bmc.activeSessions, 0);

    bmc.setMisbehaviour({ kind: "noSessionService" });
    bmc.clearRequests();
    const status = await client.powerStatus();
    assert.equal(status.powerState, "Off");
    await client.powerStatus();
    assert.equal(bmc.requests.filter((r) => r.kind === "login").length, 1, "the missing session service is remembered");
    assert.ok(bmc.requests.filter((r) => r.kind === "read").every((r) => r.auth === "basic"));
  });

  it("says which credentials problem it is, without the credentials", async () => {
    const { bmc } = await bmcAndClient({ profile: "ilo5" });
    const client = new RedfishClient({ endpoint: bmc.url, username: bmc.username, password: "wrong-password-123", caPem: bmc.caPem });
    clients.push(client);
    await assert.rejects(client.discover(), (err: unknown) => {
      kindOf("unauthorized", /refused the credentials \(HTTP 401 Unauthorized: Base\.1\.4\.NoValidSession/)(err);
      assert.equal((err as RedfishError).statusCode, 401);
      assert.ok(!(err as Error).message.includes("wrong-password-123") && !(err as Error).message.includes(bmc.username));
      return true;
    });
    // Basic with a wrong password: the same kind.
    bmc.setMisbehaviour({ kind: "noSessionService" });
    await assert.rejects(client.powerStatus(), kindOf("unauthorized"));
  });

  it("verifies TLS as told: the pinned CA, the server name, or explicitly nothing", async () => {
    const { bmc } = await bmcAndClient({ profile: "dmtf" });
    const make = (t: Partial<BmcTarget>) => {
      const c = new RedfishClient({ endpoint: bmc.url, username: bmc.username, password: bmc.password, ...t });
      clients.push(c);
      return c;
    };
    await assert.rejects(
      make({}).powerStatus(),
      (err: unknown) => kindOf("unreachable", /self-signed certificate/)(err) && (err as RedfishError).tls,
    );
    await assert.rejects(make({ caPem: bmc.caPem, serverName: "wrong.example" }).powerStatus(), kindOf("unreachable", /wrong\.example/));
    assert.equal((await make({ caPem: bmc.caPem, serverName: "bmc.test" }).powerStatus()).powerState, "On");
    assert.equal((await make({ insecureSkipVerify: true }).powerStatus()).powerState, "On");
    assert.throws(() => make({ caPem: bmc.caPem, insecureSkipVerify: true }), kindOf("invalid", /not both/));
    assert.throws(() => make({ endpoint: bmc.url.replace("https", "http") }), kindOf("invalid", /https/));
    assert.equal(bmc.activeSessions, 0);
  });

  it("checks reset types against the allowable values before asking the BMC", async () => {
    const { bmc, client } = await bmcAndClient({ profile: "ilo5" });
    await assert.rejects(client.reset("ForceOn"), (err: unknown) => {
      kindOf("invalid", /reset type ForceOn is not allowed for \/redfish\/v1\/Systems\/1; the BMC allows: On, ForceOff/)(err);
      assert.deepEqual((err as RedfishError).allowed, [...bmc.allowableResetTypes]);
      return true;
    });
    await assert.rejects(client.reset("../x"), kindOf("invalid"));
    assert.equal(bmc.requests.filter((r) => r.kind === "action").length, 0);
    const nmi = await client.reset("Nmi");
    assert.equal(nmi.actionStatusCode, 200);
    assert.deepEqual(bmc.resets, ["Nmi"]);
  });

  it('powers on and waits for "On" when asked', async () => {
    const { bmc, client } = await bmcAndClient({ profile: "dmtf", powerOnDelayMs: 300, initialPowerState: "Off" });
    const res = await client.powerOn({ timeoutMs: 5000, pollIntervalMs: 50 });
    assert.equal(res.alreadyOn, false);
    assert.equal(res.rawPowerState, "On");
    assert.equal(bmc.powerState, "On");
    assert.equal((await client.powerOn()).alreadyOn, true);
  });

  it("stops when cancelled, and still logs out", async () => {
    const { bmc, client } = await bmcAndClient({ profile: "ilo5" });
    bmc.setMisbehaviour({ kind: "stuckPoweringOff" });
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 300);
    const t = Date.now();
    const outcome = await client.fence({ timeoutMs: 10_000, pollIntervalMs: 50, signal: abort.signal });
    assert.equal(outcome.confirmed, false);
    assert.match(outcome.reason, /cancelled/);
    assert.ok(Date.now() - t < 2000);
    assert.equal(bmc.activeSessions, 0);
  });
});
