// The Firecracker driver against Firecracker's own OpenAPI file: every request it sends must be a
// path and method the API has, with a body its schema accepts (unknown fields refused, as
// Firecracker's server refuses them). End to end, aetherd drives a stand-in firecracker binary.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Ajv, type ErrorObject } from "ajv";
import { parse } from "yaml";
import { vm as vmApi } from "@aether/sdk";
import { configurationRequests, CTRL_ALT_DEL, DESCRIBE, PAUSE, RESUME, START, type ApiRequest } from "../daemon/src/vm/firecracker-api.js";
import type { VmFiles } from "../daemon/src/vm/hypervisor.js";
import type { VmSpec } from "../daemon/src/vm/record.js";
import { eventually, repoRoot, startDaemon } from "./helpers/daemon.js";
import { guestImage } from "./helpers/guest.js";

const SWAGGER = join(repoRoot, "..", "shared", "contracts", "firecracker-swagger.yaml");

interface Operation {
  parameters?: Array<{ in: string; name: string; required?: boolean; schema?: Record<string, unknown> }>;
}
interface Swagger {
  paths: Record<string, Record<string, Operation>>;
  definitions: Record<string, Record<string, unknown>>;
}

const swagger = parse(readFileSync(SWAGGER, "utf8")) as Swagger;

/** Firecracker refuses fields it does not know: make every object schema say so. */
function closed(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(closed);
  if (typeof schema !== "object" || schema === null) return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = closed(v);
  if ("properties" in out && !("additionalProperties" in out)) out.additionalProperties = false;
  return out;
}
const definitions = closed(swagger.definitions) as Record<string, unknown>;
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });

