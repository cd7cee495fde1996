// Hostile input on every RPC: a property-based fuzz suite (fast-check) that sends random and
// adversarial requests to a real aetherd through the Connect protocol (plain HTTP/2 POSTs, so that it
// can also send wrong JSON types, broken envelopes and oversized bodies): JSON mostly, the binary
// format (application/proto) for one request in four. Requests are generated from the descriptors of
// every service's methods: oversized fields, path tricks, unicode, negative and huge numbers, unknown
// enum values, wrong types, deep nesting. Properties, for every case:
//   - the answer is a well-formed Connect answer: a success body that is the method's output message,
//     or an error with a known code, the HTTP status of that code and a sentence; never a bare 500,
//     never UNKNOWN or INTERNAL (an exception that escaped a handler), never a stack trace, never an
//     unclipped echo of a huge input, never a hang past the deadline;
//   - aetherd is alive after every case (and answers CheckHealth as SERVING along the way and at the end);
//   - what it reports stays inside its own directories (volumes and images in the state dir, cells
//     below this test's cgroup root).
// Identical requests sent at once (a retrying client, two operators) leave one resource per name and
// per request_id; different calls at once on one resource (stop + delete + wait, free + update +
// child, snapshot + clone + delete...) leave it in one consistent state, with no stray records.
// At the end: everything it created is removed through the API, it exits 0 on SIGTERM, its own logs
// never grew by the size of an input, and nothing outside its state directory changed: a sentinel
// tree that requests name on purpose, the import root, a few system files, the cgroups around its
// cgroup root, and no new entry in /, /tmp, /etc, /dev/shm... carries a name the fuzz generated.
//
// Safety: no generated request can start anything real and long-lived (programs are /bin/true,
// /bin/echo, /bin/sleep of at most 2 s, or refused; kernels and boot disks never exist, so no VM
// boots; URLs point at a local test server).
//
// Reproduce: FUZZ_SEED=<seed> [FUZZ_ONLY=Service/Method or Service] [FUZZ_SCALE=0.2] [FUZZ_TRACE=file]
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import fc from "fast-check";
import { fromJson, toBinary, type DescMethod, type DescService, type JsonValue } from "@bufbuild/protobuf";
import { ExecutableService } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { CellService } from "@aether/sdk/gen/aether/cells/v1/cells_pb";
import { VmService } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import { ObserveService } from "@aether/sdk/gen/aether/observe/v1/observe_pb";
import { NodeService } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { AggregatorService, BidService } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { FenceService } from "@aether/sdk/gen/aether/fence/v1/fence_pb";
import { ServerReflection } from "@aether/sdk/gen/grpc/reflection/v1/reflection_pb";
import type { AetherClient } from "@aether/sdk";
import { startDaemon, type TestDaemon } from "./helpers/daemon.js";
import {
  checkStreamResponse,
  checkUnaryResponse,
  envelope,
  RawConnectClient,
  type Outcome,
  type RawRequest,
} from "./helpers/fuzz-connect.js";
import {
  localUrl,
  messageValueArb,
  mustNotExist,
  neverResolves,
  reachableFields,
  safeArgv,
  validRequestArb,
  type FuzzWorld,
  type Mode,
} from "./helpers/fuzz-arbitraries.js";
import {
  appeared,
  cgroupsAroundRoot,
  findMarked,
  fingerprint,
  listTree,
  prepareImportRoot,
  prepareSentinel,
  startImportServer,
  topLevel,
  treeDigest,
  type ImportServer,
} from "./helpers/fuzz-host.js";

const SEED = process.env.FUZZ_SEED === undefined ? 0x5eed_a37 : Number(process.env.FUZZ_SEED);
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const ONLY = process.env.FUZZ_ONLY;
/** A file to append every case's method, outcome and message to (to see what the generators reach). */
const TRACE = process.env.FUZZ_TRACE;
/** Cases per implemented method, per method aetherd does not implement, in bursts and in races. */
const CASES_IMPLEMENTED = Math.ceil(220 * SCALE);
const CASES_UNIMPLEMENTED = Math.ceil(40 * SCALE);
const BURSTS = Math.ceil(40 * SCALE);
const RACES = Math.ceil(60 * SCALE);
const LIFECYCLES = Math.ceil(48 * SCALE);
const MIN_TOTAL_CASES = Math.floor(10_000 * SCALE);
/** A unary call without a timeout header must be answered within this (no handler takes longer). */
const UNARY_DEADLINE_MS = 10_000;
/** Past the deadline a call gave the server, the answer must arrive within this. */
const DEADLINE_GRACE_MS = 3_000;

if (!Number.isSafeInteger(SEED)) throw new Error(`FUZZ_SEED ${process.env.FUZZ_SEED} is not an integer`);
if (!(SCALE > 0)) throw new Error(`FUZZ_SCALE ${process.env.FUZZ_SCALE} is not a positive number`);

const SERVICES: readonly DescService[] = [
  ExecutableService,
  CellService,
  VmService,
  StorageService,
  ObserveService,
  NodeService,
  BidService,
  FenceService,
  AggregatorService,
  ServerReflection,
];
/** Every method, in a fixed order: a method's property seed is SEED + its index here (FUZZ_ONLY keeps it). */
const EVERY_METHOD: readonly DescMethod[] = SERVICES.flatMap((s) => s.methods);
/** Methods a generated request can reach success on: the suite fails if none of its cases did. */
const MUST_SUCCEED = [
  "ExecutableService/StartExecutable",
  "ExecutableService/ListExecutables",
  "ExecutableService/GetExecutable",
  "CellService/AllocateCell",
  "CellService/ListCells",
  "VmService/CreateVm",
  "VmService/ListVms",
  "StorageService/CreateVolume",
  "StorageService/ListVolumes",
  "StorageService/ListPools",
  "StorageService/ImportImage",
  "ObserveService/GetTelemetry",
  "ObserveService/StreamEvents",
  "NodeService/GetNodeInfo",
  "NodeService/CheckHealth",
  "BidService/RequestBid",
];
/**
 * Methods that create, stop or remove something: each is sent several times at once with the same
 * request (mostly a valid one: see validRequestArb). Afterwards no two resources of a kind share a
 * tenant and name, and creates with one request_id all answer with the same resource.
 */
const RACE_METHODS: readonly DescMethod[] = [
  ExecutableService.method.startExecutable,
  ExecutableService.method.stopExecutable,
  ExecutableService.method.deleteExecutable,
  CellService.method.allocateCell,
  CellService.method.freeCell,
  VmService.method.createVm,
  VmService.method.deleteVm,
  StorageService.method.createVolume,
  StorageService.method.cloneVolume,
  StorageService.method.snapshotVolume,
  StorageService.method.deleteVolume,
  StorageService.method.importImage,
  StorageService.method.deleteImage,
  BidService.method.executeProvisioning,
  BidService.method.releaseWorkload,
] as readonly DescMethod[];

/** The JSON field an answer carries a resource in, to the kind validRequestArb() knows it by. */
const RESOURCE_KINDS: Readonly<Record<string, string>> = {
  executable: "executable",
  executables: "executable",
  cell: "cell",
  cells: "cell",
  vm: "vm",
  vms: "vm",
  volume: "volume",
  volumes: "volume",
  image: "image",
  images: "image",
};

const methodKey = (m: DescMethod) => `${m.parent.name}/${m.name}`;
const streaming = (m: DescMethod) => m.methodKind !== "unary";
const selected = (m: DescMethod) => ONLY === undefined || methodKey(m).includes(ONLY) || m.parent.typeName.includes(ONLY);

