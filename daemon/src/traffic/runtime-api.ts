// HAProxy's runtime API over its admin socket (`stats socket ... level admin`): one command per
// connection, its whole answer back. Parses `show stat` and the request log ring.
import { connect } from "node:net";
import { DomainError } from "@aether/server";
import { REQUEST_LOG_MARKER, SIDE_A, SIDE_B, POOL } from "./haproxy-config.js";
import type { BackendSample, FrontendSample, ProxySample } from "./types.js";

const POOLS = new Set([POOL, SIDE_A, SIDE_B]);

/** Sends one command (or several separated by ';') and resolves with HAProxy's answer. */
export function runtimeCommand(socket: string, command: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = connect(socket);
    let out = "";
    conn.setEncoding("utf8");
    conn.setTimeout(timeoutMs, () => conn.destroy(new Error(`HAProxy's admin socket ${socket} did not answer within ${timeoutMs} ms`)));
    conn.on("connect", () => conn.end(`${command}\n`));
    conn.on("data", (d: string) => (out += d));
    conn.on("error", reject);
    conn.on("close", () => resolve(out));
  });
}

/**
 * A command that changes something: HAProxy answers nothing (or a short confirmation) when it worked,
 * a sentence otherwise, so anything else is an error.
 */
export async function runtimeChange(socket: string, command: string, accepted: RegExp = /^$/): Promise<void> {
  const answer = (await runtimeCommand(socket, command)).trim();
  if (answer !== "" && !accepted.test(answer)) {
    throw new DomainError("internal", `HAProxy refused "${command}": ${answer}`);
  }
}

/**
 * Several changing commands on one connection (HAProxy runs them one after the other, in order, with
 * nothing in between): each answers nothing when it worked, so any answer is an error.
 */
export async function runtimeBatch(socket: string, commands: string[]): Promise<void> {
  if (commands.length === 0) return;
  const answer = (await runtimeCommand(socket, commands.join(";"))).trim();
  if (answer !== "") throw new DomainError("internal", `HAProxy refused part of "${commands.join("; ")}": ${answer}`);
}

/** Parses `show stat` CSV into the endpoint's backends and its frontend. */
export function parseStat(csv: string): { backends: BackendSample[]; frontend: FrontendSample } {
  const lines = csv.split("\n").filter((l) => l.trim() !== "");
  const header = (lines.shift() ?? "").replace(/^# /, "").split(",");
  const col = (row: string[], name: string) => row[header.indexOf(name)] ?? "";
  const num = (row: string[], name: string) => Number(col(row, name)) || 0;
  const backends: BackendSample[] = [];
  let frontend: FrontendSample = { currentSessions: 0, totalRequests: 0, responses5xx: 0 };
  for (const line of lines) {
    const row = line.split(",");
    const pool = col(row, "pxname");
    const name = col(row, "svname");
    if (name === "FRONTEND") {
      frontend = { currentSessions: num(row, "scur"), totalRequests: num(row, "req_tot"), responses5xx: num(row, "hrsp_5xx") };
      continue;
    }
    if (!POOLS.has(pool) || name === "BACKEND") continue;
    backends.push({
      id: name,
      pool,
      address: col(row, "addr"),
      status: col(row, "status"),
      weight: num(row, "weight"),
      currentSessions: num(row, "scur"),
      responses: {
        "1xx": num(row, "hrsp_1xx"),
        "2xx": num(row, "hrsp_2xx"),
        "3xx": num(row, "hrsp_3xx"),
        "4xx": num(row, "hrsp_4xx"),
        "5xx": num(row, "hrsp_5xx"),
      },
      errors: num(row, "econ") + num(row, "eresp"),
      responseTimeAvgMs: num(row, "rtime"),
      checkFailures: num(row, "chkfail"),
      lastCheck: col(row, "check_status").replace(/^\* /, ""),
    });
  }
  return { backends, frontend };
}

/** The 95th percentile response time per server over the last `window` logged requests of each. */
export function p95FromLog(log: string, window = 1000): Map<string, number> {
  const times = new Map<string, number[]>();
  for (const line of log.split("\n")) {
    const at = line.indexOf(REQUEST_LOG_MARKER);
    if (at < 0) continue;
    const [, , server, , tr] = line.slice(at).trim().split(/\s+/);
    const ms = Number(tr);
    if (server === undefined || !Number.isFinite(ms) || ms < 0) continue;
    const list = times.get(server) ?? [];
    list.push(ms);
    times.set(server, list);
  }
  const out = new Map<string, number>();
  for (const [server, list] of times) {
    const recent = list.slice(-window).sort((a, b) => a - b);
    out.set(server, recent[Math.min(recent.length - 1, Math.ceil(recent.length * 0.95) - 1)] ?? 0);
  }
  return out;
}

/** Live statistics of one HAProxy: `show stat` and the request log ring. */
export async function sampleProxy(socket: string, ring: string): Promise<ProxySample> {
  const [stat, log] = await Promise.all([runtimeCommand(socket, "show stat"), runtimeCommand(socket, `show events ${ring}`)]);
  if (!stat.startsWith("# pxname"))
    throw new DomainError("unavailable", `HAProxy's admin socket answered "show stat" with: ${stat.slice(0, 200)}`);
  return { ...parseStat(stat), p95ByBackend: p95FromLog(log) };
}
