// The endpoints of this node: their specs (kept in <state>/traffic/<name>/spec.json, so they survive
// kill -9), one proxy each run through a ProxyDriver, supervised (restarted when it dies) and adopted
// as it runs after an aetherd restart. Calls on one endpoint take turns; different endpoints do not wait
// for each other.
import { readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Mutex } from "async-mutex";
import { DomainError, describeError, writeJsonAtomic } from "@aether/server";
import type { Logger } from "pino";
import type { EventBus } from "../observe/event-bus.js";
import type { ProxyDriver, ProxyFiles } from "./driver.js";
import { hostPort, type BackendState, type EndpointSpec, type ProxySample } from "./types.js";

/** Unix socket paths longer than this do not fit in sockaddr_un. */
const MAX_SOCKET_PATH = 107;
const SUPERVISE_EVERY_MS = 1000;

/** When a process started (an adopted proxy's start time is its own, not the adoption's); now when unknown. */
function processStartMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ticks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
    const boot = Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1]);
    // The kernel counts in USER_HZ, 100 on every Linux architecture Aether runs on.
    const ms = boot * 1000 + (ticks / 100) * 1000;
    return Number.isFinite(ms) && ms > 0 ? ms : Date.now();
  } catch {
    return Date.now();
  }
}

export interface ProxyView {
  running: boolean;
  pid: number;
  version: string;
  startMs: number;
  restarts: number;
  message: string;
  files: ProxyFiles;
}

export interface EndpointView {
  spec: EndpointSpec;
  proxy: ProxyView;
  /** Live statistics; undefined when the proxy does not run or did not answer (proxy.message says why). */
  sample?: ProxySample;
}

interface Entry {
  spec: EndpointSpec;
  files: ProxyFiles;
  pid: number;
  startMs: number;
  restarts: number;
  message: string;
  lock: Mutex;
}

export interface EndpointsOptions {
  stateDir: string;
  driver: ProxyDriver;
  events?: EventBus;
  log: Logger;
}

export class Endpoints {
  private readonly entries = new Map<string, Entry>();
  private readonly dir: string;
  private timer: NodeJS.Timeout | undefined;
  private version = "";

  constructor(private readonly options: EndpointsOptions) {
    this.dir = join(options.stateDir, "traffic");
  }

  private filesOf(name: string): ProxyFiles {
    const dir = join(this.dir, name);
    return {
      dir,
      config: join(dir, "haproxy.cfg"),
      map: join(dir, "ab.map"),
      pidFile: join(dir, "haproxy.pid"),
      adminSocket: join(dir, "admin.sock"),
    };
  }

