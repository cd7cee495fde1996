// BMC credentials at rest: AES-256-GCM, a 0600 key file made once, blobs bound to their record.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CredentialStore } from "./credential-store.js";

describe("credential store", () => {
  const dir = mkdtempSync(join(tmpdir(), "aether-credstore-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("seals and unseals; the key file is 32 bytes, mode 0600, and kept across opens", async () => {
    const keyFile = join(dir, "fence", "credentials.key");
    const store = await CredentialStore.open(keyFile);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(readFileSync(keyFile).length, 32);
    const sealed = store.seal({ username: "fence", password: "s3cret-pässword" }, "record-1");
    assert.equal(sealed.alg, "aes-256-gcm");
    assert.ok(!JSON.stringify(sealed).includes("s3cret"));
    assert.notDeepEqual(store.seal({ username: "fence", password: "s3cret-pässword" }, "record-1"), sealed, "a fresh IV every time");
    const again = await CredentialStore.open(keyFile);
    assert.deepEqual(again.unseal(sealed, "record-1"), { username: "fence", password: "s3cret-pässword" });
  });

  it("refuses a blob of another record, a tampered blob, and a damaged key file", async () => {
    const store = await CredentialStore.open(join(dir, "k2"));
    const sealed = store.seal({ username: "u", password: "p" }, "record-1");
    assert.throws(() => store.unseal(sealed, "record-2"));
    const data = Buffer.from(sealed.data, "base64");
    data[0] = (data[0] ?? 0) ^ 1;
    assert.throws(() => store.unseal({ ...sealed, data: data.toString("base64") }, "record-1"));
    writeFileSync(join(dir, "short.key"), "too short");
    await assert.rejects(CredentialStore.open(join(dir, "short.key")), /holds 9 bytes instead of 32/);
  });
});
