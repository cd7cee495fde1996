// Issue 23, items 7 and 14, with the real aether against a real aetherd: -o table|wide|json|yaml|name
// and --no-headers, plain columns off a terminal and boxed ones on it, tables fitted to the width
// (COLUMNS) with long commands clipped in `table` and whole in `wide`, short ids in tables; label
// selectors (-l, --filter) on lists, with terms aetherd cannot filter on applied by the CLI;
// --dry-run that changes nothing; and deletes by selector that ask on a terminal and refuse without
// --yes when stdin is not one.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { runtime } from "@aether/sdk";
import { useDaemon } from "./helpers/daemon.js";

const { ExecutableState } = runtime;
import { runCommand } from "./helpers/run.js";

interface ExecutableJson {
  id: string;
  name: string;
  labels?: Record<string, string>;
  argv: string[];
}

describe("aether's output formats, selectors, dry runs and deletes by selector", () => {
  const env = useDaemon();
  const aether = (args: string[], more: { env?: NodeJS.ProcessEnv; input?: string } = {}) =>
    runCommand("aether", args, {
      env: { AETHER_HOST: env.daemon.address, ...more.env },
      ...(more.input !== undefined && { input: more.input }),
    });
  /** The command run on a pseudo-terminal (script(1)), with `input` typed into it. */
  const onTerminal = (args: string[], input = "") =>
    runCommand("script", ["-qec", ["aether", ...args].map((a) => `'${a}'`).join(" "), "/dev/null"], {
      env: { AETHER_HOST: env.daemon.address, COLUMNS: "200", TERM: "dumb" },
      input,
    });
  const names = async (...selector: string[]) => {
    const r = await aether(["exec", "list", ...selector, "-o", "name"]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout
      .split("\n")
      .filter((l) => l !== "")
      .sort();
  };
  /** What aetherd has, by the SDK: the names of the executables labelled team=<team>. */
  const has = async (team: string) =>
    (await env.aether.runtime.listExecutables({ filter: `team=${team}`, pageSize: 1000 })).executables.map((e) => e.name).sort();
  /** Starts an executable through the SDK (setting up is not what is tested) and waits for its end. */
  const start = async (name: string, labels: string[], ...argv: string[]) => {
    const { executable } = await env.aether.runtime.startExecutable({
      name,
      argv,
      labels: Object.fromEntries(labels.map((l) => l.split("=") as [string, string])),
    });
    await env.aether.runtime.waitExecutable({ executable: name });
    return executable?.id ?? "";
  };

  it("-o name, json, yaml and wide, --no-headers, plain columns and short ids off a terminal", async () => {
    const long = `/bin/echo ${"a-rather-long-argument ".repeat(8).trim()}`.split(" ");
    const id = await start("fmt-long", ["team=fmt", "tier=web"], ...long);
    await start("fmt-short", ["team=fmt"], "/bin/true");

    assert.deepEqual(await names("-l", "team=fmt"), ["fmt-long", "fmt-short"]);

    const json = JSON.parse((await aether(["exec", "list", "-l", "team=fmt", "--json"])).stdout) as ExecutableJson[];
    const yaml = parseYaml((await aether(["exec", "list", "-l", "team=fmt", "-o", "yaml"])).stdout) as ExecutableJson[];
    assert.deepEqual(yaml, json, "YAML holds what JSON holds");
    assert.deepEqual(
      parseYaml((await aether(["exec", "get", "fmt-long", "-o", "yaml"])).stdout),
      json.find((e) => e.name === "fmt-long"),
    );
    assert.equal((await aether(["exec", "get", id.slice(0, 8), "-o", "name"])).stdout, "fmt-long\n");

    const table = await aether(["exec", "list", "-l", "team=fmt"]);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    assert.match(header ?? "", /^NAME\s+TENANT\s+STATE\s+PID\s+EXIT\s+AGE\s+ID\s+COMMAND$/, "plain columns, no box, off a terminal");
    assert.ok(!table.stdout.includes("│"));
    const row = rows.find((r) => r.startsWith("fmt-long")) ?? "";
    assert.match(row, new RegExp(`\\s${id.slice(0, 8)}\\s`), "the short id");
    assert.ok(!row.includes(id), "not the whole id");
    assert.match(row, /…$/, "a long command is clipped in a table");

    const wide = await aether(["exec", "list", "-l", "team=fmt", "-o", "wide"]);
    const wideRow = wide.stdout.split("\n").find((r) => r.startsWith("fmt-long")) ?? "";
    assert.ok(wideRow.includes(id), "wide: the whole id");
    assert.ok(wideRow.includes(long.join(" ")), "wide: the whole command");
    assert.match(wideRow, /team=fmt,tier=web/, "wide: the labels");

    const bare = await aether(["exec", "list", "-l", "team=fmt", "--no-headers"]);
    assert.equal(bare.stdout.split("\n").filter((l) => l !== "").length, 2);
    assert.ok(!bare.stdout.includes("NAME"));

    const both = await aether(["exec", "list", "--json", "-o", "yaml"]);
    assert.equal(both.code, 2, "--json and -o together are a usage error");
  });

  it("tables fit the width (COLUMNS off a terminal, the terminal's own on one, boxed there)", async () => {
    await start("fit-one", ["team=fit"], "/bin/echo", ...Array.from({ length: 30 }, (_, i) => `word${i}`));
    // NAME..ID and the COMMAND's 8 columns need 67; below that a row overflows, as kubectl's do.
    for (const width of [72, 80, 100]) {
      const r = await aether(["exec", "list", "-l", "team=fit"], { env: { COLUMNS: String(width) } });
      const lines = r.stdout.trimEnd().split("\n");
      for (const line of lines) assert.ok(line.length <= width, `${line.length} > ${width}: ${line}`);
      assert.match(lines[1] ?? "", /…$/);
    }
    const wide = await aether(["exec", "list", "-l", "team=fit", "-o", "wide"], { env: { COLUMNS: "72" } });
    assert.ok((wide.stdout.split("\n")[1] ?? "").length > 72, "wide does not fit, it keeps everything");

    const boxed = await onTerminal(["exec", "list", "-l", "team=fit"]);
    assert.equal(boxed.code, 0, boxed.stdout);
    assert.match(boxed.stdout, /│ fit-one\s+│ default\s+│ exited/, "boxed on a terminal");
  });

  it("-l and --filter select by labels: equality on aetherd, != and (not) set by the CLI", async () => {
    await start("sel-a", ["team=sel", "env=prod"], "/bin/true");
    await start("sel-b", ["team=sel", "env=dev", "legacy=yes"], "/bin/true");
    await start("sel-c", ["team=sel"], "/bin/true");
    assert.deepEqual(await names("-l", "team=sel"), ["sel-a", "sel-b", "sel-c"]);
    assert.deepEqual(await names("--filter", "team=sel,env=prod"), ["sel-a"]);
    assert.deepEqual(await names("-l", "team=sel,env!=prod"), ["sel-b", "sel-c"]);
    assert.deepEqual(await names("-l", "team=sel,env"), ["sel-a", "sel-b"]);
    assert.deepEqual(await names("-l", "team=sel,!legacy"), ["sel-a", "sel-c"]);
    assert.deepEqual(await names("-l", "team=sel", "--filter", "env=dev"), ["sel-b"], "-l and --filter both apply");
    const bad = await aether(["exec", "list", "-l", "team=sel,,x"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /empty term/);
  });

  it("--dry-run says what would happen and changes nothing", async () => {
    const cell = await aether(["cell", "allocate", "dry-cell", "--memory", "64M", "--dry-run"]);
    assert.equal(cell.code, 0, cell.stderr);
    assert.equal(cell.stdout, "would allocate cell dry-cell\n");
    assert.equal(
      (await env.aether.cells.listCells({ pageSize: 1000 })).cells.filter((c) => c.name === "dry-cell").length,
      0,
      "no cell was allocated",
    );

    const volume = await aether(["storage", "create", "dry-vol", "--size", "8M", "--dry-run"]);
    assert.equal(volume.code, 0, volume.stderr);
    assert.match(volume.stdout, /^would create volume dry-vol of 8\.0 MiB\n$/);
    assert.equal(
      (await env.aether.storage.listVolumes({ pageSize: 1000 })).volumes.filter((v) => v.name === "dry-vol").length,
      0,
      "no volume was created",
    );

    const before = await env.aether.node.setLogLevel({ level: "" });
    const level = await aether(["node", "log-level", "trace", "--for", "5m", "--dry-run"]);
    assert.equal(level.stdout, `would set the log level from ${before.level} to trace for 300s, then back to ${before.configuredLevel}\n`);
    assert.equal((await env.aether.node.setLogLevel({ level: "" })).level, before.level, "the level did not change");

    const missing = await aether(["vm", "start", "no-such-vm", "--dry-run"]);
    assert.equal(missing.code, 3, "a name that does not exist fails as it would");

    await env.aether.runtime.startExecutable({ name: "dry-runner", labels: { team: "dry" }, argv: ["/bin/sleep", "600"] });
    await start("dry-done", ["team=dry"], "/bin/true");
    const stop = await aether(["exec", "stop", "dry-runner", "--dry-run"]);
    assert.match(stop.stdout, /^would stop dry-runner \(pid \d+\): SIGTERM, then SIGKILL after 10s/);
    const deletes = await aether(["exec", "delete", "-l", "team=dry", "--dry-run"]);
    assert.equal(deletes.code, 0, deletes.stderr);
    assert.match(deletes.stdout, /^would delete executable dry-done \([0-9a-f]{8}\)$/m);
    assert.match(deletes.stdout, /^would delete executable dry-runner \([0-9a-f]{8}\), but aetherd would refuse: dry-runner is running/m);
    const { executable: running } = await env.aether.runtime.getExecutable({ executable: "dry-runner" });
    assert.equal(running?.state, ExecutableState.RUNNING, "still running");
    assert.deepEqual(await has("dry"), ["dry-done", "dry-runner"], "nothing deleted");
    await env.aether.runtime.stopExecutable({ executable: "dry-runner", gracePeriod: { seconds: 1n } });
  });

  it("a delete by selector refuses without --yes off a terminal, asks on one, and deletes with --yes", async () => {
    for (const n of ["del-1", "del-2", "del-3"]) await start(n, ["team=del"], "/bin/true");
    const refused = await aether(["exec", "delete", "-l", "team=del"]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      /refusing to delete executables selected by -l team=del without confirmation: stdin is not a terminal.*--yes/,
    );
    assert.deepEqual(await has("del"), ["del-1", "del-2", "del-3"], "nothing deleted");
    assert.equal((await aether(["exec", "delete"])).code, 2, "neither names nor a selector");
    assert.equal((await aether(["exec", "delete", "del-1", "--all"])).code, 2, "names and --all");

    const no = await onTerminal(["exec", "delete", "-l", "team=del,env!=prod"], "n\n");
    assert.match(no.stdout, /delete 3 executables selected by -l team=del,env!=prod: del-\d, del-\d, del-\d\? \[y\/N\]/);
    assert.deepEqual(await has("del"), ["del-1", "del-2", "del-3"], "answered no: nothing deleted");

    const yes = await onTerminal(["exec", "delete", "-l", "team=del", "--state", "exited"], "y\n");
    assert.equal(yes.code, 0, yes.stdout);
    assert.match(yes.stdout, /deleted executable del-1/);
    assert.deepEqual(await has("del"), []);

    await start("del-4", ["team=del"], "/bin/true");
    const scripted = await aether(["exec", "delete", "-l", "team=del", "--yes"]);
    assert.equal(scripted.code, 0, scripted.stderr);
    assert.equal(scripted.stdout, "deleted executable del-4\n");
    assert.deepEqual(await has("del"), []);
  });
});