// ---- one case -------------------------------------------------------------------------------------

type BodyMutation =
  | "none"
  | "truncate"
  | "trailing-garbage"
  | "bom"
  | "not-an-object"
  | "deep-nesting"
  | "invalid-utf8"
  | "unknown-field"
  | "duplicate-key"
  | "oversized"
  // streams only
  | "torn-envelope"
  | "short-envelope"
  | "compressed-flag"
  | "end-flag"
  | "empty-stream"
  // binary (application/proto) requests only
  | "proto-garbage"
  | "proto-truncate"
  | "proto-bitflip"
  | "proto-huge-length"
  | "proto-wrong-wiretype"
  | "proto-bad-varint"
  | "proto-unknown-field"
  | "proto-deep-groups";

interface FuzzCase {
  method: DescMethod;
  /** The request message; client and bidi streams send `more` after it. */
  value: JsonValue;
  more: JsonValue[];
  /** "proto": the message in the protobuf binary format (application/proto, application/connect+proto). */
  encoding: "json" | "proto";
  /** Random bytes for "proto-garbage". */
  noise: Uint8Array;
  mutation: BodyMutation;
  truncateAt: number;
  literal: string;
  contentType: string;
  protocolVersion: string | undefined;
  timeoutMs: string | undefined;
  cancelAfterMs: number | undefined;
}

const UNARY_CONTENT_TYPES = [
  "application/json",
  "application/json",
  "application/json",
  "application/json",
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "",
  "application/connect+json",
];
const STREAM_CONTENT_TYPES = [
  "application/connect+json",
  "application/connect+json",
  "application/connect+json",
  "application/connect+json",
  "application/connect+json; charset=utf-8",
  "application/json",
  "",
];
const isConnectCodec = (ct: string, m: DescMethod) =>
  (streaming(m) ? /^application\/connect\+(json|proto)(;|$)/ : /^application\/(json|proto)(;|$)/).test(ct);

/** The binary encoding of a request message given as JSON; undefined when the JSON does not fit the message. */
function protoBinary(method: DescMethod, value: JsonValue): Buffer | undefined {
  try {
    return Buffer.from(toBinary(method.input, fromJson(method.input, value)));
  } catch {
    return undefined;
  }
}

/**
 * Plausible requests (they pass validation and do real work, so that the hostile ones meet real
 * state), well-typed requests with hostile content (they reach the handlers' validation) and fully
 * hostile ones (wrong types, broken bodies and envelopes, odd headers), 2:2:1.
 */
function caseArb(world: FuzzWorld, method: DescMethod): fc.Arbitrary<FuzzCase> {
  return fc.oneof(
    { weight: 2, arbitrary: cleanCaseArb(world, method, "plausible") },
    { weight: 2, arbitrary: cleanCaseArb(world, method, "typed") },
    { weight: 1, arbitrary: hostileCaseArb(world, method) },
  );
}

function cleanCaseArb(world: FuzzWorld, method: DescMethod, mode: "plausible" | "typed"): fc.Arbitrary<FuzzCase> {
  const message = messageValueArb(world, method.input, mode);
  const isStream = streaming(method);
  return fc
    .record({
      method: fc.constant(method),
      value: message,
      more:
        method.methodKind === "bidi_streaming" || method.methodKind === "client_streaming"
          ? fc.array(message, { maxLength: 2 })
          : fc.constant<JsonValue[]>([]),
      // One request in four in the binary format, when the generated JSON fits the message.
      encoding: fc.constantFrom<"json" | "proto">("json", "json", "json", "proto"),
      noise: fc.constant(new Uint8Array(0)),
      mutation: fc.constant<BodyMutation>("none"),
      truncateAt: fc.constant(0),
      literal: fc.constant(""),
      contentType: fc.constant(isStream ? "application/connect+json" : "application/json"),
      protocolVersion: fc.constant<string | undefined>("1"),
      timeoutMs: isStream
        ? fc.oneof(
            { weight: 20, arbitrary: fc.integer({ min: 20, max: 150 }).map(String) },
            { weight: 1, arbitrary: fc.constantFrom("0", "1") },
          )
        : fc.oneof({ weight: 20, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom("0", "1", "5", "50") }),
      cancelAfterMs: fc.oneof({ weight: 30, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 30 }) }),
    })
    .map((c): FuzzCase =>
      c.encoding === "proto" && [c.value, ...c.more].some((v) => protoBinary(method, v) === undefined) ? { ...c, encoding: "json" } : c,
    );
}

function hostileCaseArb(world: FuzzWorld, method: DescMethod): fc.Arbitrary<FuzzCase> {
  const message = messageValueArb(world, method.input, "hostile");
  const isStream = streaming(method);
  const mutations: Array<fc.WeightedArbitrary<BodyMutation>> = [
    { weight: 120, arbitrary: fc.constant("none") },
    { weight: 6, arbitrary: fc.constant("truncate") },
    { weight: 3, arbitrary: fc.constant("trailing-garbage") },
    { weight: 3, arbitrary: fc.constant("bom") },
    { weight: 4, arbitrary: fc.constant("not-an-object") },
    { weight: 2, arbitrary: fc.constant("deep-nesting") },
    { weight: 3, arbitrary: fc.constant("invalid-utf8") },
    { weight: 4, arbitrary: fc.constant("unknown-field") },
    { weight: 4, arbitrary: fc.constant("duplicate-key") },
    { weight: 1, arbitrary: fc.constant("oversized") },
  ];
  const envelopeMutations: Array<fc.WeightedArbitrary<BodyMutation>> = isStream
    ? [
        { weight: 3, arbitrary: fc.constant("torn-envelope") },
        { weight: 3, arbitrary: fc.constant("short-envelope") },
        { weight: 2, arbitrary: fc.constant("compressed-flag") },
        { weight: 2, arbitrary: fc.constant("end-flag") },
        { weight: 2, arbitrary: fc.constant("empty-stream") },
      ]
    : [];
  mutations.push(...envelopeMutations);
  const more =
    method.methodKind === "bidi_streaming" || method.methodKind === "client_streaming"
      ? fc.array(message, { maxLength: 2 })
      : fc.constant<JsonValue[]>([]);
  // Streams always carry a deadline (a follow stream ends only with it); unary calls mostly do not.
  const timeout = isStream
    ? fc.oneof(
        { weight: 30, arbitrary: fc.integer({ min: 20, max: 150 }).map(String) },
        { weight: 1, arbitrary: fc.constantFrom("abc", "-5", "12345678901", "1.5") },
      )
    : fc.oneof(
        { weight: 30, arbitrary: fc.constant(undefined) },
        { weight: 3, arbitrary: fc.constantFrom("0", "1", "5", "50", "2000") },
        { weight: 1, arbitrary: fc.constantFrom("abc", "-5", "12345678901", "1.5", "", " 10") },
      );
  const protoMutations: Array<fc.WeightedArbitrary<BodyMutation>> = [
    { weight: 12, arbitrary: fc.constant("none") },
    { weight: 3, arbitrary: fc.constant("proto-garbage") },
    { weight: 3, arbitrary: fc.constant("proto-truncate") },
    { weight: 3, arbitrary: fc.constant("proto-bitflip") },
    { weight: 2, arbitrary: fc.constant("proto-huge-length") },
    { weight: 2, arbitrary: fc.constant("proto-wrong-wiretype") },
    { weight: 2, arbitrary: fc.constant("proto-bad-varint") },
    { weight: 2, arbitrary: fc.constant("proto-unknown-field") },
    { weight: 1, arbitrary: fc.constant("proto-deep-groups") },
    ...envelopeMutations,
  ];
  // JSON three times in four; otherwise the binary format, where broken bodies are broken differently.
  const encoding = fc.constantFrom<"json" | "proto">("json", "json", "json", "proto");
  return fc
    .record({
      method: fc.constant(method),
      value: message,
      more,
      encoding,
      noise: fc.uint8Array({ maxLength: 96 }),
      mutation: fc.oneof(...mutations),
      truncateAt: fc.double({ min: 0, max: 1, noNaN: true }),
      literal: fc.constantFrom("", "{", "}", "null", "[]", "[{}]", "123", '"x"', "true", "{}{}", '{"a":', "\u0000", '{"\u0000":1}'),
      contentType: fc.constantFrom(...(isStream ? STREAM_CONTENT_TYPES : UNARY_CONTENT_TYPES)),
      protocolVersion: fc.constantFrom<string | undefined>("1", "1", "1", "1", "1", "1", "1", undefined, "2"),
      timeoutMs: timeout,
      cancelAfterMs: fc.oneof({ weight: 24, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 30 }) }),
      protoMutation: fc.oneof(...protoMutations),
    })
    .map(({ protoMutation, ...c }): FuzzCase => (c.encoding === "proto" ? { ...c, mutation: protoMutation } : c));
}

