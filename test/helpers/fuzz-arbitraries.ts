// fast-check arbitraries that build Connect JSON requests from the generated descriptors: every field
// of a method's input message, walked recursively, gets well-typed values, adversarial values (path
// tricks, NUL, unicode, 64 KiB strings, numbers out of range, unknown enum values, many elements) and,
// now and then, a value of the wrong JSON type. A few fields are constrained so that a generated
// request can never start anything real and long-lived on the host (see FuzzWorld.overrides).
import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";
import fc from "fast-check";
import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescMethod, type JsonValue } from "@bufbuild/protobuf";

export type JsonObject = { [key: string]: JsonValue };

/** What the generators know about the world they fuzz. */
export interface FuzzWorld {
  /** A token put into path-like strings; a file with it in its name anywhere outside the state dir is a finding. */
  marker: string;
  /** Paths into a tree outside the state dir that must not change (see prepareSentinel). */
  sentinel: readonly string[];
  /** Names requests create and refer to, so that references sometimes hit real resources. */
  names: readonly string[];
  tenants: readonly string[];
  /** Server-assigned ids seen in answers (filled while the fuzz runs). */
  knownIds: string[];
  /** Resources seen in answers, by kind ("executable", "cell", "vm", "volume", "image"; filled while the fuzz runs). */
  resources: Map<string, KnownResource[]>;
  /** Extra candidates per field name (e.g. sha256 of files the import can reach). */
  hints: ReadonlyMap<string, readonly string[]>;
  /**
   * Safety constraints: "<message type>.<field name>" to the arbitrary of that field's whole JSON value.
   * They replace the generic generator (and its wrong-type variants) for that field.
   */
  overrides: ReadonlyMap<string, (mode: Mode) => fc.Arbitrary<JsonValue>>;
}

/** A resource aetherd reported. */
export interface KnownResource {
  id: string;
  name: string;
  tenant: string;
}

const MAX_DEPTH = 6;

/**
 * "plausible": values a real client might send (empty strings, known names, sizes, valid enum names),
 * so that requests get through validation and do real work. "typed": every value has its field's
 * JSON type and range, so requests get past decoding and reach the handlers' validation, but the
 * content of strings is hostile. "hostile": also wrong JSON types, numbers out of range, invalid base64
 * and durations, two members of one oneof.
 */
export type Mode = "plausible" | "typed" | "hostile";

// ---- strings ------------------------------------------------------------------------------------

const KIB64 = 64 * 1024;

/** Strings of 64 KiB and more (within the 4 MiB message limit). */
const hugeString: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom("a", "é", "😀", "/", "../", "\u0000", "-"), fc.constantFrom(KIB64, KIB64 + 1, 256 * 1024, 1024 * 1024))
  .map(([unit, bytes]) => unit.repeat(Math.ceil(bytes / unit.length)));

const weirdString: fc.Arbitrary<string> = fc.constantFrom(
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\n",
  "a\nb",
  "\r\n",
  "\t",
  "\u001b[31mred",
  "\u007f",
  "\u202eevil",
  "\u200b",
  "\ufeffbom",
  "\ud800",
  "\udfff",
  "😀",
  "e\u0301",
  "Ａ",
  "İ",
  "ß",
  "%00",
  "%2e%2e%2f",
  "null",
  "undefined",
  "true",
  "-1",
  "1e309",
  "NaN",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
);

function pathTrick(world: FuzzWorld): fc.Arbitrary<string> {
  const marker = world.marker;
  return fc.oneof(
    fc.constantFrom(...world.sentinel),
    fc.constantFrom(
      "/",
      ".",
      "..",
      "../",
      "./",
      "//",
      "/..",
      "/../../..",
      "../../../../../../etc/passwd",
      "/etc/passwd",
      "/etc/shadow",
      "/etc/hostname",
      "/proc/self/environ",
      "/proc/self/mem",
      "/dev/zero",
      "/dev/null",
      "/dev/sda",
      "/sys/fs/cgroup",
      "..\\..\\windows",
      "\u2024\u2024/",
      "a/../../b",
      "a/./b",
      "a//b",
      "~/x",
      "~root",
    ),
    fc
      .tuple(
        fc.constantFrom("", "/", "../", "../../", "/tmp/", "./", "a/../../", "/var/tmp/", "/dev/shm/", "/etc/"),
        fc.constantFrom("", "/", "/..", "/x", ".d/y"),
      )
      .map(([prefix, suffix]) => `${prefix}${marker}${suffix}`),
  );
}

