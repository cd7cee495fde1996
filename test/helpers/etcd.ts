// Gives a test a real etcd (Debian's etcd-server) on loopback: free client and peer ports, a
// throw-away data directory (in memory when the machine has a tmpfs, see etcdDataParent), and
// ways to stop, crash, pause and resume it. A test that needs etcd never skips: when etcd is
// missing or does not start, the test fails saying why.
import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { createServer, type Server, type Socket, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { which } from "../../daemon/src/host/command.js";
import { freePort } from "./net.js";

export interface TestEtcd {
  /** The client URL, e.g. http://127.0.0.1:40123. */
  endpoint: string;
  /** Stops etcd (SIGTERM, then SIGKILL) and removes its data directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Kills etcd with SIGKILL, as a crash would; the data directory stays until stop(). */
  kill9(): Promise<void>;
  /** Freezes etcd (SIGSTOP) and resolves once it has stopped: connections stay open and nothing answers. */
  pause(): Promise<void>;
  /** Thaws a paused etcd (SIGCONT). */
  resume(): void;
  /** The end of etcd's log (its warnings: slow disk, slow applies), for a failing assertion's message. */
  warnings(): string;
}

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const PAUSE_TIMEOUT_MS = 5_000;
/** How much of etcd's stderr is kept. */
const LOG_TAIL_CHARS = 8_000;
/** A tmpfs on Linux machines (systemd and Docker both mount one). */
const MEMORY_FS = "/dev/shm";

/**
 * Where etcd's data directories go: in memory (MEMORY_FS) when there is one, else the temporary
 * folder. A lease ends only when etcd commits its revoke, and etcd commits after fdatasync of its
 * WAL and applies after its bbolt commit. On the disk the rest of the suite keeps busy (guest
 * images, ZFS pools, migrations) one such fsync took seconds ("slow fdatasync" in etcd's log), and
 * the revoke of a dead or partitioned leader's lease waited for it: a fail-over test measured
 * someone else's disk writes, not the election. etcd in production wants a disk of its own (its
 * hardware guide asks for WAL fsyncs of a few milliseconds); memory is the nearest a shared test
 * machine has. The files outlive a SIGKILLed etcd, as tests need, and stop() removes them.
 */
export async function etcdDataParent(): Promise<string> {
  try {
    if ((await stat(MEMORY_FS)).isDirectory()) {
      await access(MEMORY_FS, constants.W_OK);
      return MEMORY_FS;
    }
  } catch {
    // No tmpfs here: the temporary folder, as on any disk.
  }
  return tmpdir();
}

/** Whether every thread of process pid is stopped (state T in /proc), as SIGSTOP leaves them. */
async function allThreadsStopped(pid: number): Promise<boolean> {
  for (const thread of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${thread}/stat`, "utf8").catch(() => undefined);
    if (stat === undefined) continue; // the thread ended
    const state = stat.charAt(stat.lastIndexOf(")") + 2);
    if (state !== "T" && state !== "Z" && state !== "X") return false; // Z, X: ending
  }
  return true;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
    const body = (await response.json()) as { health?: unknown };
    return response.ok && body.health === "true";
  } catch {
    return false;
  }
}

/** Starts etcd on loopback and waits until it reports itself healthy. */
export async function startEtcd(): Promise<TestEtcd> {
  const binary = await which("etcd");
  if (binary === undefined) {
    throw new Error("etcd is not installed: install Debian's etcd-server package (scripts/setup-host.sh does, as root)");
  }
  let lastFailure = "";
  // A free port can be taken between choosing it and etcd binding it: try a few times.
  for (let attempt = 0; attempt < 3; attempt++) {
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const dataDir = await mkdtemp(join(await etcdDataParent(), "aether-etcd-"));
    const endpoint = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const name = "aether-test";
    const child = spawn(
      binary,
      [
        `--name=${name}`,
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${endpoint}`,
        `--advertise-client-urls=${endpoint}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=${name}=${peerUrl}`,
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-LOG_TAIL_CHARS);
    });
    let spawnError: Error | undefined;
    child.once("error", (error) => {
      spawnError = error;
    });
    const removeDataDir = (): Promise<void> => rm(dataDir, { recursive: true, force: true });
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null && spawnError === undefined) {
      if (await healthy(endpoint)) {
        let stopped = false;
        const stop = async (): Promise<void> => {
          if (!stopped) {
            stopped = true;
            // A paused etcd cannot act on SIGTERM until it runs again.
            child.kill("SIGCONT");
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
            await exited(child);
            clearTimeout(timer);
          }
          await removeDataDir();
        };
        return {
          endpoint,
          stop,
          async kill9(): Promise<void> {
            child.kill("SIGKILL");
            await exited(child);
          },
          async pause(): Promise<void> {
            const pid = child.pid;
            if (pid === undefined || !child.kill("SIGSTOP")) throw new Error("etcd is not running, so it cannot be paused");
            // kill() returns once the signal is queued; etcd's threads stop one by one as each is
            // next scheduled, and on a loaded machine the running ones went on answering requests
            // for milliseconds (a put sent after kill() returned succeeded in 8 of 25 tries).
            const deadline = Date.now() + PAUSE_TIMEOUT_MS;
            while (!(await allThreadsStopped(pid))) {
              if (Date.now() > deadline) throw new Error(`etcd (pid ${pid}) did not stop within ${PAUSE_TIMEOUT_MS} ms of SIGSTOP`);
              await sleep(1);
            }
          },
          resume(): void {
            child.kill("SIGCONT");
          },
          warnings(): string {
            return stderr.trim() === "" ? "etcd logged no warnings" : `etcd's last warnings:\n${stderr.trim()}`;
          },
        };
      }
      await sleep(100);
    }
    child.kill("SIGKILL");
    await exited(child);
    await removeDataDir();
    lastFailure = spawnError?.message ?? stderr.trim();
    if (!/address already in use/i.test(lastFailure)) {
      throw new Error(
        `etcd (${binary}) did not become healthy at ${endpoint} within ${READY_TIMEOUT_MS / 1000} s: ${lastFailure === "" ? "no output" : lastFailure}`,
      );
    }
  }
  throw new Error(`etcd could not bind free loopback ports after 3 attempts: ${lastFailure}`);
}

