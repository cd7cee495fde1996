// Issue 22, items 1, 2 and 9: what a malicious tenant tried on the host, over mutual TLS with tenant
// certificates, and processes that escape their executable. Each case failed on the old code:
// a tenant read /etc/shadow through gid 42 (shadow), read another tenant's secrets from
// /proc/PID/environ and killed its process (both ran as 65534), and `sh -c 'sleep 3336 & exit 0'`
// left a sleep running that nothing tracked.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, connect, type AetherClient } from "@aether/sdk";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { collect, eventually, isRunning, startDaemon, useDaemon, type TestDaemon } from "./helpers/daemon.js";
import { createCa, type TestCa } from "./helpers/pki.js";
import { freePort } from "./helpers/net.js";

const SH = "/bin/sh";

/** Pids of host processes whose command line is exactly these words. */
function hostPidsOf(...words: string[]): number[] {
  const wanted = words.join("\0");
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, "utf8").replace(/\0$/, "") === wanted;
      } catch {
        return false;
      }
    })
    .map(Number)
    .filter(isRunning);
}

describe("tenants on the host", () => {
  let daemon: TestDaemon;
  let ca: TestCa;
  let url: string;
  let admin: AetherClient;
  let alice: AetherClient; // tenant a
  let bob: AetherClient; // tenant b
  const serverArgs: string[] = [];

  const asTenant = (name: string, tenant: string) =>
    connect({ address: url, tls: { ca: ca.cert, ...ca.issue(name, { uri: `spiffe://test/tenant/${tenant}/user/${name}` }) } });

  /** Runs a program to its end as `client` and returns the finished executable and its output. */
  const runToEnd = async (client: AetherClient, argv: string[], extra: { uid?: number; gid?: number } = {}) => {
    const { executable } = await client.runtime.startExecutable({ argv, ...extra });
    const done = (await client.runtime.waitExecutable({ executable: executable?.id ?? "", timeout: { seconds: 30n } })).executable;
    const out = await collect(client.observe.streamLogs({ source: 1, target: executable?.id ?? "" }));
    return { exe: done, stdout: out[1] ?? "", stderr: out[2] ?? "" };
  };

  before(async () => {
    ca = createCa("cluster-ca");
    const server = ca.issue("aetherd", { server: true });
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    serverArgs.push("--listen", `127.0.0.1:${port}`, "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", ca.cert);
    daemon = await startDaemon({ args: serverArgs });
    admin = await daemon.client();
    alice = await asTenant("alice", "a");
    bob = await asTenant("bob", "b");
  });

  after(async () => {
    alice?.close();
    bob?.close();
    const { executables } = await admin.runtime.listExecutables({ pageSize: 1000 });
    for (const e of executables.filter((x) => x.state === ExecutableState.RUNNING)) {
      await admin.runtime.stopExecutable({ executable: e.id, tenant: e.tenant, gracePeriod: { seconds: 0n } }).catch(() => undefined);
    }
    await daemon?.stop();
    daemon?.cleanup();
  });

  it("a tenant naming gid 42 (shadow) runs as its own host ids with no supplementary groups, and cannot read /etc/shadow", async () => {
    const { exe, stdout, stderr } = await runToEnd(alice, [SH, "-c", "id -u; id -g; id -G; head -c 60 /etc/shadow"], {
      uid: 65534,
      gid: 42,
    });
    const [uid, gid, groups] = stdout.trim().split("\n");
    assert.equal(exe?.uid, 65534, "uid reads back as the tenant asked");
    assert.equal(exe?.gid, 42);
    assert.ok((exe?.hostUid ?? 0) >= 1_000_000_000, `host uid ${exe?.hostUid} is in the tenants' range`);
    assert.equal(Number(uid), exe?.hostUid);
    assert.equal(Number(gid), exe?.hostGid);
    assert.notEqual(Number(gid), 42);
    assert.equal(groups, gid, "no supplementary groups");
    assert.match(stderr, /Permission denied/);
    assert.notEqual(exe?.exitCode, 0);
  });

  it("two tenants asking for the same uid get different host ids; neither sees, reads or kills the other's process", async () => {
    const secret = await alice.runtime.startExecutable({
      name: "holder",
      argv: ["/bin/sleep", "600"],
      env: { SECRET: "a-secret" },
      uid: 65534,
      gid: 65534,
    });
    const hostPid = secret.executable?.pid ?? 0;
    assert.ok(isRunning(hostPid));
    const { exe, stdout } = await runToEnd(
      bob,
      [SH, "-c", `ls /proc | grep -c '^[0-9]'; cat /proc/${hostPid}/environ 2>&1; kill -9 ${hostPid} 2>&1; echo done`],
      { uid: 65534, gid: 65534 },
    );
    assert.notEqual(exe?.hostUid, secret.executable?.hostUid, "tenants never share a host uid");
    assert.doesNotMatch(stdout, /a-secret/);
    const visible = Number(stdout.split("\n")[0]);
    assert.ok(visible <= 4, `tenant b sees only its own few processes in /proc (saw ${visible})`);
    assert.ok(isRunning(hostPid), "tenant a's process survived tenant b's kill -9");
    assert.equal((await alice.runtime.getExecutable({ executable: "holder" })).executable?.state, ExecutableState.RUNNING);
  });

  it("a tenant's SIGTERM reaches its program (pid 1 of its namespace is an init), so a stop needs no grace", async () => {
    const started = Date.now();
    const stopped = await alice.runtime.stopExecutable({ executable: "holder", gracePeriod: { seconds: 20n } });
    assert.equal(stopped.executable?.stateReason, "stopped on request with SIGTERM");
    assert.ok(Date.now() - started < 10_000, "ended by SIGTERM, not after the grace period");
  });

  it("an id outside the tenant's block is refused; an operator keeps explicit host ids", async () => {
    await assert.rejects(alice.runtime.startExecutable({ argv: ["/bin/true"], uid: 70_000 }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, /outside tenant a's id block/);
      return true;
    });
    const { exe, stdout } = await runToEnd(admin, [SH, "-c", "id -u"], { uid: 65534, gid: 65534 });
    assert.equal(exe?.hostUid, 65534);
    assert.equal(stdout.trim(), "65534");
  });

  it("a tenant keeps its host ids across a restart of aetherd", async () => {
    const before = (await runToEnd(alice, ["/bin/true"], { uid: 7 })).exe?.hostUid;
    alice.close();
    await daemon.stop();
    daemon = await startDaemon({ dir: `${daemon.stateDir}/..`, cgroupRoot: daemon.cgroupRoot, args: serverArgs });
    admin = await daemon.client();
    alice = await asTenant("alice2", "a");
    assert.equal((await runToEnd(alice, ["/bin/true"], { uid: 7 })).exe?.hostUid, before);
  });
});