/** Shell and template metacharacters: a file named with the marker appearing in /tmp means a shell ran. */
function injection(marker: string): fc.Arbitrary<string> {
  return fc.constantFrom(
    `$(touch /tmp/${marker}-sh)`,
    `\`touch /tmp/${marker}-bt\``,
    `; touch /tmp/${marker}-semi`,
    `| touch /tmp/${marker}-pipe`,
    `&& touch /tmp/${marker}-and`,
    `-rf`,
    `--help`,
    `-o/tmp/${marker}-opt`,
    `\${jndi:ldap://127.0.0.1:1/${marker}}`,
    "{{7*7}}",
    "%s%s%s%n",
    "'; DROP TABLE x; --",
    "<script>x</script>",
    `file:///tmp/${marker}`,
  );
}

const dnsish: fc.Arbitrary<string> = fc.oneof(
  fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,8}[a-z0-9]$/),
  fc.stringMatching(/^[a-z][a-z0-9-]{55,70}$/),
  fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/),
  fc.stringMatching(/^[a-z0-9-]{1,6}(\/[a-z0-9-]{1,6}){1,9}$/),
);

/** Field names whose strings are references to resources, tenants or pools. */
const REFERENCE_FIELDS = new Set([
  "name",
  "executable",
  "cell",
  "vm",
  "volume",
  "image",
  "snapshot",
  "pool",
  "target",
  "root",
  "bmc",
  "node",
  "tenant",
  "workload_id",
  "request_id",
  "placement",
  "auction",
]);

/** Field-specific values that reach deeper than random text does. */
const FIELD_VALUES: Readonly<Record<string, readonly string[]>> = {
  signal: ["SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGSTOP", "SIGCONT", "sigterm", "TERM", "9", "SIGFOO", "SIG", ""],
  filter: ["a=b", "a=b,c=d", "=", ",", "a", "a=", "=b", "aether.io/workload=x", " a = b ", "a=b,,c=d"],
  page_token: ["", "MA", "MTA", "LTE", "OTAwNzE5OTI1NDc0MDk5Mg", "OTk5OTk5OTk5OTk5OTk5OTk5OTk", "!!!", "MS41", "YWJj"],
  cpuset_cpus: ["0", "0-1", "1", "0,1", "0-4096", "5-1", "0-100000", "99", "a", "0-", ",", "0--1"],
  cpuset_mems: ["0", "0-1", "7", "x"],
  mac: ["52:54:00:12:34:56", "52:54:00:12:34", "zz:zz:zz:zz:zz:zz", "FF:FF:FF:FF:FF:FF"],
  bridge: ["br0", "lo", "docker0", "aefz0", "a-very-long-bridge-name", "eth0"],
  tap_device: ["tap0", "lo", "eth0", "a-very-long-tap-name"],
  kind_prefixes: ["vm.", "executable.", "cell.", ""],
  sha256: ["0".repeat(64), "F".repeat(64), "0".repeat(63), "g".repeat(64)],
  cmdline: ["console=ttyS0", "init=/bin/sh", "a\nb"],
  serial: ["boot", "x".repeat(40), "a b"],
};

function referenceValues(world: FuzzWorld, fieldName: string): fc.Arbitrary<string> {
  if (fieldName === "tenant") return fc.constantFrom(...world.tenants);
  if (fieldName === "pool") return fc.constantFrom("default", "", "nope", "Default");
  if (fieldName === "request_id") return fc.constantFrom("r1", "r2", "r3", "x".repeat(129));
  const ids = fc.nat().map((i) => (world.knownIds.length === 0 ? "" : (world.knownIds[i % world.knownIds.length] as string)));
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...world.names) }, { weight: 2, arbitrary: ids });
}

/** What a well-behaved client puts into a string field of this name. */
const PLAUSIBLE_VALUES: Readonly<Record<string, readonly string[]>> = {
  cwd: ["", "/", "/tmp"],
  filter: ["", "", "team=a"],
  page_token: [""],
  signal: ["", "SIGTERM", "SIGKILL", "SIGINT"],
  cpuset_cpus: ["", "0", "0-1"],
  cpuset_mems: ["", "0"],
  mac: ["", "52:54:00:12:34:56"],
  bridge: ["br0", "aebr0"],
  tap_device: ["", "aetap0"],
  kind_prefixes: ["", "vm.", "executable."],
  cmdline: ["", "console=ttyS0"],
  serial: ["", "disk1"],
  key: ["team", "env", "app", "A", "PATH"],
  value: ["", "a", "prod", "1"],
  arg: ["", "-n", "hello"],
};

const dnsShort = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);

function plausibleString(world: FuzzWorld, fieldName: string): fc.Arbitrary<string> {
  const choices: Array<fc.WeightedArbitrary<string>> = [
    { weight: 1, arbitrary: fc.constant("") },
    // A fresh name is what a create needs most.
    { weight: fieldName === "name" ? 6 : 1, arbitrary: dnsShort },
  ];
  if (REFERENCE_FIELDS.has(fieldName)) choices.push({ weight: 6, arbitrary: referenceValues(world, fieldName) });
  const special = [...(PLAUSIBLE_VALUES[fieldName] ?? []), ...(world.hints.get(fieldName) ?? [])];
  if (special.length > 0) choices.push({ weight: 6, arbitrary: fc.constantFrom(...special) });
  return fc.oneof(...choices);
}

