// A raw Connect-protocol client for the fuzz suite: plain HTTP/2 POSTs to aetherd's unix socket, so a
// test can send bodies no typed client would (wrong JSON types, broken envelopes, oversized messages),
// and checks that every answer is a well-formed Connect response.
import * as http2 from "node:http2";
import { connect as netConnect } from "node:net";
import { fromBinary, fromJson, toJson, type DescMethod, type JsonValue } from "@bufbuild/protobuf";

/** Every error code the Connect protocol defines, with the HTTP status a unary error must carry. */
export const CONNECT_CODES: ReadonlyMap<string, number> = new Map([
  ["canceled", 499],
  ["unknown", 500],
  ["invalid_argument", 400],
  ["deadline_exceeded", 504],
  ["not_found", 404],
  ["already_exists", 409],
  ["permission_denied", 403],
  ["resource_exhausted", 429],
  ["failed_precondition", 400],
  ["aborted", 409],
  ["out_of_range", 400],
  ["unimplemented", 501],
  ["internal", 500],
  ["unavailable", 503],
  ["data_loss", 500],
  ["unauthenticated", 401],
]);

export interface RawRequest {
  /** "/package.Service/Method" */
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** The client gives up (and cancels the stream) after this long: a hang. */
  hardDeadlineMs: number;
  /** Cancel the stream on purpose after this long (a client going away mid-call). */
  cancelAfterMs?: number;
}

export interface RawResponse {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
  /** The hard deadline passed before the server finished. */
  hung: boolean;
  /** The client cancelled on purpose (cancelAfterMs). */
  cancelled: boolean;
  /** The stream or session failed at the HTTP/2 level (reset, GOAWAY, socket error). */
  transportError?: string;
  elapsedMs: number;
}

/** One HTTP/2 session to the daemon's unix socket, re-opened if the server closes it. */
export class RawConnectClient {
  private session: http2.ClientHttp2Session | undefined;
  /** The last GOAWAY or error of a session, for reports of streams that died with it. */
  lastSessionEvent = "";

  constructor(private readonly socketPath: string) {}

  private connect(maxSessionMemoryMb = 10): http2.ClientHttp2Session {
    return http2.connect("http://localhost", { createConnection: () => netConnect(this.socketPath), maxSessionMemory: maxSessionMemoryMb });
  }

  private open(): http2.ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    // Bursts send many bodies of up to 1 MiB at once: more than node's default of 10 MB may be queued.
    const session = this.connect(128);
    // Errors are reported through the streams that hit them; a session that goes away is replaced.
    session.on("error", (err: Error) => (this.lastSessionEvent = `session error: ${err.message}`));
    const forget = () => {
      if (this.session === session) this.session = undefined;
    };
    session.on("goaway", (code: number, _last: number, data?: Buffer) => {
      this.lastSessionEvent = `GOAWAY ${code}${data && data.length > 0 ? ` (${data.toString()})` : ""}`;
      forget();
    });
    session.on("close", forget);
    session.unref();
    this.session = session;
    return session;
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }

  /**
   * Sends one request. A body over 1 MiB goes on a connection of its own, closed afterwards: node's
   * HTTP/2 client keeps counting the unsent part of a body the server refused against the session's
   * memory limit (10 MB), and would then refuse new streams itself (ENHANCE_YOUR_CALM).
   */
  async send(req: RawRequest): Promise<RawResponse> {
    if (req.body.length <= 1024 * 1024) {
      const res = await this.sendOn(() => this.open(), req);
      // A stream refused or reset without an answer may leave the session unusable: start afresh.
      if (res.status === 0 && res.transportError !== undefined && !res.cancelled) {
        this.session?.destroy();
        this.session = undefined;
      }
      return res;
    }
    const session = this.connect(256);
    session.on("error", () => undefined);
    try {
      return await this.sendOn(() => session, req);
    } finally {
      session.destroy();
    }
  }

  private sendOn(open: () => http2.ClientHttp2Session, req: RawRequest): Promise<RawResponse> {
    const started = performance.now();
    return new Promise<RawResponse>((resolve) => {
      let session: http2.ClientHttp2Session;
      try {
        session = open();
      } catch (err) {
        resolve({
          status: 0,
          headers: {},
          trailers: {},
          body: Buffer.alloc(0),
          hung: false,
          cancelled: false,
          transportError: (err as Error).message,
          elapsedMs: 0,
        });
        return;
      }
      const stream = session.request({ ":method": "POST", ":path": req.path, ...req.headers });
      const chunks: Buffer[] = [];
      let status = 0;
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      let hung = false;
      let cancelled = false;
      let transportError: string | undefined;
      let settled = false;
      let bodySent = false;
      const finish = () => {
        if (settled) return;
        settled = true;
        clearTimeout(hard);
        if (cancel) clearTimeout(cancel);
        resolve({
          status,
          headers,
          trailers,
          body: Buffer.concat(chunks),
          hung,
          cancelled,
          transportError,
          elapsedMs: performance.now() - started,
        });
        // The answer is complete: stop sending whatever of the body the server did not read (an
        // oversized body it refused), as a Connect client does, so unsent data does not pile up.
        // Only then: a reset of a stream the server has closed already counts, in node's server, as
        // an invalid frame, and after 1000 of them it ends the whole session (GOAWAY INTERNAL_ERROR).
        if (!bodySent && !stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
      };
      const hard = setTimeout(() => {
        hung = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
        finish();
      }, req.hardDeadlineMs);
      const cancel =
        req.cancelAfterMs === undefined
          ? undefined
          : setTimeout(() => {
              cancelled = true;
              stream.close(http2.constants.NGHTTP2_CANCEL);
              finish();
            }, req.cancelAfterMs);
      stream.on("response", (h) => {
        headers = h;
        status = Number(h[":status"] ?? 0);
      });
      stream.on("trailers", (t) => (trailers = t));
      stream.on("data", (d: Buffer) => chunks.push(d));
      stream.on("end", finish);
      stream.on("close", () => {
        if (!settled && stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
          transportError ??= `stream reset with code ${stream.rstCode}`;
        }
        finish();
      });
      stream.on("error", (err: Error) => {
        transportError ??= `${err.message}${this.lastSessionEvent ? ` [last session event: ${this.lastSessionEvent}]` : ""}`;
      });
      // A server may answer (and reset) before it has read an oversized body: that is not an error here.
      stream.end(req.body, () => (bodySent = true));
    });
  }
}

