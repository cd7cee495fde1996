// The aether CLI against a real aetherd: JSON for scripts, tables for people, exit codes to trust.
import assert from "node:assert/strict";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { useDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";

describe("aether CLI", () => {
  const env = useDaemon();
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address } });

  it("node info: a table for people, JSON for scripts", async () => {
    const table = await aether("node", "info");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`hostname\\s+${hostname()}`));
    const json = await aether("node", "info", "--json");
    const info = JSON.parse(json.stdout) as { hostname: string; capabilities: { kvm: object } };
    assert.equal(info.hostname, hostname());
    assert.ok(info.capabilities.kvm);
  });

  it("exec start, wait (with the process's exit code), logs, list, get and delete", async () => {
    const start = await aether(
      "exec",
      "start",
      "--name",
      "cli-job",
      "-l",
      "team=a",
      "-e",
      "WHO=cli",
      "--",
      "/bin/sh",
      "-c",
      'echo "hi $WHO"; echo oops >&2; exit 4',
    );
    assert.equal(start.code, 0, start.stderr);
    const id = start.stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);

    const wait = await aether("exec", "wait", "cli-job");
    assert.equal(wait.code, 4, "exec wait exits with the process's code");

    const logs = await aether("exec", "logs", "cli-job");
    assert.equal(logs.stdout, "hi cli\n");
    assert.equal(logs.stderr, "oops\n");
    const tail = await aether("exec", "logs", id, "--stdout", "--tail", "1");
    assert.equal(tail.stdout, "hi cli\n");

    const list = await aether("exec", "list", "--filter", "team=a");
    assert.match(list.stdout, /NAME\s+TENANT\s+STATE/);
    assert.match(list.stdout, /cli-job\s+default\s+exited\s+-\s+4/);
    const listJson = JSON.parse((await aether("exec", "list", "--json", "--filter", "team=a")).stdout) as Array<{
      name: string;
      exitCode: number;
    }>;
    assert.deepEqual(
      listJson.map((e) => [e.name, e.exitCode]),
      [["cli-job", 4]],
    );

    const get = JSON.parse((await aether("exec", "get", id, "--json")).stdout) as { env: Record<string, string>; state: string };
    assert.deepEqual(get.env, { WHO: "cli" });
    assert.equal(get.state, "EXECUTABLE_STATE_EXITED");

    assert.equal((await aether("exec", "delete", "cli-job")).code, 0);
    assert.equal((await aether("exec", "get", "cli-job")).code, 3);
  });

  it("exec stop sends the signal and reports how it ended", async () => {
    await aether("exec", "start", "--name", "cli-sleeper", "--", "/bin/sleep", "600");
    const stop = await aether("exec", "stop", "cli-sleeper", "--signal", "SIGINT", "--json");
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((JSON.parse(stop.stdout) as { signal: string }).signal, "SIGINT");
    const again = await aether("exec", "stop", "cli-sleeper");
    assert.equal(again.code, 1, "stopping an exited process is refused");
    assert.match(again.stderr, /^aether: executable cli-sleeper is not running/);
  });

  it("exit codes: 2 for usage, 3 for not found, 4 when aetherd is unreachable; errors on stderr", async () => {
    const usage = await aether("exec", "frobnicate");
    assert.equal(usage.code, 2);
    const missing = await aether("exec", "get", "no-such-exe");
    assert.equal(missing.code, 3);
    assert.equal(missing.stdout, "");
    assert.match(missing.stderr, /^aether: no executable with id or name "no-such-exe"/);
    const down = await runCommand("aether", ["exec", "list"], { env: { AETHER_HOST: "unix:///nonexistent/aetherd.sock" } });
    assert.equal(down.code, 4);
    assert.match(down.stderr, /^aether: cannot reach aetherd at unix:\/\/\/nonexistent\/aetherd\.sock/);
    const bad = await aether("exec", "start", "--", "relative-program");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not an absolute path/);
  });

  it("cell allocate|update|list|stats|free, and exec start --cell", async () => {
    assert.equal((await aether("cell", "allocate", "cli-team", "--memory", "256M", "--cpu-max", "50%", "--isolate", "network")).code, 0);
    const child = await aether("cell", "allocate", "cli-team/jobs", "--pids", "64", "--json");
    assert.equal((JSON.parse(child.stdout) as { parent: string }).parent, "cli-team");
    const job = await aether("exec", "start", "--cell", "cli-team/jobs", "--", "/bin/sleep", "300");
    assert.equal(job.code, 0, job.stderr);
    const list = await aether("cell", "list");
    assert.match(list.stdout, /cli-team\s+default\s+50% w100\s+256\.0 MiB\s+unlimited\s+network/);
    assert.match(list.stdout, /  jobs\s+default\s+unlimited w100\s+unlimited\s+64\s+network\s+1 /);
    assert.equal((await aether("cell", "update", "cli-team", "--memory", "128M")).code, 0);
    const got = JSON.parse((await aether("cell", "get", "cli-team", "--json")).stdout) as {
      limits: { memoryMaxBytes: string; cpuMax: { quotaUsec: string } };
    };
    assert.equal(got.limits.memoryMaxBytes, String(128 * 2 ** 20));
    assert.equal(got.limits.cpuMax.quotaUsec, "50000", "update keeps the limits it was not given");
    const stats = JSON.parse((await aether("cell", "stats", "cli-team", "--json")).stdout) as { pidsCurrent: string };
    assert.equal(stats.pidsCurrent, "1");
    const refused = await aether("cell", "free", "cli-team/jobs");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /running executable/);
    assert.equal((await aether("cell", "free", "cli-team/jobs", "--stop")).code, 0);
    assert.equal((await aether("cell", "free", "cli-team")).code, 0);
    assert.equal((await aether("cell", "get", "cli-team")).code, 3);
    const bad = await aether("cell", "allocate", "x", "--memory", "lots");
    assert.equal(bad.code, 2, "a size that does not parse is a usage error");
    assert.match(bad.stderr, /not a size like 64M/);
  });

  it("--help shows examples and the exit codes", async () => {
    const help = await aether("--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:/);
    assert.match(help.stdout, /Exit codes:/);
    const sub = await aether("exec", "start", "--help");
    assert.match(sub.stdout, /aether exec start --name web/);
  });
});
