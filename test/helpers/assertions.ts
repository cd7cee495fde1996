// Assertions the integration tests share.
import assert from "node:assert/strict";
import { Code, ConnectError } from "@aether/sdk";

/** The call fails with this code and a message matching the pattern. */
export async function rejectsWith(promise: Promise<unknown>, code: Code, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${Code[code]}, got ${Code[err.code]}: ${err.rawMessage}`);
    assert.match(err.rawMessage, pattern);
    return true;
  });
}
