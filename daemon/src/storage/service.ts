// aether.storage.v1.StorageService: validates requests into typed values and translates between the
// registry's records and the contract's messages. The registry and the drivers do the work.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { formatSize } from "@aether/sdk/size";
import {
  ImageFileFormat,
  ImageSchema,
  ImageState,
  PoolDriver,
  PoolSchema,
  SnapshotSchema,
  SnapshotState,
  StorageService,
  VolumeFormat,
  VolumeSchema,
  VolumeState,
  type Image,
  type Pool,
  type Snapshot,
  type Volume,
} from "@aether/sdk/gen/aether/storage/v1/storage_pb";
import {
  type CallerScope,
  clip,
  dnsLabel,
  invalidArgument,
  labelFilter,
  labels,
  matchesFilter,
  paginate,
  reference,
  requireClusterWide,
  scopeKey,
  tenant as parseTenant,
  timestamp,
} from "@aether/server";
import type { DiskFormat } from "./pool.js";
import { ANY_URL, type UrlRules } from "./url-guard.js";
import type { ImportSource } from "./image-import.js";
import type { PoolView, StorageRegistry, VolumeSource } from "./registry.js";
import type { ImageRecord, SnapshotRecord, VolumeRecord } from "./records.js";

const FORMAT_TO_PROTO: Record<DiskFormat, VolumeFormat> = {
  qcow2: VolumeFormat.QCOW2,
  raw: VolumeFormat.RAW,
  zvol: VolumeFormat.ZVOL,
  "zfs-file": VolumeFormat.ZFS_FILE,
  "lvm-thin": VolumeFormat.LVM_THIN,
};
const FORMAT_FROM_PROTO = new Map<VolumeFormat, DiskFormat>(Object.entries(FORMAT_TO_PROTO).map(([k, v]) => [v, k as DiskFormat]));
const DRIVER_TO_PROTO = { dir: PoolDriver.DIR, zfs: PoolDriver.ZFS, "lvm-thin": PoolDriver.LVM_THIN } as const;
const VOLUME_STATE = {
  creating: VolumeState.CREATING,
  ready: VolumeState.READY,
  deleting: VolumeState.DELETING,
  failed: VolumeState.FAILED,
} as Record<string, VolumeState>;
const IMAGE_STATE = {
  importing: ImageState.IMPORTING,
  ready: ImageState.READY,
  failed: ImageState.FAILED,
  deleting: ImageState.DELETING,
} as Record<string, ImageState>;
// A snapshot being taken ("creating") is never listed, so it has no contract state.
const SNAPSHOT_STATE = {
  creating: SnapshotState.UNSPECIFIED,
  ready: SnapshotState.READY,
  deleting: SnapshotState.DELETING,
  failed: SnapshotState.FAILED,
} as const;

/** A uint64 size field as a number; 0 stays 0 (meaning "default" where the contract says so). */
function bytes(field: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw invalidArgument(`${field} ${value} is beyond what aetherd handles (${formatSize(Number.MAX_SAFE_INTEGER)}).`);
  return Number(value);
}

function optionalLabel(field: string, value: string): string {
  return value === "" ? "" : dnsLabel(field, value);
}

/** The part of [tenancy] that governs image URLs. Without one, tenants import from no URL. */
export interface ImportTenancy {
  image_url_prefixes: string[];
  allow_private_urls: boolean;
}
const NO_TENANT_URLS: ImportTenancy = { image_url_prefixes: [], allow_private_urls: false };

/**
 * Where a caller may have aetherd download from: a cluster-wide caller anywhere, a tenant only
 * under the operator's prefixes and (unless allow_private_urls) from public addresses.
 */
function urlRules(scope: CallerScope, tenancy: ImportTenancy): UrlRules {
  if (scope.tenant === undefined) return ANY_URL;
  return { prefixes: tenancy.image_url_prefixes, publicOnly: !tenancy.allow_private_urls };
}