describe("process trees", () => {
  const env = useDaemon();

  it("a child left running when the main process exits is killed, and the state says so", async () => {
    // The shell exits only once its child is sleep (not a fork of sh that has yet to exec), so the reason names it.
    const { executable } = await env.aether.runtime.startExecutable({
      argv: [SH, "-c", 'sleep 3336 & while [ "$(cat /proc/$!/comm)" != sleep ]; do :; done; exit 0'],
    });
    const done = (await env.aether.runtime.waitExecutable({ executable: executable?.id ?? "", timeout: { seconds: 20n } })).executable;
    assert.equal(done?.state, ExecutableState.EXITED);
    assert.match(done?.stateReason ?? "", /^exited with code 0; 1 process it left running \(sleep\) was killed$/);
    await eventually(() => (hostPidsOf("sleep", "3336").length === 0 ? true : undefined), 5000, "the escaped sleep to be gone");
  });

  it("a stop ends the whole tree, also what left the process group with setsid", async () => {
    const { executable } = await env.aether.runtime.startExecutable({ argv: [SH, "-c", "setsid sleep 3337 & exec sleep 3338"] });
    await eventually(
      async () =>
        (await env.aether.runtime.getExecutable({ executable: executable?.id ?? "" })).executable?.otherProcesses === 1 ? true : undefined,
      5000,
      "the setsid child to be counted",
    );
    assert.equal(hostPidsOf("sleep", "3337").length, 1);
    const stopped = await env.aether.runtime.stopExecutable({ executable: executable?.id ?? "", gracePeriod: { seconds: 5n } });
    assert.equal(stopped.executable?.state, ExecutableState.EXITED);
    await eventually(
      () => (hostPidsOf("sleep", "3337").length + hostPidsOf("sleep", "3338").length === 0 ? true : undefined),
      5000,
      "both sleeps to be gone",
    );
  });
});