/**
 * A TCP relay in front of an endpoint that can cut the network without closing connections:
 * while partitioned, bytes are held (not dropped, not refused), as on a link that went dark; when
 * healed, whatever was held is delivered late. A client behind it experiences a partition; one
 * connecting directly does not.
 */
export interface TestPartitionProxy {
  /** The relay's URL, to give to the client that should be cut off. */
  endpoint: string;
  partition(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startPartitionProxy(target: string): Promise<TestPartitionProxy> {
  const url = new URL(target);
  const links = new Set<{ flush(): void; destroy(): void }>();
  let partitioned = false;
  // One direction of a connection: forwards at once, or holds the bytes while partitioned.
  const relay = (from: Socket, to: Socket): { flush(): void } => {
    const held: Buffer[] = [];
    from.on("data", (chunk: Buffer) => {
      if (partitioned) held.push(chunk);
      else to.write(chunk);
    });
    return {
      flush(): void {
        for (const chunk of held.splice(0)) to.write(chunk);
      },
    };
  };
  const server: Server = createServer((inbound) => {
    const outbound = connect(Number(url.port), url.hostname);
    const up = relay(inbound, outbound);
    const down = relay(outbound, inbound);
    const link = {
      flush(): void {
        up.flush();
        down.flush();
      },
      destroy(): void {
        links.delete(link);
        inbound.destroy();
        outbound.destroy();
      },
    };
    links.add(link);
    inbound.on("error", link.destroy).on("close", link.destroy);
    outbound.on("error", link.destroy).on("close", link.destroy);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the partition proxy has no TCP address");
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    partition(): void {
      partitioned = true;
    },
    heal(): void {
      partitioned = false;
      for (const link of links) link.flush();
    },
    async close(): Promise<void> {
      for (const link of [...links]) link.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