export function stringArb(world: FuzzWorld, fieldName: string, mode: Mode = "hostile"): fc.Arbitrary<string> {
  if (mode === "plausible") return plausibleString(world, fieldName);
  const generic = fc.oneof(
    { weight: 5, arbitrary: fc.string({ maxLength: 20 }) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 12 }) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
    { weight: 3, arbitrary: dnsish },
    { weight: 3, arbitrary: pathTrick(world) },
    { weight: 1, arbitrary: injection(world.marker) },
    { weight: 2, arbitrary: weirdString },
    { weight: 1, arbitrary: hugeString },
  );
  const choices: Array<fc.WeightedArbitrary<string>> = [{ weight: 6, arbitrary: generic }];
  if (REFERENCE_FIELDS.has(fieldName)) choices.push({ weight: 5, arbitrary: referenceValues(world, fieldName) });
  const special = [...(FIELD_VALUES[fieldName] ?? []), ...(world.hints.get(fieldName) ?? [])];
  if (special.length > 0) choices.push({ weight: 5, arbitrary: fc.constantFrom(...special) });
  return fc.oneof(...choices);
}

// ---- numbers ------------------------------------------------------------------------------------

const NUMBER_ODDITIES: readonly JsonValue[] = [
  1.5,
  -0.5,
  1e308,
  -1e308,
  5e-324,
  "1e3",
  "0x10",
  "NaN",
  "Infinity",
  "-Infinity",
  "",
  " 1",
  "01",
  "1.0",
  "-0",
  "+1",
  "١",
];

/** Small counts and real sizes, by what the field's name says it holds. */
function plausibleNumber(fieldName: string, wide: boolean): fc.Arbitrary<JsonValue> {
  const out = (n: number) => (wide ? String(n) : n);
  if (fieldName.endsWith("_bytes"))
    return fc.constantFrom(0, 0, 1024 * 1024, 64 * 1024 * 1024, 256 * 1024 * 1024, 256 * 1024 * 1024, 1024 * 1024 * 1024).map(out);
  if (fieldName.endsWith("_usec")) return fc.constantFrom(0, 1000, 50_000, 100_000).map(out);
  if (fieldName === "vcpus") return fc.constantFrom(1, 2);
  if (fieldName === "cpu_weight") return fc.constantFrom(1, 100, 1000, 10_000);
  return fc.integer({ min: 0, max: 16 }).map(out);
}

function int32Arb(unsigned: boolean, mode: Mode, fieldName: string): fc.Arbitrary<JsonValue> {
  if (mode === "plausible") return plausibleNumber(fieldName, false);
  if (mode === "typed") {
    return fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 10_000 }) },
      {
        weight: 2,
        arbitrary: unsigned
          ? fc.constantFrom(0, 1, 64, 1000, 4096, 65536, 2147483647, 4294967295)
          : fc.constantFrom(0, 1, -1, 2147483647, -2147483648),
      },
      { weight: 1, arbitrary: unsigned ? fc.nat({ max: 4294967295 }) : fc.integer() },
    );
  }
  const edges = [0, 1, -1, 2147483647, -2147483648, 2147483648, -2147483649, 4294967295, 4294967296, 2 ** 53, -(2 ** 53)];
  return fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: unsigned ? 0 : -1000, max: 10_000 }) },
    { weight: 3, arbitrary: fc.constantFrom(...edges) },
    { weight: 1, arbitrary: fc.constantFrom(...edges).map(String) },
    { weight: 1, arbitrary: fc.constantFrom(...NUMBER_ODDITIES) },
  );
}

function int64Arb(unsigned: boolean, mode: Mode, fieldName: string): fc.Arbitrary<JsonValue> {
  if (mode === "plausible") return plausibleNumber(fieldName, true);
  const sizes = fc.constantFrom(0, 1, 512, 1000, 1024 * 1024, 64 * 1024 * 1024, 2 ** 30, 2 ** 40, 2 ** 53 - 1);
  if (mode === "typed") {
    return fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 0, max: 10_000 }) },
      { weight: 3, arbitrary: sizes.map(String) },
      {
        weight: 2,
        arbitrary: fc.bigInt({ min: unsigned ? 0n : -(2n ** 63n), max: unsigned ? 2n ** 64n - 1n : 2n ** 63n - 1n }).map(String),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(unsigned ? "18446744073709551615" : "-9223372036854775808", "9223372036854775807", "9007199254740993"),
      },
    );
  }
  const edges = [
    "0",
    "-1",
    "9007199254740991",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "1e3",
    "1.0",
    "99999999999999999999999999",
  ];
  return fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: unsigned ? 0 : -1000, max: 10_000 }) },
    { weight: 3, arbitrary: fc.bigInt({ min: unsigned ? 0n : -(2n ** 63n), max: unsigned ? 2n ** 64n - 1n : 2n ** 63n - 1n }).map(String) },
    { weight: 2, arbitrary: sizes.map(String) },
    { weight: 2, arbitrary: fc.constantFrom(...edges) },
    { weight: 1, arbitrary: fc.constantFrom(...NUMBER_ODDITIES) },
  );
}