/** A varint, as the protobuf binary format writes tags and lengths. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

function encodeBinary(c: FuzzCase, value: JsonValue): Buffer {
  const valid = protoBinary(c.method, value) ?? Buffer.from(c.noise);
  const at = Math.floor(valid.length * c.truncateAt);
  switch (c.mutation) {
    case "proto-garbage":
      return Buffer.from(c.noise);
    case "proto-truncate":
      return valid.subarray(0, at);
    case "proto-bitflip": {
      const out = Buffer.from(valid);
      const i = Math.min(at, out.length - 1);
      if (i >= 0) out.writeUInt8(out.readUInt8(i) ^ 0xff, i);
      return out;
    }
    case "proto-huge-length":
      // Field 1, length-delimited, claiming 4 GiB - 1 bytes.
      return Buffer.concat([valid, Buffer.from([0x0a, ...varint(0xffff_ffff)])]);
    case "proto-wrong-wiretype":
      // Fields 1 to 3 as fixed32, fixed64 and a group end: wire types no field of theirs has.
      return Buffer.concat([Buffer.from([0x0d, 1, 2, 3, 4, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1c]), valid]);
    case "proto-bad-varint":
      // Field 1 as a varint of 11 bytes (at most 10 are allowed).
      return Buffer.concat([valid, Buffer.from([0x08, ...Array.from({ length: 10 }, () => 0xff), 0x01])]);
    case "proto-unknown-field":
      // Field 999 (varint) and field 1000 (bytes): unknown to every message here.
      return Buffer.concat([valid, Buffer.from([...varint((999 << 3) | 0), 1, ...varint((1000 << 3) | 2), 3, 0x61, 0x62, 0x63])]);
    case "proto-deep-groups": {
      // Unknown field 2047 as nested groups, tens of thousands deep.
      const depth = 10_000 + Math.floor(c.truncateAt * 90_000);
      const start = Buffer.from(varint((2047 << 3) | 3));
      const end = Buffer.from(varint((2047 << 3) | 4));
      return Buffer.concat([valid, Buffer.alloc(start.length * depth, start), Buffer.alloc(end.length * depth, end)]);
    }
    default:
      return valid;
  }
}

function encodeMessage(c: FuzzCase, value: JsonValue): Buffer {
  if (c.encoding === "proto") return encodeBinary(c, value);
  const text = JSON.stringify(value);
  switch (c.mutation) {
    case "truncate":
      return Buffer.from(text.slice(0, Math.floor(text.length * c.truncateAt)));
    case "trailing-garbage":
      return Buffer.from(`${text}}`);
    case "bom":
      return Buffer.from(`\ufeff${text}`);
    case "not-an-object":
      return Buffer.from(c.literal);
    case "deep-nesting": {
      const depth = 10_000 + Math.floor(c.truncateAt * 200_000);
      return Buffer.from(`{"zz":${"[".repeat(depth)}${"]".repeat(depth)}}`);
    }
    case "invalid-utf8":
      return Buffer.concat([
        Buffer.from(text.slice(0, -1)),
        Buffer.from([0x2c, 0x22, 0xff, 0xfe, 0xc3, 0x22, 0x3a, 0x31]),
        Buffer.from(text.slice(-1)),
      ]);
    case "unknown-field":
      return Buffer.from(text.replace(/^\{/, text === "{}" ? '{"zzUnknown":{"a":[1,2,3]}' : '{"zzUnknown":{"a":[1,2,3]},'));
    case "duplicate-key": {
      const first = c.method.input.fields[0];
      return Buffer.from(first ? text.replace(/^\{/, text === "{}" ? `{"${first.jsonName}":12345` : `{"${first.jsonName}":12345,`) : text);
    }
    case "oversized":
      return Buffer.from(JSON.stringify({ zzPadding: "x".repeat(4 * 1024 * 1024 + 1024 * Math.floor(c.truncateAt * 1024)) }));
    default:
      return Buffer.from(text);
  }
}

/** The content type a case is sent with: its own, or the binary format's. */
const contentTypeOf = (c: FuzzCase) =>
  c.encoding === "proto" ? (streaming(c.method) ? "application/connect+proto" : "application/proto") : c.contentType;

function buildRequest(c: FuzzCase): RawRequest {
  const headers: Record<string, string> = {};
  const contentType = contentTypeOf(c);
  if (contentType !== "") headers["content-type"] = contentType;
  if (c.protocolVersion !== undefined) headers["connect-protocol-version"] = c.protocolVersion;
  if (c.timeoutMs !== undefined) headers["connect-timeout-ms"] = c.timeoutMs;
  const validTimeout = c.timeoutMs !== undefined && /^\d{1,10}$/.test(c.timeoutMs) ? Number(c.timeoutMs) : undefined;
  const hardDeadlineMs = (validTimeout ?? UNARY_DEADLINE_MS) + DEADLINE_GRACE_MS;
  let body: Buffer;
  if (!streaming(c.method)) {
    body = encodeMessage(c, c.value);
  } else {
    const messages = [c.value, ...c.more].map((v) => encodeMessage(c, v));
    const first = messages[0] as Buffer;
    switch (c.mutation) {
      case "torn-envelope":
        body = envelope(0, first).subarray(0, 3);
        break;
      case "short-envelope":
        body = envelope(0, first, first.length + 100);
        break;
      case "compressed-flag":
        body = envelope(1, first);
        break;
      case "end-flag":
        body = envelope(2, first);
        break;
      case "empty-stream":
        body = Buffer.alloc(0);
        break;
      default:
        body = Buffer.concat(messages.map((m) => envelope(0, m)));
    }
  }
  return { path: `/${c.method.parent.typeName}/${c.method.name}`, headers, body, hardDeadlineMs, cancelAfterMs: c.cancelAfterMs };
}

/** A short description of a case for failure messages (bodies can be megabytes). */
function describeCase(c: FuzzCase): string {
  const text = JSON.stringify(c.value) ?? "undefined";
  return `${methodKey(c.method)} mutation=${c.mutation} content-type=${JSON.stringify(contentTypeOf(c))} version=${c.protocolVersion} timeout=${c.timeoutMs} cancel=${c.cancelAfterMs} body(${text.length} chars)=${text.slice(0, 600)}${text.length > 600 ? "…" : ""}`;
}

