#!/usr/bin/env node
// What the tests left behind on the host: processes, network devices and namespaces, mounts, ZFS
// pools, loop devices and cgroups. scripts/test.mjs takes a snapshot before `node --test`, runs the
// tests with AETHER_TEST_RUN=<id> in their environment (every process a test starts inherits it,
// down to aetherd's shims and namespace holders), and fails the suite if anything new is left after
// them, naming each thing. Run by hand (`node scripts/leftovers.mjs`) it lists every test leftover
// on this machine, from any run, and exits 1 if there is one.
//
// What counts as the tests':
//   - a process carrying this run's marker (except zfs-fuse, which tests start like a service and
//     leave running on purpose), and every descendant of one (workloads get a clean environment);
//   - an orphaned process (parent init) without any run's marker whose command line names a
//     test's temporary folder (/tmp/aetherd-*, /tmp/aether*, /dev/shm/aether-etcd-*,
//     /var/tmp/aether-zfs-*) or is aether-shim, aetherd, the aggregator, qemu-system-* or
//     firecracker, unless it was there before the run (another run's processes carry another
//     marker and are not counted);
//   - a network device named like aetherd's TAPs (ae<8 hex>n<i>) or a test's bridge (aehb<n>,
//     aether*), a network namespace named aether*, a mount below a test folder, a ZFS pool on a
//     test image (/var/tmp/aether-zfs-*.img), a loop device on a test file, and a cgroup named
//     aether-test-* (the test daemons' cgroup roots) in any hierarchy, v1 freezer included;
//     each only if it was not there before the run.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";

export const MARKER = "AETHER_TEST_RUN";

const TMP = tmpdir().replace(/\/+$/, "");
// /dev/shm: test etcds keep their data in memory (test/helpers/etcd.ts says why).
const TEST_PATHS = [`${TMP}/aether`, "/dev/shm/aether-etcd-", "/var/tmp/aether-zfs-"];
const TEST_BINARIES = [/^aether-shim/, /^qemu-system-/, /^firecracker$/, /^aether-aggregator/];
const TEST_SCRIPTS = [/daemon\/bin\/aetherd\.mjs$/, /aggregator\/bin\/[\w.-]+\.mjs$/];
const LINK_NAMES = [/^ae[0-9a-f]{8}n\d+$/, /^aehb\d+$/, /^aether/];
const SERVICES = new Set(["zfs-fuse"]);

const read = (path) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

const namesTestPath = (text) => TEST_PATHS.some((p) => text.includes(p));

/** Every process: pid, parent, start time (for identity across snapshots), argv, its run marker. */
function processes() {
  const out = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = read(`/proc/${name}/stat`);
    const cmdline = read(`/proc/${name}/cmdline`);
    if (stat === undefined || cmdline === undefined || cmdline === "") continue; // gone, or a kernel thread
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") continue; // finished; only the reaping is left
    const env = (read(`/proc/${name}/environ`) ?? "").split("\0");
    const marker = env.find((e) => e.startsWith(`${MARKER}=`))?.slice(MARKER.length + 1);
    const argv = cmdline.replace(/\0$/, "").split("\0");
    out.set(Number(name), { pid: Number(name), ppid: Number(fields[1]), start: fields[19], argv, marker });
  }
  return out;
}

function testish(p) {
  const exe = basename(p.argv[0] ?? "");
  if (TEST_BINARIES.some((r) => r.test(exe))) return true;
  if (p.argv.some((a) => TEST_SCRIPTS.some((r) => r.test(a)))) return true;
  return p.argv.some(namesTestPath);
}

function links() {
  try {
    const text = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return text
      .split("\n")
      .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
      .filter((n) => n !== undefined && LINK_NAMES.some((r) => r.test(n)));
  } catch {
    return [];
  }
}

function netns() {
  try {
    return readdirSync("/var/run/netns").filter((n) => n.startsWith("aether"));
  } catch {
    return [];
  }
}

function mounts() {
  const text = read("/proc/self/mountinfo") ?? "";
  const unescape = (s) => s.replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const f = l.split(" ");
      const sep = f.indexOf("-");
      return { mountpoint: unescape(f[4] ?? ""), type: f[sep + 1] ?? "", source: unescape(f[sep + 2] ?? "") };
    })
    .filter((m) => namesTestPath(`${m.mountpoint}/`) || namesTestPath(m.source))
    .map((m) => `${m.mountpoint} (${m.type} from ${m.source})`);
}

/** ZFS pools whose devices are test images; asks zpool only when a ZFS daemon may be there. */
function pools() {
  const images = existsSync("/var/tmp") ? readdirSync("/var/tmp").filter((f) => /^aether-zfs-.*\.img$/.test(f)) : [];
  const found = images.map((f) => `image file /var/tmp/${f}`);
  try {
    const text = execFileSync("zpool", ["status", "-P"], { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] });
    let pool = "";
    for (const line of text.split("\n")) {
      const name = /^\s*pool:\s*(\S+)/.exec(line)?.[1];
      if (name) pool = name;
      else if (pool !== "" && line.includes("/var/tmp/aether-zfs-")) found.push(`pool ${pool} on ${line.trim().split(/\s+/)[0]}`);
    }
  } catch {
    // No zpool, or no ZFS daemon answering: then no pool is imported either.
  }
  return [...new Set(found)];
}

