// aether storage pools|list|get|create|clone|resize|delete|snapshot|snapshots|rollback|delete-snapshot:
// pools, volumes (VM disks) and their snapshots (their views are in storage-views.ts). A little over
// 400 lines: eleven commands of one service, each mutation with its dry run, read best side by side.
import { InvalidArgumentError, Option, type Command } from "commander";
import { Code, ConnectError, storage as storageApi } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { formatOf, age, bytes, forPrograms, labelsText, outputOptions, printList, printOne, type OutputFlags } from "../output.js";
import { deleteMany, deleteManyOptions, dryRunOption, exists, sayWould, type DeleteFlags, type DryRunFlags } from "../mutations.js";
import { selectorOf, selectorOptions, selects, serverFilter, type SelectorFlags } from "../selectors.js";
import { parseBytes } from "../units.js";
import { replicationCommands } from "./replication.js";
import {
  POOLS,
  allPages,
  backingText,
  deleteRefusal,
  formatName,
  getVolume,
  keyValue,
  listVolumes,
  lookUpNames,
  short,
  snapshotsView,
  usedByText,
  volumeState,
  volumesView,
  type Names,
} from "./storage-views.js";

export { allPages, formatName, keyValue } from "./storage-views.js";

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
  replicationCommands(storage, globals);

  const pools = storage
    .command("pools")
    .description("the pools configured on the node, with capacity and health")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage pools\n  aether storage pools -l tier=ssd -o name\n  aether storage pools --json | jq '.[] | select(.available | not)'",
    )
    .action(async (o: SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const all = await allPages((pageToken) =>
          aether.storage.listPools({ pageSize: 1000, pageToken, filter: serverFilter(selector) }).then((r) => [r.pools, r.nextPageToken]),
        );
        printList(
          o,
          POOLS,
          all.filter((p) => selects(selector, p.labels)),
        );
      }),
    );
  selectorOptions(outputOptions(pools, "list"));

  const list = storage
    .command("list")
    .alias("ls")
    .description("volumes, newest first")
    .option("--pool <pool>", "only volumes in this pool", "")
    .option("--tenant <tenant>", "only this tenant", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage list\n  aether storage list --pool fast -l team=a -o wide\n  aether storage list -l team=a --json",
    )
    .action(async (o: { pool: string; tenant: string } & SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const volumes = (await listVolumes(aether, o.pool, o.tenant, serverFilter(selector))).filter((v) => selects(selector, v.labels));
        printList(o, volumesView(forPrograms(o) ? undefined : await lookUpNames(aether, volumes)), volumes);
      }),
    );
  selectorOptions(outputOptions(list, "list"));

  outputOptions(storage.command("get"))
    .description("one volume in detail")
    .argument("<volume>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage get data\n  aether storage get data -o yaml\n  aether storage get data --json | jq -r .hostPath",
    )
    .action(async (ref: string, o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const v = await getVolume(aether, ref, o.tenant);
        const names = forPrograms(o) ? undefined : await lookUpNames(aether, [v]);
        printOne(o, volumesView(names), v, (v) => [
          ["id", v.id],
          ["name", v.name],
          ["tenant", v.tenant],
          ["state", `${volumeState(v)}${v.stateReason ? `: ${v.stateReason}` : ""}`],
          ["pool", v.pool],
          ["format", formatName(v.format)],
          ["size", bytes(v.sizeBytes)],
          ["allocated", bytes(v.allocatedBytes)],
          ["backing", backingText(v, names as Names)],
          ["host path", v.hostPath || "-"],
          ["used by", usedByText(v, names as Names)],
          ["snapshots", String(v.snapshotCount)],
          ["clones", v.clones.map(short).join(", ") || "-"],
          ["labels", labelsText(v.labels)],
          ["age", age(v.createTime)],
        ]);
      }),
    );

  dryRunOption(outputOptions(storage.command("create")))
    .description("create a volume: empty (--size), or a thin clone of an image (--image) or a snapshot (--snapshot); prints its id")
    .argument("<name>", "a name unique in the tenant (DNS label)")
    .option("--size <size>", "size, e.g. 10G (required for an empty volume; a clone may grow its parent's size)", parseBytes)
    .addOption(new Option("--format <format>", "an empty volume's format (default: the pool's)").choices(["qcow2", "raw"]))
    .addOption(new Option("--image <image>", "clone this image (id or name)").conflicts("snapshot"))
    .option("--snapshot <volume/snapshot>", "clone this snapshot (VOLUME/SNAPSHOT, or a snapshot id)", snapshotRef)
    .option("--pool <pool>", "pool to create it in (default: the default pool; a clone lives in its parent's)", "")
    .option("--tenant <tenant>", "owning tenant", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage create data --size 10G\n  aether storage create scratch --size 512M --format raw --pool fast\n  aether storage create web-1 --image debian-12 --size 20G -l team=a\n  aether storage create data-copy --snapshot data/nightly\n  aether storage create data --size 10G --dry-run",
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
        } & OutputFlags &
          DryRunFlags,
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
          if (o.dryRun) {
            if (await exists(() => getVolume(aether, name, o.tenant)))
              return sayWould(`create volume ${name}, but aetherd would refuse: a volume named ${name} exists`);
            if (o.image !== undefined) await aether.storage.getImage({ image: o.image, tenant: o.tenant });
            if (o.snapshot !== undefined && o.snapshot.volume !== "") await getVolume(aether, o.snapshot.volume, o.tenant);
            const from =
              o.image !== undefined
                ? ` from image ${o.image}`
                : o.snapshot !== undefined
                  ? ` from snapshot ${o.snapshot.volume}/${o.snapshot.snapshot}`
                  : "";
            return sayWould(
              `create volume ${name}${from}${o.size !== undefined ? ` of ${bytes(o.size)}` : ""}${o.pool ? ` in pool ${o.pool}` : ""}`,
            );
          }
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
          if (forPrograms(o)) printOne(o, volumesView(), volume);
          else process.stdout.write(`${volume.id}\n`);
        });
      },
    );

  dryRunOption(outputOptions(storage.command("clone")))
    .description("a thin clone of a volume, from one of its snapshots or a snapshot taken now; prints its id")
    .argument("<volume>", "id or name of the volume to clone")
    .argument("<name>", "name of the new volume")
    .option("--snapshot <snapshot>", "clone this snapshot (id or name; default: take one now, named clone-NAME)", "")
    .option("--size <size>", "grow the clone to this size, e.g. 20G", parseBytes)
    .option("--tenant <tenant>", "tenant to resolve a name in, and of the clone", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage clone data data-test\n  aether storage clone data data-at-nightly --snapshot nightly --size 20G\n  aether storage clone data data-test --dry-run",
    )
    .action(
      async (
        ref: string,
        name: string,
        o: { snapshot: string; size?: bigint; tenant: string; label?: Record<string, string> } & OutputFlags & DryRunFlags,
      ) =>
        withClient(globals(), async (aether) => {
          if (o.dryRun) {
            const source = await getVolume(aether, ref, o.tenant);
            if (await exists(() => getVolume(aether, name, o.tenant)))
              return sayWould(`clone volume ${source.name} into ${name}, but aetherd would refuse: a volume named ${name} exists`);
            return sayWould(
              `clone volume ${source.name} into ${name} from ${o.snapshot ? `snapshot ${o.snapshot}` : `a snapshot taken now (clone-${name})`}`,
            );
          }
          const { volume, snapshot } = await aether.storage.cloneVolume({
            volume: ref,
            name,
            snapshot: o.snapshot,
            sizeBytes: o.size ?? 0n,
            tenant: o.tenant,
            labels: o.label ?? {},
          });
          if (!volume) throw new Error("aetherd returned no volume");
          if (forPrograms(o)) printOne(o, volumesView(), volume);
          else process.stdout.write(`${volume.id}\n`);
          if (!forPrograms(o) && process.stderr.isTTY && snapshot)
            process.stderr.write(`cloned ${ref}@${snapshot.name} into ${volume.name}\n`);
        }),
    );

  dryRunOption(outputOptions(storage.command("resize")))
    .description("grow a volume (it cannot shrink; the guest grows its file system itself)")
    .argument("<volume>", "id or name")
    .argument("<size>", "new size, e.g. 20G", parseBytes)
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .addHelpText("after", "\nExamples:\n  aether storage resize data 20G\n  aether storage resize data 20G --dry-run")
    .action(async (ref: string, size: bigint, o: { tenant: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const v = await getVolume(aether, ref, o.tenant);
          const smaller = size < v.sizeBytes ? `, but aetherd would refuse: ${bytes(size)} is smaller than its ${bytes(v.sizeBytes)}` : "";
          return sayWould(`resize volume ${v.name} from ${bytes(v.sizeBytes)} to ${bytes(size)}${smaller}`);
        }
        const { volume } = await aether.storage.resizeVolume({ volume: ref, tenant: o.tenant, sizeBytes: size });
        if (forPrograms(o) && volume) printOne(o, volumesView(), volume);
      }),
    );

  const remove = storage
    .command("delete")
    .alias("rm")
    .description(
      "delete volumes (refused while a VM uses one, a clone depends on it, or it has snapshots without --with-snapshots): by name, by label selector, or all",
    )
    .argument("[volume...]", "ids or names")
    .option("--tenant <tenant>", "tenant to resolve names in (and to select in)", "")
    .option("--pool <pool>", "with -l or --all: only volumes in this pool", "")
    .option("--with-snapshots", "delete their snapshots too")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage delete scratch\n  aether storage delete data --with-snapshots\n  aether storage delete -l team=a --dry-run\n  aether storage delete -l team=a --yes",
    )
    .action(async (refs: string[], o: { tenant: string; pool: string; withSnapshots?: boolean } & DeleteFlags) =>
      withClient(globals(), async (aether) =>
        deleteMany(refs, o, {
          kind: "volume",
          list: (selector) => listVolumes(aether, o.pool, o.tenant, serverFilter(selector)),
          labels: (v) => v.labels,
          target: (v) => {
            const no = deleteRefusal(v, o.withSnapshots === true);
            return { name: v.name, id: v.id, ...(no !== undefined && { refusal: no }) };
          },
          get: (ref) => getVolume(aether, ref, o.tenant),
          remove: async (ref) => {
            await aether.storage.deleteVolume({ volume: ref, tenant: o.tenant, deleteSnapshots: o.withSnapshots ?? false });
          },
        }),
      ),
    );
  deleteManyOptions(remove, "volume");

  dryRunOption(outputOptions(storage.command("snapshot")))
    .description("take a snapshot of a volume; prints its name")
    .argument("<volume>", "id or name")
    .argument("[name]", "snapshot name, unique among the volume's (default: the UTC time, s20250101t120000z)")
    .option("--tenant <tenant>", "tenant to resolve a name in", "")
    .option("-l, --label <key=value>", "label to attach (repeatable)", keyValue("label"))
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage snapshot data nightly\n  aether storage snapshot data --json\n  aether storage snapshot data nightly --dry-run",
    )
    .action(
      async (ref: string, name: string | undefined, o: { tenant: string; label?: Record<string, string> } & OutputFlags & DryRunFlags) =>
        withClient(globals(), async (aether) => {
          if (o.dryRun) {
            const v = await getVolume(aether, ref, o.tenant);
            return sayWould(`snapshot volume ${v.name}${name ? ` as ${name}` : ""} (${v.snapshotCount} snapshot(s) so far)`);
          }
          const { snapshot } = await aether.storage.snapshotVolume({
            volume: ref,
            tenant: o.tenant,
            name: name ?? "",
            labels: o.label ?? {},
          });
          if (!snapshot) throw new Error("aetherd returned no snapshot");
          if (forPrograms(o)) printOne(o, snapshotsView(new Map()), snapshot);
          else process.stdout.write(`${snapshot.name}\n`);
        }),
    );

  const snapshots = storage
    .command("snapshots")
    .description("snapshots, of one volume or all, newest first")
    .argument("[volume]", "only this volume's (id or name)")
    .option("--tenant <tenant>", "only this tenant (and the tenant to resolve a volume name in)", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage snapshots\n  aether storage snapshots data --json\n  aether storage snapshots -l kind=nightly -o name",
    )
    .action(async (ref: string | undefined, o: { tenant: string } & SelectorFlags & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const selector = selectorOf(o);
        const all = (
          await allPages((pageToken) =>
            aether.storage
              .listSnapshots({ volume: ref ?? "", tenant: o.tenant, filter: serverFilter(selector), pageSize: 1000, pageToken })
              .then((r) => [r.snapshots, r.nextPageToken]),
          )
        ).filter((x) => selects(selector, x.labels));
        const volumes =
          all.length === 0 || ["json", "yaml"].includes(formatOf(o))
            ? []
            : await allPages((pageToken) =>
                aether.storage.listVolumes({ pageSize: 1000, pageToken }).then((r) => [r.volumes, r.nextPageToken]),
              );
        printList(o, snapshotsView(new Map(volumes.map((v) => [v.id, v.name]))), all);
      }),
    );
  selectorOptions(outputOptions(snapshots, "list"));

  dryRunOption(outputOptions(storage.command("rollback")))
    .description("return a volume's contents to a snapshot (refused while a VM uses it)")
    .argument("<volume>", "id or name")
    .argument("<snapshot>", "id or name of the snapshot")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .option("--destroy-newer", "delete the snapshots taken after it (otherwise their existence refuses the rollback)")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage rollback data nightly\n  aether storage rollback data monday --destroy-newer\n  aether storage rollback data monday --dry-run",
    )
    .action(async (ref: string, snapshot: string, o: { tenant: string; destroyNewer?: boolean } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const v = await getVolume(aether, ref, o.tenant);
          const all = await allPages((pageToken) =>
            aether.storage
              .listSnapshots({ volume: v.id, tenant: o.tenant, pageSize: 1000, pageToken })
              .then((r) => [r.snapshots, r.nextPageToken]),
          );
          const target = all.find((x) => x.name === snapshot || x.id.startsWith(snapshot));
          if (!target) throw new ConnectError(`volume ${v.name} has no snapshot ${snapshot}`, Code.NotFound);
          const newer = all
            .filter((x) => x.createTime && target.createTime && x.createTime.seconds > target.createTime.seconds)
            .map((x) => x.name);
          const no =
            v.usedBy.length > 0
              ? `, but aetherd would refuse: ${v.name} is attached to a VM`
              : newer.length > 0 && !o.destroyNewer
                ? `, but aetherd would refuse: newer snapshots exist (${newer.join(", ")}); add --destroy-newer`
                : newer.length > 0
                  ? `, deleting the newer snapshots ${newer.join(", ")}`
                  : "";
          return sayWould(`roll volume ${v.name} back to snapshot ${target.name}${no}`);
        }
        const { volume, deletedSnapshots } = await aether.storage.rollbackVolume({
          volume: ref,
          tenant: o.tenant,
          snapshot,
          destroyNewerSnapshots: o.destroyNewer ?? false,
        });
        if (deletedSnapshots.length > 0)
          process.stderr.write(`deleted ${deletedSnapshots.length} newer snapshot(s): ${deletedSnapshots.join(", ")}\n`);
        if (forPrograms(o) && volume) printOne(o, volumesView(), volume);
      }),
    );

  dryRunOption(storage.command("delete-snapshot"))
    .description("delete a snapshot (refused while a clone depends on it)")
    .argument("<volume>", "id or name of its volume")
    .argument("<snapshot>", "id or name")
    .option("--tenant <tenant>", "tenant to resolve names in", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage delete-snapshot data nightly\n  aether storage delete-snapshot data nightly --dry-run",
    )
    .action(async (ref: string, snapshot: string, o: { tenant: string } & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const v = await getVolume(aether, ref, o.tenant);
          const all = await allPages((pageToken) =>
            aether.storage
              .listSnapshots({ volume: v.id, tenant: o.tenant, pageSize: 1000, pageToken })
              .then((r) => [r.snapshots, r.nextPageToken]),
          );
          const target = all.find((x) => x.name === snapshot || x.id.startsWith(snapshot));
          if (!target) throw new ConnectError(`volume ${v.name} has no snapshot ${snapshot}`, Code.NotFound);
          const no = target.clones.length > 0 ? `, but aetherd would refuse: ${target.clones.length} clone(s) depend on it` : "";
          return sayWould(`delete snapshot ${v.name}/${target.name}${no}`);
        }
        await aether.storage.deleteSnapshot({ volume: ref, tenant: o.tenant, snapshot });
      }),
    );
}