const finiteDouble = fc.double({ noNaN: true, noDefaultInfinity: true, min: -3.4e38, max: 3.4e38 });
const hostileDouble: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 4, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom("NaN", "Infinity", "-Infinity", "1e400", 3.5e38, -0, "x") },
);

const hostileBool: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 8, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constantFrom("true", 1, 0, "false") },
);

const validBytes: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString("base64")) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString("base64url")) },
  { weight: 1, arbitrary: fc.constantFrom(KIB64, 1024 * 1024).map((n) => Buffer.alloc(n, 0x41).toString("base64")) },
);
const hostileBytes: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 4, arbitrary: validBytes },
  { weight: 1, arbitrary: fc.constantFrom("!!!", "====", "a", "aGVsbG8", "\u0000", "😀") },
);

function scalarArb(world: FuzzWorld, type: ScalarType, fieldName: string, mode: Mode): fc.Arbitrary<JsonValue> {
  const typed = mode !== "hostile";
  switch (type) {
    case ScalarType.STRING:
      return stringArb(world, fieldName, mode);
    case ScalarType.BOOL:
      return typed ? fc.boolean() : hostileBool;
    case ScalarType.BYTES:
      return typed ? validBytes : hostileBytes;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return typed ? finiteDouble : hostileDouble;
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return int32Arb(false, mode, fieldName);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return int32Arb(true, mode, fieldName);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64Arb(false, mode, fieldName);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return int64Arb(true, mode, fieldName);
  }
}

function mapKeyArb(world: FuzzWorld, type: ScalarType, fieldName: string, mode: Mode): fc.Arbitrary<string> {
  switch (type) {
    case ScalarType.STRING:
      if (mode === "plausible")
        return fieldName === "env" ? fc.constantFrom("A", "PATH", "LANG") : fc.constantFrom("team", "env", "app", "example.com/tier");
      return fieldName === "env"
        ? fc.oneof(fc.constantFrom("PATH", "HOME", "LD_PRELOAD", "A=B", "", "A\u0000", "X"), stringArb(world, "key"))
        : fc.oneof(
            fc.constantFrom("team", "env", "aether.io/workload", "a/b", "a.b/c", "-x", "", "k".repeat(64), "example.com/k"),
            stringArb(world, "key"),
          );
    case ScalarType.BOOL:
      return mode !== "hostile" ? fc.constantFrom("true", "false") : fc.constantFrom("true", "false", "yes", "1");
    default:
      return mode !== "hostile"
        ? fc.integer({ min: 0, max: 1000 }).map(String)
        : fc.oneof(fc.integer().map(String), fc.constantFrom("x", "1.5", "-0", "99999999999999999999"));
  }
}

function enumArb(e: DescEnum, mode: Mode): fc.Arbitrary<JsonValue> {
  const names = e.values.map((v) => v.name);
  const numbers = e.values.map((v) => v.number);
  const max = Math.max(...numbers);
  // The zero value is the default a client leaves unset: plausible half of the time.
  if (mode === "plausible") return fc.oneof(fc.constant(names[0] ?? 0), fc.constantFrom(...names));
  if (mode === "typed") {
    // Open (proto3) enums accept numbers they do not name: handlers must cope with them.
    return fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(...names) },
      { weight: 2, arbitrary: fc.constantFrom(...numbers) },
      { weight: 1, arbitrary: fc.constantFrom(-1, max + 1, 2147483647) },
    );
  }
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...names) },
    { weight: 2, arbitrary: fc.constantFrom(...numbers) },
    { weight: 2, arbitrary: fc.constantFrom(-1, max + 1, max + 100, 2147483647, -2147483648, 2147483648, 1.5) },
    { weight: 1, arbitrary: fc.constantFrom(...names).map((n) => n.toLowerCase()) },
    { weight: 1, arbitrary: fc.constantFrom("NOPE", "", `${names[0] ?? "X"}_X`, "1") },
  );
}

// ---- wrong types --------------------------------------------------------------------------------

