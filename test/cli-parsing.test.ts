// Issue 23, item 2: how the aether command reads its command line, with the real command against a
// real aetherd. A program's arguments are the program's (`vm exec web uname -a`: the -a is uname's,
// not the global -a/--address); the global options and cluster's --aggregator work before and after
// the subcommand; a usage error is three lines (the error, the usage, where the help is), exit 2.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { useDaemon } from "./helpers/daemon.js";
import { runCommand } from "./helpers/run.js";

interface ExecutableJson {
  name: string;
  argv: string[];
}

describe("aether's command line: options, a program's argv and usage errors", () => {
  const env = useDaemon();
  const aether = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: env.daemon.address } });
  /** With AETHER_HOST pointing nowhere: only an address given on the command line reaches aetherd. */
  const nowhere = "unix:///nonexistent/aetherd.sock";
  const aetherNowhere = (...args: string[]) => runCommand("aether", args, { env: { AETHER_HOST: nowhere } });

  it("exec start: everything from the program's path on is its argv, with or without --", async () => {
    const plain = await aether("exec", "start", "--name", "echo-a", "/bin/echo", "-a", "--name", "x", "-e", "Y=1", "--", "z");
    assert.equal(plain.code, 0, plain.stderr);
    const got = JSON.parse((await aether("exec", "get", "echo-a", "--json")).stdout) as ExecutableJson;
    assert.deepEqual(got.argv, ["/bin/echo", "-a", "--name", "x", "-e", "Y=1", "--", "z"], "the options after the program are its own");
    assert.equal((await aether("exec", "wait", "echo-a")).code, 0);
    assert.equal((await aether("exec", "logs", "echo-a")).stdout, "-a --name x -e Y=1 -- z\n");

    const dashed = await aether("exec", "start", "--name", "echo-dashed", "--", "/bin/echo", "-a");
    assert.equal(dashed.code, 0, dashed.stderr);
    assert.deepEqual((JSON.parse((await aether("exec", "get", "echo-dashed", "--json")).stdout) as ExecutableJson).argv, [
      "/bin/echo",
      "-a",
    ]);
    for (const name of ["echo-a", "echo-dashed"]) {
      await aether("exec", "wait", name);
      assert.equal((await aether("exec", "delete", name)).code, 0);
    }
  });

  it("vm exec NAME uname -a reaches aetherd (the VM is not found), instead of a usage error about --address", async () => {
    const r = await aether("vm", "exec", "no-such-vm", "/bin/uname", "-a");
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^aether: no VM with id or name "no-such-vm"/);
    assert.equal(r.stderr.split("\n").length, 2, `one line: ${r.stderr}`);
    // Its own options still count before the program, and only there.
    const badTimeout = await aether("vm", "exec", "no-such-vm", "--timeout", "soon", "/bin/uname", "-t", "soon");
    assert.equal(badTimeout.code, 2, badTimeout.stderr);
    assert.match(badTimeout.stderr, /--timeout/);
  });

  it("cluster deploy NAME PROGRAM -a: the -a is the program's (the aggregator's address is what is missing, not an option's value)", async () => {
    const r = await aetherNowhere("cluster", "deploy", "echo", "--aggregator", "unix:///nonexistent/agg.sock", "/bin/echo", "-a");
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /^aether: cannot reach aether-aggregator at unix:\/\/\/nonexistent\/agg\.sock/);
  });

  it("-a/--address works before and after the subcommand, and cluster --aggregator after its subcommand", async () => {
    for (const args of [
      ["-a", env.daemon.address, "exec", "list", "--json"],
      ["exec", "list", "--json", "-a", env.daemon.address],
      ["exec", "list", `--address=${env.daemon.address}`, "--json"],
    ]) {
      const r = await aetherNowhere(...args);
      assert.equal(r.code, 0, `aether ${args.join(" ")}: ${r.stderr}`);
      assert.ok(Array.isArray(JSON.parse(r.stdout)), r.stdout);
    }
    const missing = await aetherNowhere("exec", "list");
    assert.equal(missing.code, 4, "without it, AETHER_HOST (pointing nowhere) is used");
    const after = await aetherNowhere("cluster", "nodes", "--aggregator", "unix:///nonexistent/agg.sock");
    assert.equal(after.code, 4);
    assert.match(after.stderr, /^aether: cannot reach aether-aggregator at unix:\/\/\/nonexistent\/agg\.sock/);
    const help = await aether("exec", "list", "--help");
    assert.match(
      help.stdout,
      /Global Options:\n\s+-V, --version.*\n\s+-a, --address <address>/,
      "a command's help shows the global options",
    );
  });

  it("cluster commands that reach an aetherd say to give the aggregator's address (issue 23, item 6)", async () => {
    const r = await runCommand("env", ["-u", "AETHER_AGGREGATOR", "aether", "cluster", "nodes"], {
      env: { AETHER_HOST: env.daemon.address },
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `aether: ${env.daemon.address} is an aetherd, not aether-aggregator: give the aggregator's address with --aggregator or AETHER_AGGREGATOR (e.g. aether cluster --aggregator unix:///run/aether/aggregator.sock nodes).\n`,
    );
  });

  it("a usage error is the error, the one-line usage and where the help is, exit 2: not all of --help", async () => {
    const cases: Array<[string[], RegExp, string]> = [
      [["vm", "exec", "--bogus", "web"], /^error: unknown option '--bogus'$/, "aether vm exec [options] <vm> <argv...>"],
      [["exec", "start"], /^error: missing required argument 'argv'$/, "aether exec start [options] <argv...>"],
      [["exec", "frobnicate"], /^error: unknown command 'frobnicate'$/, "aether exec [options] [command]"],
      [["exec", "list", "-a"], /^error: option '-a, --address <address>' argument missing$/, "aether exec list [options]"],
    ];
    for (const [args, error, usage] of cases) {
      const r = await aether(...args);
      assert.equal(r.code, 2, `aether ${args.join(" ")}`);
      assert.equal(r.stdout, "");
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 3, r.stderr);
      assert.match(lines[0] ?? "", error);
      assert.equal(lines[1], `usage: ${usage}`);
      assert.match(lines[2] ?? "", new RegExp(`^see '${usage.split(" [")[0]} --help' for its`));
    }
  });
});
