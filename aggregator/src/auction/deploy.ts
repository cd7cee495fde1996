// A Deploy: validate the spec → refuse a name a live workload already uses → reserve the name and
// give the workload its id → the auction run (run.ts). A retry with the same request_id waits for
// the first deploy, or answers with what it placed, instead of deploying again.
import { randomUUID } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import {
  AuctionTrigger,
  PlacementState,
  WorkloadPlacementSchema,
  WorkloadSpecSchema,
  type DeployRequest,
  type DeployResponse,
  type WorkloadSpec,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import {
  alreadyExists,
  dnsLabel,
  durationMs,
  invalidArgument,
  labels as checkLabels,
  preciseNow,
  tenant as checkTenant,
  timestamp,
} from "@aether/server";
import type { Context } from "../context.js";
import { nodeId as checkNodeId, requestId as checkRequestId } from "../validate.js";
import { formatMs } from "./auction.js";
import type { AuctionRunner } from "./run.js";

/** The longest auction window a deploy may ask for (and the aggregator's own may be). */
export const MAX_WINDOW_MS = 60_000;

/** Places a new workload; see the top of this file. */
export async function deploy(ctx: Context, runner: AuctionRunner, req: DeployRequest): Promise<DeployResponse> {
  const spec = normalizeSpec(req.spec);
  const windowMs = durationMs("bid_timeout", req.bidTimeout, ctx.windowMs);
  if (windowMs < 1 || windowMs > MAX_WINDOW_MS) {
    throw invalidArgument(
      `bid_timeout ${formatMs(windowMs)} is out of range: give 1 ms to 60 s (unset: this aggregator's window, ${formatMs(ctx.windowMs)}).`,
    );
  }
  const rid = checkRequestId(req.requestId);
  const requestKey = rid === "" ? undefined : `${spec.tenant}/${encodeURIComponent(rid)}`;
  if (requestKey !== undefined) {
    const pending = ctx.book.inflightRequests.get(requestKey);
    if (pending) return pending;
    const prior = ctx.book.placements.get(ctx.book.requests.get(requestKey) ?? "");
    if (prior && prior.state !== PlacementState.FAILED) return ctx.book.responseFor(prior);
  }
  const nameKey = `${spec.tenant}/${spec.name}`;
  const holder = ctx.book.liveByName(spec.tenant, spec.name);
  if (holder || ctx.book.reservedNames.has(nameKey)) {
    throw alreadyExists(
      `workload name ${spec.name} is already used in tenant ${spec.tenant} by a live placement${holder ? ` (workload ${holder.workloadId} on node ${holder.node || "-"})` : " being deployed right now"}; release it first, or choose another name.`,
    );
  }
  ctx.book.reservedNames.add(nameKey);
  const workloadId = randomUUID();
  setIdentity(spec, workloadId);
  const placement = create(WorkloadPlacementSchema, {
    workloadId,
    name: spec.name,
    tenant: spec.tenant,
    labels: spec.labels,
    createTime: timestamp(preciseNow()),
    state: PlacementState.BIDDING,
    spec,
  });
  const work = ctx.book.track(workloadId, () => runner.run({ spec, windowMs, trigger: AuctionTrigger.DEPLOY, placement, requestKey }));
  if (requestKey !== undefined) ctx.book.inflightRequests.set(requestKey, work);
  try {
    return await work;
  } finally {
    ctx.book.reservedNames.delete(nameKey);
    if (requestKey !== undefined && ctx.book.inflightRequests.get(requestKey) === work) ctx.book.inflightRequests.delete(requestKey);
  }
}

/** Checks a WorkloadSpec from a DeployRequest and returns a normalized copy (name, tenant filled in). */
export function normalizeSpec(input: WorkloadSpec | undefined): WorkloadSpec {
  if (input === undefined) throw invalidArgument("spec is missing: give the workload's name and what to run (executable, cell or vm).");
  const spec = clone(WorkloadSpecSchema, input);
  spec.workloadId = "";
  if (spec.kind.case === undefined) throw invalidArgument("spec has nothing to run: set spec.executable, spec.cell or spec.vm.");
  if (spec.name === "") spec.name = spec.kind.value.name;
  if (spec.name === "") throw invalidArgument("spec.name is empty: give the workload a name (a DNS label such as web-1).");
  dnsLabel("spec.name", spec.name);
  spec.tenant = checkTenant(spec.tenant);
  checkLabels(spec.labels);
  const requirements = spec.requirements;
  if (requirements) {
    checkLabels(requirements.nodeSelector);
    for (const id of requirements.excludeNodes) checkNodeId("requirements.exclude_nodes", id);
  }
  checkImageFetch(spec);
  if (spec.kind.case === "executable") {
    const argv0 = spec.kind.value.argv[0];
    if (argv0 === undefined) throw invalidArgument("spec.executable.argv is empty: give the program (an absolute path) and its arguments.");
    if (!argv0.startsWith("/"))
      throw invalidArgument(
        `spec.executable.argv[0] ${JSON.stringify(argv0.slice(0, 80))} is not an absolute path: nodes run exactly the program named, e.g. /bin/sleep.`,
      );
  }
  return spec;
}

/** image_fetch goes with a VM that boots a clone of an image, and names a URL with its SHA-256. */
function checkImageFetch(spec: WorkloadSpec): void {
  const fetch = spec.imageFetch;
  if (fetch === undefined) return;
  const boot = spec.kind.case === "vm" ? spec.kind.value.boot?.source : undefined;
  if (boot?.case !== "disk" || boot.value.image === "")
    throw invalidArgument("spec.image_fetch is set, but the spec is no VM booting a clone of an image (vm.boot.disk.image): leave it out.");
  if (!/^https?:\/\/\S+$/.test(fetch.url))
    throw invalidArgument(
      `spec.image_fetch.url ${JSON.stringify(fetch.url.slice(0, 80))} is not an http(s) URL: give where nodes download image ${boot.value.image} from.`,
    );
  if (!/^[0-9a-f]{64}$/.test(fetch.sha256))
    throw invalidArgument(
      "spec.image_fetch.sha256 is not 64 lowercase hex digits: give the SHA-256 of the image file (sha256sum prints it).",
    );
}

/** The spec as nodes see it: the workload's id, and the kind's name/tenant/request_id from the workload. */
export function setIdentity(spec: WorkloadSpec, workloadId: string): void {
  spec.workloadId = workloadId;
  if (spec.kind.case !== undefined) {
    spec.kind.value.name = spec.name;
    spec.kind.value.tenant = spec.tenant;
    spec.kind.value.requestId = workloadId;
  }
}
