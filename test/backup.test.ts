// The cluster's state backed up to git (issue 17, item 4), with the compiled aether-aggregator, the
// real git binary and fake bidders as nodes: changes become commits pushed to a bare remote; no BMC
// password ever enters the repository; the aggregator's state directory is wiped and a fresh
// aggregator rebuilds its store from a commit of the remote, byte for byte in the records; a restore
// is refused while nodes are live unless forced; kill -9 loses no committed backup and the next start
// continues the history; `aether backup list|trigger|restore` show the same.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@aether/sdk";
import { BackupChangeKind, ClusterEventKind, NodeLifecycle } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { eventually, repoRoot } from "./helpers/daemon.js";
import { rejectsWith } from "./helpers/assertions.js";
import { startAggregator, type TestAggregator } from "./helpers/aggregator.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { startFakeBidder, type FakeBidder } from "./helpers/fake-bidder.js";
import { runCommand } from "./helpers/run.js";
import { backedUpValue, decodeKey, isBackedUp, loadConfig } from "@aether/aggregator";

const PASSWORD = "bmc-Pa55word-that-must-never-be-committed-7f3a";

const POLICY = '[[bindings]]\nmembers = ["spiffe://prod/user/eve"]\nrole = "auditor"\n';

const git = (gitDir: string, ...args: string[]) => execFileSync("git", ["--git-dir", gitDir, ...args], { encoding: "utf8" });