const wrongTypeArb: fc.Arbitrary<JsonValue> = fc.oneof(
  fc.constant<JsonValue>(null),
  fc.boolean(),
  fc.integer(),
  fc.constantFrom<JsonValue>(1.5, -1, 1e308),
  fc.string({ maxLength: 8 }),
  fc.array(fc.integer(), { maxLength: 3 }),
  // Structured values are built fresh for each use (JsonValue is mutable).
  fc
    .integer({ min: 0, max: 5 })
    .map((i): JsonValue => [[], {}, [null], [[]], { "": null }, { a: { b: { c: [1, "x", null] } } }][i] ?? null),
);

// ---- messages -----------------------------------------------------------------------------------

function wktArb(message: DescMessage, mode: Mode): fc.Arbitrary<JsonValue> | undefined {
  switch (message.typeName) {
    case "google.protobuf.Duration":
      if (mode === "plausible") return fc.constantFrom("0s", "0.050s", "1s", "2s");
      if (mode === "typed") {
        return fc.oneof(
          { weight: 5, arbitrary: fc.integer({ min: 0, max: 3 }).map((n) => `${n}s`) },
          { weight: 2, arbitrary: fc.integer({ min: 1, max: 999 }).map((n) => `0.${String(n).padStart(3, "0")}s`) },
          { weight: 1, arbitrary: fc.constantFrom("-1s", "-0.5s", "0.000000001s", "315576000000s", "-315576000000s", "86400s") },
        );
      }
      return fc.oneof(
        { weight: 5, arbitrary: fc.integer({ min: 0, max: 3 }).map((n) => `${n}s`) },
        { weight: 2, arbitrary: fc.integer({ min: 1, max: 999 }).map((n) => `0.${String(n).padStart(3, "0")}s`) },
        {
          weight: 2,
          arbitrary: fc.constantFrom(
            "-1s",
            "0s",
            "0.000000001s",
            "315576000000s",
            "315576000001s",
            "-315576000001s",
            "1.5s",
            "1e3s",
            "1h",
            "1",
            "s",
            "",
            "NaNs",
            "0.0000000001s",
            "9223372036854775807s",
          ),
        },
      );
    case "google.protobuf.Timestamp": {
      const valid = fc
        .date({ noInvalidDate: true, min: new Date("0001-01-01T00:00:00Z"), max: new Date("9999-12-31T23:59:59Z") })
        .map((d) => d.toISOString());
      if (mode !== "hostile") return valid;
      return fc.oneof(
        { weight: 3, arbitrary: valid },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "2020-02-30T00:00:00Z",
            "2020-01-01T00:00:00+25:00",
            "yesterday",
            "",
            "2020-01-01T00:00:00.1234567891Z",
          ),
        },
      );
    }
    default:
      return undefined;
  }
}

/** An element repeated thousands of times is kept small, so that a request stays within a few MiB. */
function small(value: JsonValue): JsonValue {
  if (typeof value === "string") return value.slice(0, 32);
  if (value !== null && typeof value === "object" && JSON.stringify(value).length > 256) return Array.isArray(value) ? [] : {};
  return value;
}

function listArb(element: fc.Arbitrary<JsonValue>, mode: Mode): fc.Arbitrary<JsonValue> {
  if (mode === "plausible")
    return fc.oneof(
      { weight: 3, arbitrary: fc.constant<JsonValue>([]) },
      { weight: 1, arbitrary: fc.array(element, { minLength: 1, maxLength: 2 }) },
    );
  const choices: Array<fc.WeightedArbitrary<JsonValue>> = [
    { weight: 10, arbitrary: fc.array(element, { maxLength: 5 }) },
    // Many elements (cheaply: one small element repeated), around and beyond the handlers' caps.
    {
      weight: 1,
      arbitrary: fc
        .tuple(element, fc.constantFrom(64, 65, 1000, 4096, 4097, 20_000))
        .map(([e, n]) => Array.from({ length: n }, () => small(e))),
    },
  ];
  if (mode === "hostile") choices.push({ weight: 1, arbitrary: fc.array(fc.oneof(element, wrongTypeArb), { minLength: 1, maxLength: 3 }) });
  return fc.oneof(...choices);
}

function mapArb(keys: fc.Arbitrary<string>, values: fc.Arbitrary<JsonValue>, mode: Mode): fc.Arbitrary<JsonValue> {
  if (mode === "plausible")
    return fc.oneof({ weight: 3, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: fc.dictionary(keys, values, { maxKeys: 2 }) });
  return fc.oneof(
    { weight: 10, arbitrary: fc.dictionary(keys, values, { maxKeys: 4 }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(values, fc.constantFrom(64, 65, 4097))
        .map(([v, n]) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, small(v)]))),
    },
  );
}