  /** Reads the endpoints kept in the state dir, adopts the proxies still running and starts the others (in the background). */
  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (const name of await readdir(this.dir)) {
      const files = this.filesOf(name);
      let spec: EndpointSpec;
      try {
        spec = JSON.parse(await readFile(join(files.dir, "spec.json"), "utf8")) as EndpointSpec;
      } catch {
        continue; // a folder a deletion did not finish removing
      }
      const pid = this.options.driver.running(files) ?? 0;
      const entry: Entry = { spec, files, pid, startMs: pid ? processStartMs(pid) : 0, restarts: 0, message: "", lock: new Mutex() };
      this.entries.set(name, entry);
      if (pid) {
        this.options.log.info({ endpoint: name, pid }, "adopted the running HAProxy of endpoint");
        // What a crash may have left half-applied is applied again; idempotent.
        void entry.lock
          .runExclusive(() => this.options.driver.apply(spec, files))
          .catch((err: unknown) => {
            entry.message = describeError(err);
          });
      }
    }
    this.timer = setInterval(() => void this.supervise(), SUPERVISE_EVERY_MS);
    this.timer.unref();
  }

  /** Stops supervising; the proxies keep running (traffic outlives an aetherd restart) and are adopted next time. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Restarts every proxy that is not running (died, or never started after a host reboot). */
  private async supervise(): Promise<void> {
    for (const [name, entry] of this.entries) {
      if (entry.lock.isLocked()) continue;
      await entry.lock.runExclusive(async () => {
        if (!this.entries.has(name)) return;
        if (entry.pid && this.options.driver.running(entry.files) === entry.pid) return;
        const died = entry.pid !== 0;
        try {
          entry.pid = await this.options.driver.start(entry.spec, entry.files);
          entry.startMs = Date.now();
          entry.message = "";
          if (died) entry.restarts++;
          this.options.log.warn(
            { endpoint: name, pid: entry.pid, restarts: entry.restarts },
            "HAProxy of endpoint was not running; started it",
          );
          this.publish(
            "traffic.proxy_restarted",
            entry.spec,
            `HAProxy of endpoint ${name} was not running and was started again (pid ${entry.pid})`,
          );
        } catch (err) {
          entry.pid = 0;
          if (entry.message !== describeError(err))
            this.options.log.error({ endpoint: name, err: describeError(err) }, "HAProxy of endpoint does not start");
          entry.message = describeError(err);
        }
      });
    }
  }

  private publish(kind: string, spec: EndpointSpec, message: string): void {
    this.options.events?.publish({ kind, tenant: "", resourceId: spec.name, resourceName: spec.name, message, attributes: {} });
  }

  private entry(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) throw new DomainError("not_found", `endpoint ${name} does not exist on this node; ListEndpoints shows those that do.`);
    return entry;
  }

  /** Creates or replaces an endpoint: at runtime when only backends, weights, states or the A/B ratio change, else by restarting its proxy. */
  async put(spec: EndpointSpec): Promise<{ view: EndpointView; created: boolean; restarted: boolean }> {
    const listen = hostPort(spec.listenHost, spec.listenPort);
    for (const other of this.entries.values()) {
      if (other.spec.name !== spec.name && hostPort(other.spec.listenHost, other.spec.listenPort) === listen) {
        throw new DomainError(
          "already_exists",
          `endpoint ${other.spec.name} already listens on ${listen}; choose another listen address or change that endpoint.`,
        );
      }
    }
    const files = this.filesOf(spec.name);
    if (files.adminSocket.length > MAX_SOCKET_PATH) {
      throw new DomainError(
        "failed_precondition",
        `the admin socket path ${files.adminSocket} is too long for a unix socket; use a shorter endpoint name or state dir.`,
      );
    }
    this.version = await this.options.driver.version();
    const existing = this.entries.get(spec.name);
    const entry: Entry = existing ?? { spec, files, pid: 0, startMs: 0, restarts: 0, message: "", lock: new Mutex() };
    let restarted = false;
    await entry.lock.runExclusive(async () => {
      await mkdir(files.dir, { recursive: true });
      const running = entry.pid !== 0 && this.options.driver.running(files) === entry.pid;
      if (running && this.options.driver.sameFrame(spec, files)) {
        await this.options.driver.apply(spec, files);
      } else {
        if (running) await this.options.driver.stop(entry.pid, files);
        entry.pid = 0;
        try {
          entry.pid = await this.options.driver.start(spec, files);
        } catch (err) {
          // A new endpoint that could not start leaves nothing behind; an existing one keeps its
          // spec, which the supervisor starts again.
          if (!existing) await rm(files.dir, { recursive: true, force: true });
          throw err;
        }
        entry.startMs = Date.now();
        restarted = true;
      }
      entry.spec = spec;
      entry.message = "";
      await writeJsonAtomic(join(files.dir, "spec.json"), spec);
      this.entries.set(spec.name, entry);
    });
    if (!existing) this.publish("traffic.endpoint_created", spec, `endpoint ${spec.name} listens on ${listen}`);
    return { view: await this.view(entry), created: !existing, restarted };
  }

  /** Changes weights of some backends at runtime. */
  async setWeights(name: string, weights: Record<string, number>): Promise<EndpointView> {
    const entry = this.entry(name);
    await entry.lock.runExclusive(async () => {
      const ids = new Set(entry.spec.backends.map((b) => b.id));
      const unknown = Object.keys(weights).filter((id) => !ids.has(id));
      if (unknown.length > 0) {
        throw new DomainError("not_found", `endpoint ${name} has no backend ${unknown.join(", ")}; it has ${[...ids].join(", ")}.`);
      }
      const spec = { ...entry.spec, backends: entry.spec.backends.map((b) => ({ ...b, weight: weights[b.id] ?? b.weight })) };
      await this.applyRunning(entry, spec);
    });
    return this.view(entry);
  }

  /** Drains, puts in maintenance or readies one backend at runtime. */
  async setBackendState(name: string, backend: string, state: BackendState): Promise<EndpointView> {
    const entry = this.entry(name);
    await entry.lock.runExclusive(async () => {
      if (!entry.spec.backends.some((b) => b.id === backend)) {
        throw new DomainError(
          "not_found",
          `endpoint ${name} has no backend ${backend}; it has ${entry.spec.backends.map((b) => b.id).join(", ")}.`,
        );
      }
      const spec = { ...entry.spec, backends: entry.spec.backends.map((b) => (b.id === backend ? { ...b, state } : b)) };
      await this.applyRunning(entry, spec);
    });
    return this.view(entry);
  }

  /** Records spec and applies it to the running proxy; a proxy that is down gets it when the supervisor starts it. */
  private async applyRunning(entry: Entry, spec: EndpointSpec): Promise<void> {
    if (entry.pid !== 0 && this.options.driver.running(entry.files) === entry.pid)
      await this.options.driver.update(entry.spec, spec, entry.files);
    entry.spec = spec;
    await writeJsonAtomic(join(entry.files.dir, "spec.json"), spec);
  }

  async get(name: string): Promise<EndpointView> {
    return this.view(this.entry(name));
  }

  async list(): Promise<EndpointView[]> {
    const names = [...this.entries.keys()].sort();
    return Promise.all(names.map((n) => this.view(this.entry(n))));
  }

  /** Stops the endpoint's proxy and removes its files. */
  async delete(name: string): Promise<void> {
    const entry = this.entry(name);
    await entry.lock.runExclusive(async () => {
      const pid = this.options.driver.running(entry.files);
      if (pid !== undefined) await this.options.driver.stop(pid, entry.files);
      this.entries.delete(name);
      await rm(entry.files.dir, { recursive: true, force: true });
    });
    this.publish("traffic.endpoint_deleted", entry.spec, `endpoint ${name} deleted; its HAProxy stopped`);
  }

  private async view(entry: Entry): Promise<EndpointView> {
    const running = entry.pid !== 0 && this.options.driver.running(entry.files) === entry.pid;
    if (this.version === "") this.version = await this.options.driver.version().catch(() => "");
    const proxy: ProxyView = {
      running,
      pid: running ? entry.pid : 0,
      version: this.version,
      startMs: running ? entry.startMs : 0,
      restarts: entry.restarts,
      message: running ? entry.message : entry.message || "HAProxy is not running; aetherd starts it again within a second.",
      files: entry.files,
    };
    if (!running) return { spec: entry.spec, proxy };
    try {
      return { spec: entry.spec, proxy, sample: await this.options.driver.sample(entry.files) };
    } catch (err) {
      return { spec: entry.spec, proxy: { ...proxy, message: `statistics unavailable: ${describeError(err)}` } };
    }
  }
}
