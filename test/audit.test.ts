// The audit log: every mutating call, successful or not, is recorded with who called, the method,
// the target, its tenant and the result; reads are not; the records survive a restart and are read
// through ObserveService.ListAuditRecords, newest first.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@aether/sdk";
import { startDaemon } from "./helpers/daemon.js";

describe("audit log", () => {
  it("records mutating calls with identity, method, target, tenant and result; not reads; survives a restart", async () => {
    let daemon = await startDaemon();
    try {
      let aether = await daemon.client();
      const { executable } = await aether.runtime.startExecutable({ name: "audited", tenant: "team-a", argv: ["/bin/true"] });
      await aether.runtime.waitExecutable({ executable: "audited", tenant: "team-a" });
      await aether.runtime.listExecutables({});
      await aether.runtime.getExecutable({ executable: "audited", tenant: "team-a" });
      await assert.rejects(
        aether.runtime.stopExecutable({ executable: "nope" }),
        (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound,
      );
      await aether.storage.createVolume({ name: "disk", source: { case: "empty", value: { sizeBytes: 1n << 20n } } });
      await aether.storage.deleteVolume({ volume: "disk" });

      const { records } = await aether.observe.listAuditRecords({});
      const seen = records.map((r) => [r.method.split("/").pop(), r.target, r.tenant, r.result]);
      assert.deepEqual(
        seen,
        [
          ["DeleteVolume", "disk", "default", "ok"],
          ["CreateVolume", "disk", "default", "ok"],
          ["StopExecutable", "nope", "default", "not_found"],
          ["StartExecutable", "audited", "team-a", "ok"],
        ],
        "mutating calls only, newest first",
      );
      assert.ok(
        records.every((r) => r.identity === `unix:uid=${process.getuid?.()}`),
        "the local socket's caller",
      );
      assert.ok(records.every((r) => r.time && r.method.startsWith("/aether.")));
      assert.equal(executable?.name, "audited");

      const onlyA = (await aether.observe.listAuditRecords({ tenant: "team-a" })).records;
      assert.deepEqual(
        onlyA.map((r) => r.target),
        ["audited"],
      );
      const page = await aether.observe.listAuditRecords({ pageSize: 2 });
      assert.equal(page.records.length, 2);
      assert.notEqual(page.nextPageToken, "");

      assert.equal(await daemon.stop(), 0);
      daemon = await startDaemon({ dir: daemon.stateDir.replace(/\/state$/, ""), cgroupRoot: daemon.cgroupRoot });
      aether = await daemon.client();
      assert.equal((await aether.observe.listAuditRecords({})).records.length, 4, "the records survive a restart");
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
