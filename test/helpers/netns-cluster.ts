// Hosts simulated by network namespaces: one namespace for the aggregator and one per node, each
// with a veth into a bridge in the root namespace, addresses in a private 10.77.<n>.0/24 used only
// inside them (the bridge itself is 10.77.<n>.254, so this test process reaches every "host"), and
// certificates issued for those addresses. Every program runs inside its own namespace and is
// reached over its TCP address with mutual TLS only. teardown() removes every namespace, veth and
// bridge (names aether-mh-<n>-* and aethermh<n>*, which scripts/leftovers.mjs looks for), also after
// a failed set-up.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type AetherClient } from "@aether/sdk";
import { HealthStatus } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { repoRoot, startDaemon, stopWorkloads, type TestDaemon } from "./daemon.js";
import { createCa, type Pair, type TestCa } from "./pki.js";

const AGGREGATOR = join(repoRoot, "aggregator", "bin", "aether-aggregator.mjs");
export const AGGREGATOR_PORT = 7450;
export const NODE_PORT = 7443;

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
  readonly nodeHosts: Host[];
  /** Issues a certificate (and key) for a user: spiffe://test/user/<name>. */
  user(name: string): Pair;
  /** A client of this URL (https://host:port) with the CA and this certificate. */
  client(url: string, who: Pair): Promise<AetherClient>;
  startAggregator(args?: string[]): Promise<NetnsAggregator>;
  /** Starts aetherd in the node's namespace, serving TCP + mTLS on <address>:NODE_PORT, a member of the aggregator. */
  startNode(host: Host, options?: { cert?: Pair; clusterToml?: string }): Promise<NetnsNode>;
  /** Stops every program started here, then removes the namespaces, veths, bridge and files. */
  teardown(): Promise<void>;
}

export interface NetnsAggregator {
  readonly url: string;
  readonly process: ChildProcess;
  log(): string;
  stop(): Promise<number | null>;
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
  const hosts = [aggregatorHost, ...nodeHosts];
  const programs: Array<{ stop(): Promise<unknown> }> = [];
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
  const aggregatorUrl = `https://${aggregatorHost.address}:${AGGREGATOR_PORT}`;

  return {
    id,
    dir,
    bridge,
    gateway,
    ca,
    aggregatorHost,
    nodeHosts,
    user: (name) => ca.issue(name),
    client,

    async startAggregator(args = []) {
      const server = ca.issue("aggregator", { server: true, ips: [aggregatorHost.address], client: true });
      const aggDir = join(dir, "agg");
      mkdirSync(aggDir, { recursive: true });
      const argv = [
        process.execPath,
        AGGREGATOR,
        "--socket",
        join(aggDir, "aggregator.sock"),
        "--state-dir",
        join(aggDir, "state"),
        "--log-level",
        "warn",
        "--listen",
        `${aggregatorHost.address}:${AGGREGATOR_PORT}`,
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
      ];
      const child = spawn("ip", ["netns", "exec", aggregatorHost.netns, ...argv], { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      const stop = async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        return exited;
      };
      programs.push({ stop });
      // Ready once it answers CheckHealth SERVING over mTLS on its 10.x address.
      const admin = ca.issue("readiness-probe");
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`aether-aggregator exited with ${child.exitCode} before it was ready:\n${stderr}`);
        const probe = await client(aggregatorUrl, admin).catch(() => undefined);
        const health = await probe?.node.checkHealth({}).catch(() => undefined);
        probe?.close();
        if (health?.status === HealthStatus.SERVING) break;
        if (Date.now() > deadline) {
          child.kill("SIGKILL");
          throw new Error(`aether-aggregator did not answer on ${aggregatorUrl} within 30 s:\n${stderr}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return { url: aggregatorUrl, process: child, log: () => stderr, stop };
    },

    async startNode(h, options = {}) {
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
          `aggregator = "${aggregatorUrl}"`,
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
            // Workloads outlive aetherd by design: stop them first (through its socket: this is cleanup).
            await stopWorkloads(await d.client()).catch(() => undefined);
            await d.stop().catch(() => undefined);
          } finally {
            d.cleanup();
          }
        }
        for (const p of programs) await p.stop().catch(() => undefined);
      } finally {
        removeNetwork();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
