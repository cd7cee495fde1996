// FenceService against a real aetherd and test BMCs serving the published HPE iLO 5 and DMTF
// Redfish mockups over HTTPS: registration, power status, fences that are confirmed only by a
// read-back of "Off", power on, resets checked against the allowable values, BMCs that misbehave
// (wrong password, sessions expiring mid-fence, hangs, PoweringOff forever, 500s), credentials that
// never leak, sessions that are always logged out, and registrations that survive a restart.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { randomBytes } from "node:crypto";
import { Code, ConnectError, type AetherClient } from "@aether/sdk";
import { BmcMessageSchema, BmcProfile, BmcState, PowerState } from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import { startDaemon, useDaemon } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { runCommand } from "./helpers/run.js";
import { startTestBmc, type TestBmc, type TestBmcOptions } from "./helpers/test-bmc.js";

const seconds = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : NaN);

/** Test BMCs of one describe block, closed after it; each with a username of its own to grep for. */
function useBmcs() {
  const started: TestBmc[] = [];
  after(async () => {
    await Promise.all(started.map((b) => b.close()));
  });
  return async (options: TestBmcOptions): Promise<TestBmc> => {
    const bmc = await startTestBmc({ username: `fence-op-${randomBytes(4).toString("hex")}`, ...options });
    started.push(bmc);
    return bmc;
  };
}

/** What the tests put in a RegisterBmcRequest. */
interface RegisterInit {
  node: string;
  endpoint?: string;
  profile?: BmcProfile;
  credentials?: { username: string; password: string } | undefined;
  tls?:
    | {
        verification: { case: "caPem"; value: string } | { case: "insecureSkipVerify"; value: boolean } | { case: undefined };
        serverName?: string;
      }
    | undefined;
  labels?: Record<string, string>;
  allowUnreachable?: boolean;
  replace?: boolean;
  requestId?: string;
}

function registration(node: string, bmc: TestBmc, extra: Partial<RegisterInit> = {}): RegisterInit {
  return {
    node,
    endpoint: bmc.url,
    profile: bmc.profile === "ilo5" ? BmcProfile.ILO5 : BmcProfile.DMTF_GENERIC,
    credentials: { username: bmc.username, password: bmc.password },
    tls: { verification: { case: "caPem", value: bmc.caPem } },
    ...extra,
  };
}

/** Every session the BMC handed out was deleted (or expired), and no credential was ever in a URL. */
function assertCleanSessions(bmc: TestBmc): void {
  assert.equal(bmc.activeSessions, 0, `every session is logged out (${bmc.sessionsCreated} created)`);
  for (const r of bmc.requests) {
    assert.ok(!r.url.includes(bmc.password) && !r.url.includes(encodeURIComponent(bmc.password)), `no password in ${r.url}`);
    // iLO names sessions after their user ("root0000000062585183..."): only those paths may hold it.
    if (!r.path.startsWith("/redfish/v1/SessionService/Sessions/")) assert.ok(!r.url.includes(bmc.username), `no username in ${r.url}`);
  }
}

function assertNoSecrets(text: string, bmc: TestBmc, where: string): void {
  assert.ok(!text.includes(bmc.password), `the password of ${bmc.url} appears in ${where}`);
  assert.ok(!text.includes(bmc.username), `the username of ${bmc.url} appears in ${where}`);
  assert.ok(!text.includes(Buffer.from(`${bmc.username}:${bmc.password}`).toString("base64")), `Basic credentials appear in ${where}`);
}

/** The command lines of every process on the machine. */
function allCommandLines(): string {
  const out: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " "));
    } catch {
      // gone meanwhile
    }
  }
  return out.join("\n");
}

