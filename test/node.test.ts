// NodeService tells the truth about the host: each capability is checked against the host itself.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { CgroupVersion } from "@aether/sdk/gen/aether/node/v1/node_pb";
import { useDaemon } from "./helpers/daemon.js";

const onPath = (name: string) => {
  try {
    return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim() !== "";
  } catch {
    return false;
  }
};

describe("node: identity and capability probe", () => {
  const env = useDaemon();

  it("reports identity and version, and keeps the node id across restarts", async () => {
    const { node } = await env.aether.node.getNodeInfo({});
    assert.equal(node?.hostname, hostname());
    assert.equal(node?.version, JSON.parse(readFileSync("daemon/package.json", "utf8")).version);
    assert.match(node?.id ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(node?.id, readFileSync(`${env.daemon.stateDir}/node-id`, "utf8").trim());
  });

  it("probes tools, /dev/kvm and cgroups as the host really is", async () => {
    const { node } = await env.aether.node.getNodeInfo({ refresh: true });
    const caps = node?.capabilities;
    assert.ok(caps);
    assert.equal(caps.qemuSystem?.available, onPath("qemu-system-x86_64"));
    assert.equal(caps.qemuImg?.available, onPath("qemu-img"));
    assert.equal(caps.firecracker?.available, onPath("firecracker"));
    assert.equal(caps.zfs?.available, onPath("zfs"));
    for (const t of [caps.qemuSystem, caps.qemuImg, caps.firecracker, caps.zfs]) {
      assert.ok(t?.available ? t.path.startsWith("/") : /not found|did not run/.test(t?.reason ?? ""), "unavailable tools say why");
    }
    let kvm = true;
    try {
      accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    } catch {
      kvm = false;
    }
    assert.equal(caps.kvm?.deviceUsable, kvm);

    const mounts = readFileSync("/proc/self/mounts", "utf8");
    const hasV1 = /^\S+ \S+ cgroup .*\b(cpu|memory|pids)\b/m.test(mounts);
    const hasV2 = /^\S+ \S+ cgroup2 /m.test(mounts);
    const version = caps.cgroup?.version;
    if (hasV1) assert.ok(version === CgroupVersion.V1 || version === CgroupVersion.HYBRID);
    else if (hasV2) assert.equal(version, CgroupVersion.V2);
    else assert.equal(version, CgroupVersion.UNSPECIFIED);
    if (hasV1) assert.ok(caps.cgroup?.controllers.includes("memory") || !/cgroup .*memory/.test(mounts));
  });

  it("reports health", async () => {
    const health = await env.aether.node.checkHealth({});
    assert.equal(health.status, 1);
    assert.deepEqual(health.reasons, []);
  });
});