// ---- the run --------------------------------------------------------------------------------------

interface Stats {
  cases: number;
  byMethod: Map<string, Map<string, number>>;
  /** Milliseconds spent waiting for answers, per method (to see where the time goes). */
  msByMethod: Map<string, number>;
  /** Methods where a request got past decoding into the handler (an answer not about the encoding). */
  reachedHandler: Set<string>;
  /** Races run, and races where at least two of the identical requests succeeded. */
  races: number;
  racesBothOk: number;
  lifecycles: number;
  /** INTERNAL answers of the protocol library itself (see runCase), counted to show they happen. */
  protocolInternal: number;
}

/** Lines of a JavaScript stack trace, or paths of aetherd's own code, in an error message. */
const STACK_TRACE = /\n\s+at \S|\bat (async )?[\w.<>]+ \(\/|node:internal\/|\/(daemon|sdk)\/(dist|src)\/\S+\.(js|ts)/;
/** Errors of the Connect protocol itself, answered before any handler runs. */
const PROTOCOL_ERROR =
  /^(cannot decode|parse binary|protocol error|message size|invalid UTF-8|unsupported content type|received compressed|protocol version)/;

describe("fuzz: hostile input on every RPC of a real aetherd", { timeout: 600_000 }, () => {
  const marker = `aefz${SEED.toString(36)}x`;
  const root = mkdtempSync(join(tmpdir(), `aetherd-fuzz-`));
  const importDir = join(root, "imports");
  const sentinelDir = join(root, "sentinel");
  let daemon: TestDaemon;
  let client: AetherClient;
  let raw: RawConnectClient;
  let imports: ImportServer;
  let world: FuzzWorld;
  const stats: Stats = {
    cases: 0,
    byMethod: new Map(),
    msByMethod: new Map(),
    reachedHandler: new Set(),
    races: 0,
    racesBothOk: 0,
    lifecycles: 0,
    protocolInternal: 0,
  };
  /** Methods that answer UNIMPLEMENTED to an empty request: not served by aetherd (found in before()). */
  const unimplemented = new Set<string>();
  /** Every path component of every string a request carried: a new file by such a name is a finding. */
  const generatedNames = new Set<string>();
  const started = Date.now();
  // Files nobody may change (by content: their folders' mtimes change all the time on a shared machine).
  const SENSITIVE = ["/etc/hostname", "/etc/hosts", "/etc/passwd", "/etc/shadow", "/etc/group", "/usr/bin/true", "/bin/echo"];
  // Folders where a path trick could put a file: no new entry may carry a generated name.
  const WATCHED = [
    "/",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/etc",
    "/root",
    "/run",
    "/dev",
    "/usr/bin",
    process.cwd(),
    join(process.cwd(), "test"),
  ];
  let sensitiveBefore: Map<string, string>;
  let sentinelBefore: Map<string, string>;
  let importsBefore: Map<string, string>;
  let watchedBefore: Map<string, Set<string>>;
  let rootBefore: string[];
  let shmBefore: string[];
  let cgroupsBefore: string[];
  let fdsBefore = 0;

  const allMethods = EVERY_METHOD.filter(selected);

  before(async () => {
    console.log(`fuzz seed ${SEED} (reproduce with FUZZ_SEED=${SEED}; narrow with FUZZ_ONLY=Service/Method)`);
    mkdirSync(importDir);
    const local = prepareImportRoot(importDir);
    const sentinel = prepareSentinel(sentinelDir);
    imports = await startImportServer();
    const config = join(root, "aetherd.toml");
    writeFileSync(config, `import_roots = [${JSON.stringify(importDir)}]\n`);
    sensitiveBefore = fingerprint(SENSITIVE);
    sentinelBefore = treeDigest(sentinelDir);
    importsBefore = treeDigest(importDir);
    watchedBefore = topLevel(WATCHED);
    shmBefore = listTree("/dev/shm/aether-seeds");
    daemon = await startDaemon({ dir: root, args: ["--config", config] });
    cgroupsBefore = cgroupsAroundRoot(daemon.cgroupRoot);
    client = await daemon.client();
    raw = new RawConnectClient(daemon.socket);
    rootBefore = listTree(root, new Set(["state"]));
    fdsBefore = openFds(daemon);

    const names = ["fz-a", "fz-b", "fz-c", "a", "default", "fz-a/fz-b", "fz-a/fz-b/fz-c", "fz-a/", "/fz-a"];
    const overrides = new Map<string, (mode: Mode) => fc.Arbitrary<JsonValue>>();
    world = {
      marker,
      sentinel,
      names,
      tenants: ["", "", "default", "fz-t1", "fz-t2", "Default", "-x-", "a".repeat(64)],
      knownIds: [],
      resources: new Map(),
      hints: new Map([
        ["local_path", local.paths],
        ["sha256", [...local.digests, ...imports.digests]],
      ]),
      overrides,
    };
    // Safety: nothing a generated request asks for may start real, long-lived things on this host.
    overrides.set("aether.runtime.v1.StartExecutableRequest.argv", (mode) => safeArgv(world, mode));
    overrides.set("aether.vm.v1.KernelBoot.kernel_path", (mode) => mustNotExist(world, mode));
    overrides.set("aether.vm.v1.KernelBoot.initrd_path", (mode) => mustNotExist(world, mode));
    overrides.set("aether.vm.v1.DiskBoot.volume", (mode) => neverResolves(world, mode));
    overrides.set("aether.vm.v1.DiskBoot.image", (mode) => neverResolves(world, mode));
    overrides.set("aether.storage.v1.ImageSource.url", (mode) => localUrl(world, imports.base, imports.closedPort, mode));
    overrides.set("aether.fence.v1.RegisterBmcRequest.endpoint", (mode) => localUrl(world, imports.base, imports.closedPort, mode));
    const fields = reachableFields(EVERY_METHOD);
    for (const key of overrides.keys())
      assert.ok(fields.has(key), `safety override ${key} names no field of the contract any more: update the fuzz suite`);

    // Which methods aetherd serves: an empty request answered UNIMPLEMENTED means it does not (a
    // service defined but not built, or served by another program). They get fewer cases.
    for (const m of EVERY_METHOD) {
      const res = await raw.send(buildRequest({ ...emptyCase(m) }));
      const outcome = streaming(m) ? checkStreamResponse(m, res, false) : checkUnaryResponse(m, res);
      if (outcome.code === "unimplemented") unimplemented.add(methodKey(m));
    }
    console.log(`fuzz: not served by aetherd (UNIMPLEMENTED): ${[...unimplemented].join(", ") || "none"}`);
  });

  after(async () => {
    raw?.close();
    await imports?.close();
    // After a failure the last test did not get to stop it: do not leave aetherd, its cells or its
    // folder behind (cleanup() is idempotent).
    if (daemon) {
      if (alive()) {
        await removeEverything(client).catch(() => undefined);
        await daemon.stop();
      }
      daemon.cleanup();
    }
    rmSync(root, { recursive: true, force: true });
  });

  const alive = () => daemon.process.exitCode === null && daemon.process.signalCode === null;

  async function checkHealth(): Promise<void> {
    const res = await raw.send({
      path: `/${NodeService.typeName}/CheckHealth`,
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: Buffer.from("{}"),
      hardDeadlineMs: 5_000,
    });
    const outcome = checkUnaryResponse(NodeService.method.checkHealth as DescMethod, res);
    assert.equal(outcome.code, "ok", `CheckHealth failed: ${outcome.message}`);
    assert.equal(outcome.messages[0]?.status, "HEALTH_STATUS_SERVING", `aetherd is not healthy: ${JSON.stringify(outcome.messages[0])}`);
  }

  /** What aetherd reports must stay inside its own directories; ids feed later references. */
  function inspectSuccess(json: JsonValue, key = ""): void {
    if (Array.isArray(json)) {
      for (const v of json) inspectSuccess(v, key);
      return;
    }
    if (json === null || typeof json !== "object") {
      if (key === "id" && typeof json === "string" && json !== "" && !world.knownIds.includes(json)) {
        world.knownIds.push(json);
        if (world.knownIds.length > 200) world.knownIds.shift();
      }
      return;
    }
    const kind = RESOURCE_KINDS[key];
    if (kind && typeof json.id === "string" && typeof json.name === "string" && typeof json.tenant === "string" && json.id !== "") {
      const list = world.resources.get(kind) ?? [];
      if (!list.some((r) => r.id === json.id)) list.push({ id: json.id, name: json.name, tenant: json.tenant });
      if (list.length > 50) list.shift();
      world.resources.set(kind, list);
    }
    for (const [k, v] of Object.entries(json)) {
      if ((k === "hostPath" || k === "consoleLogPath" || k === "stateDir") && typeof v === "string" && v !== "") {
        assert.ok(
          v.startsWith(`${daemon.stateDir}/`) || v === daemon.stateDir,
          `${k} ${v} is outside the state directory ${daemon.stateDir}`,
        );
      }
      if (k === "cgroupPaths" && v !== null && typeof v === "object" && !Array.isArray(v)) {
        for (const p of Object.values(v)) {
          assert.ok(
            typeof p === "string" && p.includes(`/${daemon.cgroupRoot}/`),
            `cell cgroup path ${String(p)} is outside this daemon's cgroup root ${daemon.cgroupRoot}`,
          );
        }
      }
      inspectSuccess(v, k);
    }
  }

  /** Remembers the path components of every string in a request (see generatedNames). */
  function noteNames(value: JsonValue): void {
    if (typeof value === "string") {
      if (value.length > 4096 || generatedNames.size > 500_000) return;
      for (const part of value.split("/")) if (part !== "" && part !== "." && part !== ".." && part.length <= 255) generatedNames.add(part);
    } else if (Array.isArray(value)) {
      // Thousands of copies of one small element: a few are enough.
      for (const v of value.slice(0, 16)) noteNames(v);
    } else if (value !== null && typeof value === "object") {
      for (const v of Object.values(value).slice(0, 64)) noteNames(v);
    }
  }

  async function runCase(c: FuzzCase): Promise<Outcome | undefined> {
    noteNames(c.value);
    c.more.forEach(noteNames);
    const req = buildRequest(c);
    const res = await raw.send(req);
    stats.cases++;
    const key = methodKey(c.method);
    stats.msByMethod.set(key, (stats.msByMethod.get(key) ?? 0) + res.elapsedMs);
    // Messages are built only on failure: describing a case stringifies bodies of megabytes.
    const check = (ok: boolean, message: () => string) => {
      if (!ok) assert.fail(`${message()}\n  request: ${describeCase(c)}`);
    };
    check(!res.hung, () => `no answer within ${req.hardDeadlineMs} ms`);
    check(
      alive(),
      () => `aetherd died (exit ${daemon.process.exitCode}, signal ${daemon.process.signalCode})\n${daemon.log().slice(-3000)}`,
    );
    if (res.cancelled) {
      // Whatever arrived before the client went away must still be well-formed.
      if (res.status === 200 && streaming(c.method)) checkStreamResponse(c.method, res, true);
      return undefined;
    }
    if (!isConnectCodec(contentTypeOf(c), c.method)) {
      // Not a Connect request: the server may refuse the media type (HTTP 415) and nothing else.
      check(res.status === 415 || res.status === 200 || res.status >= 400, () => `unexpected HTTP ${res.status}`);
      if (res.status === 415) return undefined;
    }
    check(res.status !== 0, () => `no HTTP answer (${res.transportError ?? "no status"})`);
    let outcome: Outcome;
    try {
      outcome = streaming(c.method) ? checkStreamResponse(c.method, res, false) : checkUnaryResponse(c.method, res);
    } catch (err) {
      throw new Error(`malformed answer: ${(err as Error).message}\n  request: ${describeCase(c)}`);
    }
    if (TRACE) appendFileSync(TRACE, `${key}\t${outcome.code}\t${outcome.message.slice(0, 300).replace(/\s+/g, " ")}\n`);
    const perMethod = stats.byMethod.get(key) ?? new Map<string, number>();
    perMethod.set(outcome.code, (perMethod.get(outcome.code) ?? 0) + 1);
    stats.byMethod.set(key, perMethod);
    if (outcome.code === "ok" || !PROTOCOL_ERROR.test(outcome.message)) stats.reachedHandler.add(key);
    const { code, message } = outcome;
    // An unclassified exception in a handler (a TypeError, a failed host command...) comes out as
    // UNKNOWN or as INTERNAL: both are bugs for input the caller controls.
    check(code !== "unknown", () => `an unclassified error escaped a handler: ${message}`);
    // The Connect protocol itself answers INTERNAL to a compressed envelope when no compression was
    // negotiated (as gRPC prescribes); anything else INTERNAL is the daemon's.
    const protocolInternal =
      (c.mutation === "compressed-flag" && /compress/.test(message)) ||
      // connect-es answers INTERNAL to a binary body protobuf-es cannot parse (connect-go: INVALID_ARGUMENT);
      // that happens in the protocol library, before any of aetherd's code runs.
      (c.encoding === "proto" && /^parse binary: /.test(message));
    if (protocolInternal) stats.protocolInternal++;
    check(code !== "internal" || protocolInternal, () => `INTERNAL for caller-controlled input: ${message}`);
    check(!STACK_TRACE.test(message), () => `an error message carries a stack trace or aetherd's source paths: ${message}`);
    // A method aetherd does not serve answers UNIMPLEMENTED, unless the protocol refused the request first.
    check(
      !unimplemented.has(key) ||
        protocolInternal ||
        ["unimplemented", "invalid_argument", "resource_exhausted", "deadline_exceeded"].includes(code),
      () => `${key} is not served by aetherd but answered ${code}: ${message}`,
    );
    // Errors quote user input clipped: a 64 KiB field must not come back as a 64 KiB message.
    check(
      message.length <= 2048,
      () => `an error message of ${message.length} characters (input echoed unclipped?): ${message.slice(0, 300)}…`,
    );
    for (const m of outcome.messages) inspectSuccess(m);
    return outcome;
  }

  /** Runs a property; on failure, reports the seed, fast-check's replay path and a readable case. */
  async function property<T>(
    name: string,
    arb: fc.Arbitrary<T>,
    numRuns: number,
    seed: number,
    run: (value: T) => Promise<void>,
    show: (value: T) => string,
    only?: (value: T) => string,
  ): Promise<void> {
    const details = await fc.check(
      fc.asyncProperty(arb, async (value) => {
        const before = stats.cases;
        await run(value);
        if (Math.floor(stats.cases / 200) !== Math.floor(before / 200)) await checkHealth();
      }),
      // No shrinking: against a live daemon whose state every case changes, a shrunk case rarely
      // fails the same way, and the failure message already names the one failing request.
      { seed, numRuns, endOnFailure: true, maxSkipsPerRun: 0 },
    );
    if (details.failed) {
      const example = details.counterexample?.[0];
      const shown = example === undefined ? "(none)" : show(example);
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      const narrow = example === undefined || only === undefined ? undefined : only(example);
      const command = "node --conditions=source --import tsx --test test/fuzz.test.ts";
      assert.fail(
        `${name} failed after ${details.numRuns} runs (property seed ${details.seed}, path "${details.counterexamplePath}").\n` +
          `  Rerun: FUZZ_SEED=${SEED} ${command}` +
          (narrow === undefined
            ? ""
            : `\n  or faster, narrowed (aetherd's state then differs, so it may pass): FUZZ_SEED=${SEED} FUZZ_ONLY=${narrow} ${command}`) +
          `\n  ${error}\n  counterexample:\n    ${shown}`,
      );
    }
  }

  const runCases = async (cases: FuzzCase[]) => {
    await Promise.all(cases.map((c) => runCase(c)));
  };
  const showCases = (cases: FuzzCase[]) => cases.map(describeCase).join("\n    ");

  for (const service of SERVICES) {
    const methods = service.methods.filter(selected);
    if (methods.length === 0) continue;
    it(`${service.typeName}: ${methods.length} methods answer hostile requests with well-formed Connect errors`, async () => {
      for (const method of methods) {
        const cases = unimplemented.has(methodKey(method)) ? CASES_UNIMPLEMENTED : CASES_IMPLEMENTED;
        // About 2.5 cases per run on average.
        const batch = fc.array(caseArb(world, method), { minLength: 1, maxLength: 4 });
        await property(methodKey(method), batch, Math.ceil(cases / 2.5), SEED + EVERY_METHOD.indexOf(method), runCases, showCases, () =>
          methodKey(method),
        );
      }
      assert.ok(alive(), "aetherd is alive after the service's cases");
      await checkHealth();
    });
  }

  if (allMethods.length > 0) {
    it("concurrent bursts across every method keep aetherd consistent", async () => {
      const any = fc.oneof(...allMethods.map((m) => caseArb(world, m)));
      await property("bursts", fc.array(any, { minLength: 8, maxLength: 24 }), BURSTS, SEED - 1, runCases, showCases);
      await checkHealth();
      await assertConsistent();
    });
  }

  /** No two executables, cells, VMs, volumes or images share a tenant and a name. */
  async function assertConsistent(): Promise<void> {
    const [e, c, v, vol, img] = await Promise.all([
      client.runtime.listExecutables({ pageSize: 1000 }),
      client.cells.listCells({ pageSize: 1000 }),
      client.vm.listVms({ pageSize: 1000 }),
      client.storage.listVolumes({ pageSize: 1000 }),
      client.storage.listImages({ pageSize: 1000 }),
    ]);
    const kinds: Record<string, Array<{ id: string; tenant: string; name: string }>> = {
      executables: e.executables,
      cells: c.cells,
      vms: v.vms,
      volumes: vol.volumes,
      images: img.images,
    };
    for (const [kind, items] of Object.entries(kinds)) {
      const seen = new Map<string, string>();
      for (const item of items) {
        const key = `${item.tenant}/${item.name}`;
        const other = seen.get(key);
        assert.equal(other, undefined, `two ${kind} named ${item.name} in tenant ${item.tenant}: ${other} and ${item.id}`);
        seen.set(key, item.id);
      }
    }
  }

  /** The id of the resource a success answer carries ({executable: {id}}, {cell: {id}}, ...). */
  const resourceId = (o: Outcome) => {
    for (const v of Object.values(o.messages[0] ?? {}))
      if (v !== null && typeof v === "object" && !Array.isArray(v) && typeof v.id === "string") return v.id;
    return undefined;
  };

  /** Sends one plausible request `copies` times at once; checks the answers agree and aetherd stays consistent. */
  async function race([c, copies]: [FuzzCase, number]): Promise<void> {
    const outcomes = await Promise.all(Array.from({ length: copies }, () => runCase(c)));
    stats.races++;
    const ok = outcomes.filter((o): o is Outcome => o?.code === "ok");
    if (ok.length > 1) stats.racesBothOk++;
    const value = c.value as Record<string, JsonValue>;
    const requestId = value.requestId ?? value.request_id;
    if (typeof requestId === "string" && requestId !== "" && ok.length > 1) {
      const ids = new Set(ok.map(resourceId));
      assert.equal(
        ids.size,
        1,
        `identical requests with request_id ${requestId} answered with different resources: ${[...ids].join(", ")}`,
      );
    }
    await assertConsistent();
  }
  const showRace = ([c, copies]: [FuzzCase, number]) => `${copies} copies at once of ${describeCase(c)}`;
  /** Mostly valid requests (validRequestArb), sometimes merely plausible ones. */
  const raceCaseArb = (m: DescMethod): fc.Arbitrary<FuzzCase> => {
    const plausible = cleanCaseArb(world, m, "plausible");
    const valid = validRequestArb(world, m, imports.base);
    if (!valid) return plausible;
    return fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .tuple(plausible, valid)
          .map(([c, value]): FuzzCase => ({ ...c, value, timeoutMs: undefined, cancelAfterMs: undefined })),
      },
      { weight: 1, arbitrary: plausible },
    );
  };
  const raceArb = (methods: readonly DescMethod[]) =>
    fc.tuple(fc.constantFrom(...methods).chain(raceCaseArb), fc.integer({ min: 2, max: 6 }));

  const raceMethods = RACE_METHODS.filter(selected);
  if (raceMethods.length > 0) {
    it(`identical requests sent at once leave one resource per name and request_id (${raceMethods.length} methods that create, stop or remove)`, async () => {
      await property("races", raceArb(raceMethods), RACES, SEED - 2, race, showRace, ([c]) => methodKey(c.method));
      await checkHealth();
    });
  }

  // ---- lifecycles: one resource, then several different calls on it at once ----------------------

  type Kind = "executable" | "cell" | "volume" | "vm";
  type Call = [DescMethod, JsonValue];
  /** Creates a resource of the kind named `name`; its calls act on it (by id) at once. */
  const LIFECYCLE: Record<Kind, { create: (name: string) => Call[]; calls: Array<(id: string, name: string) => Call> }> = {
    executable: {
      create: (name) => [[ExecutableService.method.startExecutable, { name, argv: ["/bin/sleep", "2"] }]],
      calls: [
        (id) => [ExecutableService.method.stopExecutable, { executable: id, signal: "SIGTERM", gracePeriod: "0.050s" }],
        (id) => [ExecutableService.method.stopExecutable, { executable: id, signal: "SIGKILL" }],
        (id) => [ExecutableService.method.stopExecutable, { executable: id, gracePeriod: "0s" }],
        (id) => [ExecutableService.method.stopExecutable, { executable: id, signal: "SIGCONT", gracePeriod: "0.020s" }],
        (id) => [ExecutableService.method.deleteExecutable, { executable: id }],
        (id, name) => [ExecutableService.method.deleteExecutable, { executable: name, requestId: `del-${name}` }],
        (id) => [ExecutableService.method.waitExecutable, { executable: id, timeout: "0.100s" }],
        (id) => [ExecutableService.method.getExecutable, { executable: id }],
        (id) => [ObserveService.method.streamLogs, { source: "LOG_SOURCE_EXECUTABLE", target: id, follow: true }],
      ],
    },
    cell: {
      create: (name) => [
        [CellService.method.allocateCell, { name, isolation: { ipc: true } }],
        [ExecutableService.method.startExecutable, { name: `${name}-p`, cell: name, argv: ["/bin/sleep", "2"] }],
      ],
      calls: [
        (id) => [CellService.method.freeCell, { cell: id, stopExecutables: true }],
        (id) => [CellService.method.freeCell, { cell: id, stopExecutables: false }],
        (id, name) => [CellService.method.freeCell, { cell: name, stopExecutables: true, requestId: `free-${name}` }],
        (id, name) => [CellService.method.allocateCell, { name: `${name}/child` }],
        (id, name) => [ExecutableService.method.startExecutable, { cell: name, argv: ["/bin/sleep", "1"] }],
        (id) => [CellService.method.updateCell, { cell: id, limits: { memoryMaxBytes: "268435456", pidsMax: "64" } }],
        (id) => [CellService.method.getCellStats, { cell: id }],
        (id) => [CellService.method.getCell, { cell: id }],
      ],
    },
    volume: {
      create: (name) => [[StorageService.method.createVolume, { name, empty: { sizeBytes: "1048576" } }]],
      calls: [
        (id) => [StorageService.method.snapshotVolume, { volume: id, name: "s1" }],
        (id) => [StorageService.method.snapshotVolume, { volume: id, name: "s2" }],
        (id, name) => [StorageService.method.cloneVolume, { volume: id, name: `${name}-c` }],
        (id) => [StorageService.method.resizeVolume, { volume: id, sizeBytes: "2097152" }],
        (id) => [StorageService.method.deleteVolume, { volume: id, deleteSnapshots: true }],
        (id) => [StorageService.method.deleteVolume, { volume: id }],
        (id) => [StorageService.method.rollbackVolume, { volume: id, snapshot: "s1" }],
        (id) => [StorageService.method.deleteSnapshot, { volume: id, snapshot: "s1" }],
        (id) => [StorageService.method.getVolume, { volume: id }],
      ],
    },
    vm: {
      create: (name) => [
        [
          VmService.method.createVm,
          { name, vcpus: 1, hypervisor: "HYPERVISOR_QEMU", boot: { kernel: { kernelPath: `/nonexistent-${marker}/vmlinuz` } } },
        ],
      ],
      calls: [
        (id) => [VmService.method.deleteVm, { vm: id }],
        (id) => [VmService.method.deleteVm, { vm: id, force: true }],
        (id) => [VmService.method.startVm, { vm: id }],
        (id) => [VmService.method.stopVm, { vm: id, force: true }],
        (id) => [VmService.method.getVm, { vm: id }],
        (id) => [VmService.method.streamConsole, { vm: id, follow: true }],
        (id) => [VmService.method.waitVmReady, { vm: id, timeout: "0.100s" }],
      ],
    },
  };
  /** A well-formed JSON request (streams: a deadline, for follow streams end only with it). */
  const callCase = ([method, value]: Call): FuzzCase => ({ ...emptyCase(method), value, timeoutMs: streaming(method) ? "300" : undefined });
  let lifecycleCount = 0;

  async function lifecycle([kind, picks]: [Kind, number[]]): Promise<void> {
    const plan = LIFECYCLE[kind];
    const name = `lc-${kind.slice(0, 3)}-${lifecycleCount++}`;
    const created: Array<Outcome | undefined> = [];
    for (const call of plan.create(name)) created.push(await runCase(callCase(call)));
    const id = created[0] && resourceId(created[0]);
    assert.ok(id, `creating the ${kind} of a lifecycle failed: ${created[0]?.code} ${created[0]?.message}`);
    await Promise.all(
      picks.map((i) => runCase(callCase((plan.calls[i % plan.calls.length] as (id: string, name: string) => Call)(id, name)))),
    );
    stats.lifecycles++;
    await assertConsistent();
    await assertNoStrays();
  }

  /** Every folder and record in the state directory belongs to a resource aetherd lists. */
  async function assertNoStrays(): Promise<void> {
    const [e, c, v] = await Promise.all([
      client.runtime.listExecutables({ pageSize: 1000 }),
      client.cells.listCells({ pageSize: 1000 }),
      client.vm.listVms({ pageSize: 1000 }),
    ]);
    const dirs = (d: string) => {
      try {
        return readdirSync(join(daemon.stateDir, d));
      } catch {
        return [];
      }
    };
    const ids = new Set([...e.executables.map((x) => x.id), ...c.cells.map((x) => x.id), ...v.vms.map((x) => x.id)]);
    const strays = [
      ...dirs("executables")
        .filter((d) => !ids.has(d))
        .map((d) => `executables/${d}`),
      ...dirs("cells")
        .filter((f) => f.endsWith(".json") && !ids.has(f.slice(0, -5)))
        .map((f) => `cells/${f}`),
      ...dirs("vms")
        .filter((d) => d !== "executables" && !ids.has(d))
        .map((d) => `vms/${d}`),
    ];
    assert.deepEqual(strays, [], "folders or records in the state directory that belong to no listed resource (recreated after a delete?)");
  }

  const SERVICE_OF: Record<Kind, string> = {
    executable: "ExecutableService",
    cell: "CellService",
    volume: "StorageService",
    vm: "VmService",
  };
  const kinds = (Object.keys(SERVICE_OF) as Kind[]).filter((k) => ONLY === undefined || ONLY.split("/")[0] === SERVICE_OF[k]);
  if (kinds.length > 0) {
    it(`a resource that gets stops, deletes, frees, snapshots... at once ends in one consistent state (${kinds.join(", ")})`, async () => {
      const arb = fc.tuple(fc.constantFrom(...kinds), fc.array(fc.nat(), { minLength: 2, maxLength: 8 }));
      await property("lifecycles", arb, LIFECYCLES, SEED - 4, lifecycle, ([k, picks]) => `${k}: calls ${picks.join(",")}`);
      await checkHealth();
    });
  }

  const coverage = ONLY === undefined ? `ran at least ${MIN_TOTAL_CASES} cases${SCALE >= 1 ? ", reached every handler" : ""}, and ` : "";
  it(`${coverage}cleans up, exits 0 and left the host alone`, async (t: TestContext) => {
    const elapsed = (Date.now() - started) / 1000;
    t.diagnostic(
      `fuzz: ${stats.cases} cases in ${elapsed.toFixed(1)} s (seed ${SEED}${ONLY === undefined ? "" : `, only ${ONLY}`}); ${stats.races} races, ${stats.racesBothOk} with several successes; ${stats.lifecycles} lifecycles; ${stats.protocolInternal} INTERNAL answers of connect-es itself (binary bodies it cannot parse, compressed envelopes)`,
    );
    for (const [m, codes] of stats.byMethod) {
      const ms = stats.msByMethod.get(m) ?? 0;
      const n = [...codes.values()].reduce((a, b) => a + b, 0);
      t.diagnostic(
        `  ${m.padEnd(42)} ${String(Math.round(ms / Math.max(n, 1))).padStart(5)} ms/case  ${[...codes.entries()].map(([c, k]) => `${c}=${k}`).join(" ")}`,
      );
    }
    if (ONLY === undefined) assert.ok(stats.cases >= MIN_TOTAL_CASES, `only ${stats.cases} cases ran`);
    // Smaller runs (FUZZ_SCALE < 1, FUZZ_ONLY) are for reproducing: the coverage checks need a full one.
    if (ONLY === undefined && SCALE >= 1) {
      for (const m of allMethods)
        assert.ok(
          stats.reachedHandler.has(methodKey(m)),
          `no generated request for ${methodKey(m)} got past decoding: the generator is too weak`,
        );
      for (const m of MUST_SUCCEED)
        assert.ok(
          (stats.byMethod.get(m)?.get("ok") ?? 0) > 0,
          `no generated request to ${m} succeeded: the generator does not reach its real work`,
        );
    }
    assert.ok(alive(), "aetherd is alive at the end");
    await checkHealth();

    // Remove what the fuzz created, through the API; a resource that cannot be removed is a finding.
    const removed = await removeEverything(client);
    t.diagnostic(`fuzz: removed ${JSON.stringify(removed)}`);
    const left = await inventory(client);
    assert.deepEqual(left, { executables: 0, cells: 0, vms: 0, volumes: 0, images: 0 }, "everything the fuzz created can be removed");
    const fdsAfter = openFds(daemon);
    t.diagnostic(`fuzz: aetherd has ${fdsAfter} open file descriptors (${fdsBefore} after it started)`);
    // Sessions, watchers and log files of what was removed are closed: a leak shows as hundreds.
    assert.ok(
      fdsAfter < fdsBefore + 200,
      `aetherd leaks file descriptors: ${fdsBefore} after it started, ${fdsAfter} after the fuzz and the cleanup`,
    );

    assert.deepEqual(
      listTree(root, new Set(["state"])),
      rootBefore,
      "nothing appeared next to the state directory (socket folder, imports, sentinel)",
    );
    assert.equal(await daemon.stop(), 0, "aetherd exits 0 on SIGTERM after the fuzz");
    const log = readFileSync(join(daemon.stateDir, "aetherd.log"), "utf8");
    assert.doesNotMatch(log, /"level":60/, "aetherd logged nothing fatal");
    // Files aetherd keeps forever grow by a line per call, never by the size of what a caller sent.
    const longest = (text: string) => text.split("\n").reduce((m, l) => Math.max(m, l.length), 0);
    assert.ok(longest(log) <= 8192, `aetherd.log has a line of ${longest(log)} characters: a request's input is logged unclipped`);
    const audit = readFileSync(join(daemon.stateDir, "audit.log"), "utf8");
    // Two fields of 253 UTF-16 units each, escaped in JSON (a NUL takes 6 characters): a few KiB at most.
    assert.ok(longest(audit) <= 4096, `audit.log has a line of ${longest(audit)} characters: a request's input is recorded unclipped`);
    assert.doesNotMatch(daemon.log(), /uncaught|unhandled/i, "no uncaught exception or unhandled rejection on stderr");

    assert.deepEqual(treeDigest(sentinelDir), sentinelBefore, "the sentinel tree that requests named is unchanged");
    assert.deepEqual(treeDigest(importDir), importsBefore, "the import root is unchanged");
    assert.deepEqual(fingerprint(SENSITIVE), sensitiveBefore, "sensitive files are unchanged");
    assert.deepEqual(listTree("/dev/shm/aether-seeds"), shmBefore, "no cloud-init seed was left in /dev/shm");
    assert.deepEqual(cgroupsAroundRoot(daemon.cgroupRoot), cgroupsBefore, "no cgroup appeared or vanished outside aetherd's cgroup root");
    const fresh = appeared(watchedBefore, topLevel(WATCHED));
    if (fresh.length > 0)
      t.diagnostic(
        `fuzz: new entries while it ran (other processes share this machine): ${fresh
          .slice(0, 30)
          .map((f) => join(f.dir, f.name))
          .join(", ")}`,
      );
    const named = fresh.filter((f) => generatedNames.has(f.name) || f.name.includes(marker));
    assert.deepEqual(named, [], "no file or folder named by a request appeared in /, /tmp, /etc, /dev/shm, /run, /root...");
    const marked = findMarked(marker, [
      { dir: "/", depth: 1 },
      { dir: "/tmp", depth: 3, skip: [root] },
      { dir: "/var/tmp", depth: 2 },
      { dir: "/dev/shm", depth: 2 },
      { dir: "/etc", depth: 2 },
      { dir: "/root", depth: 2 },
      { dir: "/run", depth: 2 },
      { dir: process.cwd(), depth: 3, skip: [join(process.cwd(), "node_modules"), join(process.cwd(), ".git")] },
      { dir: root, depth: 2, skip: [daemon.stateDir] },
      { dir: "/sys/fs/cgroup", depth: 4 },
    ]);
    assert.deepEqual(marked, [], "no file or folder named by a fuzzed path exists outside the state directory");
    daemon.cleanup();
  });
});