describe("FenceService against test BMCs", () => {
  const env = useDaemon();
  const bmc = useBmcs();
  const events: string[] = [];
  const abort = new AbortController();
  let reading: Promise<void> = Promise.resolve();

  before(async () => {
    const stream = env.aether.observe.streamEvents({ kindPrefixes: ["fence."] }, { signal: abort.signal });
    reading = (async () => {
      try {
        for await (const { event } of stream)
          events.push(`${event?.kind} ${event?.resourceName} ${event?.message} ${JSON.stringify(event?.attributes)}`);
      } catch (err) {
        // Ends when the test aborts it or the daemon fixture closes the client first.
        if (!abort.signal.aborted && !(err instanceof ConnectError && err.code === Code.Canceled)) throw err;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
  });
  after(async () => {
    abort.abort();
    await reading;
  });

  for (const profile of ["ilo5", "dmtf"] as const) {
    it(`${profile}: register, status, fence (at once and through PoweringOff), power on, reset`, async () => {
      const b = await bmc({ profile });
      const node = `node-${profile}`;
      const { bmc: reg } = await env.aether.fence.registerBmc(registration(node, b, { labels: { rack: "r1" } }));
      assert.ok(reg);
      assert.equal(reg.node, node);
      assert.match(reg.id, /^[0-9a-f-]{36}$/);
      assert.equal(reg.state, BmcState.REACHABLE, reg.stateReason);
      assert.equal(reg.endpoint, b.url);
      assert.equal(reg.systemPath, b.systemPath);
      assert.equal(reg.powerState, PowerState.ON);
      assert.equal(reg.profile, profile === "ilo5" ? BmcProfile.ILO5 : BmcProfile.DMTF_GENERIC);
      assert.deepEqual(
        [reg.manufacturer, reg.model, reg.firmwareVersion],
        profile === "ilo5" ? ["HPE", "ProLiant DL325 Gen10 Plus", "iLO 5 v2.46"] : ["Contoso", "3500", "1.45.455b66-rev4"],
      );
      assert.equal(reg.tls?.verification.case, "caPem");
      assert.ok(reg.checkTime && reg.createTime);

      const status = await env.aether.fence.getPowerStatus({ bmc: node });
      assert.equal(status.powerState, PowerState.ON);
      assert.equal(status.rawPowerState, "On");
      assert.deepEqual(status.allowableResetTypes, [...b.allowableResetTypes]);
      assert.ok(status.readTime);

      // Delay 0: "Off" at the first read after ForceOff.
      const off = await env.aether.fence.fence({
        bmc: reg.id,
        timeout: seconds(10_000),
        pollInterval: seconds(100),
        reason: "test: at once",
      });
      assert.equal(off.confirmed, true, off.reason);
      assert.equal(off.alreadyOff, false);
      assert.equal(off.powerState, PowerState.OFF);
      assert.equal(off.rawPowerState, "Off");
      assert.equal(off.actionStatusCode, profile === "ilo5" ? 200 : 204);
      if (profile === "ilo5")
        assert.deepEqual(
          off.messages.map((m) => m.messageId),
          ["Base.1.4.Success"],
        );
      assert.equal(off.pollCount, 2);
      assert.ok(off.commandTime && off.confirmTime && off.startTime && off.commandLatency);
      assert.equal(b.powerState, "Off");
      assert.deepEqual(b.resets, ["ForceOff"]);

      // Already off: nothing sent.
      const again = await env.aether.fence.fence({ bmc: node });
      assert.equal(again.confirmed, true);
      assert.equal(again.alreadyOff, true);
      assert.equal(again.actionStatusCode, 0);
      assert.equal(again.pollCount, 1);
      assert.deepEqual(b.resets, ["ForceOff"]);

      const on = await env.aether.fence.powerOn({ bmc: node });
      assert.equal(on.alreadyOn, false);
      assert.equal(on.powerState, PowerState.ON);
      assert.equal(b.powerState, "On");
      assert.equal((await env.aether.fence.powerOn({ bmc: node })).alreadyOn, true);

      // A delay: PoweringOff is read (and does not count) before "Off".
      b.powerOffDelayMs = 700;
      const slow = await env.aether.fence.fence({ bmc: node, timeout: seconds(10_000), pollInterval: seconds(100) });
      assert.equal(slow.confirmed, true, slow.reason);
      assert.ok(slow.pollCount >= 5, `PoweringOff was read several times (${slow.pollCount} reads)`);
      assert.ok(ms(slow.totalDuration) >= 650, `confirmed only after the delay (${ms(slow.totalDuration)} ms)`);
      assert.match(slow.reason, /PowerState "Off" read back/);
      b.powerOffDelayMs = 0;
      await env.aether.fence.powerOn({ bmc: node });

      await rejectsWith(
        env.aether.fence.reset({ bmc: node, resetType: "PowerCycle" }),
        Code.InvalidArgument,
        new RegExp(`reset type PowerCycle is not allowed.*${b.allowableResetTypes.join(", ")}`),
      );
      await rejectsWith(env.aether.fence.reset({ bmc: node, resetType: "" }), Code.InvalidArgument, /reset_type is required/);
      const restart = await env.aether.fence.reset({ bmc: node, resetType: "ForceRestart" });
      assert.equal(restart.actionStatusCode, profile === "ilo5" ? 200 : 204);
      assert.equal(restart.powerState, PowerState.ON);
      assert.deepEqual(b.resets, ["ForceOff", "On", "ForceOff", "On", "ForceRestart"]);

      assertCleanSessions(b);
      assert.ok(
        b.requests.every((r) => r.auth !== "basic"),
        "sessions were used, not Basic auth",
      );
      const listed = await env.aether.fence.listBmcs({ filter: "rack=r1" });
      assert.ok(listed.bmcs.some((x) => x.node === node && x.powerState === PowerState.ON));
    });
  }

  it("iLO 5 answers 400 InvalidOperationForSystemState when the system went off meanwhile: confirmed after re-reading", async () => {
    const b = await bmc({ profile: "ilo5" });
    await env.aether.fence.registerBmc(registration("race", b));
    b.setMisbehaviour({ kind: "offBeforeAction" });
    const res = await env.aether.fence.fence({ bmc: "race", timeout: seconds(5000), pollInterval: seconds(100) });
    assert.equal(res.confirmed, true, res.reason);
    assert.equal(res.actionStatusCode, 400);
    assert.deepEqual(
      res.messages.map((m) => m.messageId),
      ["iLO.2.14.InvalidOperationForSystemState"],
    );
    assert.match(res.messages[0]?.message ?? "", /current power state/);
    assert.match(res.reason, /already off/);
    assertCleanSessions(b);
  });

  it("a wrong password is refused with a clear error and nothing is recorded", async () => {
    const b = await bmc({ profile: "ilo5" });
    const wrong = `not-${b.password}`;
    await rejectsWith(
      env.aether.fence.registerBmc(registration("wrong-pass", b, { credentials: { username: b.username, password: wrong } })),
      Code.FailedPrecondition,
      /BMC of node wrong-pass: logging in to the BMC: the BMC at https:\/\/127\.0\.0\.1:\d+ refused the credentials \(HTTP 401 Unauthorized: Base\.1\.4\.NoValidSession.*check the username, password/,
    );
    await rejectsWith(env.aether.fence.getPowerStatus({ bmc: "wrong-pass" }), Code.NotFound, /no BMC is registered for "wrong-pass"/);
    assert.equal(b.sessionsCreated, 0);
    // allow_unreachable records it, UNAUTHORIZED, and says why.
    const { bmc: recorded } = await env.aether.fence.registerBmc(
      registration("wrong-pass", b, { credentials: { username: b.username, password: wrong }, allowUnreachable: true }),
    );
    assert.equal(recorded?.state, BmcState.UNAUTHORIZED);
    assert.match(recorded?.stateReason ?? "", /refused the credentials/);
    assert.equal(recorded?.powerState, PowerState.UNKNOWN);
    const unauthorized = await env.aether.fence.listBmcs({ state: BmcState.UNAUTHORIZED });
    assert.deepEqual(
      unauthorized.bmcs.map((x) => x.node),
      ["wrong-pass"],
    );
    // A fence with credentials the BMC refuses is an error, not an unconfirmed answer.
    await rejectsWith(env.aether.fence.fence({ bmc: "wrong-pass" }), Code.FailedPrecondition, /refused the credentials/);
    assert.equal(b.powerState, "On");
    // Fixed with replace: the same registration id, now reachable.
    const { bmc: fixed } = await env.aether.fence.registerBmc(registration("wrong-pass", b, { replace: true }));
    assert.equal(fixed?.id, recorded?.id);
    assert.equal(fixed?.state, BmcState.REACHABLE);
    await env.aether.fence.unregisterBmc({ bmc: "wrong-pass" });
    assertCleanSessions(b);
  });

  it("a session that expires mid-fence: aetherd logs in again and confirms the fence", async () => {
    for (const profile of ["ilo5", "dmtf"] as const) {
      const b = await bmc({ profile, powerOffDelayMs: 300 });
      const node = `expiring-${profile}`;
      await env.aether.fence.registerBmc(registration(node, b));
      b.setMisbehaviour({ kind: "expireSessionsOnPowerOff" });
      b.clearRequests();
      const res = await env.aether.fence.fence({ bmc: node, timeout: seconds(5000), pollInterval: seconds(100) });
      assert.equal(res.confirmed, true, res.reason);
      const rejected = b.requests.filter((r) => r.status === 401);
      assert.equal(rejected.length, 1, "one read was refused with the expired session");
      const logins = b.requests.filter((r) => r.kind === "login");
      assert.equal(logins.length, 2, "logged in again after the 401");
      assertCleanSessions(b);
    }
  });

  it("Basic auth when the BMC has no session service", async () => {
    const b = await bmc({ profile: "dmtf" });
    b.setMisbehaviour({ kind: "noSessionService" });
    const { bmc: reg } = await env.aether.fence.registerBmc(registration("basic-only", b));
    assert.equal(reg?.state, BmcState.REACHABLE);
    const res = await env.aether.fence.fence({ bmc: "basic-only", pollInterval: seconds(100) });
    assert.equal(res.confirmed, true, res.reason);
    const authed = b.requests.filter((r) => r.kind !== "login" && r.path !== "/redfish/v1");
    assert.ok(authed.length > 0 && authed.every((r) => r.auth === "basic"), "every request used Basic auth");
    assert.equal(b.sessionsCreated, 0);
    assertCleanSessions(b);
  });

  it("a BMC that hangs: a timeout error within the deadline, not a hang; the state says unreachable", async () => {
    const b = await bmc({ profile: "ilo5" });
    await env.aether.fence.registerBmc(registration("hung", b));
    b.setMisbehaviour({ kind: "hang", on: "read" });
    let t = Date.now();
    await rejectsWith(
      env.aether.fence.fence({ bmc: "hung", timeout: seconds(1500), pollInterval: seconds(100) }),
      Code.DeadlineExceeded,
      /BMC of node hung: reading the power state of \/redfish\/v1\/Systems\/1/,
    );
    let took = Date.now() - t;
    assert.ok(took >= 1400 && took < 4000, `the fence gave up at its deadline (${took} ms)`);
    t = Date.now();
    await assert.rejects(
      env.aether.fence.getPowerStatus({ bmc: "hung" }, { timeoutMs: 1200 }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.DeadlineExceeded,
    );
    took = Date.now() - t;
    assert.ok(took < 3000, `the status read gave up at the call's deadline (${took} ms)`);
    const [listed] = (await env.aether.fence.listBmcs({ filter: "" })).bmcs.filter((x) => x.node === "hung");
    assert.equal(listed?.state, BmcState.UNREACHABLE);
    assert.match(listed?.stateReason ?? "", /deadline/);
    // The session was still logged out (DELETE is not hung).
    await new Promise((r) => setTimeout(r, 300));
    assertCleanSessions(b);
    // Hung entirely (logins too): still bounded.
    b.setMisbehaviour({ kind: "hang" });
    t = Date.now();
    await rejectsWith(
      env.aether.fence.fence({ bmc: "hung", timeout: seconds(1000), pollInterval: seconds(100) }),
      Code.DeadlineExceeded,
      /logging in to the BMC|service root/,
    );
    assert.ok(Date.now() - t < 3500);
    b.setMisbehaviour();
  });

  it("PoweringOff forever: confirmed false with the reason once the deadline passed", async () => {
    const b = await bmc({ profile: "dmtf" });
    await env.aether.fence.registerBmc(registration("stuck", b));
    b.setMisbehaviour({ kind: "stuckPoweringOff" });
    const t = Date.now();
    const res = await env.aether.fence.fence({ bmc: "stuck", timeout: seconds(1500), pollInterval: seconds(200), reason: "test: stuck" });
    const took = Date.now() - t;
    assert.equal(res.confirmed, false);
    assert.equal(res.powerState, PowerState.POWERING_OFF);
    assert.equal(res.rawPowerState, "PoweringOff");
    assert.match(res.reason, /the 1\.5 s deadline passed with PowerState "PoweringOff" after \d+ reads; the node is NOT fenced/);
    assert.ok(res.pollCount >= 5);
    assert.ok(res.commandTime && !res.confirmTime);
    assert.ok(took >= 1400 && took < 3500, `${took} ms`);
    assertCleanSessions(b);
  });

  it("500 on the action: confirmed false with the BMC's messages (after retries); 500 on reads: UNAVAILABLE", async () => {
    const b = await bmc({ profile: "ilo5" });
    await env.aether.fence.registerBmc(registration("broken", b));
    b.setMisbehaviour({ kind: "status", status: 500, on: "action" });
    const res = await env.aether.fence.fence({ bmc: "broken", timeout: seconds(10_000), pollInterval: seconds(100) });
    assert.equal(res.confirmed, false);
    assert.equal(res.actionStatusCode, 500);
    assert.deepEqual(
      res.messages.map((m) => m.messageId),
      ["Base.1.4.InternalError"],
    );
    assert.match(
      res.reason,
      /the BMC answered ForceOff with HTTP 500 \(Base\.1\.4\.InternalError: The request failed due to an internal service error.*NOT fenced/,
    );
    assert.equal(b.requests.filter((r) => r.kind === "action").length, 3, "ForceOff was tried 3 times");
    // One transient 503 is retried away.
    b.setMisbehaviour({ kind: "status", status: 503, on: "action", times: 1 });
    const retried = await env.aether.fence.fence({ bmc: "broken", timeout: seconds(10_000), pollInterval: seconds(100) });
    assert.equal(retried.confirmed, true, retried.reason);
    b.powerState = "On";
    b.setMisbehaviour({ kind: "status", status: 500, on: "read" });
    await assert.rejects(env.aether.fence.getPowerStatus({ bmc: "broken" }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, /answered HTTP 500 Internal Server Error: Base\.1\.4\.InternalError/);
      assert.deepEqual(
        err.findDetails(BmcMessageSchema).map((m) => m.messageId),
        ["Base.1.4.InternalError"],
        "the BMC's messages travel as error details",
      );
      return true;
    });
    b.setMisbehaviour();
    assertCleanSessions(b);
  });

  it("bad input is refused with clear errors; unknown nodes are NOT_FOUND", async () => {
    const b = await bmc({ profile: "dmtf" });
    const ok = registration("bad-input", b);
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, node: "Not_A_Label" }),
      Code.InvalidArgument,
      /node "Not_A_Label" is not a valid name/,
    );
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, endpoint: b.url.replace("https:", "http:") }),
      Code.InvalidArgument,
      /uses http: BMC credentials only travel over https/,
    );
    await rejectsWith(env.aether.fence.registerBmc({ ...ok, endpoint: "" }), Code.InvalidArgument, /endpoint is required/);
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, endpoint: b.url.replace("https://", `https://${b.username}:${b.password}@`) }),
      Code.InvalidArgument,
      /must not carry a username or password/,
    );
    await rejectsWith(env.aether.fence.registerBmc({ ...ok, credentials: undefined }), Code.InvalidArgument, /credentials are required/);
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, credentials: { username: b.username, password: "" } }),
      Code.InvalidArgument,
      /credentials\.password is empty/,
    );
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, credentials: { username: b.username, password: `${b.password}\n` } }),
      Code.InvalidArgument,
      /control characters/,
    );
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, tls: { verification: { case: "caPem", value: "not a certificate" } } }),
      Code.InvalidArgument,
      /tls\.ca_pem holds no PEM certificate/,
    );
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, tls: { verification: { case: "insecureSkipVerify", value: false } } }),
      Code.InvalidArgument,
      /insecure_skip_verify is set to false/,
    );
    await rejectsWith(
      env.aether.fence.registerBmc({ ...ok, profile: 42 as BmcProfile }),
      Code.InvalidArgument,
      /profile 42 is not a BMC profile/,
    );

    await env.aether.fence.registerBmc(ok);
    await rejectsWith(env.aether.fence.registerBmc(ok), Code.AlreadyExists, /node bad-input already has a BMC registered .*pass replace/);
    await rejectsWith(
      env.aether.fence.fence({ bmc: "bad-input", timeout: seconds(0) }),
      Code.InvalidArgument,
      /timeout 0 ms is out of range: give 1 s to 30 minutes/,
    );
    await rejectsWith(
      env.aether.fence.fence({ bmc: "bad-input", timeout: seconds(2 * 3600_000) }),
      Code.InvalidArgument,
      /timeout .* is out of range/,
    );
    await rejectsWith(
      env.aether.fence.fence({ bmc: "bad-input", pollInterval: seconds(10) }),
      Code.InvalidArgument,
      /poll_interval 10 ms is out of range/,
    );
    await rejectsWith(
      env.aether.fence.fence({ bmc: "bad-input", timeout: seconds(2000), pollInterval: seconds(5000) }),
      Code.InvalidArgument,
      /poll_interval \(5000 ms\) is longer than timeout/,
    );
    await rejectsWith(env.aether.fence.listBmcs({ pageSize: 5000 }), Code.InvalidArgument, /page_size 5000 is too large/);
    await rejectsWith(env.aether.fence.listBmcs({ filter: "nokey" }), Code.InvalidArgument, /not of the form key=value/);
    await rejectsWith(
      env.aether.fence.reset({ bmc: "bad-input", resetType: "Force Off!" }),
      Code.InvalidArgument,
      /not a Redfish ResetType/,
    );
    await rejectsWith(env.aether.fence.getPowerStatus({ bmc: "" }), Code.InvalidArgument, /bmc is empty/);
    for (const call of [
      env.aether.fence.getPowerStatus({ bmc: "no-such-node" }),
      env.aether.fence.fence({ bmc: "no-such-node" }),
      env.aether.fence.powerOn({ bmc: "no-such-node" }),
      env.aether.fence.reset({ bmc: "no-such-node", resetType: "On" }),
      env.aether.fence.unregisterBmc({ bmc: "no-such-node" }),
    ]) {
      await rejectsWith(call, Code.NotFound, /no BMC is registered for "no-such-node"/);
    }
    assert.deepEqual(b.resets, [], "nothing reached the BMC's power");
  });

  it("request_id, paging, TLS settings", async () => {
    const b = await bmc({ profile: "dmtf" });
    const first = await env.aether.fence.registerBmc(registration("idem", b, { requestId: "req-1" }));
    const retried = await env.aether.fence.registerBmc(registration("idem", b, { requestId: "req-1" }));
    assert.equal(retried.bmc?.id, first.bmc?.id);
    const f1 = await env.aether.fence.fence({ bmc: "idem", requestId: "fence-1", pollInterval: seconds(100) });
    b.powerState = "On";
    const f2 = await env.aether.fence.fence({ bmc: "idem", requestId: "fence-1", pollInterval: seconds(100) });
    assert.equal(f2.confirmed, f1.confirmed);
    assert.deepEqual(f2.startTime, f1.startTime, "the retry got the first call's result");
    assert.equal(b.powerState, "On", "and did not fence again");

    // Paging by node name.
    const all: string[] = [];
    let pageToken = "";
    do {
      const page = await env.aether.fence.listBmcs({ pageSize: 1, pageToken });
      assert.ok(page.bmcs.length <= 1);
      all.push(...page.bmcs.map((x) => x.node));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(all, [...all].sort());
    assert.ok(all.includes("idem"));

    // Certificate checks: the system store does not trust the test BMC.
    await rejectsWith(
      env.aether.fence.registerBmc(registration("tls-none", b, { tls: undefined })),
      Code.Unavailable,
      /self-signed certificate.*Give the BMC's CA certificate/,
    );
    // A server name the certificate does not carry.
    await rejectsWith(
      env.aether.fence.registerBmc(
        registration("tls-name", b, { tls: { verification: { case: "caPem", value: b.caPem }, serverName: "other.example" } }),
      ),
      Code.Unavailable,
      /other\.example/,
    );
    const named = await env.aether.fence.registerBmc(
      registration("tls-name", b, { tls: { verification: { case: "caPem", value: b.caPem }, serverName: "bmc.test" } }),
    );
    assert.equal(named.bmc?.state, BmcState.REACHABLE);
    assert.equal(named.bmc?.tls?.serverName, "bmc.test");
    const insecure = await env.aether.fence.registerBmc(
      registration("tls-off", b, { tls: { verification: { case: "insecureSkipVerify", value: true } } }),
    );
    assert.equal(insecure.bmc?.state, BmcState.REACHABLE);
    assert.match(insecure.bmc?.stateReason ?? "", /certificate verification is off/);
    const status = await env.aether.fence.getPowerStatus({ bmc: "tls-off" });
    assert.match(status.bmc?.stateReason ?? "", /certificate verification is off/);
    for (const n of ["idem", "tls-name", "tls-off"]) await env.aether.fence.unregisterBmc({ bmc: n });
    assertCleanSessions(b);
  });

  it("credentials never appear in responses, events, the daemon's logs, records or process arguments", async () => {
    const b = await bmc({ profile: "ilo5", powerOffDelayMs: 800 });
    const reg = await env.aether.fence.registerBmc(registration("secret", b));
    const fencing = env.aether.fence.fence({ bmc: "secret", timeout: seconds(10_000), pollInterval: seconds(100), reason: "secrets test" });
    await new Promise((r) => setTimeout(r, 300));
    assertNoSecrets(allCommandLines(), b, "a process's arguments (during a fence)");
    const res = await fencing;
    assert.equal(res.confirmed, true);
    const list = await env.aether.fence.listBmcs({});
    const status = await env.aether.fence.getPowerStatus({ bmc: "secret" });
    // A wrong password too: the error does not quote it.
    const wrong = `wrong-${randomBytes(6).toString("hex")}`;
    const refused = await env.aether.fence
      .registerBmc(registration("secret-2", b, { credentials: { username: b.username, password: wrong } }))
      .catch((e: unknown) => e);
    assert.ok(refused instanceof ConnectError);
    assert.ok(!refused.rawMessage.includes(wrong));
    const responses = JSON.stringify([reg, res, list, status, refused.rawMessage], (_k, v: unknown) =>
      typeof v === "bigint" ? v.toString() : v,
    );
    assertNoSecrets(responses, b, "responses");
    await new Promise((r) => setTimeout(r, 300)); // events and log lines flushed
    assertNoSecrets(events.join("\n"), b, "events");
    assert.ok(
      events.some((e) => e.startsWith("fence.confirmed secret")),
      events.join("\n"),
    );
    assert.ok(events.some((e) => e.startsWith("fence.started secret") && e.includes("secrets test")));
    assertNoSecrets(env.daemon.log(), b, "aetherd's stderr");
    assertNoSecrets(readFileSync(join(env.daemon.stateDir, "aetherd.log"), "utf8"), b, "aetherd.log");
    assertNoSecrets(readFileSync(join(env.daemon.stateDir, "audit.log"), "utf8"), b, "audit.log");
    const records = readdirSync(join(env.daemon.stateDir, "fence", "bmcs")).map((f) =>
      readFileSync(join(env.daemon.stateDir, "fence", "bmcs", f), "utf8"),
    );
    assert.ok(records.length > 0);
    for (const r of records) assertNoSecrets(r, b, "a BMC record on disk");
    const record = JSON.parse(records.find((r) => r.includes(`"secret"`)) ?? "{}") as { credentials: { alg: string } };
    assert.equal(record.credentials.alg, "aes-256-gcm");
    assert.equal(statSync(join(env.daemon.stateDir, "fence", "credentials.key")).mode & 0o777, 0o600);
    assertCleanSessions(b);
  });
});

