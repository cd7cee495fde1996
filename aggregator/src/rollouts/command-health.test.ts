// Command health checks as pure parts: rise and fall count consecutive results only, and a check
// that cannot run right (empty argv, a relative program for an executable, out-of-range times) is
// refused with INVALID_ARGUMENT naming the field.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandHealthCheckSchema } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { tally, type Tally } from "./command-health.js";
import { validateCommandCheck } from "./command-health-validate.js";

const fresh = (): Tally => ({ up: undefined, passes: 0, failures: 0, lastError: "" });

describe("command health check", () => {
  it("fall failures in a row make an instance down, rise passes in a row bring it back; an interrupted run does not count", () => {
    const h = fresh();
    const s = { rise: 2, fall: 3 };
    tally(h, undefined, s);
    assert.equal(h.up, undefined, "one pass of rise 2 decides nothing");
    tally(h, undefined, s);
    assert.equal(h.up, true);
    tally(h, "exited with status 1", s);
    tally(h, "exited with status 1", s);
    tally(h, undefined, s);
    tally(h, "exited with status 1", s);
    tally(h, "exited with status 1", s);
    assert.equal(h.up, true, "two failures, a pass, two failures: never 3 in a row");
    tally(h, "did not end within 1000 ms", s);
    assert.equal(h.up, false);
    assert.equal(h.lastError, "did not end within 1000 ms");
    tally(h, undefined, s);
    assert.equal(h.up, false, "one pass of rise 2 keeps it down");
    tally(h, undefined, s);
    assert.equal(h.up, true);
  });

  it("refuses an unusable check with a sentence naming the field", () => {
    const refused = (init: Parameters<typeof create<typeof CommandHealthCheckSchema>>[1], executable: boolean, pattern: RegExp) =>
      assert.throws(
        () => validateCommandCheck("deployment.traffic.command_check", create(CommandHealthCheckSchema, init), executable),
        (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && pattern.test(e.message),
      );
    refused({ argv: [] }, true, /command_check\.argv is empty/);
    refused({ argv: ["/usr/bin/test", ""] }, true, /argv\[1\] is empty/);
    refused({ argv: ["test", "-f", "/x"] }, true, /argv\[0\] "test" must be an absolute path/);
    refused({ argv: ["/bin/true"], interval: { nanos: 100_000_000 } }, true, /interval must be 500 ms to 5 min/);
    refused({ argv: ["/bin/true"], timeout: { seconds: 120n } }, true, /timeout must be 100 ms to 1 min/);
    refused({ argv: ["/bin/true"], interval: { seconds: 1n }, timeout: { seconds: 2n } }, true, /at most the interval/);
    refused({ argv: ["/bin/true"], rise: 101 }, true, /rise 101/);
    refused({ argv: ["/bin/true"], fall: 500 }, true, /fall 500/);
    // A guest's PATH resolves a VM's program; defaults pass.
    validateCommandCheck("c", create(CommandHealthCheckSchema, { argv: ["systemctl", "is-active", "web"] }), false);
    validateCommandCheck("c", create(CommandHealthCheckSchema, { argv: ["/usr/bin/test", "-f", "/srv/ready"] }), true);
  });
});