/** The arbitrary of one field's JSON value (honouring the world's overrides). */
function fieldArb(world: FuzzWorld, field: DescField, depth: number, mode: Mode): fc.Arbitrary<JsonValue> {
  const override = world.overrides.get(`${field.parent.typeName}.${field.name}`);
  if (override) return override(mode);
  let correct: fc.Arbitrary<JsonValue>;
  switch (field.fieldKind) {
    case "scalar":
      correct = scalarArb(world, field.scalar, field.name, mode);
      break;
    case "enum":
      correct = enumArb(field.enum, mode);
      break;
    case "message":
      correct = messageValueArb(world, field.message, mode, depth + 1);
      break;
    case "list":
      correct = listArb(
        field.listKind === "scalar"
          ? scalarArb(world, field.scalar, field.name, mode)
          : field.listKind === "enum"
            ? enumArb(field.enum, mode)
            : messageValueArb(world, field.message, mode, depth + 1),
        mode,
      );
      break;
    case "map":
      correct = mapArb(
        mapKeyArb(world, field.mapKey, field.name, mode),
        field.mapKind === "scalar"
          ? scalarArb(world, field.scalar, "value", mode)
          : field.mapKind === "enum"
            ? enumArb(field.enum, mode)
            : messageValueArb(world, field.message, mode, depth + 1),
        mode,
      );
      break;
  }
  return mode !== "hostile" ? correct : fc.oneof({ weight: 10, arbitrary: correct }, { weight: 1, arbitrary: wrongTypeArb });
}

const messageCaches = new WeakMap<FuzzWorld, Map<string, fc.Arbitrary<JsonValue>>>();

/** A message's JSON value: any subset of its fields, at most one member per oneof (rarely two). */
export function messageValueArb(world: FuzzWorld, message: DescMessage, mode: Mode, depth = 0): fc.Arbitrary<JsonValue> {
  const wkt = wktArb(message, mode);
  if (wkt) return wkt;
  if (depth > MAX_DEPTH) return fc.constant({});
  const cacheKey = `${message.typeName}@${depth}/${mode}`;
  let messageCache = messageCaches.get(world);
  if (!messageCache) messageCaches.set(world, (messageCache = new Map()));
  const cached = messageCache.get(cacheKey);
  if (cached) return cached;
  const plain = message.fields.filter((f) => f.oneof === undefined);
  const record: Record<string, fc.Arbitrary<JsonValue>> = {};
  for (const f of plain) record[f.name] = fieldArb(world, f, depth, mode);
  const oneofs = message.oneofs.map((o) => {
    const members = o.fields.map((f) => fieldArb(world, f, depth, mode).map((v): JsonObject => ({ [f.name]: v })));
    const one = fc.oneof(...members);
    const choices: Array<fc.WeightedArbitrary<JsonObject>> = [
      { weight: mode === "plausible" ? 1 : 2, arbitrary: fc.constant<JsonObject>({}) },
      { weight: 8, arbitrary: one },
    ];
    if (mode === "hostile") choices.push({ weight: 1, arbitrary: fc.tuple(one, one).map(([a, b]): JsonObject => ({ ...a, ...b })) });
    return fc.oneof(...choices);
  });
  const byProtoName = new Map(message.fields.map((f) => [f.name, f]));
  const arb = fc
    // A plausible request sets every field (most of them to plausible zero values); others any subset.
    .tuple(
      mode === "plausible" ? fc.record(record) : fc.record(record, { requiredKeys: [] }),
      fc.tuple(...oneofs),
      fc.constantFrom<"json" | "proto" | "mixed">("json", "json", "json", "proto", "mixed"),
    )
    .map(([fields, chosen, naming]) => {
      const out: JsonObject = {};
      const all: JsonObject = { ...(fields as JsonObject) };
      for (const c of chosen) Object.assign(all, c);
      let i = 0;
      for (const [name, value] of Object.entries(all)) {
        if (value === undefined) continue;
        const field = byProtoName.get(name);
        const useProto = naming === "proto" || (naming === "mixed" && i++ % 2 === 0);
        out[useProto || !field ? name : field.jsonName] = value;
      }
      return out;
    });
  messageCache.set(cacheKey, arb);
  return arb;
}

// ---- safety constraints -------------------------------------------------------------------------

/** Paths that do not exist on this host (so nothing is ever booted or opened from them). */
export function mustNotExist(world: FuzzWorld, mode: Mode): fc.Arbitrary<JsonValue> {
  const plausible = fc.constantFrom(
    "/nonexistent/vmlinuz",
    `/tmp/${world.marker}/vmlinuz`,
    `/${world.marker}-initrd.img`,
    "/boot/vmlinuz",
    "/vmlinuz",
    "/etc/hostname",
    "/dev/null",
  );
  return (
    mode === "plausible"
      ? plausible
      : fc.oneof(
          { weight: 3, arbitrary: plausible },
          { weight: 2, arbitrary: pathTrick(world) },
          { weight: 1, arbitrary: fc.string({ maxLength: 16 }) },
        )
  ).map((p) => (isAbsolute(p) && !p.includes("\u0000") && existsSync(p) ? `/nonexistent-${world.marker}${p}` : p));
}