/** A request with no fields (to ask whether a method is served at all). */
function emptyCase(method: DescMethod): FuzzCase {
  return {
    method,
    value: {},
    more: [],
    encoding: "json",
    noise: new Uint8Array(0),
    mutation: "none",
    truncateAt: 0,
    literal: "",
    contentType: streaming(method) ? "application/connect+json" : "application/json",
    protocolVersion: "1",
    timeoutMs: streaming(method) ? "100" : undefined,
    cancelAfterMs: undefined,
  };
}

/** How many file descriptors the daemon holds. */
function openFds(d: TestDaemon): number {
  try {
    return readdirSync(`/proc/${d.process.pid}/fd`).length;
  } catch {
    return 0;
  }
}

// ---- cleanup through the API ----------------------------------------------------------------------

async function inventory(aether: AetherClient): Promise<Record<string, number>> {
  const [e, c, v, vol, img] = await Promise.all([
    aether.runtime.listExecutables({ pageSize: 1000 }),
    aether.cells.listCells({ pageSize: 1000 }),
    aether.vm.listVms({ pageSize: 1000 }),
    aether.storage.listVolumes({ pageSize: 1000 }),
    aether.storage.listImages({ pageSize: 1000 }),
  ]);
  return {
    executables: e.executables.length,
    cells: c.cells.length,
    vms: v.vms.length,
    volumes: vol.volumes.length,
    images: img.images.length,
  };
}

