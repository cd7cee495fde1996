// Images follow the work (issue 15, item 3): a VM workload that boots a clone of an image needs that
// image on the node that runs it. A bid says whether this node has it: with it, the bid stands (an
// "image" factor of 1); without it but with the spec's image_fetch (a URL and its SHA-256), the bid
// is scaled down by a quarter (the import costs time), so a node that has the image wins when the
// rest is equal; without it and with nothing to fetch it from, the node declines. The winner that
// lacks the image imports it through StorageService.ImportImage (the node's own URL rules and the
// tenant's, as a direct call would be held to) and waits for it before the VM is created; the time
// goes back to the aggregator, which keeps it in the auction record.
import { create } from "@bufbuild/protobuf";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { failedPrecondition, rpcCode } from "@aether/server";
import type { ImageFetch, WorkloadSpec } from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { ImportImageRequestSchema, type StorageService } from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import type { StorageRegistry } from "../storage/registry.js";
import type { ScoreResult } from "./score.js";

/** Share of the score a node keeps when it would have to import the image first. */
export const IMPORT_SCORE_SHARE = 0.75;
/** Longest wait for an import to finish before the provisioning fails (the aggregator then tries the next bidder). */
const IMPORT_TIMEOUT_MS = 10 * 60_000;

export interface ImageNeed {
  name: string;
  tenant: string;
  fetch: ImageFetch | undefined;
}

/** The image a VM spec boots a clone of, if any. */
export function imageNeed(spec: WorkloadSpec | undefined, tenant: string): ImageNeed | undefined {
  if (spec?.kind.case !== "vm") return undefined;
  const boot = spec.kind.value.boot?.source;
  if (boot?.case !== "disk" || boot.value.image === "") return undefined;
  return { name: boot.value.image, tenant, fetch: spec.imageFetch?.url ? spec.imageFetch : undefined };
}

/** The image's state on this node, by name in the tenant: ready, importing, failed, deleting, or undefined. */
export function imageHere(storage: StorageRegistry, need: ImageNeed): string | undefined {
  return storage.listImages().find((i) => i.tenant === need.tenant && i.name === need.name)?.state;
}

/** Adjusts a score for the image: kept (here), scaled down (to import), or a decline (nowhere to get it). */
export function scoreForImage(result: ScoreResult, storage: StorageRegistry, need: ImageNeed | undefined): ScoreResult {
  if (need === undefined || result.score <= 0) return result;
  const state = imageHere(storage, need);
  if (state === "ready" || state === "importing") {
    result.breakdown.factors.push({
      name: "image",
      value: 1,
      weight: 1 - IMPORT_SCORE_SHARE,
      detail: `image ${need.name} is ${state === "ready" ? "here" : "being imported here"}`,
    });
    return result;
  }
  if (need.fetch === undefined) {
    return {
      score: -1,
      breakdown: {
        factors: result.breakdown.factors,
        declineReason: `image ${need.name} is not on this node (tenant ${need.tenant}) and the spec gives no image_fetch URL to import it from`,
      },
    };
  }
  result.breakdown.factors.push({
    name: "image",
    value: 0,
    weight: 1 - IMPORT_SCORE_SHARE,
    detail: `image ${need.name} is not here: it would be imported from ${need.fetch.url} first`,
  });
  return { ...result, score: Math.max(1, Math.round(result.score * IMPORT_SCORE_SHARE)) };
}

/**
 * Before a VM is created here: makes sure its image is READY, importing it when it is missing (or
 * waiting for an import already under way). Returns how long that took, or undefined when the image
 * was here.
 */
export async function fetchImage(
  deps: { storage: StorageRegistry; handler: ServiceImpl<typeof StorageService>; log: Logger },
  need: ImageNeed | undefined,
  workloadId: string,
  ctx: HandlerContext,
): Promise<number | undefined> {
  if (need === undefined) return undefined;
  const initial = imageHere(deps.storage, need);
  if (initial === "ready") return undefined;
  const t0 = performance.now();
  if (initial === undefined || initial === "failed") {
    if (need.fetch === undefined)
      throw failedPrecondition(`image ${need.name} is not on this node and the spec gives no image_fetch URL to import it from.`);
    if (initial === "failed")
      throw failedPrecondition(
        `image ${need.name} failed to import on this node earlier (${deps.storage.listImages().find((i) => i.tenant === need.tenant && i.name === need.name)?.stateReason ?? "no reason kept"}); delete it there to let it be imported again.`,
      );
    try {
      await deps.handler.importImage(
        create(ImportImageRequestSchema, {
          name: need.name,
          tenant: need.tenant,
          source: { source: { case: "url", value: need.fetch.url } },
          sha256: need.fetch.sha256,
          labels: { "aether.io/imported-for": workloadId },
        }),
        ctx,
      );
      deps.log.info({ image: need.name, tenant: need.tenant, url: need.fetch.url, workload: workloadId }, "importing a workload's image");
    } catch (err) {
      // Another workload started the same import a moment ago: wait for it below.
      if (rpcCode(err) !== Code.AlreadyExists) throw err;
    }
  }
  const deadline = Date.now() + IMPORT_TIMEOUT_MS;
  for (;;) {
    const image = deps.storage.listImages().find((i) => i.tenant === need.tenant && i.name === need.name);
    if (image?.state === "ready") return performance.now() - t0;
    if (image === undefined || image.state === "failed" || image.state === "deleting")
      throw failedPrecondition(`importing image ${need.name} on this node failed: ${image?.stateReason || "the image is gone"}.`);
    if (Date.now() > deadline) throw failedPrecondition(`importing image ${need.name} on this node did not finish within 10 minutes.`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
