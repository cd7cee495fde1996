// aether storage replication list|set|delete|run|replicas: copies of a VM's (or a volume's) volumes
// on other nodes, kept by aetherd (ZFS send/receive, or QEMU incremental backups of qcow2 volumes in
// dir pools, over the node-to-node channel).
import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { Code, ConnectError, storage as storageApi, type AetherClient } from "@aether/sdk/client";
import { withClient, type GlobalOptions } from "../client.js";
import { age, bytes, outputOptions, printList, printOne, type ListView, type OutputFlags } from "../output.js";
import { durationOption, toDuration, uint32 } from "../numbers.js";
import { dryRunOption, sayWould, type DryRunFlags } from "../mutations.js";
import { driverName, formatName } from "./storage-views.js";

/** For a dry run: the policy protecting a VM or volume (by name or id), or undefined. */
async function policyOf(aether: AetherClient, ref: string, tenant: string): Promise<storageApi.ReplicationPolicy | undefined> {
  const { policies } = await aether.replication.listReplications({ tenant, pageSize: 1000 });
  return policies.find((p) => p.vm === ref || p.volume === ref || p.id === ref) ?? policies.find((p) => p.id.startsWith(ref));
}

async function mustHavePolicy(aether: AetherClient, ref: string, tenant: string): Promise<storageApi.ReplicationPolicy> {
  const p = await policyOf(aether, ref, tenant);
  if (!p) throw new ConnectError(`no replication policy protects ${ref} (aether storage replication list)`, Code.NotFound);
  return p;
}

/**
 * For a dry run of set: why aetherd would refuse to replicate these volumes (it copies with ZFS
 * send/receive or QEMU's incremental backup, so each must be in a zfs pool, or a qcow2 file in a
 * dir pool), or undefined.
 */
async function replicationRefusal(aether: AetherClient, what: string, volumes: string[], tenant: string): Promise<string | undefined> {
  if (volumes.length === 0) return `${what} has no volumes to replicate (its disks are host files or none)`;
  const { pools } = await aether.storage.listPools({ pageSize: 1000 });
  for (const ref of volumes) {
    const { volume } = await aether.storage.getVolume({ volume: ref, tenant });
    const pool = pools.find((p) => p.name === volume?.pool);
    if (pool?.driver === storageApi.PoolDriver.ZFS) continue;
    if (pool?.driver === storageApi.PoolDriver.DIR && volume?.format === storageApi.VolumeFormat.QCOW2) continue;
    return pool?.driver === storageApi.PoolDriver.DIR
      ? `volume ${volume?.name} is a ${formatName(volume?.format ?? 0)} file in dir pool ${volume?.pool}; only qcow2 volumes of a dir pool can be replicated`
      : `volume ${volume?.name} is in ${pool ? driverName(pool.driver) : "an unknown"} pool ${volume?.pool}; only volumes of a zfs pool or qcow2 volumes of a dir pool can be replicated`;
  }
  return undefined;
}

/** One row per volume and target: what `replication list` shows. */
interface CopyRow {
  policy: storageApi.ReplicationPolicy;
  volume: storageApi.VolumeReplication;
  target: storageApi.ReplicationTarget;
}

const seconds = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) + d.nanos / 1e9 : undefined);
const durationText = (d: { seconds: bigint; nanos: number } | undefined) => {
  const s = seconds(d);
  if (s === undefined) return "-";
  return s < 120 ? `${s.toFixed(1)}s` : s < 7200 ? `${(s / 60).toFixed(1)}m` : `${(s / 3600).toFixed(1)}h`;
};
const stateName = (s: storageApi.ReplicationTargetState) => (storageApi.ReplicationTargetState[s] ?? "unspecified").toLowerCase();
const until = (ts: { seconds: bigint; nanos: number } | undefined) => {
  if (!ts) return "-";
  const ms = Number(ts.seconds) * 1000 + ts.nanos / 1e6 - Date.now();
  return ms <= 0 ? "due" : `in ${durationText({ seconds: BigInt(Math.floor(ms / 1000)), nanos: 0 })}`;
};