async function removeEverything(aether: AetherClient): Promise<Record<string, number>> {
  const removed = { executables: 0, cells: 0, vms: 0, volumes: 0, images: 0 };
  const ignore = () => undefined;
  for (const vm of (await aether.vm.listVms({ pageSize: 1000 })).vms) {
    await aether.vm.deleteVm({ vm: vm.id, tenant: vm.tenant, force: true });
    removed.vms++;
  }
  // Children before parents (ListCells lists parents first).
  for (const cell of (await aether.cells.listCells({ pageSize: 1000 })).cells.reverse()) {
    await aether.cells.freeCell({ cell: cell.id, tenant: cell.tenant, stopExecutables: true });
    removed.cells++;
  }
  for (const exe of (await aether.runtime.listExecutables({ pageSize: 1000 })).executables) {
    if (exe.pid > 0)
      await aether.runtime.stopExecutable({ executable: exe.id, tenant: exe.tenant, gracePeriod: { seconds: 0n } }).catch(ignore);
    await aether.runtime.deleteExecutable({ executable: exe.id, tenant: exe.tenant });
    removed.executables++;
  }
  // Clones before what they were cloned from: repeat while a pass makes progress.
  for (let pass = 0; pass < 20; pass++) {
    const volumes = (await aether.storage.listVolumes({ pageSize: 1000 })).volumes;
    if (volumes.length === 0) break;
    let progress = false;
    for (const v of volumes.filter((x) => x.clones.length === 0)) {
      await aether.storage.deleteVolume({ volume: v.id, tenant: v.tenant, deleteSnapshots: true });
      removed.volumes++;
      progress = true;
    }
    if (!progress) break;
  }
  for (const img of (await aether.storage.listImages({ pageSize: 1000 })).images) {
    await aether.storage.deleteImage({ image: img.id, tenant: img.tenant });
    removed.images++;
  }
  return removed;
}