/** A Connect streaming envelope: flags, big-endian length, payload. */
export function envelope(flags: number, payload: Buffer, declaredLength = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(declaredLength >>> 0, 1);
  return Buffer.concat([head, payload]);
}

export interface Envelope {
  flags: number;
  data: Buffer;
}

/** Splits a streaming response body into envelopes; throws on a torn or trailing partial envelope. */
export function parseEnvelopes(body: Buffer, allowTornTail: boolean): Envelope[] {
  const out: Envelope[] = [];
  let at = 0;
  while (at < body.length) {
    if (body.length - at < 5) {
      if (allowTornTail) break;
      throw new Error(`the response ends inside an envelope header (${body.length - at} stray bytes)`);
    }
    const flags = body.readUInt8(at);
    const length = body.readUInt32BE(at + 1);
    if (at + 5 + length > body.length) {
      if (allowTornTail) break;
      throw new Error(`an envelope declares ${length} bytes but only ${body.length - at - 5} follow`);
    }
    out.push({ flags, data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}

function parseJsonObject(what: string, data: Buffer): Record<string, JsonValue> {
  const text = data.toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${what} is not JSON: ${JSON.stringify(text.slice(0, 200))}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new Error(`${what} is not a JSON object: ${text.slice(0, 200)}`);
  return value as Record<string, JsonValue>;
}

/** A Connect error object ({code, message, details}) with a known code and a sentence. */
function checkErrorObject(what: string, value: JsonValue | undefined): { code: string; message: string } {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new Error(`${what} is not an error object: ${JSON.stringify(value)}`);
  const code = value.code;
  const message = value.message;
  if (typeof code !== "string" || !CONNECT_CODES.has(code))
    throw new Error(`${what} has no known Connect code: ${JSON.stringify(value).slice(0, 300)}`);
  if (typeof message !== "string" || message.trim() === "")
    throw new Error(`${what} (${code}) has no message: ${JSON.stringify(value).slice(0, 300)}`);
  if (value.details !== undefined && !Array.isArray(value.details)) throw new Error(`${what}: details is not an array`);
  return { code, message };
}

export interface Outcome {
  /** "ok", or the Connect error code. */
  code: string;
  message: string;
  /** Success messages (one for unary; every data envelope for streams), as JSON. */
  messages: Array<Record<string, JsonValue>>;
}

/** A success body must be the method's output message in strict proto3 JSON. */
function checkOutput(method: DescMethod, json: Record<string, JsonValue>): void {
  try {
    fromJson(method.output, json, { ignoreUnknownFields: false });
  } catch (err) {
    throw new Error(`the success body is not a valid ${method.output.typeName}: ${(err as Error).message}`);
  }
}

/** A binary success body must decode as the method's output message; returned as JSON. */
function decodeOutput(what: string, method: DescMethod, data: Buffer): Record<string, JsonValue> {
  try {
    return toJson(method.output, fromBinary(method.output, data)) as Record<string, JsonValue>;
  } catch (err) {
    throw new Error(`${what} is not a valid binary ${method.output.typeName}: ${(err as Error).message}`);
  }
}

/**
 * Checks a unary Connect answer: 200 with the output message (JSON, or binary for application/proto
 * requests), or the error status of a known
 * code with a JSON error body carrying a message. Throws with the reason when it is not well-formed.
 */
export function checkUnaryResponse(method: DescMethod, res: RawResponse): Outcome {
  const contentType = String(res.headers["content-type"] ?? "");
  if (res.status === 200) {
    if (/^application\/proto\b/.test(contentType))
      return { code: "ok", message: "", messages: [decodeOutput("the success body", method, res.body)] };
    if (!/^application\/json\b/.test(contentType)) throw new Error(`200 with content-type ${JSON.stringify(contentType)}`);
    const json = parseJsonObject("the success body", res.body);
    checkOutput(method, json);
    return { code: "ok", message: "", messages: [json] };
  }
  if (!/^application\/json\b/.test(contentType)) {
    throw new Error(
      `HTTP ${res.status} with content-type ${JSON.stringify(contentType)} and body ${JSON.stringify(res.body.toString("utf8").slice(0, 200))}: not a Connect error`,
    );
  }
  const err = checkErrorObject("the error body", parseJsonObject("the error body", res.body));
  const expected = CONNECT_CODES.get(err.code);
  if (res.status !== expected) throw new Error(`code ${err.code} came with HTTP ${res.status}, not ${expected}`);
  return { code: err.code, message: err.message, messages: [] };
}

/**
 * Checks a streaming Connect answer: 200 and application/connect+json (or +proto), data envelopes
 * that are valid output messages, then exactly one end-of-stream envelope (flag 0x02, always JSON)
 * that is last, with a known
 * error code and message when it carries an error. With `partial` (the client cancelled), a missing
 * end-of-stream and a torn last envelope are accepted.
 */
export function checkStreamResponse(method: DescMethod, res: RawResponse, partial: boolean): Outcome {
  const contentType = String(res.headers["content-type"] ?? "");
  if (partial && res.status === 0) return { code: "canceled", message: "cancelled before the answer", messages: [] };
  if (res.status !== 200) {
    // Only errors found before the stream starts (e.g. an unsupported content type) may use HTTP status.
    if (/^application\/json\b/.test(contentType)) {
      const err = checkErrorObject("the error body", parseJsonObject("the error body", res.body));
      return { code: err.code, message: err.message, messages: [] };
    }
    throw new Error(
      `streaming call answered HTTP ${res.status} with content-type ${JSON.stringify(contentType)} and body ${JSON.stringify(res.body.toString("utf8").slice(0, 200))}`,
    );
  }
  const binary = /^application\/connect\+proto\b/.test(contentType);
  if (!binary && !/^application\/connect\+json\b/.test(contentType))
    throw new Error(`streaming 200 with content-type ${JSON.stringify(contentType)}`);
  const envelopes = parseEnvelopes(res.body, partial);
  const messages: Array<Record<string, JsonValue>> = [];
  let end: { code: string; message: string } | undefined;
  envelopes.forEach((env, i) => {
    if (end) throw new Error("an envelope follows the end-of-stream envelope");
    if (env.flags === 0 && binary) {
      messages.push(decodeOutput(`stream message ${i}`, method, env.data));
    } else if (env.flags === 0) {
      const json = parseJsonObject(`stream message ${i}`, env.data);
      checkOutput(method, json);
      messages.push(json);
    } else if (env.flags === 2) {
      const json = parseJsonObject("the end-of-stream message", env.data);
      if (json.metadata !== undefined && (json.metadata === null || typeof json.metadata !== "object" || Array.isArray(json.metadata))) {
        throw new Error("end-of-stream metadata is not an object");
      }
      end = json.error === undefined ? { code: "ok", message: "" } : checkErrorObject("the end-of-stream error", json.error);
    } else {
      throw new Error(`envelope ${i} has flags ${env.flags} (expected 0 or 2; no compression was negotiated)`);
    }
  });
  if (!end) {
    if (partial) return { code: "canceled", message: "cancelled mid-stream", messages };
    throw new Error("the stream ended without an end-of-stream envelope");
  }
  return { ...end, messages };
}
