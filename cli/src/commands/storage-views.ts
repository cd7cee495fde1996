// How pools, volumes and snapshots are shown and looked up by the storage and image commands: their
// tables and the names of what a volume refers to (images, snapshots, volumes, VMs), every page of
// a List RPC, and the refusals a dry run of a delete can foresee.
import { InvalidArgumentError } from "commander";
import { storage as storageApi, type AetherClient } from "@aether/sdk/client";
import { age, bytes, labelsText, shortId, type ListView } from "../output.js";

/** A repeatable key=value option (labels). */
export const keyValue =
  (what: string) =>
  (value: string, previous: Record<string, string> = {}) => {
    const eq = value.indexOf("=");
    if (eq <= 0) throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} is not KEY=VALUE`);
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };

/** "qcow2", "raw", "zvol", "zfs-file", "lvm-thin". */
export const formatName = (f: storageApi.VolumeFormat) => (f ? storageApi.VolumeFormat[f].toLowerCase().replace(/_/g, "-") : "-");
export const driverName = (d: storageApi.PoolDriver) => storageApi.PoolDriver[d].toLowerCase().replace(/_/g, "-");
export const volumeState = (v: storageApi.Volume) => storageApi.VolumeState[v.state].toLowerCase();
export const snapshotState = (s: storageApi.Snapshot) => storageApi.SnapshotState[s.state].toLowerCase();
export const short = shortId;

/** Every page of a List RPC. */
export async function allPages<T>(page: (pageToken: string) => Promise<[T[], string]>): Promise<T[]> {
  const all: T[] = [];
  let pageToken = "";
  do {
    const [items, next] = await page(pageToken);
    all.push(...items);
    pageToken = next;
  } while (pageToken !== "");
  return all;
}

/** Names for the ids a volume refers to (images, snapshots, volumes, VMs), for tables people read. */
export interface Names {
  images: Map<string, string>;
  snapshots: Map<string, storageApi.Snapshot>;
  volumes: Map<string, string>;
  vms: Map<string, string>;
}

export async function lookUpNames(aether: AetherClient, volumes: storageApi.Volume[]): Promise<Names> {
  const s = aether.storage;
  const byId = <T extends { id: string }, V>(items: T[], value: (t: T) => V) => new Map(items.map((i) => [i.id, value(i)]));
  const needs = (what: "image" | "snapshot") => volumes.some((v) => v.backing?.parent.case === what);
  const [images, snapshots, others, vms] = await Promise.all([
    needs("image")
      ? allPages((pageToken) => s.listImages({ pageSize: 1000, pageToken }).then((r) => [r.images, r.nextPageToken])).catch(() => [])
      : [],
    needs("snapshot")
      ? allPages((pageToken) => s.listSnapshots({ pageSize: 1000, pageToken }).then((r) => [r.snapshots, r.nextPageToken])).catch(() => [])
      : [],
    needs("snapshot")
      ? allPages((pageToken) => s.listVolumes({ pageSize: 1000, pageToken }).then((r) => [r.volumes, r.nextPageToken])).catch(() => [])
      : [],
    volumes.some((v) => v.usedBy.length > 0)
      ? aether.vm
          .listVms({ pageSize: 1000 })
          .then((r) => r.vms)
          .catch(() => [])
      : [],
  ]);
  return {
    images: byId(images, (i) => i.name),
    snapshots: byId(snapshots, (x) => x),
    volumes: byId([...volumes, ...others], (v) => v.name),
    vms: byId(vms, (v) => v.name),
  };
}

/** "image base", "snapshot data@one" or "-". */
export function backingText(v: storageApi.Volume, names: Names): string {
  const parent = v.backing?.parent;
  if (parent?.case === "image") return `image ${names.images.get(parent.value) ?? short(parent.value)}`;
  if (parent?.case === "snapshot") {
    const snap = names.snapshots.get(parent.value);
    if (!snap) return `snapshot ${short(parent.value)}`;
    return `snapshot ${names.volumes.get(snap.volume) ?? short(snap.volume)}@${snap.name}`;
  }
  return "-";
}

export const usedByText = (v: storageApi.Volume, names: Names) => v.usedBy.map((id) => names.vms.get(id) ?? short(id)).join(", ") || "-";

export const POOLS: ListView<storageApi.Pool> = {
  json: storageApi.PoolSchema,
  name: (p) => p.name,
  columns: [
    { header: "NAME", cell: (p) => p.name },
    { header: "DRIVER", cell: (p) => driverName(p.driver) },
    { header: "LOCATION", cell: (p) => p.location, clip: true },
    { header: "DEFAULT", cell: (p) => (p.defaultPool ? "yes" : "-") },
    { header: "AVAILABLE", cell: (p) => (p.available ? "yes" : `no: ${p.unavailableReason}`), clip: true },
    { header: "CAPACITY", cell: (p) => bytes(p.capacityBytes) },
    { header: "ALLOCATED", cell: (p) => bytes(p.allocatedBytes) },
    { header: "USED", cell: (p) => bytes(p.usedBytes) },
    { header: "FORMATS", cell: (p) => p.formats.map(formatName).join(",") },
    { header: "LABELS", cell: (p) => labelsText(p.labels), wideOnly: true },
  ],
};

/** Volumes, with the names of what they refer to (looked up for the table; JSON keeps the ids). */
export function volumesView(names?: Names): ListView<storageApi.Volume> {
  const known = names ?? { images: new Map(), snapshots: new Map(), volumes: new Map(), vms: new Map() };
  return {
    json: storageApi.VolumeSchema,
    name: (v) => v.name,
    columns: [
      { header: "NAME", cell: (v) => v.name },
      { header: "TENANT", cell: (v) => v.tenant },
      { header: "STATE", cell: volumeState },
      { header: "POOL", cell: (v) => v.pool },
      { header: "FORMAT", cell: (v) => formatName(v.format) },
      { header: "SIZE", cell: (v) => bytes(v.sizeBytes) },
      { header: "ALLOCATED", cell: (v) => bytes(v.allocatedBytes) },
      { header: "BACKING", cell: (v) => backingText(v, known), clip: true },
      { header: "USED BY", cell: (v) => usedByText(v, known), clip: true },
      { header: "ID", cell: (v) => short(v.id), whole: (v) => v.id, wideOnly: true },
      { header: "LABELS", cell: (v) => labelsText(v.labels), wideOnly: true },
      { header: "REASON", cell: (v) => v.stateReason || "-", wideOnly: true },
    ],
  };
}

export function snapshotsView(volumeNames: Map<string, string>): ListView<storageApi.Snapshot> {
  return {
    json: storageApi.SnapshotSchema,
    name: (s) => `${volumeNames.get(s.volume) ?? short(s.volume)}/${s.name}`,
    columns: [
      { header: "VOLUME", cell: (s) => volumeNames.get(s.volume) ?? short(s.volume) },
      { header: "SNAPSHOT", cell: (s) => s.name },
      { header: "TENANT", cell: (s) => s.tenant },
      { header: "STATE", cell: snapshotState },
      { header: "SIZE", cell: (s) => bytes(s.sizeBytes) },
      { header: "ALLOCATED", cell: (s) => bytes(s.allocatedBytes) },
      { header: "CLONES", cell: (s) => String(s.clones.length) },
      { header: "AGE", cell: (s) => age(s.createTime) },
      { header: "ID", cell: (s) => short(s.id), whole: (s) => s.id, wideOnly: true },
      { header: "LABELS", cell: (s) => labelsText(s.labels), wideOnly: true },
    ],
  };
}

export async function getVolume(aether: AetherClient, ref: string, tenant: string): Promise<storageApi.Volume> {
  const { volume } = await aether.storage.getVolume({ volume: ref, tenant });
  if (!volume) throw new Error("aetherd returned no volume");
  return volume;
}

export async function listVolumes(aether: AetherClient, pool: string, tenant: string, filter: string): Promise<storageApi.Volume[]> {
  return allPages((pageToken) =>
    aether.storage.listVolumes({ pool, tenant, filter, pageSize: 1000, pageToken }).then((r) => [r.volumes, r.nextPageToken]),
  );
}

/** What refuses a volume's deletion, as far as the CLI can tell. */
export function deleteRefusal(v: storageApi.Volume, withSnapshots: boolean): string | undefined {
  if (v.usedBy.length > 0) return `${v.name} is attached to ${v.usedBy.length} VM(s)`;
  if (v.clones.length > 0) return `${v.clones.length} clone(s) depend on ${v.name}`;
  if (v.snapshotCount > 0 && !withSnapshots) return `${v.name} has ${v.snapshotCount} snapshot(s); add --with-snapshots`;
  return undefined;
}
