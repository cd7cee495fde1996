// ProxyDriver for HAProxy (Debian's haproxy 2.6): one process per endpoint, started with -D so it
// outlives aetherd (an aetherd crash or upgrade does not cut traffic), found again through its pid
// file and command line, and changed at runtime through its admin socket: dynamic servers
// (`add server`/`del server`), `set weight`, `set server ... state`, `set map` for the A/B ratio.
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { DomainError, writeFileAtomic } from "@aether/server";
import type { ProxyDriver, ProxyFiles } from "./driver.js";
import { FRAME_LINE, frameOf, mapEntries, poolOf, renderConfig, renderMap, REQUEST_LOG_RING, serverOptions } from "./haproxy-config.js";
import { parseStat, runtimeBatch, runtimeChange, runtimeCommand, sampleProxy } from "./runtime-api.js";
import { hostPort, type EndpointSpec, type ProxySample } from "./types.js";

const run = promisify(execFile);
const INSTALL = "install it (apt-get install -y haproxy, or run scripts/setup-host.sh) and try again";

/** Whether a process with this pid runs (and is not a zombie). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class HaproxyDriver implements ProxyDriver {
  private binary: string | undefined;

  /** HAProxy from aetherd's PATH (Debian puts it in /usr/sbin, which root's PATH has). */
  private async find(): Promise<string> {
    if (this.binary !== undefined && existsSync(this.binary)) return this.binary;
    for (const dir of (process.env.PATH ?? "").split(delimiter).filter((d) => d !== "")) {
      const candidate = join(dir, "haproxy");
      try {
        await access(candidate, constants.X_OK);
        this.binary = candidate;
        return candidate;
      } catch {
        // not here
      }
    }
    throw new DomainError("failed_precondition", `haproxy is not installed on this node (not found in aetherd's PATH): ${INSTALL}.`);
  }

  async version(): Promise<string> {
    const { stdout } = await run(await this.find(), ["-v"]);
    return /version (\S+)/i.exec(stdout)?.[1] ?? "unknown";
  }

  async start(spec: EndpointSpec, files: ProxyFiles): Promise<number> {
    const binary = await this.find();
    await this.writeFiles(spec, files);
    try {
      await run(binary, ["-D", "-p", files.pidFile, "-f", files.config], { timeout: 15_000 });
    } catch (err) {
      const text = String((err as { stderr?: string }).stderr ?? err);
      if (/cannot bind socket|Address already in use/i.test(text)) {
        throw new DomainError(
          "failed_precondition",
          `endpoint ${spec.name} cannot listen on ${hostPort(spec.listenHost, spec.listenPort)}: the address is in use or not on this host; choose another listen address.`,
        );
      }
      throw new DomainError("internal", `HAProxy did not start for endpoint ${spec.name}: ${text.trim().split("\n").slice(-3).join(" ")}`);
    }
    const pid = this.running(files);
    if (pid === undefined)
      throw new DomainError(
        "internal",
        `HAProxy started for endpoint ${spec.name} but its pid file ${files.pidFile} names no running HAProxy.`,
      );
    // Ready when its admin socket answers.
    for (let i = 0; ; i++) {
      const answer = await runtimeCommand(files.adminSocket, "show info", 1000).catch(() => "");
      if (answer.includes("Pid:")) break;
      if (i > 100)
        throw new DomainError("internal", `HAProxy for endpoint ${spec.name} (pid ${pid}) does not answer on ${files.adminSocket}.`);
      await sleep(50);
    }
    // Drain and maintenance states are runtime-only; put them in place.
    await this.apply(spec, files);
    return pid;
  }

  running(files: ProxyFiles): number | undefined {
    let pid: number;
    try {
      pid = Number(readFileSync(files.pidFile, "utf8").trim());
    } catch {
      return undefined;
    }
    if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
    // The pid is ours only if that process is HAProxy started on this endpoint's configuration.
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return argv.some((a) => a.endsWith("haproxy")) && argv.includes(files.config) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  sameFrame(spec: EndpointSpec, files: ProxyFiles): boolean {
    try {
      const first = readFileSync(files.config, "utf8").split("\n", 1)[0] ?? "";
      return first === `${FRAME_LINE}${frameOf(spec)}`;
    } catch {
      return false;
    }
  }

  private async writeFiles(spec: EndpointSpec, files: ProxyFiles): Promise<void> {
    await writeFileAtomic(files.map, renderMap(spec.abSplit), { durable: false });
    await writeFileAtomic(files.config, renderConfig(spec, files), { durable: false });
  }

  async apply(spec: EndpointSpec, files: ProxyFiles): Promise<void> {
    const socket = files.adminSocket;
    const live = parseStat(await runtimeCommand(socket, "show stat")).backends;
    const key = (pool: string, id: string) => `${pool}/${id}`;
    const liveKeys = new Set(live.map((b) => key(b.pool, b.id)));
    const wanted = new Map(spec.backends.map((b) => [key(poolOf(spec, b.id), b.id), b]));
    // New servers first (so traffic always has somewhere to go), in maintenance until enabled.
    for (const [k, b] of wanted) {
      if (liveKeys.has(k)) continue;
      await runtimeChange(
        socket,
        `add server ${k} ${hostPort(b.host, b.port)} ${serverOptions(spec, b.weight)}`,
        /^New server registered\.?$/,
      );
      await runtimeChange(socket, `enable health ${k}`);
      if (b.state !== "maint") await runtimeChange(socket, `enable server ${k}`);
    }
    for (const s of live) {
      const b = wanted.get(key(s.pool, s.id));
      if (b && s.address !== "" && s.address !== hostPort(b.host, b.port)) {
        await runtimeChange(
          socket,
          `set server ${key(s.pool, s.id)} addr ${b.host} port ${b.port}`,
          /^IP changed|^no need to change|port changed/i,
        );
      }
    }
    // Weights that grow before those that shrink: the total never drops to zero on the way.
    const current = new Map(live.map((s) => [key(s.pool, s.id), s.weight]));
    const growth = (k: string, weight: number) => weight - (current.get(k) ?? 0);
    const byGrowth = [...wanted].sort(([ka, a], [kb, b]) => growth(kb, b.weight) - growth(ka, a.weight));
    for (const [k, b] of byGrowth) await runtimeChange(socket, `set weight ${k} ${b.weight}`);
    // Ready first, then drain and maintenance, for the same reason.
    const order = { ready: 0, drain: 1, maint: 2 } as const;
    for (const [k, b] of [...wanted].sort(([, a], [, c]) => order[a.state] - order[c.state])) {
      await runtimeChange(socket, `set server ${k} state ${b.state}`);
    }
    if (spec.abSplit) {
      const mapText = await runtimeCommand(socket, `show map ${files.map}`);
      const now = new Map<string, string>();
      for (const line of mapText.split("\n")) {
        const [, bucket, side] = line.trim().split(/\s+/);
        if (bucket !== undefined && side !== undefined) now.set(bucket, side);
      }
      for (const [bucket, side] of mapEntries(spec.abSplit)) {
        if (now.get(String(bucket)) !== side) await runtimeChange(socket, `set map ${files.map} ${bucket} ${side}`);
      }
    }
    // Servers no longer wanted: out of rotation, their sessions ended, then removed.
    for (const s of live) {
      const k = key(s.pool, s.id);
      if (wanted.has(k)) continue;
      await runtimeChange(socket, `set server ${k} state maint`);
      await runtimeChange(socket, `shutdown sessions server ${k}`);
      await this.deleteServer(socket, k);
    }
    await this.writeFiles(spec, files);
  }

  async update(previous: EndpointSpec, next: EndpointSpec, files: ProxyFiles): Promise<void> {
    const before = new Map(previous.backends.map((b) => [b.id, b]));
    const growth = (b: (typeof next.backends)[number]) => b.weight - (before.get(b.id)?.weight ?? 0);
    const order = { ready: 0, drain: 1, maint: 2 } as const;
    // Every weight is set (what runs may have been changed behind aetherd's back), those that grow
    // first; readied servers before drained ones: the total never drops to zero on the way.
    const commands = [
      ...[...next.backends].sort((a, b) => growth(b) - growth(a)).map((b) => `set weight ${poolOf(next, b.id)}/${b.id} ${b.weight}`),
      ...next.backends
        .filter((b) => before.get(b.id)?.state !== b.state)
        .sort((a, b) => order[a.state] - order[b.state])
        .map((b) => `set server ${poolOf(next, b.id)}/${b.id} state ${b.state}`),
    ];
    await runtimeBatch(files.adminSocket, commands);
    await this.writeFiles(next, files);
  }

  /** `del server` refuses while connections are still attached; they close within moments of maint. */
  private async deleteServer(socket: string, k: string): Promise<void> {
    for (let i = 0; ; i++) {
      const answer = (await runtimeCommand(socket, `del server ${k}`)).trim();
      if (/^Server deleted\.?$/.test(answer) || /No such server/i.test(answer)) return;
      if (i >= 100) throw new DomainError("unavailable", `HAProxy would not remove server ${k}: ${answer}; retry the call.`);
      if (i % 10 === 9) await runtimeChange(socket, `shutdown sessions server ${k}`);
      await sleep(50);
    }
  }

  sample(files: ProxyFiles): Promise<ProxySample> {
    return sampleProxy(files.adminSocket, REQUEST_LOG_RING);
  }

  async stop(pid: number, files: ProxyFiles): Promise<void> {
    if (this.running(files) !== pid) return;
    process.kill(pid, "SIGTERM");
    for (let i = 0; alive(pid); i++) {
      if (i === 100) process.kill(pid, "SIGKILL");
      await sleep(50);
    }
  }
}
