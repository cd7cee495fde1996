// Hosts simulated by network namespaces: one namespace per node, two for aggregator replicas, one
// for etcd and one for the BMCs' management network, each with a veth into a bridge in the root
// namespace, addresses in a private 10.77.<n>.0/24 used only inside them (the bridge itself is
// 10.77.<n>.254, so this test process reaches every "host"), and certificates issued for those
// addresses. Every program runs inside its own namespace and is reached over its TCP address with
// mutual TLS only (etcd too). A test BMC runs in this process on a unix socket, with a relay in the
// BMC namespace giving it its address there. teardown() removes every namespace, veth and bridge
// (names aether-mh-<n>-* and aethermh<n>*, which scripts/leftovers.mjs looks for), also after a
// failed set-up.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type AetherClient } from "@aether/sdk";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { repoRoot, startDaemon, stopWorkloads, type TestDaemon } from "./daemon.js";
import { createCa, type Pair, type TestCa } from "./pki.js";
import { etcdDataParent } from "./etcd.js";
import { startTestBmc, type TestBmc, type TestBmcOptions } from "./test-bmc.js";

const AGGREGATOR = join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs");
const RELAY = join(repoRoot, "test", "helpers", "tcp-unix-relay.mjs");
export const AGGREGATOR_PORT = 7450;
export const NODE_PORT = 7443;
export const ETCD_PORT = 2379;
const BMC_PORT = 8443;

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
const quietly = (...args: string[]) => {
  try {
    ip(...args);
  } catch {
    // Gone already (or never made).
  }
};

/** One simulated host: its namespace, veth (root side) and address. */
export interface Host {
  readonly name: string;
  readonly netns: string;
  readonly veth: string;
  readonly address: string;
}

export interface NetnsCluster {
  readonly id: number;
  readonly dir: string;
  readonly bridge: string;
  /** The bridge's address in the root namespace (where this test process runs). */
  readonly gateway: string;
  readonly ca: TestCa;
  readonly aggregatorHost: Host;
  /** The second aggregator replica's host (HA on etcd). */
  readonly standbyHost: Host;
  readonly etcdHost: Host;
  /** The management network the BMCs are on. */
  readonly bmcHost: Host;
  readonly nodeHosts: Host[];
  /** Issues a certificate (and key) for a user: spiffe://test/user/<name>. */
  user(name: string): Pair;
  /** A client of this URL (https://host:port) with the CA and this certificate. */
  client(url: string, who: Pair): Promise<AetherClient>;
  /**
   * Starts aether-aggregator in its host's namespace (default: aggregatorHost), serving TCP + mTLS.
   * A standby (another replica leads) is ready once it answers, a leader once it is SERVING.
   */
  startAggregator(args?: string[], options?: { host?: Host; standby?: boolean }): Promise<NetnsAggregator>;
  /** Starts etcd in etcdHost's namespace, serving clients over TLS and requiring a client certificate from the CA. */
  startEtcd(): Promise<NetnsEtcd>;
  /** Starts a test BMC whose Redfish service is at https://<bmcHost address>:<port> (a new port each). */
  startBmc(options: TestBmcOptions): Promise<TestBmc>;
  /** Starts aetherd in the node's namespace, serving TCP + mTLS on <address>:NODE_PORT, a member of the aggregator(s). */
  startNode(host: Host, options?: { cert?: Pair; clusterToml?: string; aggregators?: string[] }): Promise<NetnsNode>;
  /** Stops every program started here, then removes the namespaces, veths, bridge and files. */
  teardown(): Promise<void>;
}

export interface NetnsAggregator {
  readonly url: string;
  readonly process: ChildProcess;
  log(): string;
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash or a power cut would. */
  kill9(): Promise<void>;
}

export interface NetnsEtcd {
  /** https://<etcd address>:ETCD_PORT */
  readonly endpoint: string;
  /** The client certificate and key the aggregators present, and the CA (the cluster's). */
  readonly args: string[];
  stop(): Promise<void>;
}

export interface NetnsNode {
  readonly host: Host;
  readonly url: string;
  readonly daemon: TestDaemon;
  /** The node's certificate (also its client certificate for outgoing calls). */
  readonly cert: Pair;
}

function freeSubnet(): number {
  const routes = ip("-4", "route", "show");
  const links = ip("-o", "link", "show");
  for (let tries = 0; tries < 50; tries++) {
    const n = Math.floor(Math.random() * 250);
    if (!routes.includes(`10.77.${n}.`) && !links.includes(`aethermh${n}:`) && !links.includes(`aethermh${n}@`)) return n;
  }
  throw new Error("no free 10.77.<n>.0/24 for the namespaces");
}