const COPIES: ListView<CopyRow> = {
  // One object per copy (volume and target), with its policy's settings.
  json: (r) => ({
    policy: r.policy.id,
    tenant: r.policy.tenant,
    vm: r.policy.vm,
    volumeId: r.volume.volumeId,
    volumeName: r.volume.volumeName,
    interval: seconds(r.policy.interval),
    rpo: seconds(r.policy.rpo),
    retention: r.policy.retention,
    ...(toJson(storageApi.ReplicationTargetSchema, r.target) as object),
  }),
  name: (r) => r.volume.volumeName,
  columns: [
    { header: "VOLUME", cell: (r) => r.volume.volumeName || r.volume.volumeId.slice(0, 8) },
    { header: "OF", cell: (r) => (r.policy.vm ? `vm ${r.policy.vm}` : "volume") },
    { header: "TARGET", cell: (r) => r.target.target, clip: true },
    { header: "STATE", cell: (r) => stateName(r.target.state) },
    { header: "LAST POINT", cell: (r) => (r.target.lastPointTime ? `${age(r.target.lastPointTime)} ago` : "never") },
    { header: "LAG", cell: (r) => durationText(r.target.lag) },
    { header: "RPO", cell: (r) => durationText(r.policy.rpo) },
    { header: "NEXT RUN", cell: (r) => until(r.target.nextRunTime) },
    { header: "SENT", cell: (r) => `${bytes(r.target.lastSentBytes)} (${bytes(r.target.totalSentBytes)} in all)` },
    { header: "INTERVAL", cell: (r) => durationText(r.policy.interval), wideOnly: true },
    { header: "LAST RUN", cell: (r) => durationText(r.target.lastRunDuration), wideOnly: true },
    { header: "ERROR", cell: (r) => r.target.lastError || "-", clip: true },
  ],
};

const REPLICAS: ListView<storageApi.Replica> = {
  json: storageApi.ReplicaSchema,
  name: (r) => r.volumeName,
  columns: [
    { header: "VOLUME", cell: (r) => r.volumeName },
    { header: "TENANT", cell: (r) => r.tenant },
    { header: "FROM", cell: (r) => r.sourceNode, clip: true },
    { header: "VM", cell: (r) => r.vmName || "-" },
    {
      header: "LAST POINT",
      cell: (r) => (r.lastPointTime ? `${timestampDate(r.lastPointTime).toISOString()} (${age(r.lastPointTime)} ago)` : "none"),
    },
    { header: "SIZE", cell: (r) => bytes(r.sizeBytes) },
    { header: "RECEIVED", cell: (r) => bytes(r.receivedBytes) },
    { header: "PROMOTED TO", cell: (r) => r.promotedVolume || "-" },
  ],
};

function rowsOf(policies: storageApi.ReplicationPolicy[]): CopyRow[] {
  return policies.flatMap((policy) => policy.volumes.flatMap((volume) => volume.targets.map((target) => ({ policy, volume, target }))));
}