/**
 * References that can never resolve (a DNS-label name or a lowercase UUID never contains "_X"), used
 * where a resolved volume or image would let a VM boot for real.
 */
export function neverResolves(world: FuzzWorld, mode: Mode): fc.Arbitrary<JsonValue> {
  return stringArb(world, "volume", mode).map((s) => (s === "" ? s : `${s.slice(0, 240)}_X`));
}

/** http(s) URLs are pointed at this machine only; anything else stays as generated (and is refused). */
export function localUrl(world: FuzzWorld, base: string, closedPort: number, mode: Mode): fc.Arbitrary<JsonValue> {
  if (mode === "plausible") return fc.constantFrom(`${base}/image.raw`, `${base}/missing`, `${base}/text`);
  return fc
    .oneof(
      {
        weight: 3,
        arbitrary: fc.constantFrom(
          `${base}/image.raw`,
          `${base}/missing`,
          `${base}/slow`,
          `${base}/redirect`,
          `${base}/text`,
          `http://127.0.0.1:${closedPort}/x`,
          `http://[::1]:${closedPort}/`,
        ),
      },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          "ftp://127.0.0.1/x",
          "file:///etc/passwd",
          `file:///tmp/${world.marker}`,
          "javascript:alert(1)",
          "data:text/plain,hi",
          "http://",
          "http:///x",
          "not a url",
          "//127.0.0.1/x",
          "HTTP://127.0.0.1:1/",
        ),
      },
      { weight: 2, arbitrary: stringArb(world, "url") },
    )
    .map((u) => {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        return u;
      }
      const local = url.hostname === "127.0.0.1" || url.hostname === "[::1]" || url.hostname === "localhost";
      return (url.protocol === "http:" || url.protocol === "https:") && !local
        ? `http://127.0.0.1:${closedPort}/${encodeURIComponent(u).slice(0, 200)}`
        : u;
    });
}

/**
 * argv whose program is harmless (/bin/true, /bin/false, /bin/echo; /bin/sleep for at most 2 s, so
 * that stops, waits, log streams and cells meet running processes) or refused by validation.
 */
export function safeArgv(world: FuzzWorld, mode: Mode): fc.Arbitrary<JsonValue> {
  const harmless = fc.constantFrom("/bin/true", "/bin/false", "/usr/bin/true", "/bin/echo");
  const sleeper = fc.constantFrom("0.2", "0.5", "1", "2").map((s): JsonValue => ["/bin/sleep", s]);
  const tricky = fc.constantFrom(
    "/bin/../bin/true",
    "//bin///true",
    "true",
    "bin/true",
    "./true",
    "../../../bin/true",
    "",
    "/",
    "/etc",
    "/etc/passwd",
    "/dev/null",
    "/bin/true/..",
    "/nonexistent/prog",
    "/bin/true\u0000/bin/sh",
    `/tmp/${world.marker}`,
    " /bin/true",
    "/bin/true ",
    "\u202e/bin/true",
    `/${"x".repeat(65_536)}`,
    `/bin/${"../".repeat(2000)}bin/true`,
  );
  if (mode === "plausible") {
    return fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .tuple(harmless, fc.array(stringArb(world, "arg", mode), { maxLength: 2 }))
          .map(([p, rest]): JsonValue => [p, ...rest]),
      },
      { weight: 1, arbitrary: sleeper },
    );
  }
  const program = fc.oneof({ weight: 2, arbitrary: harmless }, { weight: 3, arbitrary: tricky });
  const arg = stringArb(world, "arg");
  return fc.oneof(
    { weight: 12, arbitrary: fc.tuple(program, fc.array(arg, { maxLength: 4 })).map(([p, rest]): JsonValue => [p, ...rest]) },
    { weight: 2, arbitrary: sleeper },
    { weight: 1, arbitrary: fc.constant<JsonValue>([]) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(program, fc.constantFrom(4095, 4096, 4097, 20_000))
        .map(([p, n]): JsonValue => [p, ...Array.from({ length: n - 1 }, () => "x")]),
    },
    { weight: 1, arbitrary: fc.constantFrom<JsonValue>(null, "/bin/true", 5, [5], [null], {}) },
  );
}

/** Every message type reachable from the methods' inputs (to check that each override names a real field). */
export function reachableFields(methods: readonly DescMethod[]): Set<string> {
  const seen = new Set<string>();
  const fields = new Set<string>();
  const walk = (m: DescMessage) => {
    if (seen.has(m.typeName)) return;
    seen.add(m.typeName);
    for (const f of m.fields) {
      fields.add(`${m.typeName}.${f.name}`);
      if (f.message) walk(f.message);
    }
  };
  for (const method of methods) walk(method.input);
  return fields;
}