/** Problems with one request according to the OpenAPI file; empty when it conforms. */
function violations(req: Omit<ApiRequest, "method"> & { method: string }): string[] {
  const template = Object.keys(swagger.paths).find((t) => new RegExp(`^${t.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(req.path));
  if (!template) return [`${req.path} is not a path of the API`];
  const op = swagger.paths[template]?.[req.method.toLowerCase()];
  if (!op) return [`${req.method} is not allowed on ${template}`];
  const problems: string[] = [];
  // A path parameter must equal the id inside the body (Firecracker checks that they agree).
  const names = [...template.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string);
  const values = new RegExp(`^${template.replace(/\{[^}]+\}/g, "([^/]+)")}$`).exec(req.path)?.slice(1) ?? [];
  names.forEach((n, i) => {
    const inBody = (req.body as Record<string, unknown> | undefined)?.[n];
    if (inBody !== undefined && inBody !== values[i]) problems.push(`path ${n}=${values[i]} but body ${n}=${String(inBody)}`);
  });
  const bodyParam = op.parameters?.find((p) => p.in === "body");
  if (!bodyParam) return req.body === undefined ? problems : [...problems, `${req.method} ${template} takes no body`];
  if (req.body === undefined) return bodyParam.required ? [...problems, `${req.method} ${template} needs a body`] : problems;
  const validate = ajv.compile({ definitions, ...(closed(bodyParam.schema) as Record<string, unknown>) });
  if (!validate(req.body))
    problems.push(
      ...(validate.errors ?? []).map((e: ErrorObject) => `${req.method} ${req.path}: ${e.instancePath || "body"} ${e.message}`),
    );
  return problems;
}

const spec: VmSpec = {
  id: "0c6fd7ac-5d59-4c6c-9d8f-2a7f6f1f3e11",
  name: "fc",
  tenant: "default",
  labels: {},
  profile: "ephemeral",
  hypervisor: "firecracker",
  acceleration: "auto",
  vcpus: 2,
  memoryBytes: 256 * 1024 * 1024,
  boot: "kernel",
  bootImageId: "",
  ownsBootVolume: false,
  kernelPath: "/images/vmlinux",
  initrdPath: "/images/initrd",
  cmdline: "quiet",
  disks: [{ path: "/images/data.raw", readOnly: false, format: "raw", serial: "", volumeId: "" }],
  nics: [{ bridge: "br0", mac: "52:54:00:aa:bb:cc", tap: "ae0c6fd7acn0" }],
  cloudInit: { userData: "#!/bin/sh\n", metaData: "", networkConfig: "" },
  cell: "",
  guestAgent: true,
  bootWatchdogMs: 60_000,
  requestId: "",
  createTimeMs: 0,
};
const files: VmFiles = {
  dir: "/var/lib/aether/vms/x",
  runtimeDir: "/run/aether/vm-x",
  qmp: "/run/aether/vm-x/qmp.sock",
  agent: "/run/aether/vm-x/agent.sock",
  api: "/run/aether/vm-x/api.sock",
  console: "/run/aether/vm-x/console.sock",
  consoleLog: "/var/lib/aether/vms/x/console.log",
  pidFile: "/var/lib/aether/vms/x/pid",
  seed: "/dev/shm/aether-seeds/x.iso",
};

describe("Firecracker driver against Firecracker's OpenAPI file", () => {
  it("the checker itself refuses what Firecracker would refuse", () => {
    assert.deepEqual(violations({ method: "PUT", path: "/boot-source", body: { kernel_image_path: "/k" } }), []);
    assert.match(violations({ method: "PUT", path: "/boot-source", body: { kernel: "/k" } }).join(), /kernel_image_path|additional/);
    assert.match(
      violations({ method: "PUT", path: "/machine-config", body: { vcpu_count: "two", mem_size_mib: 128 } }).join(),
      /vcpu_count/,
    );
    assert.match(violations({ method: "POST", path: "/actions", body: { action_type: "InstanceStart" } }).join(), /POST is not allowed/);
    assert.match(violations({ method: "PUT", path: "/actions", body: { action_type: "Reboot" } }).join(), /allowed values/);
    assert.match(
      violations({ method: "PUT", path: "/drives/a", body: { drive_id: "b", is_root_device: false } }).join(),
      /path drive_id=a but body drive_id=b/,
    );
    assert.match(violations({ method: "PUT", path: "/nope" }).join(), /not a path/);
  });

  it("every configuration request and every action conforms", () => {
    const all = [...configurationRequests(spec, files), START, PAUSE, RESUME, CTRL_ALT_DEL, DESCRIBE];
    assert.deepEqual(all.map(violations).flat(), []);
    const paths = all.map((r) => `${r.method} ${r.path}`);
    for (const needed of [
      "PUT /boot-source",
      "PUT /machine-config",
      "PUT /drives/disk0",
      "PUT /drives/seed",
      "PUT /network-interfaces/eth0",
      "PUT /vsock",
      "PUT /actions",
    ]) {
      assert.ok(paths.includes(needed), needed);
    }
  });

  it("aetherd picks Firecracker for ephemeral VMs when the binary is on PATH, drives it through its API socket, and every request conforms", async () => {
    const log = join(tmpdir(), "fake-firecracker-aether-vm-micro-fc.jsonl");
    rmSync(log, { force: true });
    const daemon = await startDaemon({ env: { PATH: `${join(repoRoot, "test", "fixtures")}:${process.env.PATH}` } });
    const aether = await daemon.client();
    try {
      const g = guestImage();
      const disk = join(mkdtempSync(join(tmpdir(), "fc-disk-")), "data.raw");
      execFileSync("truncate", ["-s", "16M", disk]);
      const { vm } = await aether.vm.createVm({
        name: "micro-fc",
        profile: vmApi.VmProfile.EPHEMERAL,
        vcpus: 1,
        memoryBytes: 128n << 20n,
        boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "quiet" } } },
        disks: [{ source: { case: "hostPath", value: disk } }],
        cloudInit: { userData: "#!/bin/sh\necho hi\n" },
        start: true,
      });
      assert.equal(vm?.hypervisor, vmApi.Hypervisor.FIRECRACKER, "Get reports which hypervisor runs it");
      const running = await eventually(async () =>
        (await aether.vm.getVm({ vm: "micro-fc" })).vm?.state === vmApi.VmState.RUNNING ? true : undefined,
      );
      assert.ok(running);
      assert.equal((await aether.vm.pauseVm({ vm: "micro-fc" })).vm?.state, vmApi.VmState.PAUSED);
      assert.equal((await aether.vm.resumeVm({ vm: "micro-fc" })).vm?.state, vmApi.VmState.RUNNING);
      let consoleText = "";
      for await (const c of aether.vm.streamConsole({ vm: "micro-fc" })) consoleText += new TextDecoder().decode(c.data);
      assert.match(consoleText, /fake-firecracker: guest running/, "its serial console is the process's output");
      const { vm: stopped } = await aether.vm.stopVm({ vm: "micro-fc", timeout: { seconds: 10n } });
      assert.equal(stopped?.state, vmApi.VmState.STOPPED);
      await aether.vm.deleteVm({ vm: "micro-fc" });

      const sent = readFileSync(log, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as ApiRequest);
      assert.deepEqual(sent.map(violations).flat(), []);
      const order = sent.map((r) => `${r.method} ${r.path}`);
      assert.ok(order.indexOf("PUT /actions") > order.indexOf("PUT /boot-source"), "InstanceStart comes after the configuration");
      assert.deepEqual(
        sent.filter((r) => r.path === "/actions").map((r) => (r.body as { action_type: string }).action_type),
        ["InstanceStart", "SendCtrlAltDel"],
      );
      // The guest agent needs virtio-serial, which Firecracker lacks: asking for it is refused clearly.
      await assert.rejects(
        aether.vm.createVm({
          name: "fc-agent",
          guestAgent: true,
          vcpus: 1,
          boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: "", cmdline: "" } } },
        }),
        /the guest agent needs a virtio-serial port, which Firecracker does not have/,
      );
      // A persistent VM still goes to QEMU.
      assert.equal(
        (
          await aether.vm.createVm({
            name: "big",
            profile: vmApi.VmProfile.PERSISTENT,
            vcpus: 1,
            boot: { source: { case: "kernel", value: { kernelPath: g.kernel, initrdPath: g.initrd, cmdline: "" } } },
          })
        ).vm?.hypervisor,
        vmApi.Hypervisor.QEMU,
      );
    } finally {
      await daemon.stop();
      daemon.cleanup();
    }
  });
});
