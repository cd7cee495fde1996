// Bounds on what one client can hold: a request that never arrives whole is cut off, one connection
// cannot open more streams than allowed, an oversized message is refused; the daemon serves others
// throughout.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type AetherClient } from "@aether/sdk";
import { startDaemon, type TestDaemon } from "./helpers/daemon.js";

describe("limits on slow and flooding clients", () => {
  let daemon: TestDaemon;
  let aether: AetherClient;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "aether-limits-"));
    const config = join(dir, "aetherd.toml");
    writeFileSync(config, "request_body_timeout_ms = 500\nmax_streams_per_connection = 8\nmax_message_bytes = 65536\n");
    daemon = await startDaemon({ dir, args: ["--config", config] });
    aether = await daemon.client();
  });
  after(async () => {
    await daemon.stop();
    daemon.cleanup();
  });

  const session = () => http2.connect("http://localhost", { createConnection: () => netConnect(daemon.socket) });

  it("cancels a call whose request never arrives whole, and keeps serving", async () => {
    const s = session();
    const stream = s.request({
      ":method": "POST",
      ":path": "/aether.node.v1.NodeService/GetNodeInfo",
      "content-type": "application/json",
      "content-length": "100",
    });
    stream.write("{"); // and nothing more
    const started = Date.now();
    const rst = await new Promise<number>((resolve) => {
      stream.on("error", () => undefined);
      stream.on("close", () => resolve(stream.rstCode ?? -1));
    });
    const took = Date.now() - started;
    assert.equal(rst, http2.constants.NGHTTP2_CANCEL, "the stream was cancelled by aetherd");
    assert.ok(took >= 400 && took < 5000, `cut off after ${took} ms (limit 500 ms)`);
    s.close();
    assert.ok((await aether.node.getNodeInfo({})).node?.hostname);
  });

  it("holds one connection to its stream limit; other connections are unaffected", async () => {
    const s = session();
    await new Promise<void>((resolve) => s.once("remoteSettings", () => resolve()));
    assert.equal(s.remoteSettings.maxConcurrentStreams, 8, "aetherd announces its limit");
    // Eight followed event streams fill the connection.
    const held = Array.from({ length: 8 }, () => {
      const st = s.request({
        ":method": "POST",
        ":path": "/aether.observe.v1.ObserveService/StreamEvents",
        "content-type": "application/connect+json",
      });
      st.on("error", () => undefined);
      const body = Buffer.from("{}");
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      body.copy(frame, 5);
      st.end(frame);
      return st;
    });
    // A ninth call on the same connection waits for a free stream...
    let answered = false;
    const ninth = s.request({ ":method": "POST", ":path": "/aether.node.v1.NodeService/CheckHealth", "content-type": "application/json" });
    ninth.on("error", () => undefined);
    ninth.on("response", () => (answered = true));
    ninth.end("{}");
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(answered, false, "the ninth stream was served beyond the limit");
    // ...while another connection is served at once,
    assert.ok((await aether.node.getNodeInfo({})).node?.hostname);
    // and it is served as soon as one of the eight ends.
    held[0]?.close(http2.constants.NGHTTP2_CANCEL);
    const deadline = Date.now() + 5000;
    while (!answered && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(answered, true, "the ninth call was served once a stream was free");
    s.destroy();
  });

  it("refuses a message larger than max_message_bytes with RESOURCE_EXHAUSTED", async () => {
    await assert.rejects(
      aether.runtime.startExecutable({ argv: ["/bin/true", "x".repeat(100_000)] }),
      (e: ConnectError) => e.code === Code.ResourceExhausted,
    );
    assert.ok((await aether.node.getNodeInfo({})).node?.hostname);
  });
});