function loops() {
  const out = [];
  for (const dev of existsSync("/sys/block") ? readdirSync("/sys/block") : []) {
    const backing = read(`/sys/block/${dev}/loop/backing_file`)?.trim();
    if (backing && namesTestPath(backing)) out.push(`/dev/${dev} on ${backing}`);
  }
  return out;
}

/** Folders named aether-test-* in any cgroup hierarchy (not below one: its children go with it). */
function cgroups() {
  const out = [];
  const walk = (dir, depth) => {
    let names;
    try {
      names = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of names) {
      if (!d.isDirectory()) continue;
      const path = join(dir, d.name);
      if (d.name.startsWith("aether-test-")) out.push(path);
      else if (depth > 0) walk(path, depth - 1);
    }
  };
  walk("/sys/fs/cgroup", 5);
  return out;
}

/** The pids in a cgroup folder and below it. */
function cgroupPids(dir) {
  const pids = new Set();
  const walk = (d) => {
    for (const f of ["cgroup.procs", "tasks"]) {
      for (const l of (read(join(d, f)) ?? "").split("\n")) if (/^\d+$/.test(l.trim())) pids.add(Number(l));
    }
    try {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      // removed meanwhile
    }
  };
  walk(dir);
  return [...pids].sort((a, b) => a - b);
}

/** What is on the host now. */
export function snapshot() {
  const procs = processes();
  return {
    procs,
    processKeys: new Set([...procs.values()].map((p) => `${p.pid}:${p.start}`)),
    things: {
      "network device": links(),
      "network namespace": netns(),
      mount: mounts(),
      ZFS: pools(),
      "loop device": loops(),
      cgroup: cgroups(),
    },
  };
}

/**
 * The leftovers of run `runId` since `before` (both optional: without them, every test leftover on
 * the machine), as lines to print; empty when there are none.
 */
export function leftovers(before, runId) {
  const now = snapshot();
  const self = new Set();
  for (let pid = process.pid; pid > 1 && !self.has(pid); pid = now.procs.get(pid)?.ppid ?? 0) self.add(pid);
  const service = (p) => SERVICES.has(basename(p.argv[0] ?? ""));
  const counted = (p) => {
    if (self.has(p.pid) || service(p)) return false;
    if (runId !== undefined && p.marker === runId) return true;
    if (p.marker !== undefined && runId !== undefined) return false; // another run's, or an earlier one's
    // Unmarked (its environment was replaced): ours only if orphaned, since a child of one of ours
    // is found below as a descendant, and one with a live parent of its own belongs to that parent.
    const orphaned = runId === undefined || p.ppid <= 1 || !now.procs.has(p.ppid);
    return testish(p) && orphaned && !(before?.processKeys.has(`${p.pid}:${p.start}`) ?? false);
  };
  const flagged = new Set([...now.procs.values()].filter(counted).map((p) => p.pid));
  // Descendants of a flagged process (a shim's workload, started with an environment of its own).
  for (let grew = true; grew;) {
    grew = false;
    for (const p of now.procs.values()) {
      if (!flagged.has(p.pid) && flagged.has(p.ppid) && !self.has(p.pid)) {
        flagged.add(p.pid);
        grew = true;
      }
    }
  }
  const lines = [];
  const show = (p, depth) => {
    const cmd = p.argv.join(" ");
    lines.push(`${"  ".repeat(depth + 1)}process ${p.pid} (parent ${p.ppid}): ${cmd.length > 300 ? `${cmd.slice(0, 300)}…` : cmd}`);
    for (const c of now.procs.values()) if (c.ppid === p.pid && flagged.has(c.pid)) show(c, depth + 1);
  };
  for (const pid of [...flagged].sort((a, b) => a - b)) {
    const p = now.procs.get(pid);
    if (p && !flagged.has(p.ppid)) show(p, 0);
  }
  for (const [kind, items] of Object.entries(now.things)) {
    const earlier = new Set(before?.things[kind] ?? []);
    for (const item of items.filter((i) => !earlier.has(i))) {
      if (kind !== "cgroup") lines.push(`  ${kind} ${item}`);
      else {
        const pids = cgroupPids(item);
        lines.push(`  cgroup ${item}${pids.length === 0 ? " (empty)" : ` (holding pid ${pids.join(", ")})`}`);
      }
    }
  }
  return lines;
}

/** Counts of what was there before the run and is therefore not counted, for a note. */
export function preexisting(before) {
  const counts = Object.entries(before.things)
    .filter(([, items]) => items.length > 0)
    .map(([kind, items]) => `${items.length} ${kind}${items.length === 1 ? "" : "s"}`);
  const procs = [...before.procs.values()].filter((p) => p.marker === undefined && testish(p)).length;
  if (procs > 0) counts.unshift(`${procs} test-like process${procs === 1 ? "" : "es"}`);
  return counts;
}

/** Checks a moment longer when something is found: a process may still be on its way out. */
export async function settledLeftovers(before, runId, graceMs = 5_000) {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const lines = leftovers(before, runId);
    if (lines.length === 0 || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 250));
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const lines = leftovers(undefined, undefined);
  if (lines.length === 0) console.log("no test leftovers on this machine");
  else console.log(`test leftovers on this machine:\n${lines.join("\n")}`);
  process.exitCode = lines.length === 0 ? 0 : 1;
}