/** How many git processes work on a repository (an aggregator killed with -9 leaves its children). */
function gitsOn(repository: string): number {
  let count = 0;
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (argv[0]?.endsWith("git") && argv.includes(repository)) count++;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

/** The store's backed-up records as files in a state directory: key → value. */
function storeFiles(stateDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const dir = join(stateDir, "store");
  for (const name of readdirSync(dir)) {
    if (name.startsWith(".")) continue;
    const key = decodeKey(name);
    if (isBackedUp(key)) out.set(key, readFileSync(join(dir, name), "utf8"));
  }
  return out;
}

describe("the cluster's state backed up to git", { timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-backup-"));
  const remote = join(dir, "remote.git");
  const bidders: FakeBidder[] = [];
  let agg: TestAggregator | undefined;
  let args: string[] = [];

  before(() => {
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main");
    const passwordFile = join(dir, "bmc-password");
    writeFileSync(passwordFile, `${PASSWORD}\n`);
    chmodSync(passwordFile, 0o600);
    const bmcs = join(dir, "bmcs.toml");
    writeFileSync(
      bmcs,
      `[[bmcs]]\nnode = "bk-a"\nendpoint = "https://127.0.0.1:1"\nusername = "admin"\npassword_file = "${passwordFile}"\ninsecure = true\n`,
    );
    const policy = join(dir, "policy.toml");
    writeFileSync(policy, POLICY);
    args = [
      "--policy",
      policy,
      "--backup-repository",
      join(dir, "state", "backup.git"),
      "--backup-remote",
      remote,
      "--backup-batch-ms",
      "300",
      "--bmcs",
      bmcs,
      // Fake bidders do not heartbeat: a long lease keeps them READY (and unfenced) through the test.
      "--lease-ttl-ms",
      "600000",
    ];
  });

  after(async () => {
    if (agg) {
      for (const id of ["bk-a", "bk-b"]) await agg.client.aggregator.deregisterNode({ nodeId: id }).catch(() => undefined);
      await agg.stop();
    }
    for (const b of bidders) await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let restorePoint = "";
  let recorded: Map<string, string> = new Map();

  it("commits every change (batched) and pushes it to the remote; the records are one file each; no secret enters", async () => {
    agg = await startAggregator({ dir, args });
    const client = agg.client;
    for (const id of ["bk-a", "bk-b"]) {
      const bidder = await startFakeBidder(id, { score: id === "bk-a" ? 800 : 200 });
      bidders.push(bidder);
      await client.aggregator.registerNode({ nodeId: id, name: id, address: bidder.address });
    }
    const { placement } = await client.aggregator.deploy({
      spec: { name: "web", kind: { case: "executable", value: { argv: ["/bin/sleep", "600"] } } },
    });
    assert.equal(placement?.node, "bk-a");
    const workload = placement?.workloadId ?? "";
    const remoteFiles = () =>
      git(remote, "for-each-ref", "refs/heads/main") === "" ? [] : git(remote, "ls-tree", "-r", "--name-only", "main").split("\n");
    // The remote holds a commit with every record as a file of its own.
    await eventually(
      () => (remoteFiles().includes(`placements/${workload}.json`) ? true : undefined),
      15_000,
      "the placement on the remote",
    );
    // Whatever is still batched is committed now (and pushed before the answer).
    const placed = (await client.aggregator.triggerBackup({})).backup?.commit ?? "";
    assert.equal(git(remote, "rev-parse", "main").trim(), placed);
    // A change after that is a commit of its own, naming the record it changed.
    await client.aggregator.cordonNode({ node: "bk-b" });
    await eventually(
      () => (git(remote, "show", "main:nodes/bk-b.json").includes("CORDONED") ? true : undefined),
      15_000,
      "the cordoned node on the remote",
    );
    assert.equal(git(remote, "rev-parse", "main^").trim(), placed);
    const files = remoteFiles();
    for (const f of ["nodes/bk-a.json", "nodes/bk-b.json", "config/bmcs/node-bk-a.json"]) assert.ok(files.includes(f), `${f} in ${files}`);
    assert.ok(files.some((f) => f.startsWith("auctions/")));
    assert.ok(!files.some((f) => f.startsWith("events/") || f === "leader.json"), "no events, no leader record");
    // Stable JSON, indented, one record per file; no heartbeat fields.
    const node = git(remote, "show", "main:nodes/bk-b.json");
    assert.match(node, /^\{\n {2}"id": "bk-b",\n/);
    assert.doesNotMatch(node, /heartbeatTime|expireTime/);
    const bmc = JSON.parse(git(remote, "show", "main:config/bmcs/node-bk-a.json")) as Record<string, unknown>;
    assert.deepEqual(bmc, { node: "bk-a", endpoint: "https://127.0.0.1:1", username: "admin", insecure: true });
    assert.equal(git(remote, "show", "main:config/policy.toml"), POLICY, "the policy, as its file holds it");

    // Newest first, with time, summary and records; paged; pushed.
    const { backups, repository, remote: listedRemote, pushError } = await client.aggregator.listBackups({});
    assert.equal(repository, join(dir, "state", "backup.git"));
    assert.equal(listedRemote, remote);
    assert.equal(pushError, "");
    assert.ok(backups.length >= 2, `${backups.length} backups`);
    assert.equal(backups[0]?.commit, git(remote, "rev-parse", "main").trim());
    assert.ok(backups.every((b) => b.pushed && b.summary !== "" && b.commitTime !== undefined));
    assert.equal(backups[0]?.summary, "1 changed: nodes/bk-b");
    const firstPage = await client.aggregator.listBackups({ pageSize: 1 });
    assert.equal(firstPage.backups.length, 1);
    const second = await client.aggregator.listBackups({ pageSize: 1, pageToken: firstPage.nextPageToken });
    assert.equal(second.backups[0]?.commit, backups[1]?.commit);
    await rejectsWith(client.aggregator.listBackups({ pageToken: "nonsense" }), Code.InvalidArgument, /page_token/);
    await rejectsWith(client.aggregator.listBackups({ pageToken: "f".repeat(40) }), Code.InvalidArgument, /page_token names no backup/);
    await rejectsWith(client.aggregator.listBackups({ pageSize: 1001 }), Code.InvalidArgument, /at most 1000/);

    // The password is nowhere in the history, local or remote.
    for (const repo of [remote, join(dir, "state", "backup.git")]) {
      const all = git(repo, "log", "-p", "--all", "--format=%H %s%n%b");
      assert.ok(all.includes("bk-a"), "the history is readable");
      assert.ok(!all.includes(PASSWORD), `no password in ${repo}`);
      assert.ok(!all.includes("bmc-password"), `not even the password file's path in ${repo}`);
    }

    // TriggerBackup with nothing changed makes no commit; the CLI lists the same.
    const trig = await client.aggregator.triggerBackup({});
    assert.equal(trig.committed, false);
    restorePoint = trig.backup?.commit ?? "";
    assert.equal(restorePoint, git(remote, "rev-parse", "main").trim());
    const env = { AETHER_AGGREGATOR: `unix://${agg.socket}` };
    const listed = await runCommand("aether", ["backup", "list", "--json"], { env });
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal((JSON.parse(listed.stdout) as Array<{ commit: string }>)[0]?.commit, restorePoint);
    const triggered = await runCommand("aether", ["backup", "--aggregator", `unix://${agg.socket}`, "trigger"]);
    assert.equal(triggered.code, 0, triggered.stderr);
    assert.match(
      triggered.stdout,
      new RegExp(`^nothing changed since ${restorePoint.slice(0, 12)} at .*: 1 changed: nodes/bk-b \\(\\d+ records\\)\n$`),
    );
    const table = await runCommand("aether", ["backup", "list"], { env });
    assert.match(table.stdout, new RegExp(`${restorePoint.slice(0, 12)}.*yes`));
    recorded = storeFiles(agg.stateDir);
  });

  it("refuses a restore while nodes are live (naming them) unless forced; dry-run says what would change; bad commits are refused", async () => {
    const client = (agg as TestAggregator).client;
    const first = (await client.aggregator.listBackups({ pageSize: 1000 })).backups.at(-1)?.commit ?? "";
    await rejectsWith(client.aggregator.restoreBackup({ commit: first }), Code.FailedPrecondition, /bk-a, bk-b are live.*--force/);
    const dry = await client.aggregator.restoreBackup({ commit: first.slice(0, 10), dryRun: true });
    assert.equal(dry.applied, false);
    assert.equal(dry.commit, first);
    assert.deepEqual(dry.liveNodes, ["bk-a", "bk-b"]);
    assert.ok(dry.changes.length > 0);
    assert.ok(dry.changes.every((c) => c.kind !== BackupChangeKind.UNSPECIFIED));
    await rejectsWith(client.aggregator.restoreBackup({ commit: "main" }), Code.InvalidArgument, /hexadecimal/);
    await rejectsWith(client.aggregator.restoreBackup({ commit: "0123456789abcdef" }), Code.NotFound, /no backup 0123456789abcdef/);
    const cli = await runCommand("aether", ["backup", "restore", first, "--dry-run"], {
      env: { AETHER_AGGREGATOR: `unix://${agg?.socket}` },
    });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /would restore .*\n {2}(added|changed|removed) +\S+/);
    assert.match(cli.stdout, /live nodes \(a restore needs --force\): bk-a, bk-b/);
    const refused = await runCommand("aether", ["backup", "restore", first], { env: { AETHER_AGGREGATOR: `unix://${agg?.socket}` } });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /bk-a, bk-b are live/);
    // Nothing was changed by the refusals and the dry runs.
    assert.deepEqual(storeFiles((agg as TestAggregator).stateDir), recorded);
  });

  it("a wiped aggregator is rebuilt from the remote's commit: the records are back byte for byte", async () => {
    const old = agg as TestAggregator;
    await old.stop();
    agg = undefined;
    rmSync(join(dir, "state"), { recursive: true, force: true });
    agg = await startAggregator({ dir, args });
    const client = agg.client;
    // The history came from the remote; the empty store is not committed over it.
    const listed = await client.aggregator.listBackups({});
    assert.equal(listed.backups[0]?.commit, restorePoint);
    assert.match(listed.heldReason, /store is empty/);
    assert.equal((await client.aggregator.listNodes({})).nodes.length, 0);

    const done = await client.aggregator.restoreBackup({ commit: restorePoint.slice(0, 12) });
    assert.equal(done.applied, true);
    assert.deepEqual(done.liveNodes, []);
    assert.ok(done.changes.every((c) => c.kind === BackupChangeKind.ADDED));
    assert.equal(done.changes.length, recorded.size);

    // Byte for byte: every record as the old aggregator wrote it (a node without its heartbeat's fields).
    const restored = storeFiles(agg.stateDir);
    assert.deepEqual([...restored.keys()].sort(), [...recorded.keys()].sort());
    for (const [key, value] of recorded) assert.equal(restored.get(key), backedUpValue(key, value), key);
    for (const [key, value] of recorded) if (!key.startsWith("nodes/")) assert.equal(restored.get(key), value, `${key} is the same bytes`);
    // The restore is a commit of its own, with the very tree restored, pushed.
    const head = git(remote, "rev-parse", "main").trim();
    assert.equal(done.backup?.commit, head);
    assert.equal(git(remote, "rev-parse", `${head}^{tree}`), git(remote, "rev-parse", `${restorePoint}^{tree}`));
    assert.equal(git(remote, "rev-parse", `${head}^`).trim(), restorePoint, "the history goes on");
    assert.match(done.backup?.summary ?? "", new RegExp(`restored from ${restorePoint.slice(0, 12)}`));

    // The restore is in the cluster's event log, with its figures.
    const restoredEvents = [];
    for await (const e of client.aggregator.streamClusterEvents({ kinds: [ClusterEventKind.STATE_RESTORED] }))
      if (e.event) restoredEvents.push(e.event);
    assert.equal(restoredEvents.length, 1);
    assert.deepEqual(restoredEvents[0]?.attributes, {
      commit: restorePoint,
      added: String(recorded.size),
      changed: "0",
      removed: "0",
      backup: head,
    });
    assert.match(restoredEvents[0]?.message ?? "", new RegExp(`restored from backup ${restorePoint.slice(0, 12)}`));

    // The cluster's state is back.
    const nodes = (await client.aggregator.listNodes({})).nodes;
    assert.deepEqual(
      nodes.map((n) => [n.id, NodeLifecycle[n.lifecycle]]),
      [
        ["bk-a", "ON_DUTY"],
        ["bk-b", "CORDONED"],
      ],
    );
    const { placements } = await client.aggregator.listPlacements({});
    assert.deepEqual(
      placements.map((p) => [p.name, p.node]),
      [["web", "bk-a"]],
    );
    // Restored READY nodes are live again (their lease extended by one TTL): a restore needs --force now.
    await rejectsWith(client.aggregator.restoreBackup({ commit: restorePoint }), Code.FailedPrecondition, /bk-a, bk-b are live/);
    const forced = await runCommand("aether", ["backup", "restore", restorePoint, "--force"], {
      env: { AETHER_AGGREGATOR: `unix://${agg.socket}` },
    });
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /restored .*: 0 record\(s\) changed\nlive nodes overridden \(--force\): bk-a, bk-b/);
  });

  it("kill -9 loses no committed backup, and the next start continues the history", async () => {
    const client = (agg as TestAggregator).client;
    const kept = (await client.aggregator.listBackups({ pageSize: 1000 })).backups.map((b) => b.commit);
    // Changes keep coming (batched commits every 300 ms) when the aggregator is killed.
    const churn = (async () => {
      for (let i = 0; i < 40; i++) {
        const node = "bk-b";
        await (i % 2 === 0 ? client.aggregator.uncordonNode({ node }) : client.aggregator.cordonNode({ node })).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await new Promise((r) => setTimeout(r, 900));
    await (agg as TestAggregator).kill9();
    await churn;
    // A git the aggregator had started may finish (or fail) after it is gone; wait for it to end.
    await eventually(() => (gitsOn(join(dir, "state", "backup.git")) === 0 ? true : undefined), 15_000, "no git left on the repository");
    const local = join(dir, "state", "backup.git");
    const headAtKill = git(local, "rev-parse", "main").trim();
    git(local, "fsck", "--full", "--no-dangling");
    agg = await startAggregator({ dir, args });
    const history = (await agg.client.aggregator.listBackups({ pageSize: 1000 })).backups.map((b) => b.commit);
    for (const c of kept) assert.ok(history.includes(c), `backup ${c} survived kill -9`);
    assert.ok(history.includes(headAtKill));
    // A commit the killed aggregator made but had not pushed yet is pushed when the next one starts.
    assert.equal(git(remote, "rev-parse", "main").trim(), headAtKill, "the remote holds every commit made before the kill");
    await agg.client.aggregator.uncordonNode({ node: "bk-b" }).catch(() => undefined);
    await agg.client.aggregator.cordonNode({ node: "bk-b" });
    const made = await agg.client.aggregator.triggerBackup({});
    const newest = made.backup?.commit ?? "";
    assert.ok(
      git(local, "merge-base", "--is-ancestor", headAtKill, newest) === "",
      "the new commit descends from the last one before the kill",
    );
    assert.equal(git(remote, "rev-parse", "main").trim(), newest, "and is pushed");
  });

  it("README's [backup] settings are what aether-aggregator accepts", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const toml = [...readme.matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => m[1] ?? "").find((b) => b.includes("[backup]"));
    assert.ok(toml, "a toml block with [backup]");
    const file = join(dir, "readme-backup.toml");
    writeFileSync(file, toml);
    const config = loadConfig({ config: file });
    assert.deepEqual(config.backup, {
      repository: "/var/lib/aether-aggregator/backup.git",
      remote: "git@backup.example.org:aether/cluster-state.git",
      batch_ms: 10_000,
      interval_ms: 300_000,
    });
  });

  it("[backup] without a git binary is refused at start with a sentence (exit 2)", () => {
    const r = spawnSync(
      process.execPath,
      [
        join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs"),
        "--state-dir",
        join(dir, "no-git"),
        "--backup-repository",
        join(dir, "no-git.git"),
      ],
      { env: { PATH: join(dir, "empty-path") }, encoding: "utf8" },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /needs the git binary, which is not installed: apt-get install git/);
  });

  it("without a repository the backup RPCs say how to configure one", async () => {
    const plain = await startAggregator();
    try {
      await rejectsWith(plain.client.aggregator.listBackups({}), Code.FailedPrecondition, /\[backup\] repository/);
      await rejectsWith(plain.client.aggregator.triggerBackup({}), Code.FailedPrecondition, /--backup-repository/);
    } finally {
      await plain.stop();
      rmSync(plain.dir, { recursive: true, force: true });
    }
  });
});

describe("backups with aggregator replicas on etcd", { timeout: 120_000 }, () => {
  let etcd: TestEtcd | undefined;
  const replicas: TestAggregator[] = [];
  const bidders: FakeBidder[] = [];
  const dir = mkdtempSync(join(tmpdir(), "aether-backup-ha-"));
  const remote = join(dir, "remote.git");

  after(async () => {
    for (const r of replicas) await r.kill9();
    for (const b of bidders) await b.close();
    await etcd?.stop();
    for (const r of replicas) rmSync(r.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it("only the leader commits; the replica that takes over after kill -9 continues the remote's history", async () => {
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main");
    etcd = await startEtcd();
    const args = (replica: string) => [
      ...["--store", "etcd", "--etcd-endpoints", etcd?.endpoint ?? "", "--replica", replica, "--lease-ttl-ms", "600000"],
      ...["--backup-repository", join(dir, `${replica}.git`), "--backup-remote", remote, "--backup-batch-ms", "200"],
    ];
    const first = await startAggregator({ args: args("agg-1") });
    replicas.push(first);
    const second = await startAggregator({ args: args("agg-2"), standby: true });
    replicas.push(second);
    const bidder = await startFakeBidder("ha-1");
    bidders.push(bidder);
    await first.client.aggregator.registerNode({ nodeId: "ha-1", name: "ha-1", address: bidder.address });
    const pushed = await eventually(
      () => git(remote, "for-each-ref", "--format=%(objectname)", "refs/heads/main").trim() || undefined,
      15_000,
      "the leader's first backup on the remote",
    );
    assert.ok(git(remote, "ls-tree", "--name-only", "-r", pushed).includes("nodes/ha-1.json"));
    await rejectsWith(second.client.aggregator.listBackups({}), Code.Unavailable, /standby; the leader is agg-1/);
    // The standby has not even opened its repository: it commits nothing.
    assert.equal(existsSync(join(dir, "agg-2.git")), false, "the standby committed nothing");

    await first.kill9();
    await eventually(
      async () => ((await second.client.node.checkHealth({}).catch(() => undefined))?.status === HealthStatus.SERVING ? true : undefined),
      20_000,
      "the standby to lead",
    );
    const listed = await second.client.aggregator.listBackups({});
    assert.equal(listed.backups[0]?.commit, pushed, "the new leader lists the history the old one pushed");
    const other = await startFakeBidder("ha-2");
    bidders.push(other);
    await second.client.aggregator.registerNode({ nodeId: "ha-2", name: "ha-2", address: other.address });
    const next = await eventually(
      () => {
        const head = git(remote, "rev-parse", "main").trim();
        return head !== pushed ? head : undefined;
      },
      15_000,
      "the new leader's backup on the remote",
    );
    assert.equal(git(remote, "rev-parse", `${next}^`).trim(), pushed, "one history: the new leader's commit follows the old one's");
    assert.match(git(remote, "log", "-1", "--format=%s", next), /added: nodes\/ha-2/);
  });
});

describe("backup batching, and a remote that is not there yet", { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-backup-batch-"));
  let agg: TestAggregator | undefined;
  let bidder: FakeBidder | undefined;
  after(async () => {
    await agg?.client.aggregator.deregisterNode({ nodeId: "batch-1" }).catch(() => undefined);
    await agg?.stop();
    await bidder?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("changes within --backup-batch-ms make one commit; a failed push is retried on --backup-interval-ms", async () => {
    const remote = join(dir, "late-remote.git");
    const local = join(dir, "state", "backup.git");
    agg = await startAggregator({
      dir,
      args: [
        ...["--backup-repository", local, "--backup-remote", remote],
        ...["--backup-batch-ms", "2000", "--backup-interval-ms", "1000", "--lease-ttl-ms", "600000"],
      ],
    });
    const client = agg.client;
    bidder = await startFakeBidder("batch-1");
    await client.aggregator.registerNode({ nodeId: "batch-1", name: "batch-1", address: bidder.address });
    const started = Date.now();
    for (let i = 0; i < 12; i++) {
      await (i % 2 === 0 ? client.aggregator.cordonNode({ node: "batch-1" }) : client.aggregator.uncordonNode({ node: "batch-1" }));
      await new Promise((r) => setTimeout(r, 100));
    }
    // Twelve changes in about 1.3 s, the last an uncordon; a batch later, the last state is committed.
    await new Promise((r) => setTimeout(r, 2600));
    const [last] = (await client.aggregator.listBackups({})).backups;
    assert.ok(last);
    assert.match(git(local, "show", `${last.commit}:nodes/batch-1.json`), /"lifecycle": "NODE_LIFECYCLE_ON_DUTY"/);
    const { backups, pushError } = await client.aggregator.listBackups({});
    const elapsedMs = Date.now() - started;
    console.log(`${backups.length} commits for a registration and 12 lifecycle changes in ${elapsedMs} ms with --backup-batch-ms 2000`);
    assert.ok(backups.length <= Math.ceil(elapsedMs / 2000) + 1, `${backups.length} commits in ${elapsedMs} ms`);
    const times = backups.map((b) => Number(b.commitTime?.seconds ?? 0n));
    for (let i = 1; i < times.length; i++)
      assert.ok((times[i - 1] as number) - (times[i] as number) >= 1, `commits ${times.join(", ")} s are at least a batch apart`);
    assert.equal(backups[0]?.commit, last.commit);
    // The remote does not exist: the backups are kept locally, and the push failure is told.
    assert.match(pushError, /late-remote\.git/);
    assert.ok(backups.every((b) => !b.pushed));

    git(remote, "init", "--quiet", "--bare", "--initial-branch=main");
    await eventually(
      async () => {
        const now = await client.aggregator.listBackups({});
        return now.pushError === "" && now.backups[0]?.pushed ? true : undefined;
      },
      10_000,
      "the interval's push to the remote",
    );
    assert.equal(git(remote, "rev-parse", "main").trim(), last.commit);
  });
});