/** Creates the namespaces (aggregator + `nodes` nodes), the bridge, the veths and the PKI. */
export function createNetnsCluster(nodes = 2): NetnsCluster {
  const id = freeSubnet();
  const dir = mkdtempSync(join(tmpdir(), "aether-mh-"));
  const bridge = `aethermh${id}`;
  const gateway = `10.77.${id}.254`;
  const host = (name: string, index: number): Host => ({
    name,
    netns: `aether-mh-${id}-${name}`,
    veth: `aethermh${id}v${index}`,
    address: `10.77.${id}.${index + 1}`,
  });
  const aggregatorHost = host("agg", 0);
  const nodeHosts = Array.from({ length: nodes }, (_, i) => host(`n${i + 1}`, i + 1));
  const standbyHost = host("agg2", 100);
  const etcdHost = host("etcd", 101);
  const bmcHost = host("bmc", 102);
  const hosts = [aggregatorHost, standbyHost, etcdHost, bmcHost, ...nodeHosts];
  const programs: Array<{ stop(): Promise<unknown> }> = [];
  /** Folders of the cluster's programs that are not under dir (etcd's data, in memory). */
  const outsideDirs: string[] = [];
  const daemons: TestDaemon[] = [];

  const removeNetwork = () => {
    for (const h of hosts) quietly("netns", "del", h.netns); // takes the veth pair with it
    for (const h of hosts) quietly("link", "del", h.veth);
    quietly("link", "del", bridge);
  };

  let ca: TestCa;
  try {
    ip("link", "add", bridge, "type", "bridge");
    ip("addr", "add", `${gateway}/24`, "dev", bridge);
    ip("link", "set", bridge, "up");
    for (const h of hosts) {
      ip("netns", "add", h.netns);
      ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns);
      ip("link", "set", h.veth, "master", bridge, "up");
      ip("-n", h.netns, "addr", "add", `${h.address}/24`, "dev", "eth0");
      ip("-n", h.netns, "link", "set", "eth0", "up");
      ip("-n", h.netns, "link", "set", "lo", "up");
    }
    mkdirSync(join(dir, "pki"), { recursive: true });
    ca = createCa("cluster-ca", join(dir, "pki"));
  } catch (err) {
    removeNetwork();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const client = (url: string, who: Pair) => connect({ address: url, tls: { ca: ca.cert, cert: who.cert, key: who.key } });
  const aggregatorUrl = (h: Host) => `https://${h.address}:${AGGREGATOR_PORT}`;
  /** Spawns a program in a namespace; stop() ends it (SIGTERM), kill9() as a crash. */
  const run = (h: Host, argv: string[], stdin: "ignore" | "pipe" = "ignore") => {
    const child = spawn("ip", ["netns", "exec", h.netns, ...argv], { cwd: repoRoot, stdio: [stdin, "pipe", "pipe"] });
    let output = "";
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const alive = () => child.exitCode === null && child.signalCode === null;
    const handle = {
      child,
      output: () => output,
      alive,
      stop: async () => {
        if (alive()) child.kill("SIGTERM");
        return exited;
      },
      kill9: async () => {
        if (alive()) child.kill("SIGKILL");
        await exited;
      },
    };
    programs.push(handle);
    return handle;
  };
  const waitFor = async (
    what: string,
    h: { alive(): boolean; output(): string; kill9(): Promise<void> },
    ready: () => Promise<boolean>,
  ) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (!h.alive()) throw new Error(`${what} exited before it was ready:\n${h.output()}`);
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) {
        await h.kill9();
        throw new Error(`${what} was not ready within 30 s:\n${h.output()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  return {
    id,
    dir,
    bridge,
    gateway,
    ca,
    aggregatorHost,
    standbyHost,
    etcdHost,
    bmcHost,
    nodeHosts,
    user: (name) => ca.issue(name),
    client,

    async startAggregator(args = [], options = {}) {
      const h = options.host ?? aggregatorHost;
      const url = aggregatorUrl(h);
      const server = ca.issue(`aggregator-${h.name}`, { server: true, ips: [h.address], client: true });
      const aggDir = join(dir, h.name);
      mkdirSync(aggDir, { recursive: true });
      const program = run(h, [
        process.execPath,
        AGGREGATOR,
        "--socket",
        join(aggDir, "aggregator.sock"),
        "--state-dir",
        join(aggDir, "state"),
        "--log-level",
        "warn",
        "--listen",
        `${h.address}:${AGGREGATOR_PORT}`,
        "--advertise",
        url,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tls-client-ca",
        ca.cert,
        "--node-tls-ca",
        ca.cert,
        "--node-tls-cert",
        server.cert,
        "--node-tls-key",
        server.key,
        ...args,
      ]);
      // Ready once it answers CheckHealth over mTLS on its 10.x address (SERVING, unless a standby).
      const probe = ca.issue("readiness-probe");
      await waitFor(`aether-aggregator at ${url}`, program, async () => {
        const c = await client(url, probe);
        try {
          const health = await c.node.checkHealth({});
          return options.standby === true || health.status === HealthStatus.SERVING;
        } finally {
          c.close();
        }
      });
      return { url, process: program.child, log: program.output, stop: program.stop, kill9: program.kill9 };
    },

    async startEtcd() {
      const server = ca.issue("etcd", { server: true, ips: [etcdHost.address], client: true });
      const endpoint = `https://${etcdHost.address}:${ETCD_PORT}`;
      // In memory, like every test etcd (etcd.ts says why); removed at teardown.
      const dataDir = await mkdtemp(join(await etcdDataParent(), "aether-etcd-"));
      outsideDirs.push(dataDir);
      const program = run(etcdHost, [
        "etcd",
        "--name=etcd",
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${endpoint}`,
        `--advertise-client-urls=${endpoint}`,
        // Its peers (none) on the namespace's loopback.
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=etcd=http://127.0.0.1:2380",
        `--cert-file=${server.cert}`,
        `--key-file=${server.key}`,
        `--trusted-ca-file=${ca.cert}`,
        "--client-cert-auth",
        "--logger=zap",
        "--log-level=warn",
      ]);
      const probe = ca.issue("etcd-probe");
      await waitFor(`etcd at ${endpoint}`, program, () => etcdHealthy(endpoint, ca.cert, probe));
      const who = ca.issue("aggregator-etcd-client");
      return {
        endpoint,
        args: ["--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-ca", ca.cert, "--etcd-cert", who.cert, "--etcd-key", who.key],
        stop: async () => {
          await program.stop();
        },
      };
    },

    async startBmc(options) {
      const port = BMC_PORT + programs.length;
      const socket = join(dir, `bmc-${port}.sock`);
      const origin = `https://${bmcHost.address}:${port}`;
      const bmc = await startTestBmc({ ...options, behind: { socket, origin } });
      programs.push({ stop: () => bmc.close() });
      const relay = run(bmcHost, [process.execPath, RELAY, bmcHost.address, String(port), socket], "pipe");
      await waitFor(`the relay to the test BMC at ${origin}`, relay, async () => relay.output().includes("ready"));
      return bmc;
    },

    async startNode(h, options = {}) {
      const aggregators = options.aggregators ?? [aggregatorUrl(aggregatorHost)];
      const cert = options.cert ?? ca.issue(h.name, { server: true, ips: [h.address], client: true });
      const nodeDir = join(dir, h.name);
      mkdirSync(join(nodeDir, "aetherd"), { recursive: true });
      const url = `https://${h.address}:${NODE_PORT}`;
      const config = join(nodeDir, "aetherd.toml");
      writeFileSync(
        config,
        [
          "[tcp]",
          `listen = "${h.address}:${NODE_PORT}"`,
          `cert = "${cert.cert}"`,
          `key = "${cert.key}"`,
          `client_ca = "${ca.cert}"`,
          "",
          "[cluster]",
          `aggregator = [${aggregators.map((a) => `"${a}"`).join(", ")}]`,
          `advertise = "${url}"`,
          `name = "${h.name}"`,
          ...(options.clusterToml ? [options.clusterToml] : []),
          "",
        ].join("\n"),
      );
      const daemon = await startDaemon({ dir: join(nodeDir, "aetherd"), netns: h.netns, args: ["--config", config] });
      daemons.push(daemon);
      return { host: h, url, daemon, cert };
    },

    async teardown() {
      try {
        for (const d of daemons) {
          try {
            // Workloads outlive aetherd by design: stop them first (through its socket: this is
            // cleanup). A node powered off by its BMC has no aetherd left to ask.
            await d
              .client()
              .then((c) => stopWorkloads(c))
              .catch(() => undefined);
            await d.stop().catch(() => undefined);
          } finally {
            d.cleanup();
          }
        }
      } finally {
        for (const p of programs) await p.stop().catch(() => undefined);
        removeNetwork();
        for (const d of [dir, ...outsideDirs]) rmSync(d, { recursive: true, force: true });
      }
    },
  };
}

/** etcd's /health over https with a client certificate: {"health":"true"}. */
function etcdHealthy(endpoint: string, ca: string, who: Pair): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      `${endpoint}/health`,
      { ca: readFileSync(ca), cert: readFileSync(who.cert), key: readFileSync(who.key), timeout: 1000 },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)));
      },
    );
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}
