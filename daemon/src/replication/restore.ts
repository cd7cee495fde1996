// Starting a VM from replicas: the aggregator re-places a VM of a fenced node only on a node that
// holds replicas of its volumes, and that node's provisioning calls restoreVm first. Each replica
// becomes a volume here with the source's name (a thin clone of its last consistent point), so the
// VM's disks, named by volume, are found; a boot disk the source cloned from an image
// ("<vm>-boot") is booted from its replica instead of a fresh clone of the image, and becomes the
// new VM's own once it exists (deleted with it, as on the source).
import type { Logger } from "pino";
import type { CreateVmRequest } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import type { EventBus } from "../observe/event-bus.js";
import type { StorageRegistry } from "../storage/registry.js";
import type { Replicas } from "./replicas.js";

export function vmRestorer(replicas: Replicas, storage: StorageRegistry, events: EventBus, log: Logger) {
  return async (workloadId: string, tenant: string, req: CreateVmRequest): Promise<(vmId: string) => Promise<void>> => {
    const held = replicas.ofWorkload(workloadId, tenant);
    const owned: string[] = [];
    const adopt = async (vmId: string) => {
      for (const volumeId of owned) await storage.setOwnerVm(volumeId, vmId);
    };
    if (held.length === 0) return adopt;
    let oldestMs = Number.POSITIVE_INFINITY;
    const made: string[] = [];
    for (const replica of held) {
      const { volumeId, pointMs } = await replicas.promote(replica, "");
      oldestMs = Math.min(oldestMs, pointMs);
      made.push(replica.volumeName);
      const boot = req.boot?.source;
      if (boot?.case === "disk" && boot.value.image !== "" && replica.volumeName === `${req.name}-boot`) {
        boot.value.volume = volumeId;
        boot.value.image = "";
        owned.push(volumeId);
      }
    }
    log.info({ workload: workloadId, volumes: made, pointMs: oldestMs }, "VM volumes made from replicas");
    events.publish({
      kind: "replication.restored",
      tenant,
      resourceId: workloadId,
      resourceName: req.name,
      message: `VM ${req.name} starts from the replicas of its volumes (${made.join(", ")}), taken at ${new Date(oldestMs).toISOString()}.`,
      attributes: { point_time: new Date(oldestMs).toISOString(), volumes: made.join(",") },
    });
    return adopt;
  };
}