export function replicationCommands(storage: Command, globals: () => GlobalOptions): void {
  const replication = storage
    .command("replication")
    .description("copies of volumes on other nodes: a policy per VM (all its volumes) or per volume; ZFS pools")
    .addHelpText(
      "after",
      `
aetherd sends a new consistent point of each volume every interval (ZFS snapshot, then zfs send -i
of what changed since the last point the target holds). A VM whose node is fenced starts on a node
holding its replicas, from the last point: what it wrote after that point is lost.

Examples:
  aether storage replication set --vm db --target https://node-b:7443 --interval 5m
  aether storage replication list
  aether storage replication run db
  aether storage replication replicas
  aether storage replication delete db`,
    );

  outputOptions(replication.command("list"), "list")
    .alias("ls")
    .description("per volume and target: state, last consistent point, lag, RPO, next run, bytes sent")
    .option("--tenant <tenant>", "only this tenant", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage replication list\n  aether storage replication list -o wide\n  aether storage replication list --json",
    )
    .action(async (o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const policies: storageApi.ReplicationPolicy[] = [];
        let pageToken = "";
        do {
          const r = await aether.replication.listReplications({ tenant: o.tenant, pageSize: 1000, pageToken });
          policies.push(...r.policies);
          pageToken = r.nextPageToken;
        } while (pageToken !== "");
        if (policies.length === 0 && !o.output && !o.json) {
          process.stdout.write(
            "no replication policy on this node; set one with aether storage replication set --vm <vm> --target <node>.\n",
          );
          return;
        }
        printList(o, COPIES, rowsOf(policies));
      }),
    );

  dryRunOption(outputOptions(replication.command("set")))
    .description("create or replace the replication policy of a VM (all its volumes) or of one volume; the first run starts at once")
    .option("--vm <vm>", "the VM whose volumes to replicate")
    .option("--volume <volume>", "the one volume to replicate")
    .option("--target <address...>", "target aetherd (unix:///path.sock or https://host:port); repeat for several")
    .addOption(durationOption("--interval <duration>", "time between runs (10s .. 24h)", 300_000))
    .option("--retention <n>", "points kept on each side (1..100)", uint32, 3)
    .addOption(
      durationOption("--rpo <duration>", "recovery point objective: a copy older is behind and alerts (default twice the interval)"),
    )
    .option("--tenant <tenant>", "tenant of the VM or volume", "")
    .addHelpText(
      "after",
      "\nExamples:\n  aether storage replication set --vm db --target https://node-b:7443\n  aether storage replication set --volume data --target unix:///run/b.sock --interval 1m --rpo 3m --retention 5",
    )
    .action(
      async (
        o: {
          vm?: string;
          volume?: string;
          target?: string[];
          interval: number;
          retention: number;
          rpo?: number;
          tenant: string;
        } & OutputFlags &
          DryRunFlags,
        cmd: Command,
      ) => {
        if ((o.vm === undefined) === (o.volume === undefined)) cmd.error("error: give exactly one of --vm and --volume", { exitCode: 2 });
        if (!o.target || o.target.length === 0) cmd.error("error: give at least one --target (the aetherd to copy to)", { exitCode: 2 });
        await withClient(globals(), async (aether) => {
          if (o.dryRun) {
            // What it protects must exist; a policy already there would be replaced.
            const what = o.vm !== undefined ? `VM ${o.vm}` : `volume ${o.volume}`;
            const volumes =
              o.vm !== undefined
                ? ((await aether.vm.getVm({ vm: o.vm, tenant: o.tenant })).vm?.disks ?? []).flatMap((d) =>
                    d.source.case === "volume" ? [d.source.value] : [],
                  )
                : [o.volume ?? ""];
            const refusal = await replicationRefusal(aether, what, volumes, o.tenant);
            const old = await policyOf(aether, o.vm ?? o.volume ?? "", o.tenant);
            return sayWould(
              `${old ? "replace the replication policy" : "replicate"} ${what} to ${(o.target ?? []).join(", ")} every ${o.interval / 1000}s, keeping ${o.retention} points${refusal ? `, but aetherd would refuse: ${refusal}` : ""}`,
            );
          }
          const r = await aether.replication.setReplicationPolicy({
            vm: o.vm ?? "",
            volume: o.volume ?? "",
            tenant: o.tenant,
            targets: o.target ?? [],
            interval: toDuration(o.interval),
            retention: o.retention,
            ...(o.rpo !== undefined && { rpo: toDuration(o.rpo) }),
          });
          const p = r.policy as storageApi.ReplicationPolicy;
          printOne(o, { json: storageApi.ReplicationPolicySchema, name: (x) => x.id }, p);
          if (!o.json && !o.output)
            process.stdout.write(
              `replicating ${p.vm ? `VM ${p.vm} (${p.volumes.length} volume(s))` : `volume ${p.volume}`} to ${p.targets.join(", ")} every ${durationText(p.interval)}, RPO ${durationText(p.rpo)}\n`,
            );
        });
      },
    );

  dryRunOption(outputOptions(replication.command("run")))
    .description("run a policy now (every volume to every target) and wait for it to end")
    .argument("<policy>", "the VM or volume the policy protects (name or id)")
    .option("--tenant <tenant>", "tenant of the policy", "")
    .addHelpText("after", "\nExamples:\n  aether storage replication run db\n  aether storage replication run db --json")
    .action(async (ref: string, o: { tenant: string } & OutputFlags & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const p = await mustHavePolicy(aether, ref, o.tenant);
          return sayWould(`run the replication of ${ref} now: ${p.volumes.length || 1} volume(s) to ${p.targets.join(", ")}`);
        }
        const r = await aether.replication.runReplication({ policy: ref, tenant: o.tenant });
        const p = r.policy as storageApi.ReplicationPolicy;
        if (o.json || o.output) return printOne(o, { json: storageApi.ReplicationPolicySchema, name: (x) => x.id }, p);
        const rows = rowsOf([p]);
        printList(o, COPIES, rows);
        if (rows.some((row) => row.target.lastError !== "")) process.exitCode = 1;
      }),
    );

  dryRunOption(replication.command("delete"))
    .description("delete a policy: no more runs, this node's points go; the replicas on the targets stay")
    .argument("<policy>", "the VM or volume the policy protects (name or id)")
    .option("--tenant <tenant>", "tenant of the policy", "")
    .addHelpText("after", "\nExamples:\n  aether storage replication delete db")
    .action(async (ref: string, o: { tenant: string } & DryRunFlags) =>
      withClient(globals(), async (aether) => {
        if (o.dryRun) {
          const p = await mustHavePolicy(aether, ref, o.tenant);
          return sayWould(`delete the replication policy of ${ref} (to ${p.targets.join(", ")}); the replicas on the targets stay`);
        }
        await aether.replication.deleteReplicationPolicy({ policy: ref, tenant: o.tenant });
        process.stdout.write(`deleted the replication policy of ${ref}\n`);
      }),
    );

  outputOptions(replication.command("replicas"), "list")
    .description("the replicas this node holds of other nodes' volumes, with their last consistent point")
    .option("--tenant <tenant>", "only this tenant", "")
    .addHelpText("after", "\nExamples:\n  aether storage replication replicas\n  aether storage replication replicas --json")
    .action(async (o: { tenant: string } & OutputFlags) =>
      withClient(globals(), async (aether) => {
        const r = await aether.replication.listReplicas({ tenant: o.tenant });
        printList(o, REPLICAS, r.replicas);
      }),
    );
}
