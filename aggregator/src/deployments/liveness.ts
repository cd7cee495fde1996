// Which instances ended: the leader asks each node that hosts PLACED instances for its executables
// and VMs (one ListExecutables and one ListVms per node, paged), and an instance whose executable
// exited or was LOST, whose VM FAILED or STOPPED, or that its node no longer has, has ended. Only
// instances placed before the question was asked are judged (a fresh one may not be listed yet).
// A node that does not answer is skipped: its instances are the deadman's (fenced, then replaced).
import { PlacementState, type WorkloadPlacement } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ExecutableState } from "@aether/sdk/gen/aether/runtime/v1/runtime_pb";
import { VmState } from "@aether/sdk/gen/aether/vm/v1/vm_pb";
import { describeError, msOf } from "@aether/server";
import type { Context } from "../context.js";
import type { NodeTarget } from "../nodes/node-clients.js";

/** How an instance ended: succeeded (exit 0, a VM stopped cleanly) or failed; and the sentence. */
export interface Ending {
  placement: WorkloadPlacement;
  succeeded: boolean;
  reason: string;
}

interface Seen {
  state: "running" | "succeeded" | "failed";
  reason: string;
}

const ASK_TIMEOUT_MS = 5_000;

export async function endedInstances(ctx: Context, instances: WorkloadPlacement[]): Promise<Ending[]> {
  const askedAt = Date.now();
  const placed = instances.filter((p) => p.state === PlacementState.PLACED && p.node !== "" && msOf(p.placeTime) < askedAt);
  const byNode = new Map<string, WorkloadPlacement[]>();
  for (const p of placed) byNode.set(p.node, [...(byNode.get(p.node) ?? []), p]);
  const endings: Ending[] = [];
  await Promise.all(
    [...byNode].map(async ([nodeId, onNode]) => {
      const node = ctx.registry.get(nodeId);
      if (!node || !ctx.registry.isLive(node, Date.now())) return;
      let seen: Map<string, Seen>;
      try {
        seen = await resourcesOn(ctx, node, onNode);
      } catch (err) {
        ctx.log.debug({ node: nodeId, err: describeError(err) }, "could not ask a node for its instances");
        return;
      }
      for (const p of onNode) {
        const s = seen.get(p.resourceId);
        if (s === undefined) endings.push({ placement: p, succeeded: false, reason: `its ${kindOf(p)} is gone from node ${nodeId}` });
        else if (s.state !== "running") endings.push({ placement: p, succeeded: s.state === "succeeded", reason: s.reason });
      }
    }),
  );
  return endings;
}

const kindOf = (p: WorkloadPlacement) => (p.spec?.kind.case === "vm" ? "VM" : "executable");

async function resourcesOn(ctx: Context, node: NodeTarget, onNode: WorkloadPlacement[]): Promise<Map<string, Seen>> {
  const seen = new Map<string, Seen>();
  const options = { timeoutMs: ASK_TIMEOUT_MS };
  if (onNode.some((p) => p.spec?.kind.case === "executable")) {
    let pageToken = "";
    do {
      const page = await ctx.clients.runtime(node).listExecutables({ pageSize: 1000, pageToken }, options);
      for (const e of page.executables) {
        if (e.state === ExecutableState.RUNNING) seen.set(e.id, { state: "running", reason: "" });
        else if (e.state === ExecutableState.EXITED) {
          const how = e.signal !== "" ? `was killed by ${e.signal}` : `exited with status ${e.exitCode ?? "unknown"}`;
          seen.set(e.id, { state: e.exitCode === 0 && e.signal === "" ? "succeeded" : "failed", reason: `its executable ${how}` });
        } else seen.set(e.id, { state: "failed", reason: `its executable is LOST (${e.stateReason || "its end was not observed"})` });
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }
  if (onNode.some((p) => p.spec?.kind.case === "vm")) {
    let pageToken = "";
    do {
      const page = await ctx.clients.vm(node).listVms({ pageSize: 1000, pageToken }, options);
      for (const vm of page.vms) {
        if (vm.state === VmState.FAILED)
          seen.set(vm.id, { state: "failed", reason: `its VM FAILED (${vm.stateReason || "no reason given"})` });
        else if (vm.state === VmState.STOPPED) seen.set(vm.id, { state: "succeeded", reason: "its VM stopped" });
        else seen.set(vm.id, { state: "running", reason: "" });
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }
  return seen;
}
