// Firecracker's HTTP API over its unix socket, and the requests that configure and start a microVM
// (checked in tests against Firecracker's own OpenAPI file, ../shared/contracts/firecracker-swagger.yaml).
import { request } from "node:http";
import type { VmFiles } from "./hypervisor.js";
import type { VmSpec } from "./record.js";

export interface ApiRequest {
  method: "GET" | "PUT" | "PATCH";
  path: string;
  body?: Record<string, unknown>;
}

/** The configuration a VM needs before InstanceStart, in the order Firecracker accepts it. */
export function configurationRequests(spec: VmSpec, files: VmFiles): ApiRequest[] {
  const requests: ApiRequest[] = [
    {
      method: "PUT",
      path: "/boot-source",
      body: {
        kernel_image_path: spec.kernelPath,
        ...(spec.initrdPath ? { initrd_path: spec.initrdPath } : {}),
        boot_args: ["console=ttyS0", "reboot=k", "panic=1", "pci=off", `aether.hostname=${spec.name}`, spec.cmdline]
          .filter(Boolean)
          .join(" "),
      },
    },
    {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: spec.vcpus, mem_size_mib: Math.floor(spec.memoryBytes / (1024 * 1024)), smt: false },
    },
  ];
  spec.disks.forEach((d, i) => {
    const id = `disk${i}`;
    requests.push({
      method: "PUT",
      path: `/drives/${id}`,
      body: { drive_id: id, path_on_host: d.path, is_root_device: false, is_read_only: d.readOnly, cache_type: "Writeback" },
    });
  });
  if (spec.cloudInit) {
    requests.push({
      method: "PUT",
      path: "/drives/seed",
      body: { drive_id: "seed", path_on_host: files.seed, is_root_device: false, is_read_only: true },
    });
  }
  spec.nics.forEach((n, i) => {
    const id = `eth${i}`;
    requests.push({ method: "PUT", path: `/network-interfaces/${id}`, body: { iface_id: id, host_dev_name: n.tap, guest_mac: n.mac } });
  });
  // vsock is the guest agent's channel on Firecracker (it has no virtio-serial); host side is a unix socket.
  requests.push({ method: "PUT", path: "/vsock", body: { guest_cid: 3, uds_path: files.agent } });
  return requests;
}

export const START: ApiRequest = { method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } };
export const CTRL_ALT_DEL: ApiRequest = { method: "PUT", path: "/actions", body: { action_type: "SendCtrlAltDel" } };
export const PAUSE: ApiRequest = { method: "PATCH", path: "/vm", body: { state: "Paused" } };
export const RESUME: ApiRequest = { method: "PATCH", path: "/vm", body: { state: "Resumed" } };
export const DESCRIBE: ApiRequest = { method: "GET", path: "/" };

export class FirecrackerApiError extends Error {}

/** Sends one request with a timeout; a non-2xx answer becomes an error carrying Firecracker's fault_message. */
export function send(socketPath: string, req: ApiRequest, timeoutMs = 5000): Promise<Record<string, unknown>> {
  const payload = req.body ? JSON.stringify(req.body) : undefined;
  return new Promise((resolve, reject) => {
    const r = request(
      {
        socketPath,
        method: req.method,
        path: req.path,
        headers: {
          Accept: "application/json",
          ...(payload ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => {
          const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          if ((res.statusCode ?? 500) >= 300) {
            reject(
              new FirecrackerApiError(
                `Firecracker refused ${req.method} ${req.path} (${res.statusCode}): ${String(body.fault_message ?? text)}`,
              ),
            );
          } else resolve(body);
        });
      },
    );
    r.on("timeout", () =>
      r.destroy(new FirecrackerApiError(`Firecracker did not answer ${req.method} ${req.path} within ${timeoutMs} ms`)),
    );
    r.on("error", reject);
    if (payload) r.write(payload);
    r.end();
  });
}
