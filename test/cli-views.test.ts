// Issue 23, items 8, 9, 10 and 12, against two real aetherd: -w/--watch redraws list commands from
// the daemon's event stream (a change is seen to arrive, on a pipe, as JSON lines and on a terminal);
// contexts switch the command line between the two daemons; the bash completion script, sourced in
// a real bash, completes commands, flags, option values and the daemon's live names (and stays
// silent and fast with no daemon); aether events, top, audit and version.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { eventually, isRunning, startDaemon, stopWorkloads, type TestDaemon } from "./helpers/daemon.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { binDir, runCommand } from "./helpers/run.js";
import type { AetherClient } from "@aether/sdk";

/** A command left running: its output so far, and its end. */
interface Running {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

describe("aether: watch, contexts, completion, events, top, audit, version", () => {
  const daemons: TestDaemon[] = [];
  const clients: AetherClient[] = [];
  const children: ChildProcess[] = [];
  // Each test's command line reads this (empty) client config folder unless it says otherwise.
  // Every temporary folder goes in here, removed at the end.
  const temp = mkdtempSync(join(tmpdir(), "aether-cli-views-"));
  const tempDir = (prefix: string) => mkdtempSync(join(temp, prefix));
  const config = tempDir("config-");
  let a: TestDaemon;
  let b: TestDaemon;

  let agg: TestAggregator;

  before(async () => {
    // b is a node of a cluster, for the aggregator's watches.
    agg = await startAggregator();
    const clusterConfig = join(config, "b.toml");
    writeFileSync(clusterConfig, `[cluster]\naggregator = "unix://${agg.socket}"\nname = "views-b"\n`);
    [a, b] = await Promise.all([startDaemon(), startDaemon({ args: ["--config", clusterConfig] })]);
    daemons.push(a, b);
    clients.push(await a.client(), await b.client());
  });
  after(async () => {
    for (const child of children) child.kill("SIGKILL");
    for (const client of clients) await stopWorkloads(client).catch(() => undefined);
    for (const d of daemons) {
      await d.stop().catch(() => undefined);
      d.cleanup();
    }
    await agg?.stop();
    rmSync(temp, { recursive: true, force: true });
  });

  const env = (more: NodeJS.ProcessEnv = {}) => ({ AETHER_HOST: a.address, XDG_CONFIG_HOME: config, ...more });
  const aether = (args: string[], more: NodeJS.ProcessEnv = {}) => runCommand("aether", args, { env: env(more) });
  /** Starts `aether ARGS` and leaves it running. */
  const leave = (args: string[], more: NodeJS.ProcessEnv = {}): Running => {
    // ["-c", script]: a shell runs it (for a parent that dies); else aether ARGS.
    const child = spawn(args[0] === "-c" ? "sh" : "aether", args, {
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, NO_COLOR: "1", ...env(more) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("close", (code, signal) => resolve(code ?? (signal ? -1 : null))));
    return { child, output: () => output, exited };
  };
  const nodeId = async (more: NodeJS.ProcessEnv, ...args: string[]) => {
    const r = await aether([...args, "node", "info", "--json"], more);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { id: string }).id;
  };

  it("exec list -w prints each new state when an executable starts, ends and is deleted; -o json prints ADDED, MODIFIED, DELETED lines", async () => {
    const table = leave(["exec", "list", "-w"]);
    const json = leave(["exec", "list", "-w", "-o", "json"]);
    await eventually(() => (table.output().includes("NAME") ? true : undefined), 15_000, "the watch's first table");
    // The JSON watch prints nothing for an empty list; a first executable tells it is listening.
    await clients[0]!.runtime.startExecutable({ name: "watch-first", argv: ["/bin/true"] });
    await eventually(() => (json.output().includes('"watch-first"') ? true : undefined), 15_000, "watch-first in the JSON watch");

    await clients[0]!.runtime.startExecutable({ name: "watch-me", argv: ["/bin/sleep", "600"] });
    await eventually(
      () => (/watch-me\s+default\s+running/.test(table.output()) ? true : undefined),
      10_000,
      "watch-me running in the table",
    );
    await clients[0]!.runtime.stopExecutable({ executable: "watch-me", signal: "SIGKILL" });
    await eventually(() => (/watch-me\s+default\s+exited/.test(table.output()) ? true : undefined), 10_000, "watch-me exited in the table");
    await clients[0]!.runtime.deleteExecutable({ executable: "watch-me" });
    await eventually(
      () => {
        const states = table.output().split("\n\n");
        return states.length >= 4 && !states.at(-1)!.includes("watch-me") ? true : undefined;
      },
      10_000,
      "a last state without watch-me",
    );
    const lines = await eventually(
      () => {
        const parsed = json
          .output()
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { type: string; object: { name: string; state: string } });
        return parsed.some((l) => l.type === "DELETED" && l.object.name === "watch-me") ? parsed : undefined;
      },
      10_000,
      "watch-me DELETED in the JSON watch",
    );
    const mine = lines.filter((l) => l.object.name === "watch-me");
    assert.deepEqual(
      mine.map((l) => l.type),
      [...["ADDED"], ...mine.slice(1, -1).map(() => "MODIFIED"), "DELETED"],
    );
    assert.ok(
      mine.some((l) => l.type === "MODIFIED" && l.object.state === "EXECUTABLE_STATE_EXITED"),
      JSON.stringify(mine),
    );

    // SIGTERM ends it at once.
    table.child.kill("SIGTERM");
    json.child.kill("SIGTERM");
    assert.equal(await table.exited, -1, "it died of the signal");
    await json.exited;

    // So does its parent's death (here a shell killed with SIGKILL, its pipe still open).
    const orphan = leave(["-c", 'aether exec list -w & echo "pid=$!"; wait']);
    const pid = await eventually(() => /pid=(\d+)/.exec(orphan.output())?.[1], 15_000, "the shell to start the watch").then(Number);
    await eventually(() => (orphan.output().includes("NAME") ? true : undefined), 15_000, "the orphan-to-be's first table");
    orphan.child.kill("SIGKILL");
    await eventually(() => (isRunning(pid) ? undefined : true), 10_000, "the watch to end once its parent is gone");
  });

  it("cell list -w on a terminal redraws in place when a cell is allocated, and from the top when the terminal is resized", async () => {
    // The shell resizes the terminal (the kernel sends SIGWINCH) once the test says so.
    const resize = join(tempDir("aether-resize-"), "now");
    const command = `stty cols 120 rows 40; env -u CI aether cell list -w & while [ ! -e ${resize} ]; do sleep 0.1; done; stty cols 70; wait`;
    const child = spawn("script", ["-qefc", command, "/dev/null"], {
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ""}`, ...env() },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let screen = "";
    child.stdout?.on("data", (d: Buffer) => (screen += d.toString()));
    const exited = new Promise((resolve) => child.once("close", resolve));
    await eventually(() => (screen.includes("watching cells on") ? true : undefined), 15_000, "the first screen");
    await clients[0]!.cells.allocateCell({ name: "watched-cell" });
    await eventually(() => (screen.includes("watched-cell") ? true : undefined), 10_000, "the new cell on screen");
    // The second screen began by moving the cursor up over the first and clearing below it.
    assert.match(screen, /\u001b\[\d+A\r\u001b\[J[^]*watched-cell/);
    writeFileSync(resize, "");
    await eventually(() => (/\u001b\[H\u001b\[J[^]*watched-cell/.test(screen) ? true : undefined), 10_000, "a redraw from the top");
    child.kill("SIGTERM");
    await exited;
    await clients[0]!.cells.freeCell({ cell: "watched-cell" });
  });

  // The whole order (--address, --context/AETHER_CONTEXT, AETHER_HOST, current context) is sdk/src/connect.test.ts's.
  it("contexts switch between two daemons: set-context --from, use-context, --context over AETHER_HOST, the context's tenant; a config without contexts still works", async () => {
    const home = tempDir("aether-contexts-");
    const cfg = { XDG_CONFIG_HOME: home, AETHER_HOST: "" };
    const [idA, idB] = [(await clients[0]!.node.getNodeInfo({})).node!.id, (await clients[1]!.node.getNodeInfo({})).node!.id];

    // A config written before contexts: its fields are the context "default".
    mkdirSync(join(home, "aether"));
    writeFileSync(join(home, "aether", "config.toml"), `address = "${a.address}"\n`);
    assert.equal(await nodeId(cfg), idA);

    // lab-b from a client config file (as aether pki issue user --write-config writes one), plus a tenant.
    writeFileSync(join(home, "b.toml"), `address = "${b.address}"\n`);
    const set = await aether(["config", "set-context", "lab-b", "--from", join(home, "b.toml"), "--tenant", "team-b", "--use"], cfg);
    assert.equal(set.code, 0, set.stderr);
    // What only reads the file, asked at once.
    const [current, other, named, started, listed, unknown, malformed] = await Promise.all([
      nodeId(cfg),
      nodeId(cfg, "--context", "default"),
      nodeId({ ...cfg, AETHER_HOST: a.address }, "--context", "lab-b"),
      // The context's tenant is the default of --tenant.
      aether(["exec", "start", "--name", "in-team-b", "-o", "json", "--", "/bin/true"], cfg),
      aether(["config", "get-contexts", "-o", "json"], cfg),
      // Mistakes are usage errors: an unknown context, a malformed address.
      aether(["--context", "nope", "exec", "list"], cfg),
      aether(["config", "set-context", "x", "--address", "tcp://h:1"], cfg),
    ]);
    assert.equal(current, idB, "the current context is lab-b");
    assert.equal(other, idA, "--context picks another");
    assert.equal(named, idB, "and wins over AETHER_HOST");
    assert.equal(started.code, 0, started.stderr);
    assert.equal((JSON.parse(started.stdout) as { tenant: string }).tenant, "team-b");
    await clients[1]!.runtime.waitExecutable({ executable: "in-team-b", tenant: "team-b" });
    assert.deepEqual(
      (JSON.parse(listed.stdout) as Array<{ name: string; current: boolean }>).map((c) => [c.name, c.current]),
      [
        ["default", false],
        ["lab-b", true],
      ],
    );
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no context "nope".*default, lab-b/);
    assert.equal(malformed.code, 2);

    assert.equal((await aether(["config", "use-context", "default"], cfg)).code, 0);
    assert.equal((await aether(["config", "current-context"], cfg)).stdout, "default\n");
    // Deleting the current context makes default current again.
    assert.equal((await aether(["config", "use-context", "lab-b"], cfg)).code, 0);
    assert.equal((await aether(["config", "delete-context", "lab-b"], cfg)).code, 0);
    assert.equal(await nodeId(cfg), idA);
  });

  it("cluster nodes -w through a context's aggregator: a node cordoned arrives as MODIFIED", async () => {
    const home = tempDir("aether-contexts-");
    const cfg = { XDG_CONFIG_HOME: home };
    assert.equal(
      (await aether(["config", "set-context", "agg", "--address", b.address, "--aggregator", `unix://${agg.socket}`], cfg)).code,
      0,
    );
    const node = await eventually(
      async () => (await agg.client.aggregator.listNodes({})).nodes.find((n) => n.name === "views-b"),
      15_000,
      "views-b to register",
    );
    // A context asked for by name wins over AETHER_AGGREGATOR.
    const watch = leave(["--context", "agg", "cluster", "nodes", "-w", "-o", "json"], {
      ...cfg,
      AETHER_AGGREGATOR: "unix:///nonexistent/agg.sock",
    });
    const lines = () =>
      watch
        .output()
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { type: string; object: { name: string; lifecycle?: string } });
    await eventually(
      () => (lines().some((l) => l.type === "ADDED" && l.object.name === "views-b") ? true : undefined),
      15_000,
      watch.output(),
    );
    await agg.client.aggregator.cordonNode({ node: node.id });
    await eventually(
      () => (lines().some((l) => l.type === "MODIFIED" && l.object.lifecycle === "NODE_LIFECYCLE_CORDONED") ? true : undefined),
      10_000,
      `views-b cordoned in the watch: ${watch.output()}`,
    );
    watch.child.kill("SIGTERM");
    await watch.exited;
    await agg.client.aggregator.uncordonNode({ node: node.id });
  });

