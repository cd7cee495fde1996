// A new VM made from a stopped one: its settings, thin clones of its volumes (owned by the new VM and
// deleted with it), a new id, new MAC addresses and TAP devices, and cloud-init that sees a new
// instance (its instance-id is the VM id unless the source's meta-data set one).
import { DomainError } from "@aether/server";
import type { StorageRegistry } from "../storage/registry.js";
import type { LifecycleHooks } from "./lifecycle-hooks.js";
import { stableMac } from "./network.js";
import type { VmRecord, VmSpec } from "./record.js";

export class VmCloner {
  constructor(
    private readonly storage: StorageRegistry,
    private readonly hooks: LifecycleHooks,
  ) {}

  async clone(source: VmRecord, name: string, labels: Record<string, string> | undefined, start: boolean): Promise<VmRecord> {
    const { spec } = source;
    if (!["created", "stopped", "failed"].includes(source.runtime.state) || this.hooks.processRuns(source))
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} is ${source.runtime.state}; stop it before cloning it, so its disks are consistent.`,
      );
    const hostPaths = spec.disks.filter((d) => d.volumeId === "");
    if (hostPaths.length > 0)
      throw new DomainError(
        "failed_precondition",
        `VM ${spec.name} has host-path disks (${hostPaths.map((d) => d.path).join(", ")}), which aetherd cannot clone; only volumes are cloned.`,
      );
    const volumeName = (i: number) =>
      (spec.boot === "disk" && i === 0 ? `${name}-boot` : `${name}-disk${i}`).slice(0, 63).replace(/-+$/, "");
    for (const [i] of spec.disks.entries()) {
      if (this.storage.listVolumes().some((v) => v.tenant === spec.tenant && v.name === volumeName(i)))
        throw new DomainError(
          "already_exists",
          `a volume named ${volumeName(i)} already exists in tenant ${spec.tenant}; the clone's disks are named after it: pick another name or delete that volume.`,
        );
    }
    const { id: _id, createTimeMs: _created, ...settings } = structuredClone(spec);
    const copy: Omit<VmSpec, "id" | "createTimeMs"> = {
      ...settings,
      name,
      labels: labels ?? { ...spec.labels },
      requestId: "",
      autostart: false,
      ownsBootVolume: spec.boot === "disk",
      // New MACs (derived from the new name) and TAPs (named after the new id, by the create).
      nics: spec.nics.map((n, i) => ({ bridge: n.bridge, mac: stableMac(`${spec.tenant}/${name}`, i), tap: "" })),
    };
    const makeDisks = async (vmId: string): Promise<VmSpec["disks"]> => {
      const disks: VmSpec["disks"] = [];
      for (const [i, d] of spec.disks.entries()) {
        const { volume } = await this.storage.cloneVolume({
          volume: d.volumeId,
          tenant: spec.tenant,
          snapshot: "",
          name: volumeName(i),
          labels: { "aether.io/vm": vmId, "aether.io/cloned-from-vm": spec.id },
          sizeBytes: 0,
          requestId: "",
        });
        await this.storage.setOwnerVm(volume.id, vmId);
        disks.push({ ...d, path: volume.hostPath, format: volume.format === "qcow2" ? "qcow2" : "raw", volumeId: volume.id });
      }
      return disks;
    };
    // The source stays stopped while its volumes are cloned (a start would change them meanwhile).
    return this.hooks.exclusive(source, "being cloned", () => this.hooks.createWithDisks(copy, makeDisks, start));
  }
}