// ---- valid requests (races) ---------------------------------------------------------------------

/**
 * Requests that pass validation and do real work (so that identical copies sent at once contend for
 * the same name, request_id or resource), for the methods that create or remove something; undefined
 * for the others. Names are fresh; deletes target resources aetherd reported earlier.
 */
export function validRequestArb(world: FuzzWorld, method: DescMethod, importBase: string): fc.Arbitrary<JsonValue> | undefined {
  const fresh = fc.stringMatching(/^[a-z][a-z0-9]{3,8}$/).map((s) => `rc-${s}`);
  const tenant = fc.constantFrom("", "default", "fz-t1");
  const requestId = fc.oneof(
    fc.constant(""),
    fresh.map((s) => `rq-${s}`),
  );
  const existing = (kind: string, field: string, extra: JsonObject = {}) =>
    fc.tuple(fc.nat(), fc.boolean(), fc.boolean()).map(([i, byName, recent]): JsonValue => {
      // Half of the time one of the three newest (an executable that may still run, a fresh volume).
      const list = world.resources.get(kind) ?? [];
      const r = recent ? list[list.length - 1 - (i % Math.min(3, Math.max(list.length, 1)))] : list[i % Math.max(list.length, 1)];
      if (!r) return { [field]: "rc-none", ...extra };
      return { [field]: byName ? r.name : r.id, tenant: r.tenant, ...extra };
    });
  switch (`${method.parent.name}/${method.name}`) {
    case "ExecutableService/StartExecutable":
      return fc.record({
        argv: fc.constantFrom<JsonValue>(["/bin/true"], ["/bin/echo", "hi"], ["/bin/sleep", "1"], ["/bin/sleep", "2"]),
        name: fc.oneof(fc.constant(""), fresh),
        tenant,
        requestId,
      });
    case "ExecutableService/StopExecutable":
      return fc
        .tuple(fc.constantFrom("", "SIGTERM", "SIGKILL", "SIGINT"), fc.constantFrom<JsonValue | undefined>(undefined, "0s", "0.050s", "1s"))
        .chain(([signal, grace]) =>
          existing("executable", "executable", grace === undefined ? { signal } : { signal, gracePeriod: grace }),
        );
    case "ExecutableService/DeleteExecutable":
      return existing("executable", "executable");
    case "CellService/AllocateCell": {
      // A fresh cell, or a fresh child of a cell that exists.
      const child = fc.tuple(fc.nat(), fresh).map(([i, n]) => {
        const cells = world.resources.get("cell") ?? [];
        const parent = cells[i % Math.max(cells.length, 1)];
        return parent ? { name: `${parent.name}/${n}`, tenant: parent.tenant } : { name: n, tenant: "" };
      });
      return fc
        .tuple(
          fc.oneof(
            fresh.chain((n) => tenant.map((t) => ({ name: n, tenant: t }))),
            child,
          ),
          requestId,
          fc.constantFrom<JsonValue>({}, {}, { uts: true }, { ipc: true }),
        )
        .map(([target, rid, isolation]): JsonValue => ({ ...target, requestId: rid, isolation }));
    }
    case "CellService/FreeCell":
      return fc.boolean().chain((stop) => existing("cell", "cell", { stopExecutables: stop }));
    case "VmService/CreateVm":
      return fc.record({
        name: fresh,
        tenant,
        requestId,
        vcpus: fc.constant(1),
        memoryBytes: fc.constant("268435456"),
        hypervisor: fc.constant("HYPERVISOR_QEMU"),
        boot: fc.constant<JsonValue>({ kernel: { kernelPath: `/nonexistent-${world.marker}/vmlinuz` } }),
      });
    case "VmService/DeleteVm":
      return existing("vm", "vm", { force: true });
    case "StorageService/CreateVolume":
      return fc.record({ name: fresh, tenant, requestId, empty: fc.constant<JsonValue>({ sizeBytes: "1048576" }) });
    case "StorageService/CloneVolume":
      return fc
        .tuple(existing("volume", "volume"), fresh, requestId)
        .map(([target, name, rid]): JsonValue => ({ ...(target as JsonObject), name, requestId: rid }));
    case "StorageService/SnapshotVolume":
      return fc
        .tuple(existing("volume", "volume"), fresh, requestId)
        .map(([target, name, rid]): JsonValue => ({ ...(target as JsonObject), name, requestId: rid }));
    case "StorageService/DeleteVolume":
      return fc.boolean().chain((snapshots) => existing("volume", "volume", { deleteSnapshots: snapshots }));
    case "StorageService/ImportImage":
      return fc.record({ name: fresh, tenant, requestId, source: fc.constant<JsonValue>({ url: `${importBase}/image.raw` }) });
    case "StorageService/DeleteImage":
      return existing("image", "image");
    default:
      return undefined;
  }
}