  it("bash completion, sourced in bash: commands, flags, option values, contexts, the daemon's names; silent and fast without a daemon", async () => {
    await clients[0]!.runtime.startExecutable({ name: "complete-me", argv: ["/bin/sleep", "600"] });
    const script = (await aether(["completion", "bash"])).stdout;
    assert.match(script, /complete .*-F _aether_complete aether/);
    const file = join(tempDir("aether-completion-"), "aether.bash");
    writeFileSync(file, script);
    /**
     * COMPREPLY for the words typed (the last one is being completed), with the variables bash sets:
     * COMP_LINE and COMP_POINT, and COMP_WORDS split at COMP_WORDBREAKS (":" is a word of its own).
     */
    const complete = async (words: string[], more: NodeJS.ProcessEnv = {}) => {
      const line = words.join(" ");
      const split = words.flatMap((w) => (w === "" ? [""] : w.split(/(:)/).filter((part) => part !== "")));
      const quoted = split.map((w) => `'${w}'`).join(" ");
      const run = await runCommand(
        "bash",
        [
          "--norc",
          "--noprofile",
          "-c",
          `source '${file}'; COMP_LINE='${line}'; COMP_POINT=${line.length}; COMP_WORDS=(${quoted}); COMP_CWORD=${split.length - 1}; _aether_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
        ],
        { env: env(more) },
      );
      assert.equal(run.code, 0, run.stderr);
      return run.stdout.split("\n").filter((l) => l !== "");
    };
    const withContexts = tempDir("aether-completion-config-");
    mkdirSync(join(withContexts, "aether"));
    writeFileSync(join(withContexts, "aether", "config.toml"), '[contexts.lab]\naddress = "unix:///x.sock"\n');
    // Independent of each other: asked at once.
    const [commands, flags, globalFlags, formats, shells, contexts, names, namesThere] = await Promise.all([
      complete(["aether", "ex"]),
      complete(["aether", "exec", "list", "--wa"]),
      complete(["aether", "exec", "list", "--"]),
      complete(["aether", "exec", "list", "-o", ""]),
      complete(["aether", "completion", ""]),
      complete(["aether", "config", "use-context", ""], { XDG_CONFIG_HOME: withContexts }),
      complete(["aether", "exec", "get", "comp"]),
      complete(["aether", "-a", a.address, "exec", "get", "comp"], { AETHER_HOST: b.address }),
    ]);
    assert.deepEqual(commands, ["exec"]);
    assert.deepEqual(flags, ["--watch"]);
    assert.ok(globalFlags.includes("--address"), "global flags too");
    assert.deepEqual(formats, ["json", "name", "table", "wide", "yaml"]);
    assert.deepEqual(shells, ["bash", "fish", "zsh"]);
    assert.deepEqual(contexts, ["default", "lab"]);
    assert.deepEqual(names, ["complete-me"], "live names from aetherd");
    assert.deepEqual(namesThere, ["complete-me"], "from the daemon the line names (its address split at ':' in COMP_WORDS)");

    // No daemon, or one that never answers: no names and no error, and no longer than a completion
    // that asks nothing plus the 1 s deadline (measured one after the other, against each other).
    const timed = async (words: string[], more: NodeJS.ProcessEnv = {}) => {
      const start = Date.now();
      return { candidates: await complete(words, more), ms: Date.now() - start };
    };
    const silent = join(tempDir("aether-silent-"), "silent.sock");
    const server = createServer(() => undefined).listen(silent);
    await once(server, "listening");
    try {
      const baseline = await timed(["aether", "exec", "get", ""], { AETHER_HOST: "unix:///nonexistent/aetherd.sock" });
      const hanging = await timed(["aether", "exec", "get", ""], { AETHER_HOST: `unix://${silent}` });
      const plain = await timed(["aether", "ex"]);
      assert.deepEqual(baseline.candidates, []);
      assert.deepEqual(hanging.candidates, []);
      assert.ok(baseline.ms < 2 * plain.ms + 1000, `no daemon: ${baseline.ms} ms, a completion asking nothing: ${plain.ms} ms`);
      assert.ok(hanging.ms < 2 * plain.ms + 2000, `a daemon that never answers: ${hanging.ms} ms, asking nothing: ${plain.ms} ms`);
    } finally {
      server.close();
    }
    await clients[0]!.runtime.stopExecutable({ executable: "complete-me", signal: "SIGKILL" });
  });

  it("events follows StreamEvents (-o json, --kind, --count); audit lists the mutating calls; top shows telemetry, cells and VMs; version asks the daemon", async () => {
    const events = leave(["events", "-o", "json", "--kind", "executable.started", "--count", "1"]);
    // The stream is live only: start executables until one is seen.
    let n = 0;
    const code = await eventually(
      async () => {
        await clients[0]!.runtime.startExecutable({ name: `event-${n++}`, argv: ["/bin/true"] });
        return Promise.race([events.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 300))]);
      },
      15_000,
      "aether events to print one event and end",
    );
    assert.equal(code, 0, events.output());
    const event = JSON.parse(events.output().trim()) as { kind: string; resourceName: string; tenant: string };
    assert.equal(event.kind, "executable.started");
    assert.match(event.resourceName, /^event-\d+$/);

    await clients[0]!.cells.allocateCell({ name: "top-cell" });
    // Independent of each other: asked at once.
    const [audit, auditTable, top, topJson, version, none, badInterval] = await Promise.all([
      aether(["audit", "-o", "json", "--limit", "5"]),
      aether(["audit", "--limit", "3"]),
      aether(["top"]),
      aether(["top", "-o", "json"]),
      aether(["version"]),
      aether(["version", "-o", "json"], { AETHER_HOST: "unix:///nonexistent/aetherd.sock" }),
      aether(["top", "--interval", "0"]),
    ]);
    await clients[0]!.cells.freeCell({ cell: "top-cell" });

    assert.equal(audit.code, 0, audit.stderr);
    const records = JSON.parse(audit.stdout) as Array<{ method: string; result: string }>;
    assert.equal(records.length, 5);
    assert.ok(
      records.some((r) => r.method === "/aether.runtime.v1.ExecutableService/StartExecutable" && r.result === "ok"),
      audit.stdout,
    );
    assert.match(auditTable.stdout, /IDENTITY\s+METHOD[^]*ExecutableService\/StartExecutable/);

    assert.equal(top.code, 0, top.stderr);
    assert.match(top.stdout, /^load \d+\.\d\d/m, "one snapshot (stdout is not a terminal)");
    assert.match(top.stdout, /top-cell\s+default\s+\d+\.\d/, "the cell with its CPU %");
    const snapshot = JSON.parse(topJson.stdout) as {
      telemetry: { cpuCount: number };
      cells: Array<{ cell: { name: string }; stats: { pidsCurrent?: string } }>;
    };
    assert.ok(snapshot.telemetry.cpuCount > 0);
    assert.ok(snapshot.cells.some((c) => c.cell.name === "top-cell" && c.stats !== undefined));

    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^client: aether \d+\.\d+\.\d+ \(node v\d+/m);
    assert.match(version.stdout, new RegExp(`^server: aetherd \\d+\\.\\d+\\.\\d+ on .* at ${a.address.replace(/[/.]/g, "\\$&")}$`, "m"));
    assert.equal(none.code, 4, "no daemon: exit 4");
    assert.ok(
      (JSON.parse(none.stdout) as { client: { version: string }; server?: unknown }).server === undefined,
      "the client's part all the same",
    );
    assert.match(none.stderr, /cannot reach aetherd at unix:\/\/\/nonexistent\/aetherd\.sock/);
    assert.equal(badInterval.code, 2, "a usage error exits 2");
  });

  it("a watch, and aether events, end with exit 4 and say why when their daemon stops", async () => {
    const watch = leave(["vm", "list", "-w"], { AETHER_HOST: b.address });
    const events = leave(["events", "--kind", "executable.started"], { AETHER_HOST: b.address });
    await eventually(() => (watch.output().includes("NAME") ? true : undefined), 15_000, "the watch's first table");
    let n = 0;
    await eventually(
      async () => {
        await clients[1]!.runtime.startExecutable({ name: `last-${n++}`, argv: ["/bin/true"] });
        await new Promise((r) => setTimeout(r, 300));
        return events.output().includes("executable.started") ? true : undefined;
      },
      15_000,
      "aether events to show an event",
    );
    await stopWorkloads(clients[1]!);
    assert.equal(await b.stop(), 0);
    assert.equal(await watch.exited, 4, watch.output());
    assert.match(watch.output(), /the watch of VMs on unix:\/\/.* ended/);
    assert.equal(await events.exited, 4, events.output());
    assert.match(events.output(), /the event stream of aetherd at unix:\/\/.* ended/);
  });
});
