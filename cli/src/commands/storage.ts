// aether storage pools|list|get|create|clone|resize|delete|snapshot|snapshots|rollback|delete-snapshot:
// pools, volumes (VM disks) and their snapshots.
import { InvalidArgumentError, Option, type Command } from "commander";
import { storage as storageApi, type AetherClient } from "@aether/sdk";
import { withClient, type GlobalOptions } from "../client.js";
import { age, bytes, printFields, printJson, printTable } from "../output.js";
import { parseBytes } from "../units.js";

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
const driverName = (d: storageApi.PoolDriver) => storageApi.PoolDriver[d].toLowerCase().replace(/_/g, "-");
const volumeState = (v: storageApi.Volume) => storageApi.VolumeState[v.state].toLowerCase();
const snapshotState = (s: storageApi.Snapshot) => storageApi.SnapshotState[s.state].toLowerCase();
const labelText = (labels: Record<string, string>) =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(", ") || "-";
const short = (id: string) => id.slice(0, 8);

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
interface Names {
  images: Map<string, string>;
  snapshots: Map<string, storageApi.Snapshot>;
  volumes: Map<string, string>;
  vms: Map<string, string>;
}

async function lookUpNames(aether: AetherClient, volumes: storageApi.Volume[]): Promise<Names> {
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
function backingText(v: storageApi.Volume, names: Names): string {
  const parent = v.backing?.parent;
  if (parent?.case === "image") return `image ${names.images.get(parent.value) ?? short(parent.value)}`;
  if (parent?.case === "snapshot") {
    const snap = names.snapshots.get(parent.value);
    if (!snap) return `snapshot ${short(parent.value)}`;
    return `snapshot ${names.volumes.get(snap.volume) ?? short(snap.volume)}@${snap.name}`;
  }
  return "-";
}

const usedByText = (v: storageApi.Volume, names: Names) => v.usedBy.map((id) => names.vms.get(id) ?? short(id)).join(", ") || "-";

/** "data/one" → volume data, snapshot one; a bare value is a snapshot id. */
function snapshotRef(value: string): { volume: string; snapshot: string } {
  const slash = value.indexOf("/");
  if (slash < 0) return { volume: "", snapshot: value };
  if (slash === 0 || slash === value.length - 1) throw new InvalidArgumentError(`${JSON.stringify(value)} is not VOLUME/SNAPSHOT`);
  return { volume: value.slice(0, slash), snapshot: value.slice(slash + 1) };
}

export function storageCommands(program: Command): void {
  const storage = program
    .command("storage")
    .description("storage: pools, volumes (VM disks), snapshots and thin clones")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage pools\n  aether storage create data --size 10G\n  aether storage create web-1 --image debian-12 --size 20G\n  aether storage snapshot data nightly\n  aether storage rollback data nightly",
    );
  const globals = () => program.opts<GlobalOptions>();

  storage
    .command("pools")
    .description("the pools configured on the node, with capacity and health")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage pools\n  aether storage pools --json | jq '.[] | select(.available | not)'")
    .action(async (o: { json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const pools = await allPages((pageToken) =>
          aether.storage.listPools({ pageSize: 1000, pageToken }).then((r) => [r.pools, r.nextPageToken]),
        );
        if (o.json) return printJson(storageApi.PoolSchema, pools);
        printTable(
          ["NAME", "DRIVER", "LOCATION", "DEFAULT", "AVAILABLE", "CAPACITY", "ALLOCATED", "USED", "FORMATS"],
          pools.map((p) => [
            p.name,
            driverName(p.driver),
            p.location,
            p.defaultPool ? "yes" : "-",
            p.available ? "yes" : `no: ${p.unavailableReason}`,
            bytes(p.capacityBytes),
            bytes(p.allocatedBytes),
            bytes(p.usedBytes),
            p.formats.map(formatName).join(","),
          ]),
        );
      }),
    );

  storage
    .command("list")
    .alias("ls")
    .description("volumes, newest first")
    .option("--pool <pool>", "only volumes in this pool", "")
    .option("--tenant <tenant>", "only this tenant", "")
    .option("--filter <k=v,...>", "only those with these labels", "")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage list\n  aether storage list --pool fast --filter team=a --json")
    .action(async (o: { pool: string; tenant: string; filter: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const volumes = await allPages((pageToken) =>
          aether.storage
            .listVolumes({ pool: o.pool, tenant: o.tenant, filter: o.filter, pageSize: 1000, pageToken })
            .then((r) => [r.volumes, r.nextPageToken]),
        );
        if (o.json) return printJson(storageApi.VolumeSchema, volumes);
        const names = await lookUpNames(aether, volumes);
        printTable(
          ["NAME", "TENANT", "STATE", "POOL", "FORMAT", "SIZE", "ALLOCATED", "BACKING", "USED BY"],
          volumes.map((v) => [
            v.name,
            v.tenant,
            volumeState(v),
            v.pool,
            formatName(v.format),
            bytes(v.sizeBytes),
            bytes(v.allocatedBytes),
            backingText(v, names),
            usedByText(v, names),
          ]),
        );
      }),
    );

  storage
    .command("get")
    .description("one volume in detail")
    .argument("<volume>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage get data\n  aether storage get data --json | jq -r .hostPath")
    .action(async (ref: string, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { volume: v } = await aether.storage.getVolume({ volume: ref, tenant: o.tenant });
        if (!v) throw new Error("aetherd returned no volume");
        if (o.json) return printJson(storageApi.VolumeSchema, v);
        const names = await lookUpNames(aether, [v]);
        printFields([
          ["id", v.id],
          ["name", v.name],
          ["tenant", v.tenant],
          ["state", `${volumeState(v)}${v.stateReason ? `: ${v.stateReason}` : ""}`],
          ["pool", v.pool],
          ["format", formatName(v.format)],
          ["size", bytes(v.sizeBytes)],
          ["allocated", bytes(v.allocatedBytes)],
          ["backing", backingText(v, names)],
          ["host path", v.hostPath || "-"],
          ["used by", usedByText(v, names)],
          ["snapshots", String(v.snapshotCount)],
          ["clones", v.clones.map(short).join(", ") || "-"],
          ["labels", labelText(v.labels)],
          ["age", age(v.createTime)],
        ]);
      }),
    );

  storage
    .command("create")
    .description("create a volume: empty (--size), or a thin clone of an image (--image) or a snapshot (--snapshot); prints its id")
    .argument("<name>", "a name unique in the tenant (DNS label)")
    .option("--size <size>", "size, e.g. 10G (required for an empty volume; a clone may grow its parent's size)", parseBytes)
    .addOption(new Option("--format <format>", "an empty volume's format (default: the pool's)").choices(["qcow2", "raw"]))
    .addOption(new Option("--image <image>", "clone this image (id or name)").conflicts("snapshot"))
    .option("--snapshot <volume/snapshot>", "clone this snapshot (VOLUME/SNAPSHOT, or a snapshot id)", snapshotRef)
    .option("--pool <pool>", "pool to create it in (default: the default pool; a clone lives in its parent's)", "")
    .option("--tenant <tenant>", "owning tenant", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .option("--json", "print the volume as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage create data --size 10G\n  aether storage create scratch --size 512M --format raw --pool fast\n  aether storage create web-1 --image debian-12 --size 20G -l team=a\n  aether storage create data-copy --snapshot data/nightly",
    )
    .action(
      async (
        name: string,
        o: {
          size?: bigint;
          format?: "qcow2" | "raw";
          image?: string;
          snapshot?: { volume: string; snapshot: string };
          pool: string;
          tenant: string;
          label?: Record<string, string>;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const clone = o.image !== undefined || o.snapshot !== undefined;
        if (!clone && o.size === undefined) cmd.error("error: give --size for an empty volume, or --image or --snapshot to clone one");
        if (clone && o.format !== undefined) cmd.error("error: --format applies to an empty volume; a clone keeps its parent's format");
        const source =
          o.image !== undefined
            ? { case: "image" as const, value: { image: o.image, sizeBytes: o.size ?? 0n } }
            : o.snapshot !== undefined
              ? { case: "snapshot" as const, value: { ...o.snapshot, sizeBytes: o.size ?? 0n } }
              : { case: "empty" as const, value: { sizeBytes: o.size ?? 0n } };
        await withClient(globals(), async (aether) => {
          const { volume } = await aether.storage.createVolume({
            name,
            tenant: o.tenant,
            labels: o.label ?? {},
            pool: o.pool,
            format:
              o.format === "raw"
                ? storageApi.VolumeFormat.RAW
                : o.format === "qcow2"
                  ? storageApi.VolumeFormat.QCOW2
                  : storageApi.VolumeFormat.UNSPECIFIED,
            source,
          });
          if (!volume) throw new Error("aetherd returned no volume");
          if (o.json) printJson(storageApi.VolumeSchema, volume);
          else process.stdout.write(`${volume.id}\n`);
        });
      },
    );

  storage
    .command("clone")
    .description("a thin clone of a volume, from one of its snapshots or a snapshot taken now; prints its id")
    .argument("<volume>", "id or name of the volume to clone")
    .argument("<name>", "name of the new volume")
    .option("--snapshot <snapshot>", "clone this snapshot (id or name; default: take one now, named clone-NAME)", "")
    .option("--size <size>", "grow the clone to this size, e.g. 20G", parseBytes)
    .option("--tenant <tenant>", "tenant to resolve a name in, and of the clone", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .option("--json", "print the new volume as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage clone data data-test\n  aether storage clone data data-at-nightly --snapshot nightly --size 20G",
    )
    .action(
      async (
        ref: string,
        name: string,
        o: { snapshot: string; size?: bigint; tenant: string; label?: Record<string, string>; json?: boolean },
      ) =>
        withClient(globals(), async (aether) => {
          const { volume, snapshot } = await aether.storage.cloneVolume({
            volume: ref,
            name,
            snapshot: o.snapshot,
            sizeBytes: o.size ?? 0n,
            tenant: o.tenant,
            labels: o.label ?? {},
          });
          if (!volume) throw new Error("aetherd returned no volume");
          if (o.json) printJson(storageApi.VolumeSchema, volume);
          else process.stdout.write(`${volume.id}\n`);
          if (!o.json && process.stderr.isTTY && snapshot) process.stderr.write(`cloned ${ref}@${snapshot.name} into ${volume.name}\n`);
        }),
    );

  storage
    .command("resize")
    .description("grow a volume (it cannot shrink; the guest grows its file system itself)")
    .argument("<volume>", "id or name")
    .argument("<size>", "new size, e.g. 20G", parseBytes)
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--json", "print the volume as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage resize data 20G")
    .action(async (ref: string, size: bigint, o: { tenant: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { volume } = await aether.storage.resizeVolume({ volume: ref, tenant: o.tenant, sizeBytes: size });
        if (o.json && volume) printJson(storageApi.VolumeSchema, volume);
      }),
    );

  storage
    .command("delete")
    .alias("rm")
    .description("delete a volume (refused while a VM uses it, a clone depends on it, or it has snapshots without --with-snapshots)")
    .argument("<volume>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("--with-snapshots", "delete its snapshots too")
    .addHelpText("after", "\nExamples:\n  aether storage delete scratch\n  aether storage delete data --with-snapshots")
    .action(async (ref: string, o: { tenant: string; withSnapshots?: boolean }) =>
      withClient(globals(), async (aether) => {
        await aether.storage.deleteVolume({ volume: ref, tenant: o.tenant, deleteSnapshots: o.withSnapshots ?? false });
      }),
    );

  storage
    .command("snapshot")
    .description("take a snapshot of a volume; prints its name")
    .argument("<volume>", "id or name")
    .argument("[name]", "snapshot name, unique among the volume's (default: the UTC time, s20250101t120000z)")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .option("--json", "print the snapshot as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage snapshot data nightly\n  aether storage snapshot data --json")
    .action(async (ref: string, name: string | undefined, o: { tenant: string; label?: Record<string, string>; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { snapshot } = await aether.storage.snapshotVolume({
          volume: ref,
          tenant: o.tenant,
          name: name ?? "",
          labels: o.label ?? {},
        });
        if (!snapshot) throw new Error("aetherd returned no snapshot");
        if (o.json) printJson(storageApi.SnapshotSchema, snapshot);
        else process.stdout.write(`${snapshot.name}\n`);
      }),
    );

  storage
    .command("snapshots")
    .description("snapshots, of one volume or all, newest first")
    .argument("[volume]", "only this volume's (id or name)")
    .option("--tenant <tenant>", "only this tenant (and the tenant to resolve a volume name in)", "")
    .option("--filter <k=v,...>", "only those with these labels", "")
    .option("--json", "print as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage snapshots\n  aether storage snapshots data --json")
    .action(async (ref: string | undefined, o: { tenant: string; filter: string; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const snapshots = await allPages((pageToken) =>
          aether.storage
            .listSnapshots({ volume: ref ?? "", tenant: o.tenant, filter: o.filter, pageSize: 1000, pageToken })
            .then((r) => [r.snapshots, r.nextPageToken]),
        );
        if (o.json) return printJson(storageApi.SnapshotSchema, snapshots);
        const volumes =
          snapshots.length === 0
            ? []
            : await allPages((pageToken) =>
                aether.storage.listVolumes({ pageSize: 1000, pageToken }).then((r) => [r.volumes, r.nextPageToken]),
              );
        const volumeNames = new Map(volumes.map((v) => [v.id, v.name]));
        printTable(
          ["VOLUME", "SNAPSHOT", "TENANT", "STATE", "SIZE", "ALLOCATED", "CLONES", "AGE"],
          snapshots.map((s) => [
            volumeNames.get(s.volume) ?? short(s.volume),
            s.name,
            s.tenant,
            snapshotState(s),
            bytes(s.sizeBytes),
            bytes(s.allocatedBytes),
            String(s.clones.length),
            age(s.createTime),
          ]),
        );
      }),
    );

  storage
    .command("rollback")
    .description("return a volume's contents to a snapshot (refused while a VM uses it)")
    .argument("<volume>", "id or name")
    .argument("<snapshot>", "id or name of the snapshot")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .option("--destroy-newer", "delete the snapshots taken after it (otherwise their existence refuses the rollback)")
    .option("--json", "print the volume as JSON")
    .addHelpText("after", "\nExamples:\n  aether storage rollback data nightly\n  aether storage rollback data monday --destroy-newer")
    .action(async (ref: string, snapshot: string, o: { tenant: string; destroyNewer?: boolean; json?: boolean }) =>
      withClient(globals(), async (aether) => {
        const { volume, deletedSnapshots } = await aether.storage.rollbackVolume({
          volume: ref,
          tenant: o.tenant,
          snapshot,
          destroyNewerSnapshots: o.destroyNewer ?? false,
        });
        if (deletedSnapshots.length > 0)
          process.stderr.write(`deleted ${deletedSnapshots.length} newer snapshot(s): ${deletedSnapshots.join(", ")}\n`);
        if (o.json && volume) printJson(storageApi.VolumeSchema, volume);
      }),
    );

  storage
    .command("delete-snapshot")
    .description("delete a snapshot (refused while a clone depends on it)")
    .argument("<volume>", "id or name of its volume")
    .argument("<snapshot>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .addHelpText("after", "\nExamples:\n  aether storage delete-snapshot data nightly")
    .action(async (ref: string, snapshot: string, o: { tenant: string }) =>
      withClient(globals(), async (aether) => {
        await aether.storage.deleteSnapshot({ volume: ref, tenant: o.tenant, snapshot });
      }),
    );
}
