// Queries of the placement book: placements by id or name (within the tenant) and listed with
// filters, auction records by id and listed. Read-only; the leader answers from memory.
import { clone } from "@bufbuild/protobuf";
import {
  AuctionRecordSchema,
  WorkloadPlacementSchema,
  type AuctionRecord,
  type GetAuctionRequest,
  type GetPlacementRequest,
  type ListAuctionsRequest,
  type ListPlacementsRequest,
  type WorkloadPlacement,
} from "@aether/sdk/gen/aether/auction/v1/auction_pb";
import { dnsLabel, labelFilter, matchesFilter, notFound, paginate, reference, tenant as checkTenant } from "@aether/server";
import { nodeId as checkNodeId } from "../validate.js";
import { newestFirst, type PlacementBook } from "./book.js";

export async function getPlacement(book: PlacementBook, req: GetPlacementRequest): Promise<{ placement: WorkloadPlacement }> {
  const found = book.resolve(reference("workload", req.workload), checkTenant(req.tenant));
  return { placement: clone(WorkloadPlacementSchema, found) };
}

export async function listPlacements(
  book: PlacementBook,
  req: ListPlacementsRequest,
): Promise<{ placements: WorkloadPlacement[]; nextPageToken: string }> {
  const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
  const terms = labelFilter(req.filter);
  if (req.node !== "") checkNodeId("node", req.node);
  const all = [...book.placements.values()]
    .filter(
      (p) =>
        (tenant === undefined || p.tenant === tenant) &&
        (req.node === "" || p.node === req.node) &&
        (req.state === 0 || p.state === req.state) &&
        matchesFilter(p.labels, terms),
    )
    .sort(newestFirst<WorkloadPlacement>((p) => p.workloadId));
  const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
  return { placements: page.map((p) => clone(WorkloadPlacementSchema, p)), nextPageToken };
}

export async function getAuction(book: PlacementBook, req: GetAuctionRequest): Promise<{ auction: AuctionRecord }> {
  const id = reference("auction", req.auction);
  const found = book.auctions.get(id);
  if (!found) throw notFound(`auction ${id} does not exist: aether cluster auctions lists them.`);
  return { auction: clone(AuctionRecordSchema, found) };
}

export async function listAuctions(
  book: PlacementBook,
  req: ListAuctionsRequest,
): Promise<{ auctions: AuctionRecord[]; nextPageToken: string }> {
  const tenant = req.tenant === "" ? undefined : dnsLabel("tenant", req.tenant);
  const terms = labelFilter(req.filter);
  const all = [...book.auctions.values()]
    .filter(
      (a) =>
        (tenant === undefined || a.tenant === tenant) &&
        (req.workloadId === "" || a.workloadId === req.workloadId) &&
        (req.state === 0 || a.state === req.state) &&
        matchesFilter(a.labels, terms),
    )
    .sort(newestFirst<AuctionRecord>((a) => a.id));
  const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
  return { auctions: page.map((a) => clone(AuctionRecordSchema, a)), nextPageToken };
}