describe("FenceService across a restart", () => {
  it("registrations survive, and their sealed credentials still log in", async () => {
    const b = await startTestBmc({ profile: "ilo5" });
    const first = await startDaemon();
    let aether: AetherClient = await first.client();
    await aether.fence.registerBmc(registration("durable", b, { labels: { role: "db" } }));
    assert.equal(await first.stop(), 0);
    const second = await startDaemon({ dir: join(first.stateDir, ".."), cgroupRoot: first.cgroupRoot });
    try {
      aether = await second.client();
      const { bmcs } = await aether.fence.listBmcs({ filter: "role=db" });
      assert.deepEqual(
        bmcs.map((x) => [x.node, x.systemPath, x.firmwareVersion]),
        [["durable", "/redfish/v1/Systems/1", "iLO 5 v2.46"]],
      );
      const res = await aether.fence.fence({ bmc: "durable", pollInterval: seconds(100) });
      assert.equal(res.confirmed, true, res.reason);
      assertCleanSessions(b);
    } finally {
      assert.equal(await second.stop(), 0);
      second.cleanup();
      await b.close();
    }
  });
});

describe("aether fence (CLI)", () => {
  const env = useDaemon();
  const bmc = useBmcs();
  const aether = (args: string[], extraEnv: NodeJS.ProcessEnv = {}, input?: string) =>
    runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address, ...extraEnv }, ...(input !== undefined ? { input } : {}) });

  it("register, list, status, off, on, reset, unregister; passwords from a file, stdin or the environment only", async () => {
    const b = await bmc({ profile: "ilo5" });
    const dir = join(env.daemon.stateDir, "..");
    const ca = join(dir, "bmc-ca.pem");
    const passwordFile = join(dir, "bmc-password");
    writeFileSync(ca, b.caPem);
    writeFileSync(passwordFile, `${b.password}\n`, { mode: 0o600 });

    const help = await aether(["fence", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:\n {2}aether fence register node-7/);
    assert.match((await aether(["fence", "off", "--help"])).stdout, /--timeout <duration>/);

    const noPassword = await aether(["fence", "register", "cli-node", "--endpoint", b.url, "--username", b.username, "--ca", ca]);
    assert.equal(noPassword.code, 2);
    assert.match(noPassword.stderr, /--password-file FILE .* AETHER_BMC_PASSWORD; it is never taken as an argument/);
    const both = await aether([
      "fence",
      "register",
      "cli-node",
      "--endpoint",
      b.url,
      "--username",
      b.username,
      "--password-file",
      passwordFile,
      "--ca",
      ca,
      "--insecure",
    ]);
    assert.equal(both.code, 2);

    const reg = await aether([
      "fence",
      "register",
      "cli-node",
      "--endpoint",
      b.url,
      "--username",
      b.username,
      "--password-file",
      passwordFile,
      "--ca",
      ca,
      "--profile",
      "ilo5",
      "-l",
      "rack=r9",
    ]);
    assert.equal(reg.code, 0, reg.stderr);
    assert.match(
      reg.stdout,
      /registered the BMC of cli-node: HPE ProLiant DL325 Gen10 Plus at \/redfish\/v1\/Systems\/1, power on \(reachable\)/,
    );
    // From stdin, and from the environment (with replace).
    assert.equal(
      (
        await aether(
          [
            "fence",
            "register",
            "cli-node",
            "--endpoint",
            b.url,
            "--username",
            b.username,
            "--password-file",
            "-",
            "--ca",
            ca,
            "--profile",
            "ilo5",
            "--replace",
          ],
          {},
          `${b.password}\n`,
        )
      ).code,
      0,
    );
    const fromEnv = await aether(
      ["fence", "register", "cli-node", "--endpoint", b.url, "--ca", ca, "--profile", "ilo5", "--replace", "-l", "rack=r9", "--json"],
      { AETHER_BMC_USERNAME: b.username, AETHER_BMC_PASSWORD: b.password },
    );
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const regJson = JSON.parse(fromEnv.stdout) as Record<string, unknown>;
    assert.equal(regJson["node"], "cli-node");
    assert.equal(regJson["state"], "BMC_STATE_REACHABLE");
    assertNoSecrets(fromEnv.stdout, b, "aether fence register --json");

    const table = await aether(["fence", "list"]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /NODE\s+ENDPOINT\s+PROFILE\s+STATE\s+POWER/);
    assert.match(table.stdout, /cli-node\s+https:\/\/127\.0\.0\.1:\d+\/redfish\/v1\s+ilo5\s+reachable\s+on/);
    const listJson = JSON.parse((await aether(["fence", "list", "--json"])).stdout) as Array<{
      node: string;
      labels: Record<string, string>;
    }>;
    assert.deepEqual(
      listJson.map((x) => [x.node, x.labels]),
      [["cli-node", { rack: "r9" }]],
    );

    const status = await aether(["fence", "status", "cli-node"]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /power state\s+On/);
    assert.match(status.stdout, /allowed resets\s+On, ForceOff, GracefulShutdown, ForceRestart, Nmi, PushPowerButton, GracefulRestart/);
    const statusJson = JSON.parse((await aether(["fence", "status", "cli-node", "--json"])).stdout) as { rawPowerState: string };
    assert.equal(statusJson.rawPowerState, "On");

    const off = await aether(["fence", "off", "cli-node", "--timeout", "10s", "--poll-interval", "100ms", "--reason", "cli test"]);
    assert.equal(off.code, 0, off.stderr);
    assert.match(off.stdout, /confirmed\s+yes/);
    assert.equal(b.powerState, "Off");
    const offJson = JSON.parse((await aether(["fence", "off", "cli-node", "--json"])).stdout) as {
      confirmed: boolean;
      alreadyOff: boolean;
    };
    assert.deepEqual([offJson.confirmed, offJson.alreadyOff], [true, true]);

    const on = await aether(["fence", "on", "cli-node"]);
    assert.equal(on.code, 0, on.stderr);
    assert.match(on.stdout, /cli-node: power on accepted \(HTTP 200\); power state On/);

    // Not confirmed: exit 1, the reason on stderr.
    b.setMisbehaviour({ kind: "stuckPoweringOff" });
    const stuck = await aether(["fence", "off", "cli-node", "--timeout", "1s", "--poll-interval", "200ms"]);
    assert.equal(stuck.code, 1);
    assert.match(stuck.stdout, /confirmed\s+NO/);
    assert.match(stuck.stderr, /^aether: cli-node is NOT fenced: the 1 s deadline passed with PowerState "PoweringOff"/);
    b.setMisbehaviour();
    b.powerState = "On";

    const badType = await aether(["fence", "reset", "cli-node", "Bogus"]);
    assert.equal(badType.code, 1);
    assert.match(badType.stderr, /reset type Bogus is not allowed .* the BMC allows: On, ForceOff/);
    assert.equal((await aether(["fence", "reset", "cli-node", "ForceRestart"])).code, 0);
    assert.equal((await aether(["fence", "off", "cli-node", "--timeout", "soon"])).code, 2);
    assert.equal((await aether(["fence", "status", "nope"])).code, 3);

    assert.equal((await aether(["fence", "unregister", "cli-node"])).code, 0);
    assert.equal((await aether(["fence", "status", "cli-node"])).code, 3);
    assertCleanSessions(b);
    assertNoSecrets(env.daemon.log(), b, "aetherd's log");
  });
});
