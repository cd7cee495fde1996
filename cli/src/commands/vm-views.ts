// How VMs are shown and looked up by the vm commands (vm.ts, vm-lifecycle.ts, vm-migrate.ts): the
// table and fields of a VM, every page of ListVms, and the refusals a dry run can foresee.
import { vm as vmApi, type AetherClient } from "@aether/sdk/client";
import { age, bytes, labelsText, shortId, type ListView } from "../output.js";
import { sayWould } from "../mutations.js";

export const state = (s: vmApi.VmState) => vmApi.VmState[s].toLowerCase();
const accel = (a: vmApi.Acceleration) => (a ? vmApi.Acceleration[a].toLowerCase() : "-");

export const VMS: ListView<vmApi.Vm> = {
  json: vmApi.VmSchema,
  name: (v) => v.name,
  columns: [
    { header: "NAME", cell: (v) => v.name },
    { header: "TENANT", cell: (v) => v.tenant },
    // The deployment whose instance the VM is (aether deploy), from the label the aggregator gives it.
    { header: "DEPLOYMENT", cell: (v) => v.labels["aether.io/deployment"] || "-" },
    { header: "STATE", cell: (v) => state(v.state) },
    { header: "PROFILE", cell: (v) => vmApi.VmProfile[v.profile].toLowerCase() },
    { header: "HYPERVISOR", cell: (v) => vmApi.Hypervisor[v.hypervisor].toLowerCase() },
    { header: "ACCEL", cell: (v) => accel(v.effectiveAcceleration) },
    { header: "CPUS", cell: (v) => String(v.vcpus) },
    { header: "MEMORY", cell: (v) => bytes(v.memoryBytes) },
    { header: "AGENT", cell: (v) => (v.guestAgent ? (v.agentReady ? "ready" : "no answer") : "none") },
    { header: "PID", cell: (v) => (v.pid ? String(v.pid) : "-") },
    { header: "AGE", cell: (v) => age(v.createTime) },
    { header: "ID", cell: (v) => shortId(v.id), whole: (v) => v.id, wideOnly: true },
    { header: "LABELS", cell: (v) => labelsText(v.labels), wideOnly: true },
    { header: "REASON", cell: (v) => v.stateReason || "-", wideOnly: true },
  ],
};

export function vmFields(v: vmApi.Vm): Array<[string, string]> {
  return [
    ["id", v.id],
    ["name", v.name],
    ["tenant", v.tenant],
    ["state", `${state(v.state)}${v.stateReason ? `: ${v.stateReason}` : ""}`],
    ["profile", vmApi.VmProfile[v.profile].toLowerCase()],
    ["hypervisor", vmApi.Hypervisor[v.hypervisor].toLowerCase()],
    ["acceleration", `${vmApi.Acceleration[v.acceleration].toLowerCase()} (running: ${accel(v.effectiveAcceleration)})`],
    ["cpus / memory", `${v.vcpus} / ${bytes(v.memoryBytes)}`],
    ["disks", v.disks.map((d) => `${d.resolvedPath}${d.readOnly ? " (ro)" : ""}`).join(", ") || "-"],
    ["nics", v.nics.map((n) => `${n.bridge} ${n.mac} via ${n.tapDevice}`).join(", ") || "-"],
    ["agent", v.guestAgent ? (v.agentReady ? "ready" : "not answering") : "none"],
    ["pid", v.pid ? String(v.pid) : "-"],
    ["labels", labelsText(v.labels)],
    ["console log", v.consoleLogPath],
  ];
}

/** Every page of ListVms. */
export async function listVms(aether: AetherClient, tenant: string, filter: string): Promise<vmApi.Vm[]> {
  const all: vmApi.Vm[] = [];
  let pageToken = "";
  do {
    const page = await aether.vm.listVms({ tenant, filter, pageSize: 1000, pageToken });
    all.push(...page.vms);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

export async function getVm(aether: AetherClient, ref: string, tenant: string): Promise<vmApi.Vm> {
  const { vm: v } = await aether.vm.getVm({ vm: ref, tenant });
  if (!v) throw new Error("aetherd returned no VM");
  return v;
}

/** A VM's refusal of an action in its state, as far as the CLI can tell (aetherd has the last word). */
export function refusal(v: vmApi.Vm, action: "start" | "stop" | "pause" | "resume" | "delete", force = false): string | undefined {
  const running = [vmApi.VmState.RUNNING, vmApi.VmState.STARTING, vmApi.VmState.PAUSED].includes(v.state);
  if (action === "start" && running) return `${v.name} is ${state(v.state)} already`;
  if (action === "stop" && !running) return `${v.name} is ${state(v.state)}, not running`;
  if (action === "pause" && v.state !== vmApi.VmState.RUNNING) return `${v.name} is ${state(v.state)}, not running`;
  if (action === "resume" && v.state !== vmApi.VmState.PAUSED) return `${v.name} is ${state(v.state)}, not paused`;
  if (action === "delete" && running && !force) return `${v.name} is ${state(v.state)}; stop it first or add --force`;
  return undefined;
}

/** A dry run of an action on one VM: looks it up and says what would happen. */
export async function wouldDo(
  aether: AetherClient,
  ref: string,
  tenant: string,
  action: "start" | "stop" | "pause" | "resume",
): Promise<void> {
  const v = await getVm(aether, ref, tenant);
  const no = refusal(v, action);
  sayWould(`${action} vm ${v.name} (${shortId(v.id)}, ${state(v.state)})${no ? `, but aetherd would refuse: ${no}` : ""}`);
}