export function storageService(registry: StorageRegistry, tenancy: ImportTenancy = NO_TENANT_URLS): ServiceImpl<typeof StorageService> {
  const volumeRef = (value: string, t: string) => registry.resolveVolume(reference("volume", value), parseTenant(t));
  const listTenant = (value: string) => (value === "" ? undefined : parseTenant(value));

  const volumeMessage = async (v: VolumeRecord): Promise<Volume> => {
    const health = registry.health(v);
    const snapshots = registry.snapshotsOf(v.id);
    return create(VolumeSchema, {
      id: v.id,
      name: v.name,
      tenant: v.tenant,
      labels: v.labels,
      createTime: timestamp(v.createTimeMs),
      state: VOLUME_STATE[health.state] ?? VolumeState.UNSPECIFIED,
      stateReason: health.reason,
      pool: v.pool,
      format: FORMAT_TO_PROTO[v.format],
      sizeBytes: BigInt(v.sizeBytes),
      allocatedBytes: BigInt(health.state === "ready" ? await registry.allocatedBytes(v) : 0),
      backing: v.backing.kind === "none" ? undefined : { parent: { case: v.backing.kind, value: v.backing.id } },
      hostPath: v.hostPath,
      usedBy: registry.usersOf(v.id).map((u) => u.vmId),
      clones: registry.dependentsOf(v.id).map((c) => c.id),
      snapshotCount: snapshots.length,
    });
  };

  const snapshotMessage = (s: SnapshotRecord): Snapshot =>
    create(SnapshotSchema, {
      id: s.id,
      name: s.name,
      tenant: s.tenant,
      labels: s.labels,
      createTime: timestamp(s.createTimeMs),
      state: SNAPSHOT_STATE[s.state],
      stateReason: s.stateReason,
      volume: s.volume,
      sizeBytes: BigInt(s.sizeBytes),
      allocatedBytes: 0n,
      clones: registry.clonesOf("snapshot", s.id).map((c) => c.id),
    });

  const imageMessage = async (i: ImageRecord): Promise<Image> => {
    const health = registry.health(i);
    return create(ImageSchema, {
      id: i.id,
      name: i.name,
      tenant: i.tenant,
      labels: i.labels,
      createTime: timestamp(i.createTimeMs),
      state: IMAGE_STATE[health.state] ?? ImageState.UNSPECIFIED,
      stateReason: health.reason,
      pool: i.pool,
      format: FORMAT_TO_PROTO[i.format],
      source: { source: i.source.kind === "local" ? { case: "localPath", value: i.source.value } : { case: "url", value: i.source.value } },
      sha256: i.sha256,
      sizeBytes: BigInt(i.sizeBytes),
      allocatedBytes: BigInt(health.state === "ready" ? await registry.allocatedBytes(i) : 0),
      importedBytes: BigInt(i.importedBytes),
      sourceBytes: BigInt(i.sourceBytes),
      hostPath: i.state === "ready" ? i.hostPath : "",
      clones: registry.clonesOf("image", i.id).map((c) => c.id),
      readyTime: i.readyTimeMs ? timestamp(i.readyTimeMs) : undefined,
    });
  };

  const poolMessage = (p: PoolView): Pool =>
    create(PoolSchema, {
      name: p.pool.name,
      labels: p.labels,
      driver: DRIVER_TO_PROTO[p.pool.driver],
      location: p.pool.location,
      defaultPool: p.isDefault,
      available: p.status.available,
      unavailableReason: p.status.reason,
      capacityBytes: BigInt(p.status.capacityBytes),
      allocatedBytes: BigInt(p.allocatedBytes),
      usedBytes: BigInt(p.status.usedBytes),
      formats: p.status.available ? p.pool.formats().map((f) => FORMAT_TO_PROTO[f]) : [],
    });

  return {
    async listPools(req) {
      const terms = labelFilter(req.filter);
      const all = (await registry.listPools()).filter((p) => matchesFilter(p.labels, terms));
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { pools: page.map(poolMessage), nextPageToken };
    },

    async getPool(req) {
      return { pool: poolMessage(await registry.getPool(dnsLabel("pool", req.pool))) };
    },

    async createVolume(req) {
      const name = dnsLabel("name", req.name);
      let source: VolumeSource;
      switch (req.source.case) {
        case "empty":
          source = { kind: "empty", sizeBytes: bytes("empty.size_bytes", req.source.value.sizeBytes) };
          if (source.sizeBytes === 0) throw invalidArgument("empty.size_bytes is 0: give the volume's size in bytes (at least 1 MiB).");
          break;
        case "image":
          source = {
            kind: "image",
            image: reference("image.image", req.source.value.image),
            sizeBytes: bytes("image.size_bytes", req.source.value.sizeBytes),
          };
          break;
        case "snapshot": {
          const s = req.source.value;
          source = {
            kind: "snapshot",
            volume: s.volume === "" ? "" : reference("snapshot.volume", s.volume),
            snapshot: reference("snapshot.snapshot", s.snapshot),
            sizeBytes: bytes("snapshot.size_bytes", s.sizeBytes),
          };
          break;
        }
        default:
          throw invalidArgument("source is required: give empty (a size), image (an image to clone) or snapshot (a snapshot to clone).");
      }
      let format: DiskFormat | undefined;
      if (req.format !== VolumeFormat.UNSPECIFIED) {
        format = FORMAT_FROM_PROTO.get(req.format);
        if (!format) throw invalidArgument(`format ${req.format} is not a volume format.`);
        if (source.kind !== "empty") throw invalidArgument("format applies to empty volumes only; a clone has its parent's format.");
      }
      const volume = await registry.createVolume({
        name,
        tenant: parseTenant(req.tenant),
        labels: labels(req.labels),
        pool: optionalLabel("pool", req.pool),
        format,
        source,
        requestId: req.requestId,
      });
      return { volume: await volumeMessage(volume) };
    },

    async cloneVolume(req) {
      const result = await registry.cloneVolume({
        volume: reference("volume", req.volume),
        tenant: parseTenant(req.tenant),
        snapshot: req.snapshot === "" ? "" : reference("snapshot", req.snapshot),
        name: dnsLabel("name", req.name),
        labels: labels(req.labels),
        sizeBytes: bytes("size_bytes", req.sizeBytes),
        requestId: req.requestId,
      });
      return { volume: await volumeMessage(result.volume), snapshot: snapshotMessage(result.snapshot) };
    },

    async resizeVolume(req) {
      const size = bytes("size_bytes", req.sizeBytes);
      if (size === 0) throw invalidArgument("size_bytes is 0: give the new, larger size in bytes.");
      const volume = await registry.resizeVolume(reference("volume", req.volume), parseTenant(req.tenant), size);
      return { volume: await volumeMessage(volume) };
    },

    async deleteVolume(req) {
      await registry.deleteVolume(reference("volume", req.volume), parseTenant(req.tenant), req.deleteSnapshots, req.requestId);
      return {};
    },

    async getVolume(req) {
      return { volume: await volumeMessage(volumeRef(req.volume, req.tenant)) };
    },

    async listVolumes(req) {
      const owner = listTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const pool = optionalLabel("pool", req.pool);
      const all = registry
        .listVolumes()
        .filter((v) => (owner === undefined || v.tenant === owner) && (pool === "" || v.pool === pool) && matchesFilter(v.labels, terms));
      const messages = await Promise.all(all.map(volumeMessage));
      const wanted = messages.filter((m) => req.state === VolumeState.UNSPECIFIED || m.state === req.state);
      const { page, nextPageToken } = paginate(wanted, req.pageSize, req.pageToken);
      return { volumes: page, nextPageToken };
    },

    async snapshotVolume(req) {
      const snapshot = await registry.snapshotVolume({
        volume: reference("volume", req.volume),
        tenant: parseTenant(req.tenant),
        name: optionalLabel("name", req.name),
        labels: labels(req.labels),
        requestId: req.requestId,
      });
      return { snapshot: snapshotMessage(snapshot) };
    },

    async listSnapshots(req) {
      const owner = listTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const volumeId = req.volume === "" ? "" : registry.resolveVolume(reference("volume", req.volume), parseTenant(req.tenant)).id;
      const all = registry
        .listSnapshots()
        .filter(
          (s) =>
            (owner === undefined || s.tenant === owner) && (volumeId === "" || s.volume === volumeId) && matchesFilter(s.labels, terms),
        );
      const { page, nextPageToken } = paginate(all, req.pageSize, req.pageToken);
      return { snapshots: page.map(snapshotMessage), nextPageToken };
    },

    async deleteSnapshot(req) {
      await registry.deleteSnapshot(
        req.volume === "" ? "" : reference("volume", req.volume),
        reference("snapshot", req.snapshot),
        parseTenant(req.tenant),
        req.requestId,
      );
      return {};
    },

    async rollbackVolume(req) {
      const result = await registry.rollbackVolume(
        reference("volume", req.volume),
        parseTenant(req.tenant),
        reference("snapshot", req.snapshot),
        req.destroyNewerSnapshots,
      );
      return { volume: await volumeMessage(result.volume), deletedSnapshots: result.deleted };
    },

    async importImage(req, ctx) {
      const name = dnsLabel("name", req.name);
      const src = req.source?.source;
      const scope = ctx.values.get(scopeKey);
      // A local file is read with aetherd's privileges: tenants import from http(s) URLs.
      if (src?.case === "localPath") requireClusterWide(scope, "import images from files of the host (import from an http(s) URL)");
      let source: ImportSource;
      if (src?.case === "localPath") {
        if (!src.value.startsWith("/") || src.value.includes("\0") || src.value.length > 4096)
          throw invalidArgument(`source.local_path ${JSON.stringify(clip(src.value))} is not an absolute path.`);
        source = { kind: "local", path: src.value };
      } else if (src?.case === "url") {
        let url: URL;
        try {
          url = new URL(src.value);
        } catch {
          throw invalidArgument(`source.url ${JSON.stringify(clip(src.value))} is not a URL.`);
        }
        if (url.protocol !== "http:" && url.protocol !== "https:")
          throw invalidArgument(`source.url must be http:// or https://, not ${url.protocol}//.`);
        source = { kind: "url", url: url.toString(), rules: urlRules(scope, tenancy) };
      } else {
        throw invalidArgument("source is required: give source.local_path (a file on this host) or source.url (http or https).");
      }
      if (!/^[0-9a-f]{64}$/.test(req.sha256))
        throw invalidArgument("sha256 must be the source's SHA-256 as 64 lowercase hex digits (sha256sum prints it).");
      const sourceFormat =
        req.sourceFormat === ImageFileFormat.QCOW2 ? "qcow2" : req.sourceFormat === ImageFileFormat.RAW ? "raw" : undefined;
      const image = await registry.importImage({
        name,
        tenant: parseTenant(req.tenant),
        labels: labels(req.labels),
        pool: optionalLabel("pool", req.pool),
        source,
        sha256: req.sha256,
        sourceFormat,
        requestId: req.requestId,
        revealDigest: scope.tenant === undefined,
      });
      return { image: await imageMessage(image) };
    },

    async *watchImage(req, ctx) {
      const image = registry.resolveImage(reference("image", req.image), parseTenant(req.tenant));
      const terminal = () => image.state !== "importing" || !registry.imageById(image.id);
      yield { image: await imageMessage(image), time: timestamp(Date.now()) };
      while (!terminal() && !ctx.signal.aborted) {
        await new Promise<void>((resolve) => {
          const onChange = (id: string) => id === image.id && done();
          const timer = setTimeout(() => done(), 1000);
          const done = () => {
            clearTimeout(timer);
            registry.changes.off("image", onChange);
            ctx.signal.removeEventListener("abort", done);
            resolve();
          };
          registry.changes.on("image", onChange);
          ctx.signal.addEventListener("abort", done, { once: true });
        });
        if (ctx.signal.aborted) return;
        yield { image: await imageMessage(image), time: timestamp(Date.now()) };
      }
    },

    async getImage(req) {
      return { image: await imageMessage(registry.resolveImage(reference("image", req.image), parseTenant(req.tenant))) };
    },

    async listImages(req) {
      const owner = listTenant(req.tenant);
      const terms = labelFilter(req.filter);
      const pool = optionalLabel("pool", req.pool);
      const all = registry
        .listImages()
        .filter((i) => (owner === undefined || i.tenant === owner) && (pool === "" || i.pool === pool) && matchesFilter(i.labels, terms));
      const messages = await Promise.all(all.map(imageMessage));
      const wanted = messages.filter((m) => req.state === ImageState.UNSPECIFIED || m.state === req.state);
      const { page, nextPageToken } = paginate(wanted, req.pageSize, req.pageToken);
      return { images: page, nextPageToken };
    },

    async deleteImage(req) {
      await registry.deleteImage(reference("image", req.image), parseTenant(req.tenant), req.requestId);
      return {};
    },
  };
}
